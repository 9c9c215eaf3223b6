//! The generator's clients: join a document, then send pre-encoded edits on a schedule while
//! reading everything the server sends, as cheaply as possible.
//!
//! One tokio task per connection owns both halves of its socket. Receiving does no CRDT work: a
//! relayed update is recognised by its header ([`Room::classify`]), and the edit it carries is
//! named by its first struct's `(client, clock)` ([`update_key`]), which the sender noted in the
//! [`SendLog`] with its send time. Latencies go into the client's own histogram (a std mutex that
//! only the run's orchestrator also takes, between steps); counters are added to the shared
//! atomics once per read, not per message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use yrs::updates::decoder::Decode;
use yrs::{Text, Transact, Update};

use super::proto::{
    update_clock_len, update_key, Incoming, Room, EMPTY_STATE_VECTOR, EMPTY_UPDATE,
};
use super::wire::{self, Message, Reader};
use crate::client::{Editor, SendLog, TEXT};

/// Microsecond latency histogram: 1 µs … 10 min, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// What all clients of one run share: the send log, counters, one histogram per client.
pub struct Tally {
    epoch: Instant,
    pub log: SendLog,
    /// Updates received from other clients.
    pub delivered: AtomicU64,
    /// Edits sent.
    pub sent: AtomicU64,
    /// Updates whose send time was not in the log (overwritten, or not from this run).
    pub unmatched: AtomicU64,
    /// Latencies are recorded only for edits sent at or after this time (`now_ns` scale): the
    /// step's measurement window, not its warm-up. `u64::MAX` (the start): none.
    pub record_from_ns: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Tally {
    /// `writers`: editors whose sends are logged (`WRITER_CLIENT_BASE + index`); `ring`: edits
    /// remembered per writer; `clients`: connections that record latencies.
    pub fn new(writers: usize, ring: usize, clients: usize) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            epoch: Instant::now(),
            log: SendLog::new(writers, ring),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            record_from_ns: AtomicU64::new(u64::MAX),
            latency: (0..clients)
                .map(|_| histogram().map(Mutex::new))
                .collect::<Result<_>>()?,
        }))
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Every client's latencies since the last call, merged; the clients' histograms are reset.
    pub fn take_latencies(&self) -> Result<Histogram<u64>> {
        let mut total = histogram()?;
        for h in &self.latency {
            let mut h = h.lock().unwrap_or_else(PoisonError::into_inner);
            total.add(&*h)?;
            h.reset();
        }
        Ok(total)
    }
}

/// When a joining client counts as synced.
#[derive(Debug, Clone, Copy)]
pub enum Synced {
    /// At the server's step 2.
    Step2,
    /// When the step 2 and the updates after it cover this many edits (read from the updates'
    /// encoding, [`update_clock_len`]). A server may answer with its state before it has loaded
    /// the document and send the rest as an update once loaded (y-websocket does after a
    /// restart); the client is synced when it has the document.
    Edits(u64),
    /// When the step 2 and the updates after it, applied with yrs, give a text of this many
    /// characters: what a real client must do before it shows the document.
    Applied(u64),
}

/// A joined connection.
pub struct Joined {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
    /// TCP connect + WebSocket upgrade.
    pub connected: Duration,
    /// Until the server's step 2 was received.
    pub step2_received: Duration,
    /// Until the client was synced (see [`Synced`]).
    pub synced: Duration,
    /// Bytes of step 2 and the updates that completed the document.
    pub sync_bytes: usize,
}

/// Connects to `room` and syncs as a fresh client (empty state vector; the server's step 1 is
/// answered with an empty update). Times are from `started`.
pub async fn join(
    addr: SocketAddr,
    room: &Room,
    started: Instant,
    until: Synced,
) -> Result<Joined> {
    let (mut reader, mut writer) = wire::connect(addr, &room.path).await?;
    let connected = started.elapsed();
    let mut out = Vec::new();
    for message in room.opening(&EMPTY_STATE_VECTOR) {
        wire::binary(&message, &mut out);
    }
    wire::send(&mut writer, &mut reader, &out).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut step2_received = None;
    let mut sync_bytes = 0;
    // Edits the client has so far (`Synced::Edits`, `Synced::Applied`).
    let mut have = 0u64;
    // Only for `Synced::Applied`.
    let mut applied: Option<(yrs::Doc, yrs::TextRef)> = None;
    loop {
        // A server that takes long to load a document pings meanwhile, and drops a client that
        // does not answer (y-websocket: no pong within 30 s).
        if !reader.pongs.is_empty() {
            wire::send(&mut writer, &mut reader, &[]).await?;
        }
        let message = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .map_err(|_| anyhow!("not synced within 120 s ({have} edits in)"))??;
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Closed(reason) => bail!("{reason} during sync"),
        };
        let update = match room.classify(bytes) {
            Incoming::Step1 => {
                out.clear();
                wire::binary(&room.step2(&EMPTY_UPDATE), &mut out);
                wire::send(&mut writer, &mut reader, &out).await?;
                continue;
            }
            Incoming::Step2(update) => {
                step2_received.get_or_insert_with(|| started.elapsed());
                update
            }
            // Updates before step 2 are ones the step 2 will hold as well.
            Incoming::Update(update) if step2_received.is_some() => update,
            Incoming::Denied => bail!("the server refused the document"),
            Incoming::Update(_) | Incoming::Other => continue,
        };
        sync_bytes += update.len();
        let done = match until {
            Synced::Step2 => true,
            Synced::Edits(want) => {
                have += update_clock_len(update)
                    .ok_or_else(|| anyhow!("an update the generator cannot read"))?;
                have >= want
            }
            Synced::Applied(want) => {
                let (doc, text) = applied.get_or_insert_with(|| {
                    let doc = yrs::Doc::new();
                    let text = doc.get_or_insert_text(TEXT);
                    (doc, text)
                });
                doc.transact_mut()
                    .apply_update(Update::decode_v1(update)?)?;
                have = u64::from(text.len(&doc.transact()));
                have >= want
            }
        };
        if done {
            let synced = started.elapsed();
            return Ok(Joined {
                reader,
                writer,
                connected,
                step2_received: step2_received.unwrap_or(synced),
                synced,
                sync_bytes,
            });
        }
    }
}

