//! `atelier-bench`: load benchmark of the live-session WebSocket against the real release
//! `atelier serve` (started here, on a temporary SQLite directory).
//!
//! Scenarios (see each module): [`latency`] fan-out latency, [`throughput`] delivered updates per
//! second with the server on one core, [`memory`] server memory per idle connection, [`sync`]
//! time for a fresh client to sync a 100k-edit document. Results are printed as a markdown table
//! (stdout; progress goes to stderr) and optionally written as JSON. `scripts/bench` builds and
//! runs it.
//!
//! `atelier-bench compare` ([`compare`]) runs Atelier next to the y-websocket reference server
//! and Hocuspocus on the same workloads, with its own lighter load generator.
//!
//! `atelier-bench soak` ([`soak`]) runs mixed hostile clients against one server for a bounded
//! time while honest editors work on other sessions, and fails if the server dies, its memory or
//! the editors' latency reach their bounds, or an honest update is lost (`scripts/soak`).

mod api;
mod client;
mod compare;
mod latency;
mod memory;
mod server;
mod soak;
mod sync;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::server::ServerSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Latency,
    Throughput,
    Memory,
    Sync,
}

/// Load benchmark of Atelier's live-session WebSocket (y-websocket protocol).
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    suite: Suite,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Atelier next to the y-websocket reference server and Hocuspocus: same workloads, same
    /// load generator, each server pinned to one core.
    Compare(Box<compare::Args>),
    /// Mixed hostile clients against one server for a bounded time while honest editors work on
    /// other sessions: fails if the server dies, its RSS or the editors' p99 reach their bounds,
    /// or an honest update is lost.
    Soak(soak::Args),
}

/// How to start Atelier.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The `atelier` binary to benchmark (default: the one next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// `RUST_LOG` for the server (its log is kept in the temporary directory).
    #[arg(long, default_value = "warn")]
    server_log: String,

    /// Extra `atelier serve` flag for every scenario (repeatable), e.g.
    /// `--server-arg=--compact-every-updates=2000`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// Extra environment variable for the server (repeatable), `KEY=VALUE`.
    #[arg(long = "server-env", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
}

/// The live-session suite (the default command).
#[derive(Debug, clap::Args)]
struct Suite {
    #[command(flatten)]
    atelier: ServerArgs,

    /// Scenarios to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "latency,throughput,memory,sync"
    )]
    scenarios: Vec<Scenario>,

    /// Latency: seconds of editing per run.
    #[arg(long, default_value_t = 10)]
    latency_duration_s: u64,

    /// Latency: setups to run, SESSIONSxCLIENTS (clients per session).
    #[arg(long, value_delimiter = ',', value_parser = parse_setup, default_value = "1x50,10x10")]
    latency_setups: Vec<(usize, usize)>,

    /// Latency: edits per second per client.
    #[arg(long, default_value_t = 10.0)]
    latency_rate: f64,

    /// Throughput: sessions.
    #[arg(long, default_value_t = 2)]
    throughput_sessions: usize,

    /// Throughput: writing clients per session.
    #[arg(long, default_value_t = 2)]
    throughput_writers: usize,

    /// Throughput: receiving-only clients per session.
    #[arg(long, default_value_t = 98)]
    throughput_receivers: usize,

    /// Throughput: offered loads to try (total edits/s over all writers), until delivery stops
    /// growing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,3000,4000,5000,6000,7000,8000,10000,12000"
    )]
    throughput_rates: Vec<f64>,

    /// Throughput: seconds per offered load.
    #[arg(long, default_value_t = 8)]
    throughput_step_s: u64,

    /// Throughput: the CPU the server is pinned to (`taskset -c`).
    #[arg(long, default_value = "0")]
    server_cpu: String,

    /// Throughput: the CPUs this process is pinned to meanwhile.
    #[arg(long, default_value = "1")]
    client_cpu: String,

    /// Memory: idle connections to open.
    #[arg(long, default_value_t = 5000)]
    idle_connections: usize,

    /// Memory: sessions they are spread over.
    #[arg(long, default_value_t = 50)]
    idle_sessions: usize,

    /// Memory: seconds to hold them open (the server pings every 5 s) before measuring.
    #[arg(long, default_value_t = 12)]
    idle_hold_s: u64,

    /// Sync: single-character edits the document is built from.
    #[arg(long, default_value_t = 100_000)]
    sync_edits: u64,

    /// Sync: editing patterns to build documents with (one run each).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "typing,random"
    )]
    sync_patterns: Vec<client::Pattern>,

    /// Sync: clients building it (more clients build a random-position document faster: each
    /// client's own text stays shorter).
    #[arg(long, default_value_t = 16)]
    sync_writers: usize,

    /// Sync: timed fresh-client syncs (the median is reported).
    #[arg(long, default_value_t = 7)]
    sync_runs: usize,

    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl From<&Histogram<u64>> for Latencies {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl Latencies {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ns = Self::from(h);
        let us = |v: f64| v * 1000.0;
        Self {
            count: ns.count,
            p50: us(ns.p50),
            p99: us(ns.p99),
            p999: us(ns.p999),
            max: us(ns.max),
        }
    }

    pub fn json(&self) -> Value {
        json!({"count": self.count, "p50_ms": self.p50, "p99_ms": self.p99,
               "p999_ms": self.p999, "max_ms": self.max})
    }
}

