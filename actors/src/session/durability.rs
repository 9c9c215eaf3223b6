//! Making updates durable: group commit, compaction, flush.
//!
//! An accepted update is queued; at most one `append` is in flight, and everything that arrives
//! meanwhile goes into the next one, as one transaction, in arrival order (group commit). Only
//! when an append succeeds are its updates applied to the document and fanned out — so no peer
//! ever receives an update that a crash could lose.
//!
//! Updates queued or in flight are not in the document yet, but later updates may build on
//! them: their items are placed in a second nesting index (`queued`) that the nesting check of
//! the next updates consults after the document's. When a batch is applied it goes through
//! `doc::integrate` again, against the document alone — the same path as a load from storage —
//! so the document's index stays exact even if yrs refused part of an earlier update. If an append fails, the connections whose
//! updates were in it are closed with 1011 (their clients resend on resync); nothing is dropped
//! silently.
//!
//! Compaction replaces the stored tail with a snapshot of the document, after
//! `compact_every_updates` stored updates once the tail has also grown to half the snapshot's
//! size, after `compact_interval`, and on flush. Each compaction encodes and rewrites the whole
//! document, so a count alone would make a large document's compactions cost O(document) every
//! few hundred keystrokes; tying it to the tail's size keeps the cost per stored byte constant
//! and the load (snapshot + tail) within 1.5× the snapshot. It covers only updates already
//! applied (`seq <= last_seq`), so it can run while an append is in flight.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::ids::{AccountId, ConnectionId};
use atelier_protocol::ysync::nesting::Placed;
use atelier_protocol::ysync::NestingIndex;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::doc::{self, Integrated};
use super::{Phase, SessionActor};
use crate::store::DocStoreError;
use crate::telemetry;

/// After a failed compaction, wait this long before the count/timer triggers retry it.
const COMPACTION_RETRY: Duration = Duration::from_secs(5);

/// An accepted update waiting to be stored.
pub(crate) struct PendingUpdate {
    pub(crate) from: ConnectionId,
    /// The v1 bytes to store (moved out when the batch is sent).
    pub(crate) bytes: Vec<u8>,
    /// The encoded sync-update frame to fan out once stored; the update is its tail.
    pub(crate) frame: Bytes,
    pub(crate) len: usize,
    /// Told when the update is stored and applied (or could not be stored): server edits wait
    /// for it, so that nothing reports success before its change is durable.
    pub(crate) stored: Option<StoredReply>,
    /// Its new items and where they sit, as found when it was accepted.
    pub(crate) placed: Vec<Placed>,
    /// Someone's editing (and whose account, if any) for the version history; `None` for the
    /// server's own changes (job outputs, restores).
    pub(crate) edit_by: Option<Option<AccountId>>,
}

impl PendingUpdate {
    /// The v1 update (the tail of the frame).
    fn update(&self) -> Bytes {
        self.frame
            .slice(self.frame.len().saturating_sub(self.len)..)
    }
}

type StoredReply = oneshot::Sender<Result<(), DocStoreError>>;

type FlushReply = oneshot::Sender<Result<(), DocStoreError>>;

#[derive(Default)]
pub(crate) struct Durability {
    pending: VecDeque<PendingUpdate>,
    appending: bool,
    /// Items of the updates queued or in flight (see the module docs).
    queued: NestingIndex,
    /// Bytes of updates accepted but not yet applied (queued or in flight).
    unapplied_bytes: usize,
    /// Estimated size of the stored document: exact after load or compaction, then grown by
    /// each applied update.
    doc_bytes: usize,
    compacting: bool,
    compact_requested: bool,
    /// Stored updates not yet folded into a snapshot, and their bytes.
    since_compact: usize,
    tail_bytes: usize,
    /// Size of the stored snapshot (or of the document when it was loaded).
    snapshot_bytes: usize,
    last_compact: Option<Instant>,
    retry_compaction_at: Option<Instant>,
    waiters: Vec<FlushReply>,
    /// First failure seen while waiters were waiting; reported to them.
    waiter_error: Option<DocStoreError>,
    /// Updates accepted so far, and how many of them are settled (stored and applied, or
    /// dropped after a failed append).
    accepted: u64,
    settled: u64,
    /// Waiting until every update accepted before them is settled (see `settled_barrier`).
    barriers: Vec<(u64, oneshot::Sender<()>)>,
}

impl Durability {
    pub(crate) fn loaded(&mut self, tail: usize, tail_bytes: usize, doc_bytes: usize) {
        self.since_compact = tail;
        self.tail_bytes = tail_bytes;
        self.doc_bytes = doc_bytes;
        self.snapshot_bytes = doc_bytes;
        self.last_compact = Some(Instant::now());
    }

