//! Frames from participants: y-sync (step 1, step 2, update), awareness, query-awareness.
//!
//! Echo semantics follow y-websocket's reference server: a stored document update goes to every
//! *other* connection; an awareness change goes to *every* connection, the sender included (a
//! stock client that hears nothing for 30 s reconnects, and the echo of its own awareness renewal
//! every 15 s is what it hears in a quiet session).
//!
//! **Bounded work per message.** Answering a step 1 with a non-empty state vector means
//! encoding a diff of the document. For a small document that happens right here; for a large
//! one it happens on a blocking thread, from the full state the session encodes once per change
//! (`yrs::diff_updates_v1`), so that one client asking for the document again and again cannot
//! hold up everyone else's edits. That full state may be older than the document, as long as it
//! is newer than the connection (see `doc::DocCache`): a client asking again and again for the
//! document of a session that keeps changing costs one encoding of it, not one per change. A connection has at most one such encoding in flight: step 1s
//! arriving meanwhile are coalesced into one more answer, for the latest state vector (a client's
//! state vector only grows, and one step 2 is all it waits for). The diff starts from the state
//! at the time of the request and every update applied after that is sent to the connection
//! anyway, so an answer arriving after later updates loses nothing.

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::ids::ConnectionId;
use atelier_protocol::ysync::nesting::{resolve, Placed};
use atelier_protocol::ysync::{decode_awareness, summarize_update, Frame, SyncMessage};
use atelier_protocol::Role;
use bytes::Bytes;
use tokio::sync::{oneshot, Semaphore};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use super::SessionActor;
use crate::store::DocStoreError;

/// The reason sent with `[2, 0, reason]` when an update would push the document over its limit.
pub const DOCUMENT_TOO_LARGE_REASON: &str = "document-too-large";

/// Documents up to this size (encoded) have their diffs encoded on the session actor: it takes
/// well under a millisecond, less than handing it to another thread.
const INLINE_DIFF_MAX_BYTES: usize = 64 * 1024;

/// Diffs of large documents encoded at once, process-wide: each decodes a full document state,
/// so this bounds the memory and CPU they take together (the machine has few cores anyway).
const MAX_CONCURRENT_DIFFS: usize = 2;

static DIFF_ENCODERS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_DIFFS);

/// Holds every diff encoder until the permit is dropped (tests: an encoding that takes a while).
#[cfg(test)]
pub(crate) async fn pause_diffs() -> tokio::sync::SemaphorePermit<'static> {
    // The semaphore is never closed.
    #[allow(clippy::expect_used)]
    DIFF_ENCODERS
        .acquire_many(MAX_CONCURRENT_DIFFS as u32)
        .await
        .expect("open semaphore")
}

/// Whether a connection's sync step 2 is being encoded off the actor.
#[derive(Debug, Default)]
pub(crate) enum Step2Answer {
    #[default]
    Idle,
    /// Encoding; `next`: the latest step 1 that arrived meanwhile, answered afterwards.
    Encoding { next: Option<StateVector> },
}

impl SessionActor {
    pub(crate) fn receive(&mut self, from: ConnectionId, frame: Frame, ctx: &mut Context<Self>) {
        let Some(role) = self.peers.get(from).map(|p| p.participant.role) else {
            // A connection that already left (or belonged to a previous incarnation).
            return;
        };
        match frame {
            Frame::Sync(SyncMessage::SyncStep1(sv)) => self.answer_step1(from, sv, ctx),
            Frame::Sync(SyncMessage::SyncStep2(update)) => {
                self.receive_update(from, role, update, true, ctx);
            }
            Frame::Sync(SyncMessage::Update(update)) => {
                self.receive_update(from, role, update, false, ctx);
            }
            Frame::Awareness(payload) => self.receive_awareness(from, &payload),
            Frame::QueryAwareness => {
                if let Some(states) = self.presence.states_frame(&self.awareness) {
                    self.peers.send_to(from, states);
                }
            }
            // Clients have no business sending these; the connection already refuses 100/101.
            Frame::Auth(_) | Frame::Event(_) | Frame::Preview { .. } => {
                tracing::debug!(session = %self.id, connection = %from, "ignoring client frame");
            }
        }
        self.settle();
    }

    /// Answers a step 1 with the step 2 the client lacks (see the module docs).
    fn answer_step1(&mut self, from: ConnectionId, sv: StateVector, ctx: &mut Context<Self>) {
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        if let Step2Answer::Encoding { next } = &mut peer.step2 {
            *next = Some(sv);
            return;
        }
        let full = self
            .cache
            .full_state_since(self.awareness.doc(), peer.joined_at);
        if sv.is_empty() {
            self.peers.send_to(from, full.frame());
            return;
        }
        if full.len() <= INLINE_DIFF_MAX_BYTES {
            let diff = self
                .awareness
                .doc()
                .transact()
                .encode_state_as_update_v1(&sv);
            self.peers
                .send_frame(from, &Frame::Sync(SyncMessage::SyncStep2(diff)));
            return;
        }
        peer.step2 = Step2Answer::Encoding { next: None };
        let update = full.update();
        let sv = sv.encode_v1();
        let diff = async move {
            // The semaphore is never closed; holding the permit spans the blocking work.
            let _permit = DIFF_ENCODERS.acquire().await;
            tokio::task::spawn_blocking(move || yrs::diff_updates_v1(&update, &sv))
                .await
                .map_err(|e| e.to_string())
                .and_then(|diff| diff.map_err(|e| e.to_string()))
        };
        ctx.spawn(diff.into_actor(self).map(move |diff, act, ctx| {
            act.guard(ctx, |act, ctx| act.finish_step2(from, diff, ctx));
        }));
    }

