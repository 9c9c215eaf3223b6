//! Cold sync: a document of many single-character edits (typing runs, from several writers) is
//! built through the server; then, for each run, the server is restarted on its data and one
//! fresh client is timed from TCP connect until it has applied, with yrs, the server's step 2 and
//! whatever updates it takes for its text to hold every edit ("synced"; y-websocket answers before
//! it has loaded the document and sends the document as an update once loaded).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::load::{self, Plan, Synced, Tally};
use super::proto::Room;
use super::servers::{Kind, Launcher};
use crate::client::{Editor, Pattern};
use crate::server::{DataDir, Server};

#[derive(Debug, Clone)]
pub struct ColdResult {
    pub server: Kind,
    pub edits: u64,
    pub writers: usize,
    /// Seconds until a watching client had received every edit.
    pub build_s: f64,
    pub runs: Vec<ColdRun>,
}

/// One fresh client after a restart.
#[derive(Debug, Clone, Copy)]
pub struct ColdRun {
    pub connected: Duration,
    pub step2_received: Duration,
    /// Step 2 (and any updates after it) applied: the client's text holds every edit.
    pub synced: Duration,
    /// Bytes of step 2 and those updates.
    pub sync_bytes: usize,
}

impl ColdResult {
    /// The first start after the document was built: it loads the document as the writers left
    /// it (y-leveldb, for one, merges its update log on this load).
    pub fn first(&self) -> Option<ColdRun> {
        self.runs.first().copied()
    }

    /// The median of the later restarts, which load the document as the first one left it.
    pub fn later_median(&self) -> Option<ColdRun> {
        let mut runs = self.runs.get(1..)?.to_vec();
        runs.sort_by_key(|r| r.synced);
        runs.get(runs.len() / 2).copied()
    }
}

pub async fn run(
    launcher: &Launcher,
    kind: Kind,
    edits: u64,
    writers: usize,
    runs: usize,
) -> Result<ColdResult> {
    let dir = DataDir::new()?;
    let server = launcher.start(kind, &dir).await?;
    let built = build(launcher, kind, &server, edits, writers).await;
    if built.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    let (room, build_s) = built?;
    let mut timed = Vec::new();
    for _ in 0..runs {
        let server = launcher.start(kind, &dir).await?;
        let run = timed_sync(&server, &room, edits).await;
        if run.is_err() {
            eprintln!("server log:\n{}", server.log_tail());
        }
        server.stop().await?;
        timed.push(run?);
    }
    Ok(ColdResult {
        server: kind,
        edits,
        writers,
        build_s,
        runs: timed,
    })
}

/// Builds the document; returns its room and the seconds it took.
async fn build(
    launcher: &Launcher,
    kind: Kind,
    server: &Server,
    edits: u64,
    writers: usize,
) -> Result<(Room, f64)> {
    let room = launcher.rooms(kind, server, 1, "cold").await?.remove(0);
    // The watcher writes nothing: it receives every edit once.
    let watch = Tally::new(0, 1, 0)?;
    let watcher = load::join(server.addr, &room, Instant::now(), Synced::Step2).await?;
    let watcher = load::spawn(watcher, room.clone(), usize::MAX, None, watch.clone());
    let tally = Tally::new(writers, 1 << 12, 0)?;
    let mut handles = Vec::new();
    let mut plans = Vec::new();
    let per_writer = edits / writers as u64;
    for w in 0..writers {
        let count = if w + 1 == writers {
            edits - per_writer * (writers as u64 - 1)
        } else {
            per_writer
        };
        let mut editor = Editor::new(w, Pattern::Typing);
        plans.push(Plan::encode(&mut editor, w, &room, count as usize)?.unpaced(32));
        let joined = load::join(server.addr, &room, Instant::now(), Synced::Step2).await?;
        handles.push(load::spawn(
            joined,
            room.clone(),
            usize::MAX,
            Some(editor.client()),
            tally.clone(),
        ));
    }
    let started = Instant::now();
    for (plan, handle) in plans.into_iter().zip(&handles) {
        let _ = handle.orders.send(load::Order::Send(plan));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let seen = watch.delivered.load(Ordering::Relaxed);
        if seen >= edits {
            break;
        }
        if watcher.task.is_finished() {
            bail!("the watcher's connection ended after {seen} updates");
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {edits} updates arrived within 600 s");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {seen} of {edits} edits stored and relayed");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let build_s = started.elapsed().as_secs_f64();
    handles.push(watcher);
    load::stop_all(handles).await;
    // Let the server see the clients leave (Hocuspocus stores a document when its last client
    // leaves) before it is asked to stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((room, build_s))
}

async fn timed_sync(server: &Server, room: &Room, edits: u64) -> Result<ColdRun> {
    let started = Instant::now();
    let joined = load::join(server.addr, room, started, Synced::Applied(edits)).await?;
    Ok(ColdRun {
        connected: joined.connected,
        step2_received: joined.step2_received,
        synced: joined.synced,
        sync_bytes: joined.sync_bytes,
    })
}
