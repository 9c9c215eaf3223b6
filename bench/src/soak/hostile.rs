//! Hostile clients: each worker cycles through the [`Kind`]s, one connection per attempt, and
//! reconnects after the server closes it; what ended each attempt is tallied by kind. A churner per
//! hostile session keeps that document changing (large values, overwritten) so that clients that
//! do not read have something piling up.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use atelier_protocol::ysync::{encode_frame, encode_update_frame, Frame};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use yrs::{Doc, Map, StateVector, Text, Transact};

use super::craft::{self, Rng};
use crate::client::{handshake, Ws, WsSink};

/// What a hostile connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// One message over the 1 MiB limit: a single 1.5 MiB frame, or 1.5 MiB in 128 KiB fragments.
    Oversize,
    /// An update nesting `Y.Map`s past the depth bound (33 … 2,000 levels; every third attempt
    /// 50,000 levels, ~400 KB).
    Nested,
    /// Valid one-character updates as fast as the socket takes them.
    Flood,
    /// Syncs, then never reads (4 KiB receive buffer) while the document changes; keeps sending
    /// a small presence heartbeat, so only the outbound bound can end it.
    NonReader,
    /// A share-link viewer that never reads and asks for the whole document 100 times a second
    /// (step 1 naming an edit the server lacks).
    StepOneSpam,
    /// Presence spam: 4–16 KiB awareness states under fresh client ids, 20 a second.
    Presence,
    /// Garbage: unknown message types, impossible lengths, endless varints, random update bytes,
    /// text frames.
    Garbage,
    /// Reads, and sends a step 1 50 times a second for 8 s (under the rate limit), then leaves.
    StepOneRepeat,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Oversize,
        Kind::Nested,
        Kind::Flood,
        Kind::NonReader,
        Kind::StepOneSpam,
        Kind::Presence,
        Kind::Garbage,
        Kind::StepOneRepeat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Oversize => "oversize message",
            Kind::Nested => "nested maps",
            Kind::Flood => "update flood",
            Kind::NonReader => "never reads",
            Kind::StepOneSpam => "viewer step-1 spam, never reads",
            Kind::Presence => "presence spam",
            Kind::Garbage => "garbage frames",
            Kind::StepOneRepeat => "repeated step 1, reads",
        }
    }

    /// What the server should do to it.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Oversize => "1009",
            Kind::Nested => "4422",
            Kind::Flood | Kind::Presence => "1008",
            Kind::NonReader | Kind::StepOneSpam => "1008, or cut when unread 10 s",
            Kind::Garbage => "1002/1003",
            Kind::StepOneRepeat => "served until it leaves",
        }
    }

    pub fn is_expected(self, outcome: Outcome) -> bool {
        match self {
            Kind::Oversize => outcome == Outcome::Closed(1009),
            Kind::Nested => outcome == Outcome::Closed(4422),
            Kind::Flood | Kind::Presence => outcome == Outcome::Closed(1008),
            Kind::NonReader | Kind::StepOneSpam => {
                matches!(outcome, Outcome::Closed(1008) | Outcome::Cut)
            }
            Kind::Garbage => matches!(outcome, Outcome::Closed(1002 | 1003)),
            Kind::StepOneRepeat => outcome == Outcome::ClientLeft,
        }
    }
}

/// How one hostile connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The server sent a close frame with this code (1005: a close frame without a code).
    Closed(u16),
    /// The connection ended without a close frame (reset, or EOF).
    Dropped,
    /// TCP connect or the upgrade failed.
    Refused,
    /// The client closed it after doing its part (and the server let it).
    ClientLeft,
    /// Still open when the client stopped waiting.
    StillOpen,
    /// A client that was not reading found its connection gone (reset) without having read a
    /// close frame: what the server does to a slow reader whose close frame cannot be delivered
    /// within 10 s of the verdict.
    Cut,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Closed(code) => write!(f, "{code}"),
            Outcome::Dropped => f.write_str("no close frame"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::ClientLeft => f.write_str("client left"),
            Outcome::StillOpen => f.write_str("still open"),
            Outcome::Cut => f.write_str("cut while not reading"),
        }
    }
}

