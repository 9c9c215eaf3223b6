//! The session as one replica of a document other nodes also hold (cluster mode).
//!
//! Every node that has a session loaded applies every committed update exactly once, whichever
//! node committed it:
//! - its own batches, when their append returns their `seq`s (`durability`), which it then
//!   publishes to the others with those `seq`s;
//! - the other nodes' batches, as the relay delivers them ([`RemoteUpdates`]).
//!
//! [`AppliedSeqs`] records which `seq`s this replica has applied: everything up to a watermark,
//! plus the ones above it. A hole above the watermark is a gap: either an update still on its way
//! (two nodes commit concurrently and the relay may deliver them in either order), or one the
//! relay lost (Redis pub/sub drops messages on reconnects and slow subscribers). After
//! [`GAP_GRACE`] the replica reads what it misses from the database; if those rows were already
//! folded into a snapshot by another node, it merges that snapshot instead. The registry also asks
//! every live session now and then where the durable log's head is ([`CheckHead`]), so an update
//! whose relay message was lost is found even when nothing follows it.
//!
//! Presence (awareness) is relayed too; states that came from another node are remembered per
//! node so they can be withdrawn when that node dies or leaves ([`NodeGone`]).

use std::collections::{BTreeSet, HashMap};

use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::ConnectionId;
use atelier_protocol::relay::RelayMessage;
use atelier_protocol::ysync::integrate::Integrated;
use atelier_protocol::ysync::{decode_awareness, decode_frame, encode_awareness, Frame};
use bytes::Bytes;
use yrs::{ReadTxn, Transact};

use super::{doc, Phase, SessionActor, NEXT_CONNECTION_ID};
use crate::store::StoredDoc;
use crate::telemetry;

/// How long a hole in the applied `seq`s may last before the replica reads the database: long
/// enough for a concurrent commit's relay message to arrive, short enough to go unnoticed.
pub(crate) const GAP_GRACE: Duration = Duration::from_millis(150);

/// Above this many out-of-order `seq`s the replica stops waiting and repairs at once.
const MAX_OUT_OF_ORDER: usize = 4096;

/// The `seq`s of the durable log this replica has applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AppliedSeqs {
    /// Every `seq <= watermark` is applied.
    watermark: i64,
    /// Applied `seq`s above the watermark (each one leaves a hole below it).
    above: BTreeSet<i64>,
}

impl AppliedSeqs {
    /// The state after loading everything up to `head`.
    pub(crate) fn at(head: i64) -> Self {
        Self {
            watermark: head,
            above: BTreeSet::new(),
        }
    }

    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    pub(crate) fn contains(&self, seq: i64) -> bool {
        seq <= self.watermark || self.above.contains(&seq)
    }

    /// Records `seq` as applied.
    pub(crate) fn insert(&mut self, seq: i64) {
        if seq <= self.watermark {
            return;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }

    /// Everything up to `head` is applied now (after a reload from storage).
    pub(crate) fn advance_to(&mut self, head: i64) {
        if head > self.watermark {
            self.watermark = head;
            self.above = self.above.split_off(&(head + 1));
        }
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }

    /// Some `seq` below the highest applied one is missing.
    pub(crate) fn has_gap(&self) -> bool {
        !self.above.is_empty()
    }

    /// The highest applied `seq`.
    pub(crate) fn highest(&self) -> i64 {
        self.above.last().copied().unwrap_or(self.watermark)
    }
}

/// Replica state of a session: what is applied, and which presence holder stands for which
/// other node.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    pub(crate) applied: AppliedSeqs,
    /// A repair is scheduled or running.
    repairing: bool,
    /// A relayed update arrived before something it builds on and was left for a repair.
    waiting: bool,
    /// The presence holder (an id no connection has) of each node that relayed presence here.
    nodes: HashMap<String, ConnectionId>,
}

impl Replica {
    /// The presence holder standing for `node`, made on first use.
    fn holder(&mut self, node: String) -> ConnectionId {
        *self.nodes.entry(node).or_insert_with(|| {
            ConnectionId(NEXT_CONNECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        })
    }

    fn is_node(&self, id: ConnectionId) -> bool {
        self.nodes.values().any(|holder| *holder == id)
    }
}

/// Committed updates another node relayed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteUpdates {
    pub first_seq: i64,
    pub updates: Vec<Vec<u8>>,
}

/// An awareness update from a connection on another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteAwareness {
    pub node: String,
    pub payload: Vec<u8>,
}

/// Another node asks for this node's presence states (it just loaded the session).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceQuery;

/// A studio event or preview published on another node: delivered to local participants only.
#[derive(Message)]
#[rtype(result = "()")]
pub enum RemoteBroadcast {
    Event(StudioEvent),
    /// An encoded type-101 frame.
    Preview(Bytes),
}

/// A node died or left: withdraw the presence that came from it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeGone {
    pub node: String,
}

