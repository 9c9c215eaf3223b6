//! `atelier-bench soak`: a bounded run of mixed hostile clients against one release server while
//! honest editors work on other sessions.
//!
//! The server runs on a temporary SQLite directory with every hostile-input protection at its
//! default (message size, rate, outbound frames and bytes, nesting depth, presence bounds); only
//! the per-account and per-IP socket caps are lifted, since every client here is one of two
//! accounts on one address. Honest editors ([`honest`]) type into their own sessions; hostile
//! workers ([`hostile`]) cycle through oversize messages, nested maps, floods, clients that never
//! read, step-1 spam, presence spam, garbage and repeated step 1s on other sessions, reconnecting
//! after every close, while a churner per hostile session keeps changing its document. Every
//! [`RSS_EVERY`] the server's `VmRSS` is sampled and its process checked. The run fails (non-zero
//! exit) if the server exits, the honest editors' p99 reaches the bound, the RSS reaches its
//! bound, an honest update is lost or an honest connection ends, the server logs a panic, or a
//! hostile kind is never ended the way the server's protections should end it.

mod craft;
mod honest;
mod hostile;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::api::Api;
use crate::client::{histogram, Target};
use crate::server::{DataDir, Server, ServerSpec};
use crate::{cpu_model, loadavg, server_bin, thousands, Latencies, ServerArgs};
use honest::HonestResult;
use hostile::{Arena, HostileSession, Kind, Outcome, Tally, TallyInner};

/// How often the server's RSS is sampled and its process checked.
const RSS_EVERY: Duration = Duration::from_secs(2);

/// The longest soak this accepts: the run is bounded.
const MAX_MINUTES: f64 = 24.0 * 60.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    atelier: ServerArgs,

    /// How long the hostile and honest clients run, in minutes (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,

    /// Honest sessions.
    #[arg(long, default_value_t = 10)]
    honest_sessions: usize,

    /// Honest editors per session.
    #[arg(long, default_value_t = 5)]
    honest_clients: usize,

    /// Edits per second per honest editor.
    #[arg(long, default_value_t = 10.0)]
    honest_rate: f64,

    /// Sessions the hostile clients attack (none of them an honest editor's).
    #[arg(long, default_value_t = 2)]
    hostile_sessions: usize,

    /// Hostile connections at once (each reconnects after being closed).
    #[arg(long, default_value_t = 16)]
    hostile_clients: usize,

    /// Size of the values each hostile session's churner writes.
    #[arg(long, default_value_t = 32 * 1024)]
    churn_bytes: usize,

    /// Values per second each churner writes.
    #[arg(long, default_value_t = 8.0)]
    churn_rate: f64,

    /// Fail if the server's RSS reaches this (MiB).
    #[arg(long, default_value_t = 512)]
    rss_limit_mib: u64,

    /// Fail if the honest editors' fan-out p99 over the whole run reaches this (ms).
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,

    /// Seed of the hostile clients' choices (sizes, client ids, garbage).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What the monitor saw of the server.
#[derive(Debug, Default)]
struct ServerWatch {
    pid: u32,
    /// How the process ended, if it did during the soak.
    died: Option<String>,
    rss_start_kib: u64,
    rss_max_kib: u64,
    rss_end_kib: u64,
    /// Highest RSS sample in each minute.
    rss_max_by_minute: Vec<u64>,
    samples: u64,
    /// CPU use (cores) of the server and of this load generator in each minute, and the share of
    /// that minute in which some runnable task on the machine waited for a CPU (Linux pressure
    /// stall information): on a shared machine, late deliveries are often other people's builds.
    cpu_by_minute: Vec<(f64, f64, Option<f64>)>,
    panics: usize,
    /// Server counters at the end: clients cut for not reading, session actors restarted after
    /// a panic.
    outbound_overflows: f64,
    session_restarts: f64,
}

