//! A y-websocket client over a raw WebSocket, with yrs: connect to `/ws/{session}?token=…`, sync
//! (our step 1 at once, as y-websocket does; the server's step 1 answered with step 2; its step 2
//! applied), then send one sync `update` frame per yrs transaction.
//!
//! Latency bookkeeping: every writer has a fixed yrs client id (`WRITER_CLIENT_BASE + index`) and
//! inserts exactly one character per transaction, so the first struct of each update is
//! `(client id, clock)` with the clock counting that writer's edits. The writer notes its send
//! time under that key in a [`SendLog`]; a receiver reads the key from the update's header (two
//! varints, no decoding of the whole update) and records `now - sent`. One process, one clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use atelier_protocol::ysync::{
    decode_frame, encode_frame, encode_update_frame, Frame, SyncMessage,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, TextRef, Transact, Update};

pub type Ws = WebSocketStream<TcpStream>;
pub type WsSink = SplitSink<Ws, Message>;
pub type WsStream = SplitStream<Ws>;

/// yrs client id of writer 0; writer `i` uses `WRITER_CLIENT_BASE + i`.
pub const WRITER_CLIENT_BASE: u64 = 1_000_000;

/// Name of the shared text every writer edits.
pub const TEXT: &str = "bench";

/// Where a client connects.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub session: String,
    pub token: String,
}

/// TCP connect (no Nagle, like browsers) and WebSocket upgrade.
pub async fn connect(target: &Target) -> Result<Ws> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let url = format!(
        "ws://{}/ws/{}?token={}",
        target.addr, target.session, target.token
    );
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .context("WebSocket upgrade")?;
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------
// Light frame parsing (lib0 varints): what a receiver needs on its hot path.

fn var_u64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn var_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(var_u64(buf, pos)?).ok()?;
    let bytes = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(bytes)
}

/// What a received binary message is, as far as the benchmark cares.
pub enum Kind<'a> {
    Step1(&'a [u8]),
    Step2(&'a [u8]),
    Update(&'a [u8]),
    Other,
}

pub fn kind(frame: &[u8]) -> Kind<'_> {
    let mut pos = 0;
    if var_u64(frame, &mut pos) != Some(0) {
        return Kind::Other;
    }
    let sub = var_u64(frame, &mut pos);
    let Some(payload) = var_bytes(frame, &mut pos) else {
        return Kind::Other;
    };
    match sub {
        Some(0) => Kind::Step1(payload),
        Some(1) => Kind::Step2(payload),
        Some(2) => Kind::Update(payload),
        _ => Kind::Other,
    }
}

/// `(client, clock)` of the first struct of a v1 update: `varUint(clients) varUint(structs)
/// varUint(client) varUint(clock) …`.
pub fn update_key(update: &[u8]) -> Option<(u64, u64)> {
    let mut pos = 0;
    let clients = var_u64(update, &mut pos)?;
    if clients == 0 {
        return None;
    }
    let _structs = var_u64(update, &mut pos)?;
    let client = var_u64(update, &mut pos)?;
    let clock = var_u64(update, &mut pos)?;
    Some((client, clock))
}

// ---------------------------------------------------------------------------------------------
// Sync handshake.

/// Sends our step 1, answers the server's step 1 with step 2, applies the server's step 2.
/// Updates from other clients that arrive meanwhile are ignored (no scenario needs them).
pub async fn handshake(ws: &mut Ws, doc: &Doc) -> Result<()> {
    let sv = doc.transact().state_vector();
    ws.send(Message::binary(encode_frame(&Frame::step1(sv))))
        .await?;
    let (mut got_step1, mut got_step2) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(got_step1 && got_step2) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no sync within 60 s"))?
            .ok_or_else(|| anyhow!("closed during sync"))??;
        let bytes = match msg {
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => bail!("closed during sync: {frame:?}"),
            _ => continue,
        };
        match decode_frame(&bytes) {
            Ok(Frame::Sync(SyncMessage::SyncStep1(sv))) => {
                let diff = doc.transact().encode_state_as_update_v1(&sv);
                ws.send(Message::binary(encode_frame(&Frame::Sync(
                    SyncMessage::SyncStep2(diff),
                ))))
                .await?;
                got_step1 = true;
            }
            Ok(Frame::Sync(SyncMessage::SyncStep2(update))) => {
                let update = Update::decode_v1(&update)?;
                doc.transact_mut().apply_update(update)?;
                got_step2 = true;
            }
            Ok(_) => {}
            Err(error) => bail!("bad frame from server: {error}"),
        }
    }
    Ok(())
}