/// One hostile session: hostile clients join it as an editor (the session's owner) or through a
/// viewer share link.
#[derive(Debug, Clone)]
pub struct HostileSession {
    pub id: String,
    pub editor_token: String,
    pub viewer_token: String,
}

/// Where hostile clients connect.
#[derive(Debug)]
pub struct Arena {
    pub addr: SocketAddr,
    pub sessions: Vec<HostileSession>,
}

/// Attempts and outcomes by kind. A std `Mutex`: held for a map update, never across an `.await`.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<TallyInner>,
    /// Large values the churners wrote, and how often a churner had to reconnect.
    pub churn_updates: AtomicU64,
    pub churn_reconnects: AtomicU64,
}

#[derive(Debug, Default, Clone)]
pub struct TallyInner {
    pub attempts: BTreeMap<Kind, u64>,
    pub outcomes: BTreeMap<Kind, BTreeMap<Outcome, u64>>,
}

impl Tally {
    fn started(&self, kind: Kind) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner.attempts.entry(kind).or_default() += 1;
        }
    }

    fn ended(&self, kind: Kind, outcome: Outcome) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner
                .outcomes
                .entry(kind)
                .or_default()
                .entry(outcome)
                .or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> TallyInner {
        self.inner
            .lock()
            .map(|inner| inner.clone())
            .unwrap_or_default()
    }
}

/// Pause between one attempt's end and the next connection.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// How long a non-reading client holds its socket without reading (unless the server cuts it
/// first) before it reads what is left to see how the server ended it. The server gives up on a
/// slow reader once its outbound budget is full (4 MiB, ~20 s of the churn here) and drops the
/// socket 10 s later if the close frame could not be written.
const STALL: Duration = Duration::from_secs(60);

/// Worker `index`: attempts forever (the soak aborts it at the end), starting at kind
/// `index % 8` so that every kind runs from the start.
pub async fn worker(arena: Arc<Arena>, tally: Arc<Tally>, index: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ index as u64);
    let sessions = arena.sessions.len().max(1);
    for round in 0u64.. {
        let kind = Kind::ALL[(index + round as usize) % Kind::ALL.len()];
        let session = &arena.sessions[(index + round as usize) % sessions];
        tally.started(kind);
        let outcome = attempt(kind, arena.addr, session, &mut rng, round).await;
        tally.ended(kind, outcome);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

async fn attempt(
    kind: Kind,
    addr: SocketAddr,
    session: &HostileSession,
    rng: &mut Rng,
    round: u64,
) -> Outcome {
    let viewer = match kind {
        Kind::StepOneSpam => true,
        Kind::Presence => round % 2 == 1,
        _ => false,
    };
    let token = if viewer {
        &session.viewer_token
    } else {
        &session.editor_token
    };
    let small_buffer = matches!(kind, Kind::NonReader | Kind::StepOneSpam);
    let Ok(ws) = open(addr, &session.id, token, small_buffer).await else {
        return Outcome::Refused;
    };
    match kind {
        Kind::Oversize => oversize(ws, round % 2 == 1).await,
        Kind::Nested => {
            let levels = if round.is_multiple_of(3) {
                50_000
            } else {
                rng.between(33, 2_000)
            };
            let frame = craft::nested_maps_frame(rng.client_id(), levels);
            drive(ws, Duration::from_secs(20), move |mut sink, _| async move {
                let _ = sink.send(Message::binary(frame)).await;
            })
            .await
        }
        Kind::Flood => flood(ws, rng.client_id()).await,
        Kind::NonReader => non_reader(ws, rng.client_id()).await,
        Kind::StepOneSpam => step_one_spam(ws, rng.client_id()).await,
        Kind::Presence => presence(ws, rng.clone()).await,
        Kind::Garbage => {
            let message = if round % 6 == 5 {
                Message::text("{\"hello\":\"text frames are not y-websocket\"}")
            } else {
                Message::binary(craft::garbage_frame(rng, round))
            };
            drive(ws, Duration::from_secs(10), move |mut sink, _| async move {
                let _ = sink.send(message).await;
            })
            .await
        }
        Kind::StepOneRepeat => step_one_repeat(ws, rng.client_id()).await,
    }
}

/// TCP connect and upgrade to `/ws/{session}`; `small_buffer`: a 4 KiB receive buffer, so that
/// what the client does not read piles up on the server rather than in this kernel.
async fn open(addr: SocketAddr, session: &str, token: &str, small_buffer: bool) -> Result<Ws> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    let tcp = socket.connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/ws/{session}?token={token}");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .context("upgrade timed out")?
    .context("WebSocket upgrade")?;
    Ok(ws)
}