/// The durable log's head is at `head_seq`: catch up if this replica is behind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckHead {
    pub head_seq: i64,
}

/// The relay was down and is back: catch up from the database and re-announce presence.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

impl SessionActor {
    fn clustered(&self) -> bool {
        self.deps.relay.is_clustered()
    }

    /// Publishes a batch this node committed, `first_seq..`.
    pub(crate) fn publish_updates(&self, first_seq: i64, updates: Vec<Vec<u8>>) {
        if self.clustered() && !updates.is_empty() {
            self.deps.relay.publish(RelayMessage::Updates {
                session: self.id,
                first_seq,
                updates,
            });
        }
    }

    /// Publishes an awareness change this node's connections made (the frame they were sent).
    pub(crate) fn publish_awareness_frame(&self, frame: &[u8]) {
        if !self.clustered() {
            return;
        }
        if let Ok(Frame::Awareness(payload)) = decode_frame(frame) {
            self.deps.relay.publish(RelayMessage::Awareness {
                session: self.id,
                payload,
            });
        }
    }

    /// After a load: the applied `seq`s, and (cluster) ask the others for their presence.
    pub(crate) fn replica_loaded(&mut self, stored: &StoredDoc) {
        self.replica.applied = AppliedSeqs::at(stored.head_seq());
        if self.clustered() {
            self.deps
                .relay
                .publish(RelayMessage::QueryAwareness { session: self.id });
        }
    }

    /// Applies a committed update another node relayed (or the log gave back). `in_order`: every
    /// `seq` before it is applied here (a repair reads the log in order), so whatever it builds
    /// on is here and it goes through the repairing path like a stored update. A relayed one may
    /// arrive before an update it builds on: then it is left for the repair, which applies both
    /// in order.
    fn apply_remote(&mut self, seq: i64, bytes: &[u8], in_order: bool) {
        if self.replica.applied.contains(seq) {
            return;
        }
        let doc = self.awareness.doc();
        let result = if in_order {
            doc::integrate(doc, &mut self.nesting, bytes).map(Some)
        } else {
            doc::integrate_complete(doc, &mut self.nesting, bytes)
        };
        match result {
            Ok(Some(integrated)) => {
                self.cache.changed();
                self.durability.grow(bytes.len());
                let frame = match integrated {
                    Integrated::AsIs => {
                        Bytes::from(atelier_protocol::ysync::encode_update_frame(bytes))
                    }
                    Integrated::Repaired(repaired) => {
                        Bytes::from(atelier_protocol::ysync::encode_update_frame(&repaired))
                    }
                };
                self.peers.broadcast(&frame, |_, _| true);
            }
            Ok(None) => {
                self.replica.waiting = true;
                return;
            }
            Err(error) => {
                tracing::warn!(session = %self.id, seq, %error, "relayed update not applied")
            }
        }
        self.replica.applied.insert(seq);
    }

    fn receive_remote_updates(&mut self, msg: RemoteUpdates, ctx: &mut Context<Self>) {
        for (seq, bytes) in (msg.first_seq..).zip(&msg.updates) {
            self.apply_remote(seq, bytes, false);
        }
        self.settle();
        self.watch_for_gaps(ctx);
    }

    /// Schedules a repair if some `seq` is missing (at once if too many are out of order).
    pub(crate) fn watch_for_gaps(&mut self, ctx: &mut Context<Self>) {
        let behind = self.replica.applied.has_gap() || self.replica.waiting;
        if !behind || self.replica.repairing {
            return;
        }
        self.replica.repairing = true;
        let wait = if self.replica.applied.above.len() > MAX_OUT_OF_ORDER {
            Duration::ZERO
        } else {
            GAP_GRACE
        };
        ctx.run_later(wait, |act, ctx| {
            act.guard(ctx, |act, ctx| {
                if act.replica.applied.has_gap() || act.replica.waiting {
                    act.repair(ctx);
                } else {
                    act.replica.repairing = false;
                }
            });
        });
    }

