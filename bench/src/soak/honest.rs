//! Honest editors: `sessions × per_session` clients, each typing `rate` characters a second (one
//! update each, as in the latency scenario) for the whole soak. Every receiver times each update
//! (send → received, into the histogram of the current minute) and checks that each other editor
//! of its session arrives complete and in order: the clocks of one writer's edits are
//! consecutive, so a skipped clock is a lost update and the count received must equal the count
//! sent.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    connect, handshake, histogram, kind, update_key, write_loop, Editor, Kind, Pace, Pattern,
    Shared, Target, WsSink, WsStream, WRITER_CLIENT_BASE,
};

/// Edits a writer may have in flight before its send times are overwritten (at 10 edits/s, 400 s).
const SEND_LOG_RING: usize = 4096;

/// Latency histograms by minute of the soak. A std `Mutex`: a receiver holds it to record one
/// value (a few thousand times a second in all), never across an `.await`.
pub struct Minutes {
    hists: Mutex<Vec<Histogram<u64>>>,
}

impl Minutes {
    fn record(&self, minute: usize, ns: u64) {
        let Ok(mut hists) = self.hists.lock() else {
            return;
        };
        while hists.len() <= minute {
            match histogram() {
                Ok(h) => hists.push(h),
                Err(_) => return,
            }
        }
        if let Some(h) = hists.get_mut(minute) {
            h.saturating_record(ns.max(1));
        }
    }