/// Pre-encoded edits of one client for one step, sent on a schedule.
pub struct Plan {
    /// WebSocket frames, back to back; frame `i` ends at `ends[i]`.
    frames: Vec<u8>,
    ends: Vec<usize>,
    /// yrs clock of the first frame's edit; each frame's edit is one character, so frame `i`
    /// carries clock `first_clock + i`.
    first_clock: u64,
    writer_index: usize,
    /// First send at `start`, then one every `period` (zero: as fast as the socket takes them,
    /// `burst` frames per write). Every frame is sent, however late: an edit left out would
    /// leave a gap in its writer's clocks, and the servers would hold back every later edit of
    /// that writer as not yet integrable.
    start: tokio::time::Instant,
    period: Duration,
    burst: usize,
    next: usize,
}

impl Plan {
    /// Makes `count` edits with `editor` and encodes them for `room`.
    pub fn encode(
        editor: &mut Editor,
        writer_index: usize,
        room: &Room,
        count: usize,
    ) -> Result<Self> {
        let mut frames = Vec::with_capacity(count * 32);
        let mut ends = Vec::with_capacity(count);
        let mut first_clock = None;
        for i in 0..count {
            let (clock, update) = editor.edit_update();
            let first = *first_clock.get_or_insert(clock);
            if clock != first + i as u64 {
                bail!("edit clocks are not consecutive ({clock} after {first} + {i})");
            }
            wire::binary(&room.update(&update), &mut frames);
            ends.push(frames.len());
        }
        let now = tokio::time::Instant::now();
        Ok(Self {
            frames,
            ends,
            first_clock: first_clock.unwrap_or(0),
            writer_index,
            start: now,
            period: Duration::ZERO,
            burst: 64,
            next: 0,
        })
    }

    /// Sends one edit every `period` from `start`.
    pub fn paced(mut self, start: tokio::time::Instant, period: Duration) -> Self {
        self.start = start;
        self.period = period;
        self
    }

    /// Sends everything at once, `burst` frames per write.
    pub fn unpaced(mut self, burst: usize) -> Self {
        self.start = tokio::time::Instant::now();
        self.period = Duration::ZERO;
        self.burst = burst.max(1);
        self
    }

    /// When the next frame is due.
    fn next_due(&self) -> tokio::time::Instant {
        if self.period.is_zero() {
            return self.start;
        }
        let n = u32::try_from(self.next).unwrap_or(u32::MAX);
        self.start + self.period.saturating_mul(n)
    }

    /// Frames due at `now`, not yet sent: `next..end`.
    fn due(&self, now: tokio::time::Instant) -> usize {
        let due = if self.period.is_zero() {
            self.next + self.burst
        } else if now < self.start {
            0
        } else {
            let elapsed = (now - self.start).as_nanos();
            usize::try_from(elapsed / self.period.as_nanos().max(1) + 1).unwrap_or(usize::MAX)
        };
        due.min(self.ends.len())
    }

    fn done(&self) -> bool {
        self.next >= self.ends.len()
    }
}

/// What a client is told to do next.
pub enum Order {
    Send(Plan),
    Stop,
}

/// How a client's connection ended: `Some(why)` if the server closed it or the socket failed,
/// `None` if it was told to stop.
pub type ClientEnd = Option<String>;