    fn finish_step2(
        &mut self,
        from: ConnectionId,
        diff: Result<Vec<u8>, String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        let next = match std::mem::take(&mut peer.step2) {
            Step2Answer::Encoding { next } => next,
            Step2Answer::Idle => None,
        };
        match diff {
            Ok(diff) => {
                let frame = Bytes::from(Frame::Sync(SyncMessage::SyncStep2(diff)).into_encoded());
                self.peers.send_to(from, frame);
                if let Some(sv) = next {
                    self.answer_step1(from, sv, ctx);
                }
            }
            Err(error) => {
                // The full state is our own encoding; this is a bug, not the client's fault.
                tracing::error!(session = %self.id, connection = %from, %error, "could not encode a sync answer");
                self.remove_peer(
                    from,
                    Some((close_code::INTERNAL_ERROR, "sync failed; reconnect")),
                );
            }
        }
        self.settle();
    }

    fn receive_update(
        &mut self,
        from: ConnectionId,
        role: Role,
        bytes: Vec<u8>,
        is_step2: bool,
        ctx: &mut Context<Self>,
    ) {
        let summary = match summarize_update(&bytes) {
            Ok(summary) => summary,
            Err(error) => {
                self.remove_peer(from, Some((error.close_code(), &error.to_string())));
                return;
            }
        };
        let doc = self.awareness.doc();
        if !role.can_write() {
            // A viewer's step 2 answering our step 1 usually carries nothing new; only a real
            // attempt to change the document is refused.
            if !self.cache.adds_nothing(doc, &summary, true) {
                self.peers.send_frame(from, &Frame::read_only());
            }
            return;
        }
        if self.cache.adds_nothing(doc, &summary, is_step2) {
            return; // nothing to store or fan out
        }
        let placed = match resolve(&summary, &[&self.nesting, self.durability.queued()]) {
            Ok(resolution) => resolution.placed,
            Err(error) => {
                tracing::warn!(session = %self.id, connection = %from, %error, "update refused");
                self.remove_peer(from, Some((error.close_code(), &error.to_string())));
                return;
            }
        };
        let limit = self.deps.limits.max_doc_bytes;
        if self.durability.projected_bytes(bytes.len()) > limit {
            // The running estimate only grows between compactions; measure before refusing
            // (once per change of the document: the full state is cached).
            let measured = self.cache.full_state(self.awareness.doc()).len();
            self.durability.set_doc_bytes(measured);
            if self.durability.projected_bytes(bytes.len()) > limit {
                tracing::warn!(session = %self.id, connection = %from, limit, "document size limit reached");
                self.peers
                    .send_frame(from, &Frame::Auth(DOCUMENT_TOO_LARGE_REASON.to_owned()));
                return;
            }
        }
        self.enqueue_update(from, bytes, placed, ctx);
    }

    /// A change the server itself makes (job outputs): checked like an editor's, then stored and
    /// fanned out to everyone.
    /// The receiver learns when it is stored (or could not be).
    pub(crate) fn accept_server_update(
        &mut self,
        bytes: Vec<u8>,
        editor: Option<atelier_protocol::ids::AccountId>,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<Result<(), DocStoreError>>, String> {
        let summary =
            summarize_update(&bytes).map_err(|e| format!("invalid server update: {e}"))?;
        let placed: Vec<Placed> = resolve(&summary, &[&self.nesting, self.durability.queued()])
            .map_err(|e| format!("server update refused: {e}"))?
            .placed;
        Ok(self.enqueue_server_update(bytes, placed, editor, ctx))
    }

    fn receive_awareness(&mut self, from: ConnectionId, payload: &[u8]) {
        let update = match decode_awareness(payload) {
            Ok(update) => update,
            Err(error) => {
                self.remove_peer(from, Some((error.close_code(), &error.to_string())));
                return;
            }
        };
        let limits = &self.deps.limits;
        match self
            .presence
            .receive(&mut self.awareness, from, update, limits)
        {
            Ok(Some(frame)) => {
                self.peers.broadcast(&frame, |_, _| true);
                self.publish_awareness_frame(&frame);
            }
            Ok(None) => {}
            Err(error) => {
                self.remove_peer(
                    from,
                    Some((close_code::POLICY_VIOLATION, &error.to_string())),
                );
            }
        }
    }
}
