//! The messages a [`SessionActor`] accepts (one struct per message, reply type on it) and their
//! handlers. Every handler body runs under `SessionActor::guard`.

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, ConnectionId, JobId};
use atelier_protocol::ysync::Frame;
use atelier_protocol::Role;
use bytes::Bytes;
use thiserror::Error;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use super::{Identity, Participant, Phase, SessionActor};
use crate::admission::{KickTarget, Revocation};
use crate::outbound::Outbox;
use crate::store::DocStoreError;

/// A connection enters the session. Answered once the document is loaded.
#[derive(Message)]
#[rtype(result = "Result<Joined, JoinError>")]
pub struct Join {
    /// Where the session sends this connection's frames (and its close).
    pub outbox: Outbox,
    pub participant: Participant,
}

/// Reply to [`Join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Use it in [`Inbound`] and [`Leave`].
    pub connection_id: ConnectionId,
    pub role: Role,
    pub wants_events: bool,
}

/// Why a [`Join`] was refused.
#[derive(Debug, Clone, Error)]
pub enum JoinError {
    /// This actor is unloading or restarting; ask the registry again (its `join` does).
    #[error("session is being unloaded; retry")]
    Unloaded,
    #[error("session document could not be loaded: {0}")]
    Storage(DocStoreError),
    #[error("server is shutting down")]
    ShuttingDown,
}

/// A connection is gone (its socket closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub connection_id: ConnectionId,
}

/// A decoded frame from a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub connection_id: ConnectionId,
    pub frame: Frame,
}

/// Access ended for the connections the target covers: each gets `session.kicked` (if it takes
/// events) and is closed with the revocation's code before this returns. Replies with how many
/// connections were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Kick {
    pub target: KickTarget,
    pub revocation: Revocation,
}

/// An account's membership changed. `None`: removed — its connections are closed (4403).
/// `Some(role)`: its connections get the new role at once (a downgrade makes them read-only)
/// and a `role.changed` event. Replies with how many connections were affected.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SetRole {
    pub account_id: AccountId,
    pub role: Option<Role>,
}

/// A studio event for every events-enabled connection (job progress, runtime meter…).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BroadcastEvent {
    pub event: StudioEvent,
}

/// A job preview image for every events-enabled connection (frame type 101).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BroadcastPreview {
    pub job_id: JobId,
    pub step: u32,
    pub mime: String,
    pub image: Vec<u8>,
}

/// Resolves once every update accepted so far is stored and the log is compacted.
#[derive(Message)]
#[rtype(result = "Result<(), DocStoreError>")]
pub struct Flush;

/// Server shutdown: closes every connection (1001), stores what is pending, compacts, and
/// unloads the session.
#[derive(Message)]
#[rtype(result = "Result<(), DocStoreError>")]
pub struct Shutdown;

/// The session was deleted: everyone gets `session.kicked` and a close (4404); pending updates
/// are discarded and the session unloads.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub reason: String,
}

/// Debug hook: panics inside the session to exercise supervision (tests only).
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// A snapshot of the session's state, for tests and diagnostics.
#[derive(Message)]
#[rtype(result = "SessionStats")]
pub struct GetStats;

/// Reply to [`GetStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub participants: usize,
    /// Everything accepted is stored and nothing is being compacted.
    pub persisted: bool,
    /// The full document state (v1), as a snapshot would store it.
    pub document: Vec<u8>,
}

impl Handler<Join> for SessionActor {
    type Result = Result<Joined, JoinError>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        self.guard(ctx, |act, ctx| {
            let joined = act.join(msg.outbox, msg.participant)?;
            if joined.wants_events {
                act.send_hello(joined.connection_id, ctx);
            }
            act.settle();
            Ok(joined)
        })
        .unwrap_or(Err(JoinError::Unloaded))
    }
}

impl Handler<Leave> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| {
            act.remove_peer(msg.connection_id, None);
            act.settle();
        });
    }
}

impl Handler<Inbound> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, ctx| {
            act.receive(msg.connection_id, msg.frame, ctx)
        });
    }
}

impl Handler<Kick> for SessionActor {
    type Result = usize;

    fn handle(&mut self, msg: Kick, ctx: &mut Context<Self>) -> usize {
        self.guard(ctx, |act, _| {
            let session = act.id;
            let doomed: Vec<ConnectionId> = act
                .peers
                .iter()
                .filter(|(id, p)| msg.target.covers_peer(session, *id, &p.participant))
                .map(|(id, _)| id)
                .collect();
            for id in &doomed {
                act.kick(*id, msg.revocation.code, &msg.revocation.reason);
            }
            act.settle();
            doomed.len()
        })
        .unwrap_or(0)
    }
}