/// The generator's client: reads and classifies everything the server sends (answering step 1
/// and pings), sends the edits of each [`Plan`] it is given, until told to stop. `me` indexes its
/// histogram in `tally`; `own` is its yrs client id if it edits (its echoes are skipped).
pub async fn run_client(
    joined: Joined,
    room: Room,
    me: usize,
    own: Option<u64>,
    tally: Arc<Tally>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) -> ClientEnd {
    let Joined {
        mut reader,
        mut writer,
        ..
    } = joined;
    let mut end: ClientEnd = None;
    let mut plan: Option<Plan> = None;
    let mut out = Vec::new();
    let mut samples: Vec<u64> = Vec::new();
    let result: Result<()> = async {
        loop {
            // Due edits go out before anything is read: a client that always has something to
            // read must not delay its edits (that would show up as server latency).
            send_due(&mut plan, &mut writer, &mut reader, &tally).await?;
            let due_at = plan.as_ref().map(Plan::next_due);
            tokio::select! {
                read = reader.fill() => {
                    if read? == 0 {
                        end = Some("connection ended".into());
                        return Ok(());
                    }
                    let now = tally.now_ns();
                    let record_from = tally.record_from_ns.load(Ordering::Relaxed);
                    let (mut delivered, mut unmatched) = (0u64, 0u64);
                    while let Some(message) = reader.next()? {
                        let bytes = match message {
                            Message::Binary(bytes) => bytes,
                            Message::Closed(reason) => {
                                end = Some(reason);
                                return Ok(());
                            }
                        };
                        match room.classify(bytes) {
                            Incoming::Update(update) => {
                                let key = update_key(update);
                                match key {
                                    // Its own edit, sent back (y-websocket and Hocuspocus
                                    // broadcast to every client): not a delivery.
                                    Some((client, _)) if Some(client) == own => {}
                                    Some((client, clock)) => {
                                        delivered += 1;
                                        match tally.log.sent_at(client, clock) {
                                            Some(sent) if sent >= record_from => {
                                                samples.push(now.saturating_sub(sent) / 1000);
                                            }
                                            Some(_) => {}
                                            None => unmatched += 1,
                                        }
                                    }
                                    None => unmatched += 1,
                                }
                            }
                            Incoming::Step1 => wire::binary(&room.step2(&EMPTY_UPDATE), &mut out),
                            Incoming::Denied => bail!("the server refused the document"),
                            Incoming::Step2(_) | Incoming::Other => {}
                        }
                    }
                    if delivered > 0 {
                        tally.delivered.fetch_add(delivered, Ordering::Relaxed);
                    }
                    if unmatched > 0 {
                        tally.unmatched.fetch_add(unmatched, Ordering::Relaxed);
                    }
                    if !samples.is_empty() {
                        if let Some(h) = tally.latency.get(me) {
                            let mut h = h.lock().unwrap_or_else(PoisonError::into_inner);
                            for &us in &samples {
                                h.saturating_record(us.max(1));
                            }
                        }
                        samples.clear();
                    }
                    if !out.is_empty() || !reader.pongs.is_empty() {
                        wire::send(&mut writer, &mut reader, &out).await?;
                        out.clear();
                    }
                }
                order = orders.recv() => match order {
                    Some(Order::Send(next)) => plan = Some(next),
                    Some(Order::Stop) | None => return Ok(()),
                },
                () = sleep_until(due_at), if due_at.is_some() => {}
            }
        }
    }
    .await;
    if let Err(error) = result {
        end = Some(format!("{error:#}"));
    }
    end
}

/// Sends the edits of `plan` that are due now (all at once if the client fell behind), and drops
/// the plan once it is over.
async fn send_due(
    plan: &mut Option<Plan>,
    writer: &mut OwnedWriteHalf,
    reader: &mut Reader,
    tally: &Tally,
) -> Result<()> {
    let Some(p) = plan.as_mut() else {
        return Ok(());
    };
    let now = tokio::time::Instant::now();
    let due = p.due(now);
    if due > p.next {
        let from = if p.next == 0 { 0 } else { p.ends[p.next - 1] };
        let to = p.ends[due - 1];
        let at = tally.now_ns();
        let client = crate::client::WRITER_CLIENT_BASE + p.writer_index as u64;
        for i in p.next..due {
            tally.log.record(client, p.first_clock + i as u64, at);
        }
        wire::send(writer, reader, &p.frames[from..to]).await?;
        tally
            .sent
            .fetch_add((due - p.next) as u64, Ordering::Relaxed);
        p.next = due;
    }
    if p.done() {
        *plan = None;
    }
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A started client: its order channel and its task.
pub struct Handle {
    pub orders: mpsc::UnboundedSender<Order>,
    pub task: tokio::task::JoinHandle<ClientEnd>,
}

/// Spawns [`run_client`] for a joined connection.
pub fn spawn(joined: Joined, room: Room, me: usize, own: Option<u64>, tally: Arc<Tally>) -> Handle {
    let (orders, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_client(joined, room, me, own, tally, rx));
    Handle { orders, task }
}

/// Stops every client and collects how each ended.
pub async fn stop_all(handles: Vec<Handle>) -> Vec<ClientEnd> {
    for h in &handles {
        let _ = h.orders.send(Order::Stop);
    }
    let mut ends = Vec::with_capacity(handles.len());
    for h in handles {
        ends.push(
            h.task
                .await
                .unwrap_or_else(|error| Some(format!("client task failed: {error}"))),
        );
    }
    ends
}
