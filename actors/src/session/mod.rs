//! `SessionActor`: one live studio session — its document, its participants, its persistence.
//!
//! - `mod.rs` (this file): lifecycle — load before serving, timers, idle unload, panic recovery.
//! - [`messages`]: the messages it accepts (one struct each) and their handlers.
//! - `peers`: participants and how frames reach them (bounded, never silently dropped).
//! - `sync`: y-sync and awareness frames coming from participants.
//! - `presence`: awareness ownership and presence bounds.
//! - `history`: bursts of editing, handed over as automatic versions.
//! - `durability`: group commit of updates to the [`DocStore`], compaction, flush.
//! - `doc`: rebuilding the yrs document from storage, integrating updates within the nesting
//!   bound, what is encoded once per change; "does this update add anything?".
//! - `presence`: who may change which awareness state, and how much presence may weigh.
//! - [`replica`]: the session as one of several replicas in a cluster — updates, presence and
//!   events relayed from other nodes, gaps in the applied `seq`s repaired from storage.
//! - `view`: what the server reads from the live document (the graph jobs run).
//!
//! Supervision: the actor runs under [`actix::Supervisor`]. Every handler body runs inside
//! `SessionActor::guard`, which turns a panic into `ctx.stop()`; the supervisor then calls
//! [`Supervised::restarting`], which closes every connection with 1011 (so clients reconnect and
//! resync) and resets the state, and `started` reloads the document from storage. Nothing outside
//! this session is affected, and its address stays valid.

mod doc;
mod durability;
mod history;
pub mod messages;
mod peers;
mod presence;
pub mod replica;
mod sync;
mod view;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::ConnectionId;
use atelier_protocol::ysync::{Frame, NestingIndex};
use atelier_protocol::SessionId;
use tokio::time::Instant;
use yrs::sync::Awareness;
use yrs::{Doc, ReadTxn, Transact};

pub use peers::{Identity, Participant};
#[cfg(test)]
pub(crate) use sync::pause_diffs;
pub use view::{document_version, graph_json};

use self::doc::DocCache;
use self::durability::Durability;
use self::history::History;
use self::messages::{JoinError, Joined};
use self::peers::Peers;
use self::presence::Presence;
use self::replica::Replica;
use crate::jobs::JobsSnapshot;
use crate::limits::SessionLimits;
use crate::outbound::Outbox;
use crate::registry::RegistryLink;
use crate::relay::Relay;
use crate::store::{DocStore, DocStoreError, StoredDoc};
use crate::telemetry;
use crate::versions::VersionRecorder;

/// What a session actor needs from the outside world.
#[derive(Clone)]
pub(crate) struct SessionDeps {
    pub(crate) store: Arc<dyn DocStore>,
    pub(crate) jobs: Arc<dyn JobsSnapshot>,
    pub(crate) relay: Arc<dyn Relay>,
    pub(crate) limits: SessionLimits,
    pub(crate) versions: Arc<dyn VersionRecorder>,
}

#[derive(Debug)]
enum Phase {
    /// Loading the document; the mailbox is paused (`ctx.wait`), so joins queue up meanwhile.
    Loading,
    Ready,
    /// Storage could not load the document; joins are refused until a fresh actor retries.
    Failed(DocStoreError),
    /// Shutdown in progress: no new participants, pending updates are being flushed.
    ShuttingDown,
    /// Removed from the registry; the actor ends when the last address to it is dropped.
    Unloaded,
}

/// Rebuilds a document from its stored form exactly as a session loads it: validated, nesting
/// bounded (what a server without that check stored is repaired), poison parts skipped. For
/// code that reads a document outside its live session.
pub fn rebuild_document(stored: &StoredDoc) -> Doc {
    doc::rebuild(None, stored).doc
}