/// One fresh client's sync, timed.
#[derive(Debug, Clone, Copy)]
pub struct SyncTiming {
    /// TCP connect + WebSocket upgrade.
    pub connected: Duration,
    /// Until the whole step-2 message was received.
    pub step2_received: Duration,
    /// Until step 2 was decoded and applied to the client's document: "synced".
    pub synced: Duration,
    pub step2_bytes: usize,
    pub text_len: u32,
    /// Encoding the synced document's full state again, on the client: a stand-in for what the
    /// server does for every step 1 it answers (`encode_state_as_update_v1`).
    pub encode: Duration,
}

/// Connects a fresh client (empty document) and times it until the server's step 2 is applied.
/// Sends step 1 right after the upgrade, as y-websocket does on open; parses frames with the
/// light parser and applies with plain yrs, as a stock client would (no extra validation pass).
pub async fn timed_sync(target: &Target) -> Result<SyncTiming> {
    let started = Instant::now();
    let mut ws = connect(target).await?;
    let connected = started.elapsed();
    let doc = Doc::new();
    let text = doc.get_or_insert_text(TEXT);
    let sv = doc.transact().state_vector();
    ws.send(Message::binary(encode_frame(&Frame::step1(sv))))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no sync within 120 s"))?
            .ok_or_else(|| anyhow!("closed during sync"))??;
        let bytes = match msg {
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => bail!("closed during sync: {frame:?}"),
            _ => continue,
        };
        match kind(&bytes) {
            Kind::Step1(sv) => {
                let sv = StateVector::decode_v1(sv)?;
                let diff = doc.transact().encode_state_as_update_v1(&sv);
                ws.send(Message::binary(encode_frame(&Frame::Sync(
                    SyncMessage::SyncStep2(diff),
                ))))
                .await?;
            }
            Kind::Step2(update) => {
                let step2_received = started.elapsed();
                let step2_bytes = update.len();
                doc.transact_mut()
                    .apply_update(Update::decode_v1(update)?)?;
                let synced = started.elapsed();
                let text_len = text.len(&doc.transact());
                let _ = ws.close(None).await;
                let encode_started = Instant::now();
                let full = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let encode = encode_started.elapsed();
                drop(full);
                return Ok(SyncTiming {
                    connected,
                    step2_received,
                    synced,
                    step2_bytes,
                    text_len,
                    encode,
                });
            }
            Kind::Update(_) | Kind::Other => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Send log and shared counters.

struct Slot {
    /// `clock + 1` of the edit whose time is in `at_ns` (0: empty).
    key: AtomicU64,
    at_ns: AtomicU64,
}

/// Send times of every writer's recent edits (a ring per writer, indexed by clock).
pub struct SendLog {
    rings: Vec<Box<[Slot]>>,
    mask: u64,
}

impl SendLog {
    /// `ring` is rounded up to a power of two; it must exceed the edits a writer makes while
    /// one of them is in flight.
    pub fn new(writers: usize, ring: usize) -> Self {
        let ring = ring.next_power_of_two();
        let rings = (0..writers)
            .map(|_| {
                (0..ring)
                    .map(|_| Slot {
                        key: AtomicU64::new(0),
                        at_ns: AtomicU64::new(0),
                    })
                    .collect()
            })
            .collect();
        Self {
            rings,
            mask: ring as u64 - 1,
        }
    }

    fn slot(&self, client: u64, clock: u64) -> Option<&Slot> {
        let writer = usize::try_from(client.checked_sub(WRITER_CLIENT_BASE)?).ok()?;
        let ring = self.rings.get(writer)?;
        ring.get(usize::try_from(clock & self.mask).ok()?)
    }

    pub fn record(&self, client: u64, clock: u64, at_ns: u64) {
        if let Some(slot) = self.slot(client, clock) {
            slot.at_ns.store(at_ns, Ordering::Relaxed);
            slot.key.store(clock + 1, Ordering::Release);
        }
    }

    pub fn sent_at(&self, client: u64, clock: u64) -> Option<u64> {
        let slot = self.slot(client, clock)?;
        (slot.key.load(Ordering::Acquire) == clock + 1).then(|| slot.at_ns.load(Ordering::Relaxed))
    }
}

/// What every client task of a run shares.
pub struct Shared {
    epoch: Instant,
    pub log: SendLog,
    /// Update frames received by all clients.
    pub delivered: AtomicU64,
    /// Update frames sent by all writers.
    pub sent: AtomicU64,
    /// Histogram index the receivers record into (the throughput scenario's step).
    pub phase: AtomicUsize,
}

impl Shared {
    pub fn new(writers: usize, ring: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            log: SendLog::new(writers, ring),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            phase: AtomicUsize::new(0),
        })
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Latency histogram in nanoseconds (1 ns … 10 min, 3 significant digits).
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000_000, 3)?)
}