    pub(crate) fn request_compaction(&mut self) {
        self.compact_requested = true;
    }

    /// Whether the tail has grown enough to be worth a compaction: `every` updates, and at least
    /// half the snapshot's bytes.
    pub(crate) fn tail_due(&self, every: usize) -> bool {
        self.since_compact >= every && self.tail_bytes.saturating_mul(2) >= self.snapshot_bytes
    }

    /// Nothing queued, in flight or being compacted.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.appending && !self.compacting
    }

    /// Size the document would reach with `extra` more bytes, by the running estimate.
    pub(crate) fn projected_bytes(&self, extra: usize) -> usize {
        self.doc_bytes
            .saturating_add(self.unapplied_bytes)
            .saturating_add(extra)
    }

    /// An update committed elsewhere (another node) was applied: the document grew.
    pub(crate) fn grow(&mut self, bytes: usize) {
        self.doc_bytes = self.doc_bytes.saturating_add(bytes);
    }

    /// Replaces the running estimate with an exact measurement of the applied document.
    pub(crate) fn set_doc_bytes(&mut self, doc_bytes: usize) {
        self.doc_bytes = doc_bytes;
    }

    /// Where the items of updates accepted but not applied yet sit.
    pub(crate) fn queued(&self) -> &NestingIndex {
        &self.queued
    }

    /// Rebuilds [`Self::queued`] from the updates still pending, once a batch is done.
    fn requeue(&mut self, document: &NestingIndex) {
        self.queued.clear();
        for pending in &self.pending {
            for placed in &pending.placed {
                self.queued.record(placed, document.end(placed.client));
            }
        }
    }

    /// Forgets everything (restart): waiters learn their flush did not happen.
    pub(crate) fn abandon(&mut self, error: DocStoreError) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        *self = Self::default();
    }

    /// Counts updates as settled and releases the barriers they held up.
    fn settle_updates(&mut self, count: usize) {
        self.settled = self
            .settled
            .saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
        let settled = self.settled;
        let (done, waiting) = std::mem::take(&mut self.barriers)
            .into_iter()
            .partition(|(target, _)| *target <= settled);
        self.barriers = waiting;
        for (_, barrier) in done {
            let _ = barrier.send(());
        }
    }

    /// Resolves once every update accepted until now is settled: what a reader of the document
    /// waits for to see everything the session has accepted (dropped if the session restarts).
    pub(crate) fn settled_barrier(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.settled >= self.accepted {
            let _ = tx.send(());
        } else {
            self.barriers.push((self.accepted, tx));
        }
        rx
    }

    fn note_error(&mut self, error: &DocStoreError) {
        if !self.waiters.is_empty() && self.waiter_error.is_none() {
            self.waiter_error = Some(error.clone());
        }
    }
}

impl SessionActor {
    /// Queues a validated, placed update from `from` for the next append.
    pub(crate) fn enqueue_update(
        &mut self,
        from: ConnectionId,
        bytes: Vec<u8>,
        placed: Vec<Placed>,
        ctx: &mut Context<Self>,
    ) {
        let author = self
            .peers
            .get(from)
            .and_then(|p| p.participant.account_id());
        self.enqueue(from, bytes, placed, None, Some(author), ctx);
    }

