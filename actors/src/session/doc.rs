//! The session document: rebuilding it from storage (every part through
//! `ysync::integrate`, the one path of updates into a session document), the encodings cached
//! per change, and measuring updates against it.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub(crate) use atelier_protocol::ysync::integrate::{integrate, integrate_complete, Integrated};
use atelier_protocol::ysync::{BlockKind, Frame, NestingIndex, SyncMessage, UpdateSummary};
use atelier_protocol::SessionId;
use bytes::Bytes;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::store::StoredDoc;

/// A document rebuilt from storage, with its nesting index.
pub(crate) struct Rebuilt {
    pub(crate) doc: Doc,
    pub(crate) nesting: NestingIndex,
    /// Stored parts skipped (undecodable, unappliable, poison) or repaired: a compaction should
    /// rewrite the document.
    pub(crate) skipped: usize,
}

/// Rebuilds a document from its snapshot and update tail.
///
/// Each stored part goes through [`integrate`] (`ysync::integrate`, the path of every update
/// into a session document): validated, placed against the nesting index
/// and repaired where it nests types too deep or depends on what is not there (a document
/// stored before those checks existed), then applied on its own. A part that fails to decode or
/// apply is skipped with an error log. A part whose application *panics* inside yrs is a
/// "poison" update: the half-applied document is discarded and rebuilt without it, so one bad
/// row cannot crash-loop the session forever (the next compaction then drops it from storage).
/// `session` only names it in the logs.
pub(crate) fn rebuild(session: Option<SessionId>, stored: &StoredDoc) -> Rebuilt {
    let parts: Vec<&[u8]> = stored
        .snapshot
        .as_deref()
        .into_iter()
        .chain(stored.updates.iter().map(|(_, update)| update.as_slice()))
        .collect();
    let mut skip = BTreeSet::new();
    loop {
        let doc = Doc::new();
        let mut nesting = NestingIndex::new();
        let mut repaired = 0;
        let mut poisoned = None;
        for (index, bytes) in parts.iter().enumerate() {
            if skip.contains(&index) {
                continue;
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| integrate(&doc, &mut nesting, bytes)));
            match outcome {
                Ok(Ok(Integrated::AsIs)) => {}
                Ok(Ok(Integrated::Repaired(_))) => {
                    tracing::error!(?session, index, "stored update nests types too deep or depends on missing items; applied without those parts");
                    repaired += 1;
                }
                Ok(Err(error)) => {
                    tracing::error!(?session, index, %error, "skipping stored update");
                    skip.insert(index);
                }
                Err(_) => {
                    poisoned = Some(index);
                    break;
                }
            }
        }
        match poisoned {
            None => {
                return Rebuilt {
                    doc,
                    nesting,
                    skipped: skip.len() + repaired,
                }
            }
            Some(index) => {
                tracing::error!(
                    ?session,
                    index,
                    "stored update panics yrs; rebuilding without it"
                );
                skip.insert(index);
            }
        }
    }
}

/// The full state as one v1 update (the snapshot format).
pub(crate) fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// The sync step 2 answering a fresh client (an empty state vector), encoded once per change.
#[derive(Clone)]
pub(crate) struct FullState {
    /// `[0, 1, varBytes(update)]`.
    frame: Bytes,
    update_len: usize,
}

impl FullState {
    fn encode(doc: &Doc) -> Self {
        let update = full_state(doc);
        let update_len = update.len();
        let frame = Bytes::from(Frame::Sync(SyncMessage::SyncStep2(update)).into_encoded());
        Self { frame, update_len }
    }

    pub(crate) fn frame(&self) -> Bytes {
        self.frame.clone()
    }

    /// The v1 update inside the frame (shares its bytes).
    pub(crate) fn update(&self) -> Bytes {
        self.frame
            .slice(self.frame.len().saturating_sub(self.update_len)..)
    }

    /// Size of the encoded document: what a snapshot weighs.
    pub(crate) fn len(&self) -> usize {
        self.update_len
    }
}