// Targets on the reference 2-core machine.
const TARGET_P99_MS: f64 = 10.0;
const TARGET_THROUGHPUT: f64 = 150_000.0;
const TARGET_BYTES_PER_CONN: f64 = 8.0 * 1024.0;
const TARGET_SYNC_MS: f64 = 50.0;

#[derive(Default)]
struct Results {
    latency: Vec<latency::LatencyResult>,
    throughput: Option<throughput::ThroughputResult>,
    memory: Option<memory::MemoryResult>,
    sync: Vec<sync::SyncResult>,
    load_before: String,
    load_after: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    let work: futures_util::future::LocalBoxFuture<'static, Result<()>> = match cli.command {
        Some(Command::Compare(args)) => {
            // Pinned before the runtime starts, so that every thread it starts inherits the
            // generator's CPUs; one worker per CPU.
            server::pin_self(&args.client_cpus)?;
            runtime.worker_threads(std::thread::available_parallelism().map_or(1, usize::from));
            Box::pin(compare::run(*args))
        }
        Some(Command::Soak(args)) => Box::pin(soak::run(args)),
        None => Box::pin(run(cli.suite)),
    };
    runtime.build()?.block_on(async {
        // On Ctrl-C or SIGTERM the scenario future is dropped, and with it the server process
        // (spawned with kill_on_drop) and its temporary directory.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow!("terminated")),
        }
    })
}

/// The Atelier binary: `--server-bin`, or `atelier` next to this executable.
pub fn server_bin(args: &ServerArgs) -> Result<PathBuf> {
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("odd executable path"))?
            .join("atelier"),
    };
    if !bin.exists() {
        return Err(anyhow!(
            "{} not found (build it: cargo build --release --bin atelier)",
            bin.display()
        ));
    }
    Ok(bin)
}

