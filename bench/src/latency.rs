//! Scenario 1: fan-out latency. Every client of a session is a writer making `rate` edits per
//! second (spread evenly over the period); latency is measured from a client's send until each
//! other client of the session has the update frame.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::watch;

use crate::api::Api;
use crate::client::{
    connect, handshake, read_loop, write_loop, Editor, Pace, Pattern, Shared, Target,
};
use crate::server::{DataDir, Server, ServerSpec};
use crate::Latencies;

#[derive(Debug, Clone)]
pub struct LatencyResult {
    pub sessions: usize,
    pub clients_per_session: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    pub unmatched: u64,
    pub latency: Latencies,
    /// Connections that ended before the run did (kicked or failed).
    pub ended: usize,
    /// Server / bench CPU use during the run, in cores.
    pub server_cpu: f64,
    pub bench_cpu: f64,
}

pub async fn run(
    spec: &ServerSpec,
    sessions: usize,
    per_session: usize,
    rate: f64,
    duration: Duration,
) -> Result<LatencyResult> {
    let dir = DataDir::new()?;
    let server = Server::start(spec, &dir).await?;
    let result = drive(&server, sessions, per_session, rate, duration).await;
    if result.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    result
}

async fn drive(
    server: &Server,
    sessions: usize,
    per_session: usize,
    rate: f64,
    duration: Duration,
) -> Result<LatencyResult> {
    let api = Api::new(&server.base)?;
    let token = api.signup("Latency").await?;
    let mut targets = Vec::new();
    for s in 0..sessions {
        let session = api.create_session(&token, &format!("latency {s}")).await?;
        targets.push(Target {
            addr: server.addr,
            session,
            token: token.clone(),
        });
    }
    let n = sessions * per_session;
    let ring = ((rate * duration.as_secs_f64()) as usize + 64) * 2;
    let shared = Shared::new(n, ring);
    let targets = Arc::new(targets);
    let clients: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let targets = targets.clone();
            async move {
                let target = targets
                    .get(i / per_session)
                    .ok_or_else(|| anyhow!("no target"))?;
                let editor = Editor::new(i, Pattern::Typing);
                let mut ws = connect(target).await?;
                handshake(&mut ws, editor.doc()).await?;
                Ok::<_, anyhow::Error>((i, ws, editor))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let until = start + duration;
    let period = 1.0 / rate;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, ws, editor) in clients {
        let (sink, stream) = ws.split();
        readers.push(tokio::spawn(read_loop(
            stream,
            shared.clone(),
            1,
            stop_rx.clone(),
        )));
        let offset = Duration::from_secs_f64(period * i as f64 / n as f64);
        let pace = Pace {
            rate: Some(rate),
            start: start + offset,
            until: Some(until),
            limit: None,
            batch: 1,
        };
        writers.push(tokio::spawn(write_loop(sink, editor, pace, shared.clone())));
    }
    let cpu_before = server.cpu_seconds()?;
    let self_pid = std::process::id().to_string();
    let bench_before = crate::server::cpu_seconds(&self_pid)?;
    let cpu_since = std::time::Instant::now();
    let mut sent_by = Vec::new();
    let mut sinks = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        let (sink, _editor, sent) = writer.await??;
        sent_by.push((i, sent));
        sinks.push(sink);
    }
    let busy = cpu_since.elapsed().as_secs_f64();
    let cpu = (server.cpu_seconds()? - cpu_before) / busy.max(0.001);
    let bench_cpu = (crate::server::cpu_seconds(&self_pid)? - bench_before) / busy.max(0.001);
    // Let the last updates arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut hist = crate::client::histogram()?;
    let (mut delivered, mut unmatched, mut ended) = (0, 0, 0);
    for reader in readers {
        let stats = reader.await??;
        delivered += stats.updates;
        unmatched += stats.unmatched;
        if let Some(reason) = &stats.ended {
            ended += 1;
            eprintln!("latency: a client ended early: {reason}");
        }
        for h in &stats.latency {
            hist.add(h)?;
        }
    }
    drop(sinks);
    let sent: u64 = sent_by.iter().map(|(_, s)| s).sum();
    Ok(LatencyResult {
        sessions,
        clients_per_session: per_session,
        rate,
        duration_s: duration.as_secs_f64(),
        sent,
        delivered,
        expected: sent * (per_session as u64 - 1),
        unmatched,
        latency: Latencies::from(&hist),
        ended,
        server_cpu: cpu,
        bench_cpu,
    })
}