impl Handler<SetRole> for SessionActor {
    type Result = usize;

    fn handle(&mut self, msg: SetRole, ctx: &mut Context<Self>) -> usize {
        self.guard(ctx, |act, _| {
            let affected: Vec<ConnectionId> = act
                .peers
                .iter()
                .filter(|(_, p)| p.participant.identity == Identity::Account(msg.account_id))
                .map(|(id, _)| id)
                .collect();
            for id in &affected {
                match msg.role {
                    None => act.kick(*id, close_code::ACCESS_REVOKED, "removed from session"),
                    Some(role) => {
                        if let Some(peer) = act.peers.get_mut(*id) {
                            peer.participant.role = role;
                        }
                        act.peers
                            .send_event(*id, &StudioEvent::RoleChanged { role });
                    }
                }
            }
            act.settle();
            affected.len()
        })
        .unwrap_or(0)
    }
}

impl Handler<BroadcastEvent> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastEvent, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| act.deliver_event(&msg.event));
    }
}

impl SessionActor {
    /// Sends a studio event to the events-enabled connections; an event with a private part
    /// (the payer's balance) sends that part to its account's own connections only.
    pub(crate) fn deliver_event(&mut self, event: &StudioEvent) {
        match event.private_to() {
            Some((account, public)) => {
                let is_owner = |p: &Participant| p.account_id() == Some(account);
                self.peers
                    .broadcast_event(event, |_, peer| is_owner(&peer.participant));
                self.peers
                    .broadcast_event(&public, |_, peer| !is_owner(&peer.participant));
            }
            None => self.peers.broadcast_event(event, |_, _| true),
        }
        self.settle();
    }
}

impl Handler<BroadcastPreview> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastPreview, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| {
            if !act.peers.iter().any(|(_, p)| p.participant.wants_events) {
                return;
            }
            let frame = Frame::Preview {
                job_id: msg.job_id,
                step: msg.step,
                mime: msg.mime,
                image: msg.image,
            };
            let bytes = Bytes::from(frame.encode());
            act.peers
                .broadcast(&bytes, |_, p| p.participant.wants_events);
            act.settle();
        });
    }
}

impl Handler<Flush> for SessionActor {
    type Result = ResponseFuture<Result<(), DocStoreError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let flushed = self.guard(ctx, |act, ctx| act.flush_waiter(ctx));
        Box::pin(async move {
            match flushed {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(restarted())),
                None => Err(restarted()),
            }
        })
    }
}

impl Handler<Shutdown> for SessionActor {
    type Result = ResponseActFuture<Self, Result<(), DocStoreError>>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let flushed = self.guard(ctx, |act, ctx| {
            if matches!(act.phase, Phase::Ready) {
                act.phase = Phase::ShuttingDown;
            }
            // Stop accepting first, then store what was already accepted.
            for id in act.peers.ids() {
                act.remove_peer(id, Some((close_code::GOING_AWAY, "server shutting down")));
            }
            act.peers.take_slow();
            // The last burst of editing becomes a version before the session goes.
            let recorded = act.record_burst(true);
            (act.flush_waiter(ctx), recorded)
        });
        Box::pin(
            async move {
                let Some((flushed, recorded)) = flushed else {
                    return Err(restarted());
                };
                if let Some(recorded) = recorded {
                    recorded.await;
                }
                flushed.await.unwrap_or_else(|_| Err(restarted()))
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.phase = Phase::Unloaded;
                act.leave_registry(ctx);
                result
            }),
        )
    }
}

impl Handler<CloseSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, ctx| act.end(&msg.reason, ctx));
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Handler<InjectPanic> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| panic!("injected panic in session {}", act.id));
    }
}

impl Handler<GetStats> for SessionActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SessionStats {
            participants: self.peers.len(),
            persisted: self.durability.is_idle(),
            document: super::doc::full_state(self.awareness.doc()),
        })
    }
}

fn restarted() -> DocStoreError {
    DocStoreError::backend("session restarted before flushing")
}

/// The id that marks an update made by the server itself (job outputs): no connection has it,
/// so the update is fanned out to every participant.
pub const SERVER_ORIGIN: ConnectionId = ConnectionId(0);