/// Process-wide, so ids never repeat across sessions or restarts and a stale `Leave` from a
/// connection of a previous incarnation cannot hit a new participant.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// One live studio session. Created by [`crate::SessionRegistryHandle`]; talk to it only through
/// the messages in [`messages`].
pub struct SessionActor {
    id: SessionId,
    deps: SessionDeps,
    registry: RegistryLink,
    phase: Phase,
    /// The document lives inside the awareness (yrs ties them together).
    awareness: Awareness,
    /// Where every item of the document sits (type depth); see `ysync::nesting`.
    nesting: NestingIndex,
    /// The full state (the step 2 answering a fresh client, the source of every other answer)
    /// and the deleted ranges, encoded once and kept until the document changes: after a deploy
    /// every client rejoins at once, and encoding a large document for each of them would hold
    /// the session up for a noticeable time.
    cache: DocCache,
    /// Who owns which awareness state; presence bounds.
    presence: Presence,
    peers: Peers,
    durability: Durability,
    /// The burst of editing since the last automatic version.
    history: History,
    /// Which committed updates are applied here; presence from other nodes.
    replica: Replica,
    /// This actor receives the session's relay channel (cluster mode).
    subscribed: bool,
    /// Since when nobody is connected (drives idle unload).
    empty_since: Option<Instant>,
    /// An idle unload's flush is in flight.
    unloading: bool,
    timers: Vec<SpawnHandle>,
}

impl SessionActor {
    pub(crate) fn new(id: SessionId, deps: SessionDeps, registry: RegistryLink) -> Self {
        Self {
            id,
            deps,
            registry,
            phase: Phase::Loading,
            awareness: Awareness::new(Doc::new()),
            nesting: NestingIndex::new(),
            cache: DocCache::default(),
            presence: Presence::default(),
            peers: Peers::default(),
            durability: Durability::default(),
            history: History::default(),
            replica: Replica::default(),
            subscribed: false,
            empty_since: Some(Instant::now()),
            unloading: false,
            timers: Vec::new(),
        }
    }

    /// The session this actor serves.
    pub fn session_id(&self) -> SessionId {
        self.id
    }

