//! Rate steps: S sessions × N clients, every client editing at the same rate, the rate raised
//! step by step on the same connections until p99 passes the limit, the generator saturates or
//! the server drops clients.
//!
//! Per step: edits are pre-encoded for every client, then sent on a schedule (each client's
//! ticks offset so that the clients of a run spread over the period); after a warm-up, a window
//! of deliveries, server CPU and generator CPU is measured; latencies are those of the edits sent
//! in the window (send → each other client of the session); then the generator waits for the
//! deliveries to drain and counts what never arrived.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::{stream, StreamExt, TryStreamExt};

use super::load::{self, Handle, Order, Plan, Synced, Tally};
use super::servers::{Kind, Launcher};
use crate::client::{Editor, Pattern};
use crate::server::{cpu_seconds, DataDir, Server};
use crate::Latencies;

#[derive(Debug, Clone)]
pub struct Params {
    pub sessions: usize,
    pub clients: usize,
    /// Edits per second per client, in order.
    pub rates: Vec<f64>,
    pub warmup: Duration,
    pub window: Duration,
    /// Stop after a step whose p99 is above this.
    pub max_p99_ms: f64,
    /// CPUs the generator runs on: it is saturated at 90 % of them.
    pub generator_cores: usize,
}

/// One rate step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Edits per second per client.
    pub rate: f64,
    /// Edits per second over all clients, offered and sent (window).
    pub offered: f64,
    pub sent: f64,
    /// Updates per second received by clients other than the sender (window), and what the
    /// offered load would give.
    pub delivered: f64,
    pub offered_deliveries: f64,
    pub latency: Latencies,
    /// Cores used in the window by the server and by the generator.
    pub server_cpu: f64,
    pub generator_cpu: f64,
    pub generator_saturated: bool,
    /// Deliveries that had not arrived when the step drained.
    pub lost: u64,
    /// Updates whose edit was not found in the send log.
    pub unmatched: u64,
    /// Connections closed by the server so far.
    pub ended: usize,
}

#[derive(Debug, Clone)]
pub struct SetupResult {
    pub server: Kind,
    pub sessions: usize,
    pub clients: usize,
    pub steps: Vec<Step>,
    /// Why the ladder stopped.
    pub stop: String,
}

impl SetupResult {
    /// The step at `rate`, if it was run.
    pub fn at(&self, rate: f64) -> Option<&Step> {
        self.steps.iter().find(|s| (s.rate - rate).abs() < 1e-9)
    }

    /// The highest-rate step whose p99 is within `budget_ms`, nothing lost and the generator not
    /// saturated.
    pub fn best_within(&self, budget_ms: f64) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| {
                s.latency.count > 0
                    && s.latency.p99 <= budget_ms
                    && s.lost == 0
                    && !s.generator_saturated
            })
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

pub async fn run(launcher: &Launcher, kind: Kind, params: &Params) -> Result<SetupResult> {
    let dir = DataDir::new()?;
    let server = launcher.start(kind, &dir).await?;
    let servers = [server];
    let result = drive(launcher, kind, &servers, params).await;
    let [server] = servers;
    if result.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    result
}

struct Snapshot {
    at: Instant,
    delivered: u64,
    sent: u64,
    server_cpu: f64,
    generator_cpu: f64,
}

fn snapshot(tally: &Tally, servers: &[Server]) -> Result<Snapshot> {
    let mut server_cpu = 0.0;
    for server in servers {
        server_cpu += server.cpu_seconds()?;
    }
    Ok(Snapshot {
        at: Instant::now(),
        delivered: tally.delivered.load(Ordering::Relaxed),
        sent: tally.sent.load(Ordering::Relaxed),
        server_cpu,
        generator_cpu: cpu_seconds("self")?,
    })
}