/// What is derived from the whole document, computed at most once per change of it (so that
/// no message costs a pass over a large document more than once per edit).
///
/// A full state may also be *older* than the document: it is still a complete answer to a
/// connection that joined before it was encoded, because every update applied since then was
/// sent to that connection. So a client asking again and again for the document of a session
/// that keeps changing costs one encoding in all, not one per change.
#[derive(Default)]
pub(crate) struct DocCache {
    /// How many times the document changed (a connection remembers it when it joins).
    generation: u64,
    /// The last full state encoded, and the generation it shows.
    full_state: Option<(u64, FullState)>,
    deleted: Option<DeletedRanges>,
}

impl DocCache {
    /// The document changed.
    pub(crate) fn changed(&mut self) {
        self.generation += 1;
        self.deleted = None;
    }

    /// The document was replaced (loaded, restarted): nothing encoded before applies.
    pub(crate) fn reset(&mut self) {
        self.changed();
        self.full_state = None;
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The current full state.
    pub(crate) fn full_state(&mut self, doc: &Doc) -> FullState {
        self.full_state_since(doc, self.generation)
    }

    /// A full state showing at least generation `since` (see the type's docs).
    pub(crate) fn full_state_since(&mut self, doc: &Doc, since: u64) -> FullState {
        match &self.full_state {
            Some((generation, full)) if *generation >= since => full.clone(),
            _ => {
                let full = FullState::encode(doc);
                self.full_state = Some((self.generation, full.clone()));
                full
            }
        }
    }

    fn deleted(&mut self, doc: &Doc) -> &DeletedRanges {
        self.deleted.get_or_insert_with(|| DeletedRanges::of(doc))
    }

    /// Whether applying the update summarized as `summary` would change nothing: every block is
    /// already integrated and (when `check_deletes`) every deletion already happened.
    ///
    /// Clients send such updates all the time — the step 2 answering the server's step 1
    /// carries the client's whole delete set even when nothing is new — and they should neither
    /// be stored nor, from a viewer, be answered with "read-only". The document's deletions are
    /// collected once per change; each range is then a binary search.
    pub(crate) fn adds_nothing(
        &mut self,
        doc: &Doc,
        summary: &UpdateSummary,
        check_deletes: bool,
    ) -> bool {
        let sv = doc.transact().state_vector();
        let all_blocks_known = summary
            .blocks
            .iter()
            .filter(|block| block.kind != BlockKind::Skip)
            .all(|block| block.end() <= sv.get(&yrs::ClientID::new(block.client)));
        if !all_blocks_known {
            return false;
        }
        if summary.deletes.is_empty() {
            return true;
        }
        if !check_deletes {
            return false;
        }
        let deleted = self.deleted(doc);
        summary
            .deletes
            .iter()
            .all(|range| deleted.covers(range.client, range.start..range.end))
    }
}

/// The document's deleted ranges per client, sorted and merged.
struct DeletedRanges(HashMap<u64, Vec<Range<u32>>>);

impl DeletedRanges {
    fn of(doc: &Doc) -> Self {
        let deleted = doc.transact().snapshot().delete_set;
        let mut by_client = HashMap::new();
        for (client, ranges) in deleted.iter() {
            let mut ranges: Vec<Range<u32>> = ranges.iter().cloned().collect();
            ranges.sort_by_key(|r| r.start);
            let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
            for range in ranges {
                match merged.last_mut() {
                    Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                    _ => merged.push(range),
                }
            }
            by_client.insert(client.get(), merged);
        }
        Self(by_client)
    }

    fn covers(&self, client: u64, range: Range<u32>) -> bool {
        if range.is_empty() {
            return true;
        }
        let Some(ranges) = self.0.get(&client) else {
            return false;
        };
        let after = ranges.partition_point(|r| r.start <= range.start);
        after
            .checked_sub(1)
            .and_then(|i| ranges.get(i))
            .is_some_and(|r| range.end <= r.end)
    }
}