    /// Reads what this replica misses from the database and applies it.
    fn repair(&mut self, ctx: &mut Context<Self>) {
        self.replica.repairing = true;
        let after = self.replica.applied.watermark();
        let store = self.deps.store.clone();
        let id = self.id;
        metrics::counter!(telemetry::GAP_REPAIRS).increment(1);
        ctx.spawn(
            async move {
                match store.updates_since(id, after).await {
                    Ok(Some(updates)) => Ok(Ok(updates)),
                    // Folded into a snapshot meanwhile: take the whole stored document.
                    Ok(None) => store.load(id).await.map(Err),
                    Err(error) => Err(error),
                }
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.replica.repairing = false;
                act.guard(ctx, |act, ctx| match result {
                    Ok(Ok(updates)) => {
                        tracing::debug!(session = %act.id, after, count = updates.len(), "gap repaired");
                        act.replica.waiting = false;
                        for (seq, bytes) in &updates {
                            act.apply_remote(*seq, bytes, true);
                        }
                        act.settle();
                    }
                    Ok(Err(stored)) => {
                        act.replica.waiting = false;
                        act.merge_stored(&stored);
                    }
                    Err(error) => {
                        tracing::warn!(session = %act.id, %error, "gap repair failed; retrying");
                        act.watch_for_gaps(ctx);
                    }
                });
            }),
        );
    }

    /// Merges a whole stored document (snapshot and tail) into this replica.
    fn merge_stored(&mut self, stored: &StoredDoc) {
        let parts = stored
            .snapshot
            .iter()
            .map(Vec::as_slice)
            .chain(stored.updates.iter().map(|(_, u)| u.as_slice()));
        let before = self.awareness.doc().transact().state_vector();
        for bytes in parts {
            if let Err(error) = doc::integrate(self.awareness.doc(), &mut self.nesting, bytes) {
                tracing::warn!(session = %self.id, %error, "stored part not merged");
            }
        }
        self.cache.changed();
        self.replica.applied.advance_to(stored.head_seq());
        // Local participants get what they miss as one update.
        let diff = self
            .awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&before);
        let frame = Bytes::from(atelier_protocol::ysync::encode_update_frame(&diff));
        self.peers.broadcast(&frame, |_, _| true);
        self.settle();
    }

    fn receive_remote_awareness(&mut self, node: String, payload: &[u8]) {
        let Ok(update) = decode_awareness(payload) else {
            tracing::warn!(session = %self.id, %node, "relayed awareness is malformed");
            return;
        };
        let holder = self.replica.holder(node);
        let limits = &self.deps.limits;
        if let Some(frame) =
            self.presence
                .receive_from_node(&mut self.awareness, holder, update, limits)
        {
            self.peers.broadcast(&frame, |_, _| true);
        }
        self.settle();
    }

    /// Re-publishes the presence of this node's own connections.
    fn announce_presence(&self) {
        let local = self.presence.owned_by(|owner| !self.replica.is_node(owner));
        if local.is_empty() {
            return;
        }
        if let Ok(update) = self.awareness.update_with_clients(local) {
            if self.clustered() {
                self.deps.relay.publish(RelayMessage::Awareness {
                    session: self.id,
                    payload: encode_awareness(&update),
                });
            }
        }
    }

    fn node_gone(&mut self, node: &str) {
        let Some(holder) = self.replica.nodes.remove(node) else {
            return;
        };
        let limits = &self.deps.limits;
        if let Some(frame) = self.presence.leave(&mut self.awareness, holder, limits) {
            self.peers.broadcast(&frame, |_, _| true);
        }
        self.settle();
    }

    fn ready(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::ShuttingDown)
    }
}

impl Handler<RemoteUpdates> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteUpdates, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, ctx| {
            if act.ready() {
                act.receive_remote_updates(msg, ctx);
            }
        });
    }
}

impl Handler<RemoteAwareness> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteAwareness, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| {
            if act.ready() {
                act.receive_remote_awareness(msg.node, &msg.payload);
            }
        });
    }
}

impl Handler<PresenceQuery> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: PresenceQuery, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| act.announce_presence());
    }
}

impl Handler<RemoteBroadcast> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteBroadcast, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| match msg {
            // The same delivery as a local event: a payer's balance only to the payer.
            RemoteBroadcast::Event(event) => act.deliver_event(&event),
            RemoteBroadcast::Preview(frame) => {
                act.peers
                    .broadcast(&frame, |_, p| p.participant.wants_events);
                act.settle();
            }
        });
    }
}

impl Handler<NodeGone> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: NodeGone, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, _| act.node_gone(&msg.node));
    }
}

impl Handler<CheckHead> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CheckHead, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, ctx| {
            if act.ready() && !act.replica.repairing && msg.head_seq > act.replica.applied.highest()
            {
                act.repair(ctx);
            }
        });
    }
}

impl Handler<Resync> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.guard(ctx, |act, ctx| {
            if !act.ready() {
                return;
            }
            act.announce_presence();
            act.deps
                .relay
                .publish(RelayMessage::QueryAwareness { session: act.id });
            if !act.replica.repairing {
                act.repair(ctx);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::AppliedSeqs;

    #[test]
    fn watermark_follows_contiguous_seqs() {
        let mut seqs = AppliedSeqs::at(10);
        assert!(seqs.contains(3) && !seqs.has_gap());
        seqs.insert(12);
        assert!(seqs.has_gap());
        assert_eq!((seqs.watermark(), seqs.highest()), (10, 12));
        seqs.insert(11);
        assert!(!seqs.has_gap());
        assert_eq!(seqs.watermark(), 12);
        seqs.insert(15);
        seqs.advance_to(13);
        assert_eq!(seqs.watermark(), 13);
        assert!(seqs.has_gap());
        seqs.insert(14);
        assert_eq!(seqs.watermark(), 15);
        assert!(!seqs.has_gap());
    }
}