/// Runs the ladder against `servers`: one, or the nodes of a cluster, over which the clients of
/// every session are spread in turn (client `i` on node `i % nodes`). Server CPU is their sum.
pub(super) async fn drive(
    launcher: &Launcher,
    kind: Kind,
    servers: &[Server],
    params: &Params,
) -> Result<SetupResult> {
    let (sessions, per_session) = (params.sessions, params.clients);
    let first = servers.first().ok_or_else(|| anyhow!("no server"))?;
    let rooms = Arc::new(launcher.rooms(kind, first, sessions, "steps").await?);
    let n = sessions * per_session;
    let tally = Tally::new(n, 1 << 12, n)?;
    let mut editors: Vec<Editor> = (0..n).map(|i| Editor::new(i, Pattern::Typing)).collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let clients: Vec<(usize, Handle)> = stream::iter(0..n)
        .map(|i| {
            let rooms = rooms.clone();
            let tally = tally.clone();
            let own = editors[i].client();
            let addr = addrs[i % addrs.len()];
            async move {
                let room = rooms
                    .get(i / per_session)
                    .ok_or_else(|| anyhow!("no room"))?
                    .clone();
                let joined = load::join(addr, &room, Instant::now(), Synced::Step2).await?;
                Ok::<_, anyhow::Error>((i, load::spawn(joined, room, i, Some(own), tally)))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let mut handles: Vec<Option<Handle>> = (0..n).map(|_| None).collect();
    for (i, handle) in clients {
        handles[i] = Some(handle);
    }
    let handles: Vec<Handle> = handles.into_iter().flatten().collect();

    let mut steps = Vec::new();
    let mut stop = "every rate was run".to_owned();
    let mut lost_before = 0;
    let mut planned: u64 = 0;
    let mut unmatched_before = 0;
    for &rate in &params.rates {
        let span = params.warmup + params.window;
        // Exactly what the schedule sends in the step (all of it is sent, see `Plan`).
        let count = ((rate * span.as_secs_f64()).round() as usize).max(1);
        planned += (count * n) as u64;
        let mut plans = Vec::with_capacity(n);
        for (i, editor) in editors.iter_mut().enumerate() {
            let room = &rooms[i / per_session];
            plans.push(Plan::encode(editor, i, room, count)?);
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        // Warm-up edits are not timed: nothing is, until the window opens.
        tally.record_from_ns.store(u64::MAX, Ordering::Relaxed);
        let start = tokio::time::Instant::now() + Duration::from_millis(300);
        let until = start + span;
        for (i, (plan, handle)) in plans.into_iter().zip(&handles).enumerate() {
            let offset = period.mul_f64(i as f64 / n as f64);
            let _ = handle
                .orders
                .send(Order::Send(plan.paced(start + offset, period)));
        }
        tokio::time::sleep_until(start + params.warmup).await;
        tally
            .record_from_ns
            .store(tally.now_ns(), Ordering::Relaxed);
        let a = snapshot(&tally, servers)?;
        tokio::time::sleep_until(until).await;
        let b = snapshot(&tally, servers)?;
        // Every planned edit is sent, late or not; each should reach every other client.
        let expected = planned * (per_session as u64 - 1);
        drain(&tally, expected).await;
        let lost_total = expected.saturating_sub(tally.delivered.load(Ordering::Relaxed));
        let unmatched_total = tally.unmatched.load(Ordering::Relaxed);
        let latency = Latencies::from_micros(&tally.take_latencies()?);
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let generator_cpu = (b.generator_cpu - a.generator_cpu) / secs;
        let ended = handles.iter().filter(|h| h.task.is_finished()).count();
        let step = Step {
            rate,
            offered: rate * n as f64,
            sent: (b.sent - a.sent) as f64 / secs,
            delivered: (b.delivered - a.delivered) as f64 / secs,
            offered_deliveries: rate * n as f64 * (per_session - 1) as f64,
            latency,
            server_cpu: (b.server_cpu - a.server_cpu) / secs,
            generator_cpu,
            generator_saturated: generator_cpu >= 0.9 * params.generator_cores as f64,
            lost: lost_total.saturating_sub(lost_before),
            unmatched: unmatched_total.saturating_sub(unmatched_before),
            ended,
        };
        lost_before = lost_total;
        unmatched_before = unmatched_total;
        eprintln!(
            "  {:>6}/s per client: delivered {:>9.0}/s of {:>9.0}  p50 {:>7.2} ms  p99 {:>7.2} ms  server {:>3.0}%  generator {:>3.0}%{}",
            rate,
            step.delivered,
            step.offered_deliveries,
            step.latency.p50,
            step.latency.p99,
            step.server_cpu * 100.0,
            step.generator_cpu * 100.0,
            if step.lost > 0 { format!("  lost {}", step.lost) } else { String::new() }
        );
        let over = step.latency.p99 > params.max_p99_ms;
        let saturated = step.generator_saturated;
        steps.push(step);
        if ended > 0 {
            stop = format!("{ended} connections closed by the server");
            break;
        }
        if over {
            stop = format!("p99 over {} ms", params.max_p99_ms);
            break;
        }
        if saturated {
            stop = "the generator saturated".into();
            break;
        }
    }
    for (i, end) in load::stop_all(handles).await.into_iter().enumerate() {
        if let Some(reason) = end {
            if i < 3 {
                eprintln!("  client {i} ended: {reason}");
            }
        }
    }
    Ok(SetupResult {
        server: kind,
        sessions,
        clients: per_session,
        steps,
        stop,
    })
}

/// Waits until `expected` deliveries arrived, or nothing arrived for a second (at most 15 s).
async fn drain(tally: &Tally, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = tally.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = tally.delivered.load(Ordering::Relaxed);
        if now >= expected || Instant::now() > deadline {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
