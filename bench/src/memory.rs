//! Scenario 3: server memory per idle connection. RSS of the server before and after opening
//! `connections` synced, idle connections spread over `sessions` sessions; the connections stay
//! open through several server pings (tungstenite answers them while the client reads).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use tokio::sync::watch;
use yrs::Doc;

use crate::api::Api;
use crate::client::{connect, handshake, read_loop, Shared, Target};
use crate::server::{DataDir, Server, ServerSpec};

#[derive(Debug, Clone)]
pub struct MemoryResult {
    pub connections: usize,
    pub sessions: usize,
    pub rss_before_kib: u64,
    /// Right after the last connection synced (+2 s).
    pub rss_open_kib: u64,
    /// After holding them idle through `hold` (several pings).
    pub rss_held_kib: u64,
    pub hold_s: f64,
    /// Connections still open at the end.
    pub alive: usize,
    pub connect_s: f64,
}

impl MemoryResult {
    /// (RSS held − RSS before) / connections, bytes.
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_held_kib.saturating_sub(self.rss_before_kib) as f64 * 1024.0)
            / self.connections.max(1) as f64
    }
}

pub async fn run(
    spec: &ServerSpec,
    connections: usize,
    sessions: usize,
    hold: Duration,
) -> Result<MemoryResult> {
    let dir = DataDir::new()?;
    let server = Server::start(spec, &dir).await?;
    let result = drive(&server, connections, sessions, hold).await;
    if result.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    result
}

async fn drive(
    server: &Server,
    connections: usize,
    sessions: usize,
    hold: Duration,
) -> Result<MemoryResult> {
    let api = Api::new(&server.base)?;
    let token = api.signup("Memory").await?;
    let mut targets = Vec::new();
    for s in 0..sessions {
        let session = api.create_session(&token, &format!("memory {s}")).await?;
        targets.push(Target {
            addr: server.addr,
            session,
            token: token.clone(),
        });
    }
    // Warm up: one connection to a throwaway session (code paths, thread-local caches).
    let warm = Target {
        session: api.create_session(&token, "warm-up").await?,
        ..targets[0].clone()
    };
    {
        let mut ws = connect(&warm).await?;
        handshake(&mut ws, &Doc::new()).await?;
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before_kib = server.rss_kib()?;

    let shared = Shared::new(0, 1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let synced = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let targets = Arc::new(targets);
    let opened: Vec<_> = stream::iter(0..connections)
        .map(|i| {
            let target = targets[i % targets.len()].clone();
            let shared = shared.clone();
            let stop = stop_rx.clone();
            let synced = synced.clone();
            async move {
                let mut ws = connect(&target).await?;
                handshake(&mut ws, &Doc::new()).await?;
                synced.fetch_add(1, Ordering::Relaxed);
                let (sink, stream) = ws.split();
                let reader = tokio::spawn(read_loop(stream, shared, 1, stop));
                Ok::<_, anyhow::Error>((sink, reader))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let connect_s = started.elapsed().as_secs_f64();
    let mut held = Vec::new();
    let mut failures = 0;
    for result in opened {
        match result {
            Ok(pair) => held.push(pair),
            Err(error) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("memory: a connection failed: {error:#}");
                }
            }
        }
    }
    if failures > 0 {
        let _ = stop_tx.send(true);
        bail!("{failures} of {connections} connections failed (is `ulimit -n` high enough?)");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open_kib = server.rss_kib()?;
    tokio::time::sleep(hold).await;
    let rss_held_kib = server.rss_kib()?;
    let alive = held.iter().filter(|(_, r)| !r.is_finished()).count();
    let _ = stop_tx.send(true);
    for (sink, reader) in held {
        let _ = reader.await;
        drop(sink);
    }
    Ok(MemoryResult {
        connections,
        sessions,
        rss_before_kib,
        rss_open_kib,
        rss_held_kib,
        hold_s: hold.as_secs_f64(),
        alive,
        connect_s,
    })
}