pub async fn run(args: Args) -> Result<()> {
    if !(args.minutes > 0.0 && args.minutes <= MAX_MINUTES) {
        bail!("--minutes must be above 0 and at most {MAX_MINUTES}");
    }
    if args.honest_sessions == 0 || args.honest_clients < 2 || args.hostile_sessions == 0 {
        bail!("need at least one honest session of two editors and one hostile session");
    }
    if !(args.honest_rate > 0.0 && args.churn_rate > 0.0) {
        bail!("rates must be positive");
    }
    let bin = server_bin(&args.atelier)?;
    // Every client is one of two accounts on 127.0.0.1: the per-account and per-IP socket caps
    // (meant for people) are lifted. Every other limit stays at its default: they are what is
    // under test.
    let mut server_args: Vec<String> = [
        "--ws-max-per-account",
        "1000000",
        "--ws-max-per-ip",
        "1000000",
    ]
    .map(String::from)
    .to_vec();
    server_args.extend(args.atelier.server_args.iter().cloned());
    let spec = ServerSpec {
        bin,
        cpus: None,
        args: server_args,
        log_filter: args.atelier.server_log.clone(),
        env: args.atelier.server_env.clone(),
        shared: None,
    };
    let load_before = loadavg();
    let dir = DataDir::new()?;
    let mut server = Server::start(&spec, &dir).await?;
    let result = soak(&mut server, &args).await;
    let log = server.log_tail();
    let alive = server.exited().is_none();
    if alive {
        server.stop().await?;
    }
    let (watch, honest, tally, churners) = match result {
        Ok(parts) => parts,
        Err(error) => {
            eprintln!("server log:\n{log}");
            return Err(error);
        }
    };
    let report = Report {
        args: &args,
        watch: &watch,
        honest: &honest,
        tally: &tally,
        churn_updates: churners.0,
        churn_reconnects: churners.1,
        load_before,
        load_after: loadavg(),
    };
    println!("{}", report.render());
    let failures = report.failures();
    if !failures.is_empty() {
        if watch.died.is_some() || watch.panics > 0 {
            eprintln!("server log:\n{log}");
        }
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}

type Parts = (ServerWatch, HonestResult, TallyInner, (u64, u64));

async fn soak(server: &mut Server, args: &Args) -> Result<Parts> {
    let api = Api::new(&server.base)?;
    let honest_token = api.signup("Honest").await?;
    let mut targets = Vec::new();
    for s in 0..args.honest_sessions {
        let session = api
            .create_session(&honest_token, &format!("honest {s}"))
            .await?;
        targets.push(Target {
            addr: server.addr,
            session,
            token: honest_token.clone(),
        });
    }
    let hostile_token = api.signup("Mallory").await?;
    let mut sessions = Vec::new();
    for s in 0..args.hostile_sessions {
        let id = api
            .create_session(&hostile_token, &format!("hostile {s}"))
            .await?;
        let viewer_token = api.share_link(&hostile_token, &id).await?;
        sessions.push(HostileSession {
            id,
            editor_token: hostile_token.clone(),
            viewer_token,
        });
    }
    let mut watch = ServerWatch {
        pid: server.pid(),
        rss_start_kib: server.rss_kib()?,
        ..ServerWatch::default()
    };
    watch.rss_max_kib = watch.rss_start_kib;

    let arena = Arc::new(Arena {
        addr: server.addr,
        sessions,
    });
    let tally = Arc::new(Tally::default());
    let mut hostile_tasks = Vec::new();
    for i in 0..args.hostile_sessions {
        hostile_tasks.push(tokio::spawn(hostile::churner(
            arena.clone(),
            tally.clone(),
            i,
            args.churn_bytes,
            args.churn_rate,
        )));
    }
    for i in 0..args.hostile_clients {
        hostile_tasks.push(tokio::spawn(hostile::worker(
            arena.clone(),
            tally.clone(),
            i,
            args.seed,
        )));
    }

    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    eprintln!(
        "soak: {:.1} min; {} honest sessions × {} editors × {} edits/s; {} hostile clients on {} sessions",
        args.minutes,
        args.honest_sessions,
        args.honest_clients,
        args.honest_rate,
        args.hostile_clients,
        args.hostile_sessions
    );
    let honest = honest::start(&targets, args.honest_clients, args.honest_rate, duration)
        .await
        .context("starting the honest editors")?;

    let mut minute = 0usize;
    let mut next = tokio::time::Instant::now();
    let own_pid = std::process::id().to_string();
    let cpu_now = |server: &Server| -> (f64, f64, Option<u64>) {
        (
            server.cpu_seconds().unwrap_or(0.0),
            crate::server::cpu_seconds(&own_pid).unwrap_or(0.0),
            cpu_pressure_us(),
        )
    };
    let mut cpu_mark = (cpu_now(server), std::time::Instant::now());
    let mut cpu_minute = |server: &Server, watch: &mut ServerWatch| {
        let (now, at) = (cpu_now(server), std::time::Instant::now());
        let secs = at.duration_since(cpu_mark.1).as_secs_f64().max(0.001);
        let waited = now
            .2
            .zip(cpu_mark.0 .2)
            .map(|(now, then)| now.saturating_sub(then) as f64 / 1e6 / secs);
        watch.cpu_by_minute.push((
            (now.0 - cpu_mark.0 .0) / secs,
            (now.1 - cpu_mark.0 .1) / secs,
            waited,
        ));
        cpu_mark = (now, at);
    };
    while tokio::time::Instant::now() < honest.until {
        next += RSS_EVERY;
        tokio::time::sleep_until(next.min(honest.until)).await;
        if let Some(status) = server.exited() {
            watch.died = Some(status);
            break;
        }
        let rss = server
            .rss_kib()
            .with_context(|| format!("reading the RSS of pid {}", watch.pid))?;
        watch.samples += 1;
        watch.rss_max_kib = watch.rss_max_kib.max(rss);
        let now_minute = (tokio::time::Instant::now()
            .saturating_duration_since(honest.start)
            .as_secs()
            / 60) as usize;
        if watch.rss_max_by_minute.len() <= minute {
            watch.rss_max_by_minute.resize(minute + 1, 0);
        }
        // The last sample lands at the end of the run: the updates still in flight then belong
        // to the last minute, not a new one.
        if now_minute > minute && tokio::time::Instant::now() < honest.until {
            cpu_minute(server, &mut watch);
            progress(minute, &honest.minutes.snapshot(), &watch, &tally);
            minute = now_minute;
            honest.shared.phase.store(minute, Ordering::Relaxed);
            watch.rss_max_by_minute.resize(minute + 1, 0);
        }
        if let Some(max) = watch.rss_max_by_minute.get_mut(minute) {
            *max = (*max).max(rss);
        }
    }
    if watch.died.is_none() {
        cpu_minute(server, &mut watch);
        progress(minute, &honest.minutes.snapshot(), &watch, &tally);
    }
    for task in &hostile_tasks {
        task.abort();
    }
    let result = honest.finish().await?;
    if let Some(status) = server.exited() {
        watch.died.get_or_insert(status);
    }
    if watch.died.is_none() {
        watch.rss_end_kib = server.rss_kib()?;
        watch.rss_max_kib = watch.rss_max_kib.max(watch.rss_end_kib);
    }
    if watch.died.is_none() {
        watch.outbound_overflows = api.metric("atelier_outbound_overflows_total").await?;
        watch.session_restarts = api.metric("atelier_session_restarts_total").await?;
    }
    watch.panics = std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("panicked"))
        .count();
    let churn = (
        tally.churn_updates.load(Ordering::Relaxed),
        tally.churn_reconnects.load(Ordering::Relaxed),
    );
    Ok((watch, result, tally.snapshot(), churn))
}

