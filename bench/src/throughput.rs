//! Scenario 2: the most update frames per second the server delivers with ONE core.
//!
//! The server runs under `taskset -c <server core>`; this process pins itself to the other core
//! for the scenario. Each session has a few writers and many receivers (fan-out is what is
//! measured). The offered load (total edits per second over all writers) goes up step by step
//! until the delivery rate stops growing; for each step the best 5 s window of delivered update
//! frames per second is kept, with the server's and the bench's CPU use in that window.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::watch;
use yrs::Doc;

use crate::api::Api;
use crate::client::{
    connect, handshake, histogram, read_loop, write_loop, Editor, Pace, Pattern, Shared, Target,
    WsSink,
};
use crate::server::{allowed_cpus, cpu_seconds, pin_self, DataDir, Server, ServerSpec};
use crate::Latencies;

#[derive(Debug, Clone)]
pub struct Params {
    pub sessions: usize,
    pub writers_per_session: usize,
    pub receivers_per_session: usize,
    /// Offered loads to try, total edits per second over all writers.
    pub rates: Vec<f64>,
    pub step: Duration,
    pub window: Duration,
    pub client_cpus: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub offered: f64,
    /// Edits per second the writers managed to send in the best window.
    pub sent: f64,
    /// Update frames per second received by all clients, best window of the step.
    pub delivered: f64,
    /// Cores used by the server / by this process in that window.
    pub server_cpu: f64,
    pub bench_cpu: f64,
    pub latency: Latencies,
}

#[derive(Debug, Clone)]
pub struct ThroughputResult {
    pub params: Params,
    pub steps: Vec<Step>,
    pub best: Option<usize>,
    /// Connections that ended (kicked as too slow, or failed) during the run.
    pub ended: usize,
}

impl ThroughputResult {
    pub fn best_step(&self) -> Option<&Step> {
        self.best.and_then(|i| self.steps.get(i))
    }
}

pub async fn run(spec: &ServerSpec, params: Params) -> Result<ThroughputResult> {
    let restore = allowed_cpus()?;
    pin_self(&params.client_cpus)?;
    let result = async {
        let dir = DataDir::new()?;
        let server = Server::start(spec, &dir).await?;
        let result = drive(&server, &params).await;
        if result.is_err() {
            eprintln!("server log:\n{}", server.log_tail());
        }
        server.stop().await?;
        result
    }
    .await;
    pin_self(&restore)?;
    result
}

struct Sample {
    at: Instant,
    delivered: u64,
    sent: u64,
    server_cpu: f64,
    bench_cpu: f64,
}

