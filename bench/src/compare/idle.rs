//! Idle memory: the server's RSS before and after opening many synced, idle connections spread
//! over a few documents, held through server pings; (after − before) / connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};

use super::load::{self, Synced, Tally};
use super::servers::{Kind, Launcher};
use crate::server::DataDir;

#[derive(Debug, Clone)]
pub struct IdleResult {
    pub server: Kind,
    pub connections: usize,
    pub documents: usize,
    pub rss_before_kib: u64,
    pub rss_held_kib: u64,
    pub hold_s: f64,
    /// Connections still open at the end.
    pub alive: usize,
    /// Seconds to open and sync them all (64 at a time).
    pub open_s: f64,
}

impl IdleResult {
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_held_kib.saturating_sub(self.rss_before_kib) as f64 * 1024.0)
            / self.connections.max(1) as f64
    }
}

pub async fn run(
    launcher: &Launcher,
    kind: Kind,
    connections: usize,
    documents: usize,
    hold: Duration,
) -> Result<IdleResult> {
    let dir = DataDir::new()?;
    let server = launcher.start(kind, &dir).await?;
    let result = async {
        let rooms = Arc::new(launcher.rooms(kind, &server, documents + 1, "idle").await?);
        // Warm up on a document of its own: code paths, caches, the first document's cost.
        let warm = &rooms[documents];
        let joined = load::join(server.addr, warm, Instant::now(), Synced::Step2).await?;
        drop(joined);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before_kib = server.rss_kib()?;

        let tally = Tally::new(0, 1, 0)?;
        let started = Instant::now();
        let addr = server.addr;
        let opened: Vec<_> = stream::iter(0..connections)
            .map(|i| {
                let room = rooms[i % documents.max(1)].clone();
                let tally = tally.clone();
                async move {
                    let joined = load::join(addr, &room, Instant::now(), Synced::Step2).await?;
                    Ok::<_, anyhow::Error>(load::spawn(joined, room, usize::MAX, None, tally))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let open_s = started.elapsed().as_secs_f64();
        let mut held = Vec::new();
        let mut failures = 0;
        for result in opened {
            match result {
                Ok(handle) => held.push(handle),
                Err(error) => {
                    failures += 1;
                    if failures <= 3 {
                        eprintln!("  a connection failed: {error:#}");
                    }
                }
            }
        }
        if failures > 0 {
            load::stop_all(held).await;
            bail!("{failures} of {connections} connections failed (is `ulimit -n` high enough?)");
        }
        tokio::time::sleep(hold).await;
        let rss_held_kib = server.rss_kib()?;
        let alive = held.iter().filter(|h| !h.task.is_finished()).count();
        load::stop_all(held).await;
        Ok(IdleResult {
            server: kind,
            connections,
            documents,
            rss_before_kib,
            rss_held_kib,
            hold_s: hold.as_secs_f64(),
            alive,
            open_s,
        })
    }
    .await;
    if result.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    result
}