/// Reads (discarding everything) until the server's close frame, the end of the connection, or
/// `within`.
async fn await_close<S>(stream: &mut S, within: Duration) -> Outcome
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Outcome::StillOpen,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Outcome::Closed(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Outcome::Dropped,
        }
    }
}

/// Runs `send` on the write half while this reads for the server's verdict. `send` sets the flag
/// it is given before closing the connection itself.
async fn drive<F, Fut>(ws: Ws, within: Duration, send: F) -> Outcome
where
    F: FnOnce(WsSink, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let left = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send(sink, left.clone()));
    let outcome = await_close(&mut stream, within).await;
    sender.abort();
    let client_left = left.load(Ordering::Relaxed)
        && matches!(outcome, Outcome::Closed(1000 | 1005) | Outcome::Dropped);
    if client_left {
        Outcome::ClientLeft
    } else {
        outcome
    }
}

async fn oversize(ws: Ws, fragmented: bool) -> Outcome {
    drive(ws, Duration::from_secs(20), move |mut sink, _| async move {
        if fragmented {
            // Every fragment is small; the message they make is not.
            let chunk = bytes_of(128 << 10);
            let count = 12;
            for i in 0..count {
                let opcode = if i == 0 { Data::Binary } else { Data::Continue };
                let frame = WsFrame::message(chunk.clone(), OpCode::Data(opcode), i == count - 1);
                if sink.send(Message::Frame(frame)).await.is_err() {
                    return;
                }
            }
        } else {
            let _ = sink
                .send(Message::binary(craft::oversize_update_frame(3 << 19)))
                .await;
        }
    })
    .await
}

fn bytes_of(len: usize) -> tokio_tungstenite::tungstenite::Bytes {
    tokio_tungstenite::tungstenite::Bytes::from(vec![0u8; len])
}