fn progress(minute: usize, minutes: &[Histogram<u64>], watch: &ServerWatch, tally: &Tally) {
    let l = minutes.get(minute).map(Latencies::from).unwrap_or_default();
    let snapshot = tally.snapshot();
    let attempts: u64 = snapshot.attempts.values().sum();
    let (server_cpu, bench_cpu, waited) = watch.cpu_by_minute.last().copied().unwrap_or_default();
    eprintln!(
        "soak: minute {}: {} deliveries, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; RSS {:.1} MiB (max {:.1}); CPU server {:.0}%, bench {:.0}%, machine waiting {}; {} hostile connections so far",
        minute + 1,
        thousands(l.count as f64),
        l.p50,
        l.p99,
        l.max,
        watch.rss_max_by_minute.get(minute).copied().unwrap_or(0) as f64 / 1024.0,
        watch.rss_max_kib as f64 / 1024.0,
        server_cpu * 100.0,
        bench_cpu * 100.0,
        percent(waited),
        thousands(attempts as f64),
    );
}

/// Microseconds some runnable task has waited for a CPU since boot (`/proc/pressure/cpu`, the
/// `some` line); `None` where the kernel does not report pressure.
fn cpu_pressure_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|line| line.starts_with("some"))?;
    some.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".into(), |s| format!("{:.0}%", s * 100.0))
}

