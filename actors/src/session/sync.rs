//! Frames from participants: y-sync (step 1, step 2, update), awareness, query-awareness.
//!
//! Echo semantics follow y-websocket's reference server: a stored document update goes to every
//! *other* connection; an awareness change goes to *every* connection, the sender included (a
//! stock client that hears nothing for 30 s reconnects, and the echo of its own awareness renewal
//! every 15 s is what it hears in a quiet session).

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::ids::ConnectionId;
use atelier_protocol::ysync::{
    decode_awareness, decode_update, encode_awareness, Frame, SyncMessage,
};
use atelier_protocol::Role;
use bytes::Bytes;
use yrs::{ReadTxn, Transact};

use super::{doc, SessionActor, MAX_AWARENESS_STATES_PER_CONNECTION};

/// The reason sent with `[2, 0, reason]` when an update would push the document over its limit.
pub const DOCUMENT_TOO_LARGE_REASON: &str = "document-too-large";

impl SessionActor {
    pub(crate) fn receive(&mut self, from: ConnectionId, frame: Frame, ctx: &mut Context<Self>) {
        let Some(role) = self.peers.get(from).map(|p| p.participant.role) else {
            // A connection that already left (or belonged to a previous incarnation).
            return;
        };
        match frame {
            Frame::Sync(SyncMessage::SyncStep1(sv)) => {
                let fresh = sv.is_empty();
                let cached = self.full_state_frame.clone().filter(|_| fresh);
                let frame = cached.unwrap_or_else(|| {
                    let diff = self
                        .awareness
                        .doc()
                        .transact()
                        .encode_state_as_update_v1(&sv);
                    let frame = Bytes::from(Frame::Sync(SyncMessage::SyncStep2(diff)).encode());
                    if fresh {
                        self.full_state_frame = Some(frame.clone());
                    }
                    frame
                });
                self.peers.send_to(from, frame);
            }
            Frame::Sync(SyncMessage::SyncStep2(update)) => {
                self.receive_update(from, role, update, true, ctx);
            }
            Frame::Sync(SyncMessage::Update(update)) => {
                self.receive_update(from, role, update, false, ctx);
            }
            Frame::Awareness(payload) => self.receive_awareness(from, &payload),
            Frame::QueryAwareness => {
                if let Some(states) = self.awareness_states() {
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

    fn receive_update(
        &mut self,
        from: ConnectionId,
        role: Role,
        bytes: Vec<u8>,
        is_step2: bool,
        ctx: &mut Context<Self>,
    ) {
        let update = match decode_update(&bytes) {
            Ok(update) => update,
            Err(error) => {
                self.remove_peer(from, Some((error.close_code(), &error.to_string())));
                return;
            }
        };
        if !role.can_write() {
            // A viewer's step 2 answering our step 1 usually carries nothing new; only a real
            // attempt to change the document is refused.
            if !doc::adds_nothing(self.awareness.doc(), &update, true) {
                self.peers.send_frame(from, &Frame::read_only());
            }
            return;
        }
        if doc::adds_nothing(self.awareness.doc(), &update, is_step2) {
            return; // nothing to store or fan out
        }
        let limit = self.deps.limits.max_doc_bytes;
        if self.durability.projected_bytes(bytes.len()) > limit {
            // The running estimate only grows between compactions; measure before refusing.
            self.durability
                .set_doc_bytes(doc::encoded_len(self.awareness.doc()));
            if self.durability.projected_bytes(bytes.len()) > limit {
                tracing::warn!(session = %self.id, connection = %from, limit, "document size limit reached");
                self.peers
                    .send_frame(from, &Frame::Auth(DOCUMENT_TOO_LARGE_REASON.to_owned()));
                return;
            }
        }
        self.enqueue_update(from, update, bytes, ctx);
    }

    fn receive_awareness(&mut self, from: ConnectionId, payload: &[u8]) {
        let update = match decode_awareness(payload) {
            Ok(update) => update,
            Err(error) => {
                self.remove_peer(from, Some((error.close_code(), &error.to_string())));
                return;
            }
        };
        let summary = match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => summary,
            Ok(None) => return, // stale clocks: nothing changed
            Err(error) => {
                tracing::debug!(session = %self.id, %error, "awareness update not applied");
                return;
            }
        };
        // Whoever last set a state controls it: a reconnecting tab takes its client id over from
        // its stale connection, so that connection's departure does not erase the live cursor.
        for client in summary.added.iter().chain(&summary.updated) {
            let client = client.get();
            for (id, peer) in self.peers.iter_mut() {
                if id == from {
                    peer.awareness_ids.insert(client);
                } else {
                    peer.awareness_ids.remove(&client);
                }
            }
            self.replica.claim_presence(client);
        }
        for client in &summary.removed {
            for (_, peer) in self.peers.iter_mut() {
                peer.awareness_ids.remove(&client.get());
            }
        }
        let controlled = self.peers.get(from).map_or(0, |p| p.awareness_ids.len());
        if controlled > MAX_AWARENESS_STATES_PER_CONNECTION {
            self.remove_peer(
                from,
                Some((close_code::POLICY_VIOLATION, "too many awareness states")),
            );
            return;
        }
        if let Ok(changed) = self.awareness.update_with_clients(summary.all_changes()) {
            let payload = encode_awareness(&changed);
            let frame = Bytes::from(Frame::Awareness(payload.clone()).encode());
            self.peers.broadcast(&frame, |_, _| true);
            self.publish_awareness(payload);
        }
    }
}