async fn flood(ws: Ws, client: u64) -> Outcome {
    drive(ws, Duration::from_secs(30), move |mut sink, _| async move {
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("flood");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            for _ in 0..50 {
                let update = {
                    let mut txn = doc.transact_mut();
                    text.push(&mut txn, "x");
                    txn.encode_update_v1()
                };
                if sink
                    .feed(Message::binary(encode_update_frame(&update)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Sends `frames` every `period` without ever reading, for [`STALL`] or until sending fails (the
/// server dropped the connection); then reads what the server left to find how it ended it.
async fn stall_then_drain(
    mut ws: Ws,
    period: Duration,
    mut frames: impl FnMut() -> Vec<Vec<u8>>,
) -> Outcome {
    let until = Instant::now() + STALL;
    let mut cut = false;
    'stall: while Instant::now() < until {
        for frame in frames() {
            match tokio::time::timeout_at(until, ws.send(Message::binary(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    cut = true;
                    break 'stall;
                }
                Err(_) => break 'stall,
            }
        }
        tokio::time::sleep(period).await;
    }
    match await_close(&mut ws, Duration::from_secs(30)).await {
        Outcome::Dropped if cut => Outcome::Cut,
        outcome => outcome,
    }
}

async fn non_reader(mut ws: Ws, client: u64) -> Outcome {
    // As a stock client does on open: its step 1. Then it stops reading.
    if ws
        .send(Message::binary(encode_frame(&Frame::step1(
            StateVector::default(),
        ))))
        .await
        .is_err()
    {
        return Outcome::Dropped;
    }
    let mut clock = 0;
    stall_then_drain(ws, Duration::from_secs(1), move || {
        clock += 1;
        vec![craft::awareness_frame(client, clock, 100)]
    })
    .await
}

async fn step_one_spam(ws: Ws, client: u64) -> Outcome {
    let step1 = craft::step1_unknown_frame(client);
    stall_then_drain(ws, Duration::from_millis(50), move || {
        vec![step1.clone(); 5]
    })
    .await
}

async fn presence(ws: Ws, mut rng: Rng) -> Outcome {
    drive(ws, Duration::from_secs(20), move |mut sink, _| async move {
        loop {
            let bytes = rng.between(4 << 10, 16 << 10) as usize;
            let frame = craft::awareness_frame(rng.client_id(), 1, bytes);
            if sink.send(Message::binary(frame)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn step_one_repeat(ws: Ws, client: u64) -> Outcome {
    drive(
        ws,
        Duration::from_secs(30),
        move |mut sink, left| async move {
            let empty = encode_frame(&Frame::step1(StateVector::default()));
            let unknown = craft::step1_unknown_frame(client);
            let started = Instant::now();
            let mut i = 0u64;
            while started.elapsed() < Duration::from_secs(8) {
                let frame = if i.is_multiple_of(2) {
                    empty.clone()
                } else {
                    unknown.clone()
                };
                if sink.send(Message::binary(frame)).await.is_err() {
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            left.store(true, Ordering::Relaxed);
            let _ = sink.send(Message::Close(None)).await;
        },
    )
    .await
}

/// Keeps a hostile session's document changing: sets the map entry `blob` to a new value of
/// `bytes` bytes, `rate` times a second (the old value is deleted and collected, so the document
/// stays small while every member receives `bytes × rate` a second). Reads what it receives.
/// Reconnects (resyncing the same document) if the server ends its connection.
pub async fn churner(arena: Arc<Arena>, tally: Arc<Tally>, index: usize, bytes: usize, rate: f64) {
    let Some(session) = arena
        .sessions
        .get(index % arena.sessions.len().max(1))
        .cloned()
    else {
        return;
    };
    let doc = Doc::new();
    let map = doc.get_or_insert_map("churn");
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut n = 0u64;
    loop {
        let connected = async {
            let mut ws = open(arena.addr, &session.id, &session.editor_token, false).await?;
            handshake(&mut ws, &doc).await?;
            Ok::<_, anyhow::Error>(ws)
        }
        .await;
        let ws = match connected {
            Ok(ws) => ws,
            Err(error) => {
                eprintln!("soak: churner {index} could not connect: {error:#}");
                tally.churn_reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = ws.split();
        let reader =
            tokio::spawn(
                async move { await_close(&mut stream, Duration::from_secs(86_400)).await },
            );
        let mut next = Instant::now();
        loop {
            n += 1;
            let update = {
                let mut txn = doc.transact_mut();
                let value = format!("{n:>12}{}", "c".repeat(bytes.saturating_sub(12)));
                map.insert(&mut txn, "blob", value);
                txn.encode_update_v1()
            };
            if sink
                .send(Message::binary(encode_update_frame(&update)))
                .await
                .is_err()
                || reader.is_finished()
            {
                break;
            }
            tally.churn_updates.fetch_add(1, Ordering::Relaxed);
            next += period;
            tokio::time::sleep_until(next).await;
        }
        let ended = if reader.is_finished() {
            reader
                .await
                .map_or_else(|e| e.to_string(), |o| o.to_string())
        } else {
            reader.abort();
            "could not send".into()
        };
        eprintln!("soak: churner {index}'s connection ended ({ended}); reconnecting");
        tally.churn_reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
