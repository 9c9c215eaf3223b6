//! Scenario 4: how long a fresh client takes to sync a document built from many single-character
//! edits.
//!
//! The document is built through the server with real updates: `writers` clients each insert one
//! character per transaction into their view of a shared text, following a [`Pattern`] (typing
//! runs at random positions, or every character at a random position). They do not apply each
//! other's edits, so they edit concurrently, as far-apart peers would; they send as fast as the
//! server takes them; a watcher client counts the update frames it receives until it has all of
//! them. Then fresh clients (empty documents) connect one after the other and are timed from
//! connect until the server's step 2 is applied ("hot": the session is loaded). Finally the server
//! is restarted on the same database and one more client is timed ("cold": the first join loads
//! the document from SQLite).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use tokio::sync::watch;
use yrs::Doc;

use crate::api::Api;
use crate::client::{
    connect, handshake, read_loop, timed_sync, write_loop, Editor, Pace, Pattern, Shared,
    SyncTiming, Target,
};
use crate::server::{DataDir, Server, ServerSpec};

#[derive(Debug, Clone)]
pub struct SyncResult {
    pub pattern: Pattern,
    pub edits: u64,
    pub writers: usize,
    /// Seconds until the watcher had every update; edits per second accepted and fanned out.
    pub build_s: f64,
    pub hot: Vec<SyncTiming>,
    pub cold: Option<SyncTiming>,
}

impl SyncResult {
    /// The run with the median `synced` time.
    pub fn median(&self) -> Option<SyncTiming> {
        let mut runs = self.hot.clone();
        runs.sort_by_key(|t| t.synced);
        runs.get(runs.len() / 2).copied()
    }
}

pub async fn run(
    spec: &ServerSpec,
    pattern: Pattern,
    edits: u64,
    writers: usize,
    runs: usize,
) -> Result<SyncResult> {
    let dir = DataDir::new()?;
    let server = Server::start(spec, &dir).await?;
    let built = build(&server, pattern, edits, writers, runs).await;
    if built.is_err() {
        eprintln!("server log:\n{}", server.log_tail());
    }
    server.stop().await?;
    let (target, mut result) = built?;

    // Cold: a new server process on the same database; the first join loads the document.
    let server = Server::start(spec, &dir).await?;
    let target = Target {
        addr: server.addr,
        ..target
    };
    let cold = timed_sync(&target).await;
    server.stop().await?;
    let cold = cold?;
    check(&cold, edits)?;
    result.cold = Some(cold);
    Ok(result)
}

fn check(timing: &SyncTiming, edits: u64) -> Result<()> {
    if u64::from(timing.text_len) != edits {
        bail!(
            "synced text has {} characters, expected {edits}",
            timing.text_len
        );
    }
    Ok(())
}

async fn build(
    server: &Server,
    pattern: Pattern,
    edits: u64,
    writers: usize,
    runs: usize,
) -> Result<(Target, SyncResult)> {
    let api = Api::new(&server.base)?;
    let token = api.signup("Sync").await?;
    let target = Target {
        addr: server.addr,
        session: api.create_session(&token, "sync").await?,
        token,
    };
    let shared = Shared::new(writers, 1 << 16);
    let (stop_tx, stop_rx) = watch::channel(false);

    // The watcher counts every update frame (it receives all of them: it writes nothing).
    let mut watcher = connect(&target).await?;
    handshake(&mut watcher, &Doc::new()).await?;
    let (watcher_sink, watcher_stream) = watcher.split();
    let watcher_shared = Shared::new(0, 1);
    let (watcher_stop, watcher_stop_rx) = watch::channel(false);
    let watcher_reader = tokio::spawn(read_loop(
        watcher_stream,
        watcher_shared.clone(),
        1,
        watcher_stop_rx,
    ));

    // Connect every writer first, then let them all write.
    let mut connected = Vec::new();
    for w in 0..writers {
        let editor = Editor::new(w, pattern);
        let mut ws = connect(&target).await?;
        handshake(&mut ws, editor.doc()).await?;
        connected.push((ws, editor));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut readers = Vec::new();
    let per_writer = edits / writers as u64;
    for (w, (ws, editor)) in connected.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        readers.push(tokio::spawn(read_loop(
            stream,
            shared.clone(),
            1,
            stop_rx.clone(),
        )));
        let limit = if w + 1 == writers {
            edits - per_writer * (writers as u64 - 1)
        } else {
            per_writer
        };
        let pace = Pace {
            rate: None,
            start: tokio::time::Instant::now(),
            until: None,
            limit: Some(limit),
            batch: 32,
        };
        tasks.push(tokio::spawn(write_loop(sink, editor, pace, shared.clone())));
    }
    let mut sinks = Vec::new();
    for task in tasks {
        let (sink, _editor, _) = task.await??;
        sinks.push(sink);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let seen = watcher_shared
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed);
        if seen >= edits {
            break;
        }
        if watcher_reader.is_finished() {
            bail!("the watcher's connection ended after {seen} updates");
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {edits} updates arrived within 600 s");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("sync: {seen} of {edits} updates stored and fanned out");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let build_s = started.elapsed().as_secs_f64();
    eprintln!("sync: document of {edits} edits built in {build_s:.1} s");

    // Writers leave; the watcher stays (idle) so the session stays loaded.
    let _ = stop_tx.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    drop(sinks);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut hot = Vec::new();
    for _ in 0..runs {
        let timing = timed_sync(&target).await?;
        check(&timing, edits)?;
        hot.push(timing);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = watcher_stop.send(true);
    let _ = watcher_reader.await;
    drop(watcher_sink);
    Ok((
        target,
        SyncResult {
            pattern,
            edits,
            writers,
            build_s,
            hot,
            cold: None,
        },
    ))
}
