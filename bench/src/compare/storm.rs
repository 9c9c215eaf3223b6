//! Reconnect storm, as after a deploy: documents are built through the server (one writer
//! each, typing runs), the server is restarted on its data, and then every client connects at
//! the same instant, spread over the documents, each as a fresh client (empty state vector:
//! the server sends it the whole document). Per client: time from the storm's start until it has
//! the whole document (step 2 and any updates after it cover every edit, read from their
//! encoding without integrating them); the storm is over when every client has it. Clients stay connected
//! until then (the server keeps serving the others while it answers the late ones).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use super::load::{self, Plan, Synced, Tally};
use super::proto::Room;
use super::servers::{Kind, Launcher};
use crate::client::{Editor, Pattern};
use crate::server::{cpu_seconds, DataDir, Server};
use crate::Latencies;

#[derive(Debug, Clone)]
pub struct StormResult {
    pub server: Kind,
    pub clients: usize,
    pub documents: usize,
    pub edits_per_document: u64,
    /// From the storm's start until the last client was synced.
    pub all_synced_ms: f64,
    /// Per client, storm start → synced.
    pub per_client: Latencies,
    pub failed: usize,
    /// Mean bytes a client received to be synced.
    pub sync_bytes: f64,
    /// Server and generator CPU (cores) during the storm.
    pub server_cpu: f64,
    pub generator_cpu: f64,
}

pub async fn run(
    launcher: &Launcher,
    kind: Kind,
    clients: usize,
    documents: usize,
    edits: u64,
) -> Result<StormResult> {
    let dir = DataDir::new()?;
    let server = launcher.start(kind, &dir).await?;
    let built = build(launcher, kind, &server, documents, edits).await;
    if built.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    let rooms = built?;
    // The deploy: a new server process on the same data.
    let server = launcher.start(kind, &dir).await?;
    let result = storm(kind, &server, &rooms, clients, edits).await;
    if result.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    result
}

/// One writer per document sends `edits` edits; then each document is read back by a fresh
/// client until it holds them all.
async fn build(
    launcher: &Launcher,
    kind: Kind,
    server: &Server,
    documents: usize,
    edits: u64,
) -> Result<Vec<Room>> {
    let rooms = launcher.rooms(kind, server, documents, "storm").await?;
    let tally = Tally::new(documents, 1 << 12, 0)?;
    let mut handles = Vec::new();
    for (d, room) in rooms.iter().enumerate() {
        let mut editor = Editor::new(d, Pattern::Typing);
        let plan = Plan::encode(&mut editor, d, room, edits as usize)?.unpaced(32);
        let joined = load::join(server.addr, room, Instant::now(), Synced::Step2).await?;
        let handle = load::spawn(
            joined,
            room.clone(),
            usize::MAX,
            Some(editor.client()),
            tally.clone(),
        );
        let _ = handle.orders.send(load::Order::Send(plan));
        handles.push(handle);
    }
    let total = edits * documents as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while tally.sent.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            bail!("the documents were not sent within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read each document back: a fresh client is synced once the server has applied every edit.
    for room in &rooms {
        load::join(server.addr, room, Instant::now(), Synced::Applied(edits)).await?;
    }
    load::stop_all(handles).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(rooms)
}

async fn storm(
    kind: Kind,
    server: &Server,
    rooms: &[Room],
    clients: usize,
    edits: u64,
) -> Result<StormResult> {
    let tally = Tally::new(0, 1, 0)?;
    let rooms = Arc::new(rooms.to_vec());
    let server_cpu_before = server.cpu_seconds()?;
    let generator_cpu_before = cpu_seconds("self")?;
    let started = Instant::now();
    let addr = server.addr;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let rooms = rooms.clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let room = rooms[i % rooms.len()].clone();
                let joined = load::join(addr, &room, started, Synced::Edits(edits)).await?;
                let (synced, bytes) = (joined.synced, joined.sync_bytes);
                // Stay connected, serving pings, until the storm is over.
                let handle = load::spawn(joined, room, usize::MAX, None, tally);
                Ok::<_, anyhow::Error>((synced, bytes, handle))
            })
        })
        .collect();
    let mut per_client = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut handles = Vec::new();
    let (mut failed, mut last, mut bytes) = (0, Duration::ZERO, 0usize);
    for task in tasks {
        match task.await? {
            Ok((synced, sync_bytes, handle)) => {
                per_client.saturating_record(synced.as_micros().max(1) as u64);
                last = last.max(synced);
                bytes += sync_bytes;
                handles.push(handle);
            }
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("  a client failed: {error:#}");
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let server_cpu = (server.cpu_seconds()? - server_cpu_before) / elapsed;
    let generator_cpu = (cpu_seconds("self")? - generator_cpu_before) / elapsed;
    let synced = handles.len();
    load::stop_all(handles).await;
    Ok(StormResult {
        server: kind,
        clients,
        documents: rooms.len(),
        edits_per_document: edits,
        all_synced_ms: last.as_secs_f64() * 1e3,
        per_client: Latencies::from_micros(&per_client),
        failed,
        sync_bytes: bytes as f64 / synced.max(1) as f64,
        server_cpu,
        generator_cpu,
    })
}