async fn drive(server: &Server, params: &Params) -> Result<ThroughputResult> {
    let api = Api::new(&server.base)?;
    let token = api.signup("Throughput").await?;
    let mut targets = Vec::new();
    for s in 0..params.sessions {
        let session = api
            .create_session(&token, &format!("throughput {s}"))
            .await?;
        targets.push(Target {
            addr: server.addr,
            session,
            token: token.clone(),
        });
    }
    let per_session = params.writers_per_session + params.receivers_per_session;
    let writers_total = params.sessions * params.writers_per_session;
    let phases = params.rates.len();
    let shared = Shared::new(writers_total, 1 << 18);
    let targets = Arc::new(targets);

    // Client c of session s: the first `writers_per_session` are writers.
    let clients: Vec<_> = stream::iter(0..params.sessions * per_session)
        .map(|c| {
            let targets = targets.clone();
            let (s, k) = (c / per_session, c % per_session);
            let writer =
                (k < params.writers_per_session).then_some(s * params.writers_per_session + k);
            async move {
                let target = targets.get(s).ok_or_else(|| anyhow!("no target"))?;
                let editor = writer.map(|w| Editor::new(w, Pattern::Typing));
                let doc = Doc::new();
                let mut ws = connect(target).await?;
                handshake(&mut ws, editor.as_ref().map_or(&doc, Editor::doc)).await?;
                Ok::<_, anyhow::Error>((ws, editor))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
    let mut writers: Vec<(WsSink, Editor)> = Vec::new();
    for (ws, editor) in clients {
        let (sink, stream) = ws.split();
        readers.push(tokio::spawn(read_loop(
            stream,
            shared.clone(),
            phases,
            stop_rx.clone(),
        )));
        if let Some(editor) = editor {
            writers.push((sink, editor));
        }
    }
    let self_pid = std::process::id().to_string();

    let mut steps = Vec::new();
    let mut best: Option<usize> = None;
    let mut stalls = 0;
    for (phase, &offered) in params.rates.iter().enumerate() {
        shared.phase.store(phase, Ordering::Relaxed);
        let per_writer = offered / writers_total as f64;
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let until = start + params.step;
        let tasks: Vec<_> = writers
            .drain(..)
            .enumerate()
            .map(|(i, (sink, editor))| {
                // Spread the writers' ticks over one period.
                let offset = Duration::from_secs_f64(i as f64 / writers_total as f64 / per_writer);
                let pace = Pace {
                    rate: Some(per_writer),
                    start: start + offset,
                    until: Some(until),
                    limit: None,
                    batch: 64,
                };
                tokio::spawn(write_loop(sink, editor, pace, shared.clone()))
            })
            .collect();
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while tokio::time::Instant::now() < until {
            tick.tick().await;
            samples.push(Sample {
                at: Instant::now(),
                delivered: shared.delivered.load(Ordering::Relaxed),
                sent: shared.sent.load(Ordering::Relaxed),
                server_cpu: server.cpu_seconds()?,
                bench_cpu: cpu_seconds(&self_pid)?,
            });
        }
        for task in tasks {
            let (sink, editor, _) = task.await??;
            writers.push((sink, editor));
        }
        drain(&shared).await;

        let step = best_window(&samples, params.window, offered, Latencies::default());
        let Some(step) = step else {
            continue;
        };
        // Latencies are filled in once the readers stop.
        let ended_now = readers.iter().filter(|r| r.is_finished()).count();
        eprintln!(
            "throughput: offered {:>7.0}/s  sent {:>7.0}/s  delivered {:>9.0}/s  server {:>4.0}% CPU  bench {:>4.0}% CPU",
            step.offered,
            step.sent,
            step.delivered,
            step.server_cpu * 100.0,
            step.bench_cpu * 100.0
        );
        let improved = best
            .and_then(|b| steps.get(b))
            .is_none_or(|b: &Step| step.delivered > b.delivered * 1.03);
        steps.push(step);
        if improved {
            best = Some(steps.len() - 1);
            stalls = 0;
        } else {
            stalls += 1;
        }
        if stalls >= 2 || ended_now > 0 {
            if ended_now > 0 {
                eprintln!("throughput: {ended_now} connections ended; stopping");
            }
            break;
        }
    }

    let _ = stop_tx.send(true);
    let mut per_phase: Vec<_> = (0..phases).map(|_| histogram()).collect::<Result<_>>()?;
    let mut ended = 0;
    for reader in readers {
        let stats = reader.await??;
        if let Some(reason) = &stats.ended {
            ended += 1;
            if ended <= 3 {
                eprintln!("throughput: a client ended: {reason}");
            }
        }
        for (h, total) in stats.latency.iter().zip(per_phase.iter_mut()) {
            total.add(h)?;
        }
    }
    for (step, hist) in steps.iter_mut().zip(&per_phase) {
        step.latency = Latencies::from(hist);
    }
    drop(writers);
    Ok(ThroughputResult {
        params: params.clone(),
        steps,
        best,
        ended,
    })
}

/// Waits until deliveries stop (nothing new for 500 ms), at most 15 s.
async fn drain(shared: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = shared.delivered.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// The window (of `window` length, between samples) with the most deliveries.
fn best_window(
    samples: &[Sample],
    window: Duration,
    offered: f64,
    latency: Latencies,
) -> Option<Step> {
    let mut best: Option<Step> = None;
    for (i, a) in samples.iter().enumerate() {
        let Some(b) = samples[i..]
            .iter()
            .find(|b| b.at.duration_since(a.at) >= window)
        else {
            break;
        };
        let secs = b.at.duration_since(a.at).as_secs_f64();
        let step = Step {
            offered,
            sent: (b.sent - a.sent) as f64 / secs,
            delivered: (b.delivered - a.delivered) as f64 / secs,
            server_cpu: (b.server_cpu - a.server_cpu) / secs,
            bench_cpu: (b.bench_cpu - a.bench_cpu) / secs,
            latency: latency.clone(),
        };
        if best
            .as_ref()
            .is_none_or(|best| step.delivered > best.delivered)
        {
            best = Some(step);
        }
    }
    best
}