    /// Queues an update the server made itself (`editor`: on behalf of that person's editing,
    /// e.g. a graph written over REST); the receiver learns when it is stored.
    pub(crate) fn enqueue_server_update(
        &mut self,
        bytes: Vec<u8>,
        placed: Vec<Placed>,
        editor: Option<AccountId>,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<(), DocStoreError>> {
        let (tx, rx) = oneshot::channel();
        let edit_by = editor.map(Some);
        let origin = super::messages::SERVER_ORIGIN;
        self.enqueue(origin, bytes, placed, Some(tx), edit_by, ctx);
        rx
    }

    fn enqueue(
        &mut self,
        from: ConnectionId,
        bytes: Vec<u8>,
        placed: Vec<Placed>,
        stored: Option<StoredReply>,
        edit_by: Option<Option<AccountId>>,
        ctx: &mut Context<Self>,
    ) {
        let frame = Bytes::from(atelier_protocol::ysync::encode_update_frame(&bytes));
        let len = bytes.len();
        for item in &placed {
            let floor = self.nesting.end(item.client);
            self.durability.queued.record(item, floor);
        }
        self.durability.unapplied_bytes += len;
        self.durability.accepted += 1;
        self.durability.pending.push_back(PendingUpdate {
            from,
            bytes,
            frame,
            len,
            stored,
            placed,
            edit_by,
        });
        self.progress(ctx);
    }

    /// A receiver that resolves once everything accepted so far is stored and compacted.
    pub(crate) fn flush_waiter(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<(), DocStoreError>> {
        let (tx, rx) = oneshot::channel();
        match &self.phase {
            Phase::Ready | Phase::ShuttingDown => {
                self.durability.waiters.push(tx);
                self.progress(ctx);
            }
            // Nothing can be accepted in these phases, so there is nothing to wait for.
            Phase::Failed(error) => {
                let _ = tx.send(Err(error.clone()));
            }
            Phase::Loading | Phase::Unloaded => {
                let _ = tx.send(Ok(()));
            }
        }
        rx
    }

    /// Drives persistence forward; called after every event that could unblock it.
    pub(crate) fn progress(&mut self, ctx: &mut Context<Self>) {
        if !self.accepts_work() {
            return;
        }
        self.start_append(ctx);
        self.start_compaction(ctx);
        self.resolve_waiters();
    }

    pub(crate) fn on_compact_tick(&mut self, ctx: &mut Context<Self>) {
        let d = &mut self.durability;
        let due = d
            .last_compact
            .is_none_or(|at| at.elapsed() >= self.deps.limits.compact_interval);
        if d.since_compact > 0 && due {
            d.compact_requested = true;
            self.progress(ctx);
        }
    }

    fn start_append(&mut self, ctx: &mut Context<Self>) {
        let d = &mut self.durability;
        if d.appending || d.pending.is_empty() {
            return;
        }
        let mut batch: Vec<PendingUpdate> = d.pending.drain(..).collect();
        let payload: Vec<Vec<u8>> = batch
            .iter_mut()
            .map(|p| std::mem::take(&mut p.bytes))
            .collect();
        // The other nodes get the batch once it is stored (cluster mode only: it costs a copy).
        let relayed = self.deps.relay.is_clustered().then(|| payload.clone());
        d.appending = true;
        let store = self.deps.store.clone();
        let id = self.id;
        let started = Instant::now();
        ctx.spawn(
            async move { store.append(id, payload).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    metrics::histogram!(telemetry::PERSIST_SECONDS, "op" => "append")
                        .record(started.elapsed().as_secs_f64());
                    act.durability.appending = false;
                    act.guard(ctx, |act, ctx| {
                        act.finish_append(batch, relayed, result, ctx)
                    });
                }),
        );
    }

    fn finish_append(
        &mut self,
        batch: Vec<PendingUpdate>,
        relayed: Option<Vec<Vec<u8>>>,
        result: Result<i64, DocStoreError>,
        ctx: &mut Context<Self>,
    ) {
        let batch_bytes: usize = batch.iter().map(|p| p.len).sum();
        let batch_len = batch.len();
        self.durability.unapplied_bytes =
            self.durability.unapplied_bytes.saturating_sub(batch_bytes);
        match result {
            Ok(last_seq) => {
                // The batch holds `seq`s `first_seq..=last_seq`, in order.
                let first_seq = last_seq - i64::try_from(batch.len()).unwrap_or(i64::MAX) + 1;
                let d = &mut self.durability;
                d.since_compact += batch.len();
                d.tail_bytes = d.tail_bytes.saturating_add(batch_bytes);
                d.doc_bytes = d.doc_bytes.saturating_add(batch_bytes);
                if d.tail_due(self.deps.limits.compact_every_updates) {
                    d.compact_requested = true;
                }
                for (seq, mut pending) in (first_seq..).zip(batch) {
                    self.replica.applied.insert(seq);
                    if let Some(author) = pending.edit_by {
                        self.history.edited(author);
                    }
                    let stored = pending.stored.take();
                    let update = pending.update();
                    let integrated =
                        doc::integrate(self.awareness.doc(), &mut self.nesting, &update);
                    self.cache.changed();
                    let frame = match integrated {
                        Ok(Integrated::AsIs) => Some(pending.frame),
                        // Something it built on did not make it into the document: peers get
                        // what was applied.
                        Ok(Integrated::Repaired(repaired)) => {
                            tracing::warn!(session = %self.id, "stored update applied in part");
                            Some(Bytes::from(atelier_protocol::ysync::encode_update_frame(
                                &repaired,
                            )))
                        }
                        // Stored but refused by yrs: not fanned out (it would not apply for
                        // other peers either); the next compaction drops it.
                        Err(error) => {
                            tracing::warn!(
                                session = %self.id, %error, "stored update could not be applied"
                            );
                            None
                        }
                    };
                    if let Some(frame) = frame {
                        metrics::counter!(telemetry::DOC_UPDATES).increment(1);
                        self.peers.broadcast(&frame, |id, _| id != pending.from);
                    }
                    if let Some(stored) = stored {
                        let _ = stored.send(Ok(()));
                    }
                }
                self.durability.requeue(&self.nesting);
                self.durability.settle_updates(batch_len);
                if let Some(updates) = relayed {
                    self.publish_updates(first_seq, updates);
                }
                // Another node's `seq` between ours shows up as a gap, repaired from storage.
                self.watch_for_gaps(ctx);
            }
            Err(DocStoreError::SessionNotFound(_)) => {
                tracing::info!(session = %self.id, "session deleted while live");
                self.end("the session was deleted", ctx);
                return;
            }
            Err(error) => {
                tracing::error!(
                    session = %self.id,
                    %error,
                    updates = batch.len(),
                    "append failed; closing the connections whose updates were not stored"
                );
                self.durability.note_error(&error);
                let authors: BTreeSet<ConnectionId> = batch.iter().map(|p| p.from).collect();
                for pending in batch {
                    if let Some(stored) = pending.stored {
                        let _ = stored.send(Err(error.clone()));
                    }
                }
                // Their queued updates build on the lost ones; the clients resend all of it when
                // they resync after reconnecting (a server edit's caller learns it failed).
                let d = &mut self.durability;
                let before = d.pending.len();
                d.pending.retain(|p| !authors.contains(&p.from));
                let dropped = before - d.pending.len();
                d.unapplied_bytes = d.pending.iter().map(|p| p.len).sum();
                d.requeue(&self.nesting);
                d.settle_updates(batch_len + dropped);
                for author in authors {
                    self.remove_peer(
                        author,
                        Some((
                            close_code::INTERNAL_ERROR,
                            "storage error; reconnect to resync",
                        )),
                    );
                }
            }
        }
        self.settle();
        self.progress(ctx);
    }

    fn start_compaction(&mut self, ctx: &mut Context<Self>) {
        let d = &self.durability;
        if d.compacting {
            return;
        }
        let flushing = !d.waiters.is_empty()
            && d.pending.is_empty()
            && !d.appending
            && d.since_compact > 0
            && d.waiter_error.is_none();
        let backing_off = d.retry_compaction_at.is_some_and(|at| Instant::now() < at);
        if !(flushing || (d.compact_requested && !backing_off)) {
            return;
        }
        let snapshot = self
            .cache
            .full_state(self.awareness.doc())
            .update()
            .to_vec();
        // Only what is applied here without a hole may be folded into the snapshot (updates
        // above a hole are in the snapshot too, and stay in the log: applying twice is a no-op).
        let upto_seq = self.replica.applied.watermark();
        let d = &mut self.durability;
        let covered = d.since_compact;
        let covered_bytes = d.tail_bytes;
        d.compacting = true;
        d.compact_requested = false;
        d.doc_bytes = snapshot.len();
        let snapshot_bytes = snapshot.len();
        let store = self.deps.store.clone();
        let id = self.id;
        let started = Instant::now();
        ctx.spawn(
            async move { store.compact(id, snapshot, upto_seq).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    metrics::histogram!(telemetry::PERSIST_SECONDS, "op" => "compact")
                        .record(started.elapsed().as_secs_f64());
                    let d = &mut act.durability;
                    d.compacting = false;
                    match result {
                        Ok(()) => {
                            d.since_compact = d.since_compact.saturating_sub(covered);
                            d.tail_bytes = d.tail_bytes.saturating_sub(covered_bytes);
                            d.snapshot_bytes = snapshot_bytes;
                            d.last_compact = Some(Instant::now());
                            d.retry_compaction_at = None;
                        }
                        Err(error) => {
                            // Nothing is lost: the updates stay in the log until a later try.
                            tracing::warn!(session = %act.id, %error, "compaction failed");
                            d.retry_compaction_at = Some(Instant::now() + COMPACTION_RETRY);
                            d.note_error(&error);
                        }
                    }
                    act.guard(ctx, |act, ctx| act.progress(ctx));
                }),
        );
    }

    fn resolve_waiters(&mut self) {
        let d = &mut self.durability;
        if d.waiters.is_empty() || !d.is_idle() {
            return;
        }
        if d.since_compact > 0 && d.waiter_error.is_none() {
            return; // start_compaction has just been asked to run; wait for it
        }
        let result = d.waiter_error.take().map_or(Ok(()), Err);
        for waiter in d.waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