    /// Runs `f`; if it panics, logs, counts, and stops the actor so the supervisor restarts it
    /// from storage. Returns `None` after a panic.
    pub(crate) fn guard<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self, ctx))) {
            Ok(result) => Some(result),
            Err(payload) => {
                tracing::error!(
                    session = %self.id,
                    panic = panic_message(payload.as_ref()),
                    "session actor panicked; restarting it from storage"
                );
                metrics::counter!(telemetry::SESSION_RESTARTS).increment(1);
                ctx.stop();
                None
            }
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let store = self.deps.store.clone();
        let id = self.id;
        // Subscribe before reading: an update committed by another node after the read is then
        // relayed to this actor (and one committed before it is skipped as already applied).
        let subscribed = (!self.subscribed).then(|| self.deps.relay.subscribe(id));
        self.subscribed = true;
        let started = Instant::now();
        ctx.wait(
            async move {
                if let Some(subscribed) = subscribed {
                    subscribed.await;
                }
                store.load(id).await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                metrics::histogram!(telemetry::PERSIST_SECONDS, "op" => "load")
                    .record(started.elapsed().as_secs_f64());
                act.guard(ctx, |act, ctx| act.finish_load(result, ctx));
            }),
        );
    }

    fn finish_load(&mut self, result: Result<StoredDoc, DocStoreError>, ctx: &mut Context<Self>) {
        let stored = match result {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(session = %self.id, %error, "could not load session document");
                self.phase = Phase::Failed(error);
                self.leave_registry(ctx);
                return;
            }
        };
        let rebuilt = doc::rebuild(Some(self.id), &stored);
        let skipped = rebuilt.skipped;
        self.awareness = Awareness::new(rebuilt.doc);
        self.nesting = rebuilt.nesting;
        self.cache.reset();
        self.presence = Presence::default();
        let doc_bytes = self.cache.full_state(self.awareness.doc()).len();
        let tail_bytes = stored.updates.iter().map(|(_, u)| u.len()).sum();
        self.durability
            .loaded(stored.updates.len(), tail_bytes, doc_bytes);
        self.replica_loaded(&stored);
        if skipped > 0
            || self
                .durability
                .tail_due(self.deps.limits.compact_every_updates)
        {
            // Purge skipped (poison) rows and long tails right away.
            self.durability.request_compaction();
        }
        tracing::debug!(
            session = %self.id,
            tail = stored.updates.len(),
            doc_bytes,
            "session document loaded"
        );
        self.phase = Phase::Ready;
        self.progress(ctx);
    }

    fn start_timers(&mut self, ctx: &mut Context<Self>) {
        let limits = &self.deps.limits;
        let compact_every = limits
            .compact_interval
            .max(std::time::Duration::from_millis(10));
        self.timers
            .push(ctx.run_interval(compact_every, |act, ctx| {
                act.guard(ctx, |act, ctx| act.on_compact_tick(ctx));
            }));
        let idle_tick = (limits.idle_unload / 4).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(5),
        );
        self.timers.push(ctx.run_interval(idle_tick, |act, ctx| {
            act.guard(ctx, |act, ctx| act.on_idle_tick(ctx));
        }));
        let history_tick = History::tick(limits.version_settle);
        self.timers.push(ctx.run_interval(history_tick, |act, ctx| {
            act.guard(ctx, |act, ctx| act.on_history_tick(ctx));
        }));
    }

    fn on_idle_tick(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Ready) || !self.peers.is_empty() || self.unloading {
            return;
        }
        let idle_since = *self.empty_since.get_or_insert_with(Instant::now);
        if idle_since.elapsed() < self.deps.limits.idle_unload {
            return;
        }
        self.unloading = true;
        if let Some(recorded) = self.record_burst(true) {
            ctx.spawn(recorded.into_actor(self));
        }
        let flushed = self.flush_waiter(ctx);
        ctx.spawn(flushed.into_actor(self).map(|result, act, ctx| {
            act.unloading = false;
            match result {
                // Someone may have joined while we were flushing.
                Ok(Ok(()))
                    if act.peers.is_empty()
                        && act.durability.is_idle()
                        && matches!(act.phase, Phase::Ready) =>
                {
                    tracing::debug!(session = %act.id, "unloading idle session");
                    act.phase = Phase::Unloaded;
                    act.leave_registry(ctx);
                }
                Ok(Err(error)) => tracing::warn!(
                    session = %act.id, %error, "flush before unload failed; staying loaded"
                ),
                _ => {}
            }
        }));
    }

    /// Stops the timers and removes this actor from the registry; with no addresses left the
    /// actor then ends (and, its mailbox being disconnected, the supervisor does not restart it).
    fn leave_registry(&mut self, ctx: &mut Context<Self>) {
        for timer in self.timers.drain(..) {
            ctx.cancel_future(timer);
        }
        if std::mem::take(&mut self.subscribed) {
            self.deps.relay.unsubscribe(self.id);
        }
        self.registry.forget(self.id, &ctx.address());
    }

    fn join(&mut self, outbox: Outbox, participant: Participant) -> Result<Joined, JoinError> {
        match &self.phase {
            Phase::Ready => {}
            Phase::Failed(error) => return Err(JoinError::Storage(error.clone())),
            Phase::ShuttingDown => return Err(JoinError::ShuttingDown),
            Phase::Loading | Phase::Unloaded => return Err(JoinError::Unloaded),
        }
        let id = ConnectionId(NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed));
        let role = participant.role;
        let wants_events = participant.wants_events;
        self.peers.insert(id, outbox, participant);
        if let Some(peer) = self.peers.get_mut(id) {
            peer.joined_at = self.cache.generation();
        }
        self.empty_since = None;

        // Like the y-websocket server: our step 1 first, then the awareness states we know.
        let sv = self.awareness.doc().transact().state_vector();
        self.peers.send_frame(id, &Frame::step1(sv));
        if let Some(states) = self.presence.states_frame(&self.awareness) {
            self.peers.send_to(id, states);
        }
        if let Some(info) = self.peers.get(id).map(|peer| peer.info(id)) {
            self.peers
                .broadcast_event(&StudioEvent::ParticipantJoined(info), |other, _| {
                    other != id
                });
        }
        tracing::debug!(session = %self.id, connection = %id, %role, "participant joined");
        Ok(Joined {
            connection_id: id,
            role,
            wants_events,
        })
    }

    /// Fetches the unfinished jobs and sends `session.hello`, releasing the frames held back.
    fn send_hello(&mut self, id: ConnectionId, ctx: &mut Context<Self>) {
        let jobs = self.deps.jobs.clone();
        let session = self.id;
        ctx.spawn(
            async move { jobs.unfinished_jobs(session).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.guard(ctx, |act, _| {
                        let jobs = result.unwrap_or_else(|error| {
                            tracing::warn!(session = %act.id, %error, "no job snapshot for hello");
                            Vec::new()
                        });
                        let Some(role) = act.peers.get(id).map(|p| p.participant.role) else {
                            return;
                        };
                        let hello = StudioEvent::SessionHello {
                            role,
                            session_id: act.id,
                            jobs,
                            connection_id: id,
                            participants: act.peers.iter().map(|(id, p)| p.info(id)).collect(),
                        };
                        act.peers.release_with_hello(id, &hello);
                        act.settle();
                    });
                }),
        );
    }

    /// Removes a participant: optionally closes its socket, withdraws the awareness states it
    /// controlled or hands them to the connection that claimed them (announced to everyone,
    /// like y-websocket) and announces its departure.
    fn remove_peer(&mut self, id: ConnectionId, close: Option<(u16, &str)>) {
        let Some(peer) = self.peers.remove(id) else {
            return;
        };
        if let Some((code, reason)) = close {
            peer.outbox.close(code, reason);
        }
        let limits = &self.deps.limits;
        if let Some(frame) = self.presence.leave(&mut self.awareness, id, limits) {
            self.peers.broadcast(&frame, |_, _| true);
            self.publish_awareness_frame(&frame);
        }
        self.peers.broadcast_event(
            &StudioEvent::ParticipantLeft { connection_id: id },
            |_, _| true,
        );
        if self.peers.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        tracing::debug!(session = %self.id, connection = %id, "participant left");
    }

    /// Tells a participant why (`session.kicked`, if it takes events), then closes it.
    fn kick(&mut self, id: ConnectionId, code: u16, reason: &str) {
        self.peers.send_event(
            id,
            &StudioEvent::SessionKicked {
                reason: reason.to_owned(),
            },
        );
        self.remove_peer(id, Some((code, reason)));
    }

    /// Disconnects every participant whose outbound queue overflowed. Removal broadcasts too, so
    /// this loops until no new slow participant turns up.
    fn settle(&mut self) {
        loop {
            let slow = self.peers.take_slow();
            if slow.is_empty() {
                return;
            }
            for id in slow {
                if self.peers.get(id).is_some() {
                    metrics::counter!(telemetry::OUTBOUND_OVERFLOWS).increment(1);
                    tracing::info!(session = %self.id, connection = %id, "client too slow");
                    self.remove_peer(id, Some((close_code::POLICY_VIOLATION, "too slow; resync")));
                }
            }
        }
    }

    /// The session is gone for good (deleted): everyone is told and closed with 4404, pending
    /// updates are discarded, and the actor unloads.
    pub(crate) fn end(&mut self, reason: &str, ctx: &mut Context<Self>) {
        for id in self.peers.ids() {
            self.kick(id, close_code::SESSION_DELETED, reason);
        }
        self.peers.take_slow();
        self.durability
            .abandon(DocStoreError::backend("session closed"));
        self.phase = Phase::Unloaded;
        self.leave_registry(ctx);
    }

    fn accepts_work(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::ShuttingDown)
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(telemetry::LIVE_SESSIONS).increment(1.0);
        self.start_timers(ctx);
        self.load(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        metrics::gauge!(telemetry::LIVE_SESSIONS).decrement(1.0);
    }
}

impl Supervised for SessionActor {
    /// After a panic: everyone is disconnected with 1011 so they resync on reconnect, waiters
    /// learn that their flush did not happen, and the state is reset; `started` then reloads.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(session = %self.id, "restarting session from storage");
        for (_, peer) in self.peers.drain() {
            peer.outbox.close(
                close_code::INTERNAL_ERROR,
                "session restarted; reconnect to resync",
            );
        }
        self.durability
            .abandon(DocStoreError::backend("session restarted before flushing"));
        self.awareness = Awareness::new(Doc::new());
        self.nesting = NestingIndex::new();
        self.cache.reset();
        self.presence = Presence::default();
        self.replica = Replica::default();
        self.history = History::default();
        self.phase = Phase::Loading;
        self.empty_since = Some(Instant::now());
        self.unloading = false;
        self.timers.clear();
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}