/// Why the live document could not be read or changed.
#[derive(Debug, Clone, Error)]
pub enum LiveDocError {
    /// This actor is unloading or restarting; ask the registry again (its methods do).
    #[error("session is being unloaded; retry")]
    Unloaded,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Storage(DocStoreError),
    #[error("invalid server edit: {0}")]
    InvalidEdit(String),
    /// The session restarted or was deleted before the change was stored.
    #[error("the session was closed before the change was stored")]
    Abandoned,
}

/// Builds a server-side change on a copy of the document as it is now: gets that copy and
/// returns the v1 update of its change. (`Fn`: a session that was unloading when asked never
/// ran it, and the registry asks the next one.)
pub type DocEdit = std::sync::Arc<dyn Fn(&Doc) -> Result<Vec<u8>, String> + Send + Sync>;

/// A change the server makes to the document (e.g. a job's outputs), built on the live document
/// and then stored, applied and fanned out like an editor's update. Answered once it is stored:
/// whoever asked may then report success.
#[derive(Message)]
#[rtype(result = "Result<(), LiveDocError>")]
pub struct ServerEdit {
    pub edit: DocEdit,
    /// Made on behalf of this person's editing (a graph written over REST): it counts towards
    /// automatic versions as theirs. `None`: the server's own change.
    pub editor: Option<AccountId>,
}

/// The document's `nodes` and `edges` as JSON (`{"nodes": {...}, "edges": {...}}`), read once
/// every update accepted before this message is stored and applied: exactly what the editors
/// see.
#[derive(Message)]
#[rtype(result = "Result<GraphView, LiveDocError>")]
pub struct GraphJson;

/// The graph and the version of the document it was read from.
#[derive(Debug, Clone)]
pub struct GraphView {
    pub graph: serde_json::Value,
    /// [`super::document_version`] of the document then.
    pub version: Vec<u8>,
    /// The full document state (v1) then: what a version of it keeps. Encoded once per change
    /// of the document and shared, so reading it costs nothing more.
    pub state: Bytes,
}

impl SessionActor {
    /// Whether the document can be read or changed now.
    fn doc_ready(&self) -> Result<(), LiveDocError> {
        match &self.phase {
            Phase::Ready => Ok(()),
            Phase::Failed(error) => Err(LiveDocError::Storage(error.clone())),
            Phase::ShuttingDown => Err(LiveDocError::ShuttingDown),
            Phase::Loading | Phase::Unloaded => Err(LiveDocError::Unloaded),
        }
    }
}

impl Handler<ServerEdit> for SessionActor {
    type Result = ResponseFuture<Result<(), LiveDocError>>;

    fn handle(&mut self, msg: ServerEdit, ctx: &mut Context<Self>) -> Self::Result {
        let stored = self
            .guard(ctx, |act, ctx| {
                act.doc_ready()?;
                // The edit runs on a copy: the live document changes only once it is stored.
                let copy = Doc::new();
                let state = super::doc::full_state(act.awareness.doc());
                let current = Update::decode_v1(&state)
                    .map_err(|e| LiveDocError::InvalidEdit(e.to_string()))?;
                copy.transact_mut()
                    .apply_update(current)
                    .map_err(|e| LiveDocError::InvalidEdit(e.to_string()))?;
                let bytes = (msg.edit)(&copy).map_err(LiveDocError::InvalidEdit)?;
                act.accept_server_update(bytes, msg.editor, ctx)
                    .map_err(LiveDocError::InvalidEdit)
            })
            .unwrap_or(Err(LiveDocError::Unloaded));
        Box::pin(async move {
            match stored?.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(LiveDocError::Storage(error)),
                Err(_) => Err(LiveDocError::Abandoned),
            }
        })
    }
}

impl Handler<GraphJson> for SessionActor {
    type Result = ResponseActFuture<Self, Result<GraphView, LiveDocError>>;

    fn handle(&mut self, _: GraphJson, ctx: &mut Context<Self>) -> Self::Result {
        let barrier = self
            .guard(ctx, |act, _| {
                act.doc_ready()?;
                Ok(act.durability.settled_barrier())
            })
            .unwrap_or(Err(LiveDocError::Unloaded));
        Box::pin(
            async move { barrier?.await.map_err(|_| LiveDocError::Abandoned) }
                .into_actor(self)
                .map(|settled, act, ctx| {
                    settled?;
                    act.guard(ctx, |act, _| {
                        act.doc_ready()?;
                        let state = act.cache.full_state(act.awareness.doc()).update();
                        let doc = act.awareness.doc();
                        Ok(GraphView {
                            graph: super::view::graph_json(doc),
                            version: super::view::document_version(doc),
                            state,
                        })
                    })
                    .unwrap_or(Err(LiveDocError::Unloaded))
                }),
        )
    }
}