async fn run(cli: Suite) -> Result<()> {
    let bin = server_bin(&cli.atelier)?;
    check_fd_limit(&cli);
    // Every client of the bench is one account from one address: the per-account and per-IP
    // socket caps (meant for people) are lifted.
    let mut base_args: Vec<String> = [
        "--ws-max-per-account",
        "1000000",
        "--ws-max-per-ip",
        "1000000",
    ]
    .map(String::from)
    .to_vec();
    base_args.extend(cli.atelier.server_args.iter().cloned());
    let base = ServerSpec {
        bin,
        cpus: None,
        args: base_args,
        log_filter: cli.atelier.server_log.clone(),
        env: cli.atelier.server_env.clone(),
        shared: None,
    };
    let raised = |spec: &ServerSpec, queue: u32| {
        let mut args = vec![
            "--ws-max-messages-per-sec".to_owned(),
            "1000000".to_owned(),
            "--ws-outbound-queue-frames".to_owned(),
            queue.to_string(),
        ];
        args.extend(spec.args.iter().cloned());
        ServerSpec {
            args,
            ..spec.clone()
        }
    };

    let mut results = Results {
        load_before: loadavg(),
        ..Results::default()
    };
    for scenario in &cli.scenarios {
        match scenario {
            Scenario::Latency => {
                let duration = Duration::from_secs(cli.latency_duration_s);
                for &(sessions, per_session) in &cli.latency_setups {
                    eprintln!(
                        "latency: {sessions} session(s) × {per_session} clients × {} edits/s, {} s",
                        cli.latency_rate, cli.latency_duration_s
                    );
                    let r = latency::run(&base, sessions, per_session, cli.latency_rate, duration)
                        .await
                        .context("latency scenario")?;
                    eprintln!(
                        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {} deliveries)",
                        r.latency.p50, r.latency.p99, r.latency.max, r.delivered, r.expected
                    );
                    results.latency.push(r);
                }
            }
            Scenario::Throughput => {
                let spec = ServerSpec {
                    cpus: Some(cli.server_cpu.clone()),
                    ..raised(&base, 16_384)
                };
                let params = throughput::Params {
                    sessions: cli.throughput_sessions,
                    writers_per_session: cli.throughput_writers,
                    receivers_per_session: cli.throughput_receivers,
                    rates: cli.throughput_rates.clone(),
                    step: Duration::from_secs(cli.throughput_step_s),
                    window: Duration::from_secs(5),
                    client_cpus: cli.client_cpu.clone(),
                };
                eprintln!(
                    "throughput: server on CPU {}, bench on CPU {}; {} session(s) × ({} writers + {} receivers)",
                    cli.server_cpu,
                    cli.client_cpu,
                    params.sessions,
                    params.writers_per_session,
                    params.receivers_per_session
                );
                let r = throughput::run(&spec, params)
                    .await
                    .context("throughput scenario")?;
                results.throughput = Some(r);
            }
            Scenario::Memory => {
                eprintln!(
                    "memory: {} idle connections over {} sessions",
                    cli.idle_connections, cli.idle_sessions
                );
                let r = memory::run(
                    &base,
                    cli.idle_connections,
                    cli.idle_sessions,
                    Duration::from_secs(cli.idle_hold_s),
                )
                .await
                .context("memory scenario")?;
                eprintln!(
                    "memory: RSS {} → {} KiB: {:.0} bytes per connection ({} alive)",
                    r.rss_before_kib,
                    r.rss_held_kib,
                    r.bytes_per_connection(),
                    r.alive
                );
                results.memory = Some(r);
            }
            Scenario::Sync => {
                for &pattern in &cli.sync_patterns {
                    eprintln!(
                        "sync: building a document of {} single-character edits ({pattern:?}) from {} clients",
                        cli.sync_edits, cli.sync_writers
                    );
                    let r = sync::run(
                        &raised(&base, 65_536),
                        pattern,
                        cli.sync_edits,
                        cli.sync_writers,
                        cli.sync_runs,
                    )
                    .await
                    .context("sync scenario")?;
                    if let Some(m) = r.median() {
                        eprintln!(
                            "sync: median {:.1} ms (step 2 received at {:.1} ms)",
                            m.synced.as_secs_f64() * 1e3,
                            m.step2_received.as_secs_f64() * 1e3
                        );
                    }
                    results.sync.push(r);
                }
            }
        }
    }
    results.load_after = loadavg();
    println!("{}", report(&results));
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&to_json(&results))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn parse_setup(s: &str) -> Result<(usize, usize), String> {
    let (sessions, clients) = s
        .split_once('x')
        .ok_or_else(|| format!("expected SESSIONSxCLIENTS, got {s:?}"))?;
    let parse = |n: &str| n.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
    let (sessions, clients) = (parse(sessions)?, parse(clients)?);
    if sessions == 0 || clients < 2 {
        return Err(format!("{s:?}: need at least 1 session of 2 clients"));
    }
    Ok((sessions, clients))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn check_fd_limit(cli: &Suite) {
    if !cli.scenarios.contains(&Scenario::Memory) {
        return;
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft {
        if soft < cli.idle_connections + 1000 {
            eprintln!(
                "warning: open-file limit {soft} is below {} idle connections (+ slack); raise `ulimit -n`",
                cli.idle_connections
            );
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn pattern_name(pattern: client::Pattern) -> &'static str {
    match pattern {
        client::Pattern::Typing => "typing runs",
        client::Pattern::Random => "each at a random position",
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(r: &Results) -> String {
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    out.push_str(&format!(
        "Machine: {cpus} CPUs ({}); load average {} before, {} after.\n\n",
        cpu_model(),
        r.load_before,
        r.load_after
    ));
    out.push_str("| # | measurement | setup | result | target | |\n|---|---|---|---|---|---|\n");
    for (i, l) in r.latency.iter().enumerate() {
        let lost = l.expected.saturating_sub(l.delivered);
        out.push_str(&format!(
            "| 1{} | fan-out latency (send → each other client) | {} session{} × {} clients × {} edits/s, {:.0} s | p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms ({} deliveries, {} lost) | p99 ≤ {TARGET_P99_MS} ms | {} |\n",
            char::from(b'a' + i as u8),
            l.sessions,
            if l.sessions == 1 { "" } else { "s" },
            l.clients_per_session,
            l.rate,
            l.duration_s,
            l.latency.p50,
            l.latency.p99,
            l.latency.max,
            thousands(l.delivered as f64),
            lost,
            mark(l.latency.p99 <= TARGET_P99_MS && lost == 0 && l.ended == 0),
        ));
    }
    if let Some(t) = &r.throughput {
        let p = &t.params;
        match t.best_step() {
            Some(best) => out.push_str(&format!(
                "| 2 | delivered updates/s, server on 1 core | {} session{} × ({} writers + {} receivers), best 5 s window | {} /s (offered {} edits/s, sent {}; server CPU {:.0}%, bench CPU {:.0}%) | ≥ {} /s | {} |\n",
                p.sessions,
                if p.sessions == 1 { "" } else { "s" },
                p.writers_per_session,
                p.receivers_per_session,
                thousands(best.delivered),
                thousands(best.offered),
                thousands(best.sent),
                best.server_cpu * 100.0,
                best.bench_cpu * 100.0,
                thousands(TARGET_THROUGHPUT),
                mark(best.delivered >= TARGET_THROUGHPUT),
            )),
            None => out.push_str("| 2 | delivered updates/s, server on 1 core | | no complete window | | ❌ |\n"),
        }
    }
    if let Some(m) = &r.memory {
        let per = m.bytes_per_connection();
        out.push_str(&format!(
            "| 3 | server memory per idle connection | {} synced idle connections over {} sessions, held {:.0} s | {:.1} KiB (RSS {:.1} → {:.1} MiB; {} still open) | ≤ 8 KiB | {} |\n",
            thousands(m.connections as f64),
            m.sessions,
            m.hold_s,
            per / 1024.0,
            m.rss_before_kib as f64 / 1024.0,
            m.rss_held_kib as f64 / 1024.0,
            thousands(m.alive as f64),
            mark(per <= TARGET_BYTES_PER_CONN && m.alive == m.connections),
        ));
    }
    for (i, s) in r.sync.iter().enumerate() {
        if let Some(median) = s.median() {
            let ms = median.synced.as_secs_f64() * 1e3;
            out.push_str(&format!(
                "| 4{} | fresh client synced (connect → step 2 applied) | {} single-character edits ({}) from {} clients; median of {} | {:.1} ms (server's step 2 in at {:.1} ms; {:.0} KiB; cold server: {}) | ≤ {TARGET_SYNC_MS} ms | {} |\n",
                char::from(b'a' + i as u8),
                thousands(s.edits as f64),
                pattern_name(s.pattern),
                s.writers,
                s.hot.len(),
                ms,
                median.step2_received.as_secs_f64() * 1e3,
                median.step2_bytes as f64 / 1024.0,
                s.cold.map_or("–".into(), |c| format!("{:.1} ms", c.synced.as_secs_f64() * 1e3)),
                mark(ms <= TARGET_SYNC_MS),
            ));
        }
    }

    if let Some(t) = &r.throughput {
        out.push_str("\nThroughput steps (server on one core; best 5 s window of each step):\n\n");
        out.push_str("| offered edits/s | sent edits/s | delivered updates/s | server CPU | bench CPU | latency p50 / p99 |\n|---|---|---|---|---|---|\n");
        for (i, s) in t.steps.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {}{} | {:.0}% | {:.0}% | {:.1} / {:.1} ms |\n",
                thousands(s.offered),
                thousands(s.sent),
                thousands(s.delivered),
                if Some(i) == t.best { " (best)" } else { "" },
                s.server_cpu * 100.0,
                s.bench_cpu * 100.0,
                s.latency.p50,
                s.latency.p99,
            ));
        }
        if t.ended > 0 {
            out.push_str(&format!(
                "\n{} connections were closed by the server during the run.\n",
                t.ended
            ));
        }
    }
    if !r.latency.is_empty() {
        out.push_str("\nLatency runs:\n\n| setup | sent | delivered / expected | p50 | p99 | p99.9 | max | server CPU | bench CPU |\n|---|---|---|---|---|---|---|---|---|\n");
        for l in &r.latency {
            out.push_str(&format!(
                "| {} × {} × {}/s | {} | {} / {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0}% | {:.0}% |\n",
                l.sessions,
                l.clients_per_session,
                l.rate,
                thousands(l.sent as f64),
                thousands(l.delivered as f64),
                thousands(l.expected as f64),
                l.latency.p50,
                l.latency.p99,
                l.latency.p999,
                l.latency.max,
                l.server_cpu * 100.0,
                l.bench_cpu * 100.0
            ));
        }
    }
    for s in &r.sync {
        out.push_str(&format!(
            "\nSync, {}: document built through the server in {:.1} s ({} edits/s stored and fanned out).\n\n| run | connected | step 2 received | synced (step 2 applied) | step 2 size | full-state encode (client-side stand-in for the server's) |\n|---|---|---|---|---|---|\n",
            pattern_name(s.pattern),
            s.build_s,
            thousands(s.edits as f64 / s.build_s.max(0.001)),
        ));
        let row = |name: String, t: &client::SyncTiming| {
            format!(
                "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} KiB | {:.1} ms |\n",
                t.connected.as_secs_f64() * 1e3,
                t.step2_received.as_secs_f64() * 1e3,
                t.synced.as_secs_f64() * 1e3,
                t.step2_bytes as f64 / 1024.0,
                t.encode.as_secs_f64() * 1e3
            )
        };
        for (i, t) in s.hot.iter().enumerate() {
            out.push_str(&row(format!("hot {}", i + 1), t));
        }
        if let Some(cold) = &s.cold {
            out.push_str(&row("cold (server restarted)".into(), cold));
        }
    }
    out
}

fn to_json(r: &Results) -> Value {
    let timing = |t: &client::SyncTiming| {
        json!({"connected_ms": t.connected.as_secs_f64() * 1e3,
               "step2_received_ms": t.step2_received.as_secs_f64() * 1e3,
               "synced_ms": t.synced.as_secs_f64() * 1e3,
               "step2_bytes": t.step2_bytes,
               "encode_ms": t.encode.as_secs_f64() * 1e3})
    };
    json!({
        "load_before": r.load_before,
        "load_after": r.load_after,
        "latency": r.latency.iter().map(|l| json!({
            "sessions": l.sessions, "clients_per_session": l.clients_per_session,
            "rate": l.rate, "duration_s": l.duration_s, "sent": l.sent,
            "delivered": l.delivered, "expected": l.expected, "unmatched": l.unmatched,
            "ended": l.ended, "server_cpu": l.server_cpu, "bench_cpu": l.bench_cpu, "latency": l.latency.json(),
        })).collect::<Vec<_>>(),
        "throughput": r.throughput.as_ref().map(|t| json!({
            "sessions": t.params.sessions, "writers_per_session": t.params.writers_per_session,
            "receivers_per_session": t.params.receivers_per_session, "ended": t.ended,
            "best": t.best_step().map(|s| s.delivered),
            "steps": t.steps.iter().map(|s| json!({
                "offered": s.offered, "sent": s.sent, "delivered": s.delivered,
                "server_cpu": s.server_cpu, "bench_cpu": s.bench_cpu,
                "latency": s.latency.json(),
            })).collect::<Vec<_>>(),
        })),
        "memory": r.memory.as_ref().map(|m| json!({
            "connections": m.connections, "sessions": m.sessions,
            "rss_before_kib": m.rss_before_kib, "rss_open_kib": m.rss_open_kib,
            "rss_held_kib": m.rss_held_kib, "alive": m.alive,
            "bytes_per_connection": m.bytes_per_connection(), "connect_s": m.connect_s,
        })),
        "sync": r.sync.iter().map(|s| json!({
            "pattern": pattern_name(s.pattern),
            "edits": s.edits, "writers": s.writers, "build_s": s.build_s,
            "median": s.median().as_ref().map(timing),
            "hot": s.hot.iter().map(timing).collect::<Vec<_>>(),
            "cold": s.cold.as_ref().map(timing),
        })).collect::<Vec<_>>(),
    })
}