// ---------------------------------------------------------------------------------------------
// Reader and writer loops.

/// What a receiver saw.
pub struct ReaderStats {
    /// One histogram per phase.
    pub latency: Vec<Histogram<u64>>,
    pub updates: u64,
    /// Updates whose send time was not in the log (other sources, or overwritten).
    pub unmatched: u64,
    /// Set when the server closed the connection or the socket failed.
    pub ended: Option<String>,
}

/// Reads until `stop` turns true or the connection ends, timing every update frame. Pings are
/// answered by tungstenite while reading.
pub async fn read_loop(
    mut stream: WsStream,
    shared: Arc<Shared>,
    phases: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<ReaderStats> {
    let mut stats = ReaderStats {
        latency: (0..phases.max(1))
            .map(|_| histogram())
            .collect::<Result<_>>()?,
        updates: 0,
        unmatched: 0,
        ended: None,
    };
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            msg = stream.next() => msg,
        };
        match msg {
            Some(Ok(Message::Binary(bytes))) => {
                let Kind::Update(update) = kind(&bytes) else {
                    continue;
                };
                let now = shared.now_ns();
                stats.updates += 1;
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                let sent = update_key(update).and_then(|(c, k)| shared.log.sent_at(c, k));
                match sent {
                    Some(sent) => {
                        let phase = shared.phase.load(Ordering::Relaxed);
                        let last = stats.latency.len() - 1;
                        if let Some(h) = stats.latency.get_mut(phase.min(last)) {
                            h.saturating_record(now.saturating_sub(sent).max(1));
                        }
                    }
                    None => stats.unmatched += 1,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                stats.ended = Some(format!("closed by server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                stats.ended = Some(format!("socket error: {error}"));
                break;
            }
            None => {
                stats.ended = Some("connection ended".into());
                break;
            }
        }
    }
    Ok(stats)
}

/// Where a writer puts its characters (one character per transaction either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Like a person typing: runs of 1–32 characters, each run at a random position. yrs merges
    /// the characters of a run into one block, as it does for real typing.
    Typing,
    /// Every character at a random position: the worst case, no two edits merge into one block
    /// (slow to build: yrs finds a text position by walking the blocks).
    Random,
}

/// A writer's document and its editing pattern.
pub struct Editor {
    doc: Doc,
    text: TextRef,
    client: u64,
    rng: u64,
    pattern: Pattern,
    /// Typing: where the next character goes, and how many remain in the run.
    cursor: u32,
    run_left: u32,
    pub edits: u64,
}

impl Editor {
    pub fn new(writer: usize, pattern: Pattern) -> Self {
        let client = WRITER_CLIENT_BASE + writer as u64;
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text(TEXT);
        Self {
            doc,
            text,
            client,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (client.wrapping_mul(0xBF58_476D_1CE4_E5B9)),
            pattern,
            cursor: 0,
            run_left: 0,
            edits: 0,
        }
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The yrs client id of this writer's edits.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// Makes one edit; returns its clock and the encoded sync-update frame.
    pub fn edit(&mut self) -> (u64, Vec<u8>) {
        let (clock, update) = self.edit_update();
        (clock, encode_update_frame(&update))
    }

    /// Makes one edit (one character inserted, one yrs transaction); returns its clock and the
    /// v1 update.
    pub fn edit_update(&mut self) -> (u64, Vec<u8>) {
        let pick = self.next_random();
        let ch = char::from(b'a' + (pick % 26) as u8);
        let len = self.text.len(&self.doc.transact());
        let pos = match self.pattern {
            Pattern::Random => ((pick >> 8) % (u64::from(len) + 1)) as u32,
            Pattern::Typing => {
                if self.run_left == 0 || self.cursor > len {
                    self.cursor = ((pick >> 8) % (u64::from(len) + 1)) as u32;
                    self.run_left = 1 + ((pick >> 40) % 32) as u32;
                }
                self.run_left -= 1;
                self.cursor += 1;
                self.cursor - 1
            }
        };
        let mut txn = self.doc.transact_mut();
        let clock = u64::from(txn.state_vector().get(&yrs::ClientID::new(self.client)));
        let mut buf = [0u8; 4];
        self.text.insert(&mut txn, pos, ch.encode_utf8(&mut buf));
        let update = txn.encode_update_v1();
        drop(txn);
        self.edits += 1;
        (clock, update)
    }
}

/// How a writer paces its edits.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Edits per second; `None`: as fast as the socket takes them.
    pub rate: Option<f64>,
    pub start: tokio::time::Instant,
    /// Stop at this time…
    pub until: Option<tokio::time::Instant>,
    /// …or after this many edits.
    pub limit: Option<u64>,
    /// Most edits written before one flush (when catching up, or unpaced).
    pub batch: u64,
}

/// Writes edits as paced; returns the sink and editor so that the connection can be reused.
pub async fn write_loop(
    mut sink: WsSink,
    mut editor: Editor,
    pace: Pace,
    shared: Arc<Shared>,
) -> Result<(WsSink, Editor, u64)> {
    tokio::time::sleep_until(pace.start).await;
    let mut sent: u64 = 0;
    loop {
        let now = tokio::time::Instant::now();
        if pace.until.is_some_and(|until| now >= until)
            || pace.limit.is_some_and(|limit| sent >= limit)
        {
            break;
        }
        let due = match pace.rate {
            Some(rate) => ((now - pace.start).as_secs_f64() * rate).floor() as u64 + 1,
            None => u64::MAX,
        };
        let mut n = due.saturating_sub(sent).min(pace.batch.max(1));
        if let Some(limit) = pace.limit {
            n = n.min(limit - sent);
        }
        for _ in 0..n {
            let (clock, frame) = editor.edit();
            shared.log.record(editor.client, clock, shared.now_ns());
            sink.feed(Message::binary(frame)).await?;
        }
        sink.flush().await?;
        sent += n;
        shared.sent.fetch_add(n, Ordering::Relaxed);
        match pace.rate {
            Some(rate) => {
                let next = pace.start + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(next).await;
            }
            // Editing is CPU work and the socket is usually ready: let the other tasks run.
            None => tokio::task::yield_now().await,
        }
    }
    Ok((sink, editor, sent))
}