    /// A copy of the histograms so far.
    pub fn snapshot(&self) -> Vec<Histogram<u64>> {
        self.hists.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// What one receiver saw.
#[derive(Debug, Default)]
struct ReaderTally {
    /// Updates received from each writer of its session (index: writer within the session)…
    received: Vec<u64>,
    /// …and the clock expected next from each.
    next: Vec<u64>,
    /// Clocks skipped (an update missing between two received ones).
    skipped: u64,
    /// Updates received again or out of order.
    repeated: u64,
    /// Updates that are not another honest editor's of this session.
    foreign: u64,
    /// Why it ended before the soak did.
    ended: Option<String>,
}

/// A writer's task: its connection's write half, its editor and the edits it sent.
type WriterTask = JoinHandle<Result<(WsSink, Editor, u64)>>;

/// Honest editors at work.
pub struct Honest {
    /// When editing starts and stops.
    pub start: tokio::time::Instant,
    pub until: tokio::time::Instant,
    pub shared: Arc<Shared>,
    pub minutes: Arc<Minutes>,
    per_session: usize,
    /// By editor index (connections complete in any order).
    readers: Vec<(usize, JoinHandle<ReaderTally>)>,
    writers: Vec<(usize, WriterTask)>,
    stop: watch::Sender<bool>,
}

/// The totals at the end.
#[derive(Debug, Clone, Default)]
pub struct HonestResult {
    pub sent: u64,
    /// Every honest edit times the other editors of its session.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub skipped: u64,
    pub repeated: u64,
    pub foreign: u64,
    /// Honest connections that ended early (reasons).
    pub ended: Vec<String>,
    pub minutes: Vec<Histogram<u64>>,
}

/// Connects and syncs every honest editor, then starts them: editing from half a second later,
/// for `duration`.
pub async fn start(
    targets: &[Target],
    per_session: usize,
    rate: f64,
    duration: Duration,
) -> Result<Honest> {
    let n = targets.len() * per_session;
    let shared = Shared::new(n, SEND_LOG_RING);
    let minutes = Arc::new(Minutes {
        hists: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = stream::iter(0..n)
        .map(|i| async move {
            let target = targets
                .get(i / per_session)
                .ok_or_else(|| anyhow!("no target"))?;
            let editor = Editor::new(i, Pattern::Typing);
            let mut ws = connect(target).await?;
            handshake(&mut ws, editor.doc()).await?;
            Ok::<_, anyhow::Error>((i, ws, editor))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let until = start + duration;
    let (stop, stop_rx) = watch::channel(false);
    let period = 1.0 / rate;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, ws, editor) in clients {
        let (sink, stream) = ws.split();
        readers.push((
            i,
            tokio::spawn(read(
                stream,
                i,
                per_session,
                shared.clone(),
                minutes.clone(),
                stop_rx.clone(),
            )),
        ));
        let pace = Pace {
            rate: Some(rate),
            start: start + Duration::from_secs_f64(period * i as f64 / n as f64),
            until: Some(until),
            limit: None,
            batch: 1,
        };
        writers.push((
            i,
            tokio::spawn(write_loop(sink, editor, pace, shared.clone())),
        ));
    }
    Ok(Honest {
        start,
        until,
        shared,
        minutes,
        per_session,
        readers,
        writers,
        stop,
    })
}

impl Honest {
    /// Waits for the writers to finish, lets the last updates arrive, stops the readers and adds
    /// everything up.
    pub async fn finish(self) -> Result<HonestResult> {
        let mut result = HonestResult::default();
        // Edits sent by each editor (`None`: its connection failed).
        let mut sent_by = vec![None; self.writers.len()];
        let mut sinks = Vec::new();
        for (i, writer) in self.writers {
            match writer.await? {
                Ok((sink, _editor, sent)) => {
                    if let Some(slot) = sent_by.get_mut(i) {
                        *slot = Some(sent);
                    }
                    sinks.push(sink);
                }
                Err(error) => {
                    result
                        .ended
                        .push(format!("editor {i} could not send: {error}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = self.stop.send(true);
        let per = self.per_session;
        for (r, reader) in self.readers {
            let tally = reader.await?;
            let first = r / per * per;
            for (slot, &received) in tally.received.iter().enumerate() {
                let w = first + slot;
                if w == r {
                    continue;
                }
                result.delivered += received;
                if let Some(Some(sent)) = sent_by.get(w) {
                    result.expected += sent;
                    result.lost += sent.saturating_sub(received);
                }
            }
            result.skipped += tally.skipped;
            result.repeated += tally.repeated;
            result.foreign += tally.foreign;
            if let Some(reason) = tally.ended {
                result.ended.push(format!("editor {r}: {reason}"));
            }
        }
        drop(sinks);
        result.sent = sent_by.iter().flatten().sum();
        result.minutes = self.minutes.snapshot();
        Ok(result)
    }
}

/// Receiver `me`: reads until stopped, timing and checking every update.
async fn read(
    mut stream: WsStream,
    me: usize,
    per_session: usize,
    shared: Arc<Shared>,
    minutes: Arc<Minutes>,
    mut stop: watch::Receiver<bool>,
) -> ReaderTally {
    let first = (me / per_session * per_session) as u64;
    let mut tally = ReaderTally {
        received: vec![0; per_session],
        next: vec![0; per_session],
        ..ReaderTally::default()
    };
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            msg = stream.next() => msg,
        };
        let bytes = match msg {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(frame))) => {
                tally.ended = Some(format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                tally.ended = Some(format!("socket error: {error}"));
                break;
            }
            None => {
                tally.ended = Some("connection ended".into());
                break;
            }
        };
        let Kind::Update(update) = kind(&bytes) else {
            continue;
        };
        let now = shared.now_ns();
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        let Some((client, clock)) = update_key(update) else {
            tally.foreign += 1;
            continue;
        };
        let slot = client
            .checked_sub(WRITER_CLIENT_BASE)
            .and_then(|w| w.checked_sub(first))
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s < per_session && first + s as u64 != me as u64);
        let Some(slot) = slot else {
            tally.foreign += 1;
            continue;
        };
        let (Some(next), Some(received)) = (tally.next.get_mut(slot), tally.received.get_mut(slot))
        else {
            continue;
        };
        if clock < *next {
            tally.repeated += 1;
            continue;
        }
        tally.skipped += clock - *next;
        *next = clock + 1;
        *received += 1;
        if let Some(sent) = shared.log.sent_at(client, clock) {
            let minute = shared.phase.load(Ordering::Relaxed);
            minutes.record(minute, now.saturating_sub(sent));
        }
    }
    tally
}