struct Report<'a> {
    args: &'a Args,
    watch: &'a ServerWatch,
    honest: &'a HonestResult,
    tally: &'a TallyInner,
    churn_updates: u64,
    churn_reconnects: u64,
    load_before: String,
    load_after: String,
}

impl Report<'_> {
    fn overall(&self) -> Latencies {
        let mut all = match histogram() {
            Ok(h) => h,
            Err(_) => return Latencies::default(),
        };
        for h in &self.honest.minutes {
            let _ = all.add(h);
        }
        Latencies::from(&all)
    }

    fn worst_minute_p99(&self) -> f64 {
        self.honest
            .minutes
            .iter()
            .map(|h| Latencies::from(h).p99)
            .fold(0.0, f64::max)
    }

    fn rss_limit_kib(&self) -> u64 {
        self.args.rss_limit_mib * 1024
    }

    /// Kinds that finished attempts without ever being ended as the protections should.
    fn unexpected_kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|kind| {
                let outcomes = self.tally.outcomes.get(kind);
                let finished: u64 = outcomes.map_or(0, |o| o.values().sum());
                let expected: u64 = outcomes.map_or(0, |o| {
                    o.iter()
                        .filter(|(outcome, _)| kind.is_expected(**outcome))
                        .map(|(_, n)| n)
                        .sum()
                });
                finished > 0 && expected == 0
            })
            .collect()
    }

    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(status) = &self.watch.died {
            failures.push(format!("the server exited ({status})"));
        }
        let overall = self.overall();
        if overall.count == 0 {
            failures.push("no honest update was delivered".into());
        } else if overall.p99 >= self.args.p99_limit_ms {
            failures.push(format!(
                "honest p99 {:.2} ms ≥ {} ms",
                overall.p99, self.args.p99_limit_ms
            ));
        }
        if self.watch.rss_max_kib >= self.rss_limit_kib() {
            failures.push(format!(
                "RSS reached {:.1} MiB ≥ {} MiB",
                self.watch.rss_max_kib as f64 / 1024.0,
                self.args.rss_limit_mib
            ));
        }
        if self.honest.lost > 0 {
            failures.push(format!("{} honest updates lost", self.honest.lost));
        }
        if !self.honest.ended.is_empty() {
            failures.push(format!(
                "{} honest connections ended early ({})",
                self.honest.ended.len(),
                self.honest.ended.first().map_or("", String::as_str)
            ));
        }
        if self.watch.panics > 0 {
            failures.push(format!("{} panics in the server log", self.watch.panics));
        }
        if self.watch.session_restarts > 0.0 {
            failures.push(format!(
                "{} session actors restarted after a panic",
                self.watch.session_restarts
            ));
        }
        for kind in self.unexpected_kinds() {
            failures.push(format!(
                "{} never ended with {}",
                kind.name(),
                kind.expected()
            ));
        }
        failures
    }

    fn render(&self) -> String {
        let a = self.args;
        let w = self.watch;
        let h = self.honest;
        let overall = self.overall();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let mark = |ok: bool| if ok { "✅" } else { "❌" };
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mut out = format!(
            "Soak of {:.1} min on {cpus} CPUs ({}); load average {} before, {} after.\n\n",
            a.minutes,
            cpu_model(),
            self.load_before,
            self.load_after
        );
        out.push_str("| | measured | bound | |\n|---|---|---|---|\n");
        out.push_str(&format!(
            "| server process | pid {} {} ({} RSS samples, every {} s) | no exit, no restart | {} |\n",
            w.pid,
            match &w.died {
                Some(status) => format!("exited: {status}"),
                None => "alive throughout, never restarted".into(),
            },
            w.samples,
            RSS_EVERY.as_secs(),
            mark(w.died.is_none()),
        ));
        out.push_str(&format!(
            "| honest editors | {} sessions × {} editors × {} edits/s: {} edits, {} of {} deliveries | | |\n",
            a.honest_sessions,
            a.honest_clients,
            a.honest_rate,
            thousands(h.sent as f64),
            thousands(h.delivered as f64),
            thousands(h.expected as f64),
        ));
        out.push_str(&format!(
            "| honest fan-out latency | p50 {:.2} ms · p99 {:.2} ms · p99.9 {:.2} ms · max {:.2} ms (worst minute's p99 {:.2} ms) | p99 < {} ms | {} |\n",
            overall.p50,
            overall.p99,
            overall.p999,
            overall.max,
            self.worst_minute_p99(),
            a.p99_limit_ms,
            mark(overall.count > 0 && overall.p99 < a.p99_limit_ms),
        ));
        out.push_str(&format!(
            "| lost honest updates | {} ({} skipped, {} repeated, {} foreign; {} honest connections ended early) | 0 | {} |\n",
            h.lost,
            h.skipped,
            h.repeated,
            h.foreign,
            h.ended.len(),
            mark(h.lost == 0 && h.ended.is_empty()),
        ));
        out.push_str(&format!(
            "| server RSS | start {:.1} MiB · max {:.1} MiB · end {:.1} MiB | < {} MiB | {} |\n",
            mib(w.rss_start_kib),
            mib(w.rss_max_kib),
            mib(w.rss_end_kib),
            a.rss_limit_mib,
            mark(w.rss_max_kib < self.rss_limit_kib()),
        ));
        out.push_str(&format!(
            "| panics (server log; session actors restarted) | {}; {} | 0 | {} |\n",
            w.panics,
            w.session_restarts,
            mark(w.panics == 0 && w.session_restarts == 0.0)
        ));
        let attempts: u64 = self.tally.attempts.values().sum();
        let finished: u64 = self.tally.outcomes.values().flat_map(|o| o.values()).sum();
        let unexpected = self.unexpected_kinds();
        out.push_str(&format!(
            "| hostile connections | {} attempted, {} finished ({} cut off by the end) | each kind ended by its protection | {} |\n",
            thousands(attempts as f64),
            thousands(finished as f64),
            attempts.saturating_sub(finished),
            mark(unexpected.is_empty()),
        ));

        out.push_str("\nHonest editors by minute:\n\n| minute | deliveries | p50 | p99 | max | server RSS max | CPU: server / bench | CPU pressure |\n|---|---|---|---|---|---|---|---|\n");
        for (i, hist) in h.minutes.iter().enumerate() {
            let l = Latencies::from(hist);
            let (server_cpu, bench_cpu, waited) =
                w.cpu_by_minute.get(i).copied().unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} MiB | {:.0}% / {:.0}% | {} |\n",
                i + 1,
                thousands(l.count as f64),
                l.p50,
                l.p99,
                l.max,
                mib(w.rss_max_by_minute.get(i).copied().unwrap_or(0)),
                server_cpu * 100.0,
                bench_cpu * 100.0,
                percent(waited),
            ));
        }

        out.push_str(&format!(
            "\nHostile clients: {} at once on {} sessions, each reconnecting {} ms after its connection ends; a churner per session wrote {} values of {} KiB ({} reconnects).\n\n| kind | expected | attempts | how the connections ended | |\n|---|---|---|---|---|\n",
            a.hostile_clients,
            a.hostile_sessions,
            hostile::RECONNECT_PAUSE.as_millis(),
            thousands(self.churn_updates as f64),
            a.churn_bytes / 1024,
            self.churn_reconnects,
        ));
        let mut by_code: BTreeMap<Outcome, u64> = BTreeMap::new();
        for kind in Kind::ALL {
            let outcomes = self.tally.outcomes.get(&kind);
            let ended = outcomes
                .map(|o| {
                    o.iter()
                        .map(|(outcome, n)| {
                            *by_code.entry(*outcome).or_default() += n;
                            format!("{outcome} × {}", thousands(*n as f64))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                kind.name(),
                kind.expected(),
                thousands(self.tally.attempts.get(&kind).copied().unwrap_or(0) as f64),
                ended,
                mark(!unexpected.contains(&kind)),
            ));
        }
        out.push_str(&format!(
            "\nClients the server cut for not reading (`atelier_outbound_overflows_total`): {}.\n",
            w.outbound_overflows
        ));
        out.push_str(&format!(
            "\nAll hostile connections by how they ended: {}.\n",
            by_code
                .iter()
                .map(|(outcome, n)| format!("{outcome} × {}", thousands(*n as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out
    }
}
