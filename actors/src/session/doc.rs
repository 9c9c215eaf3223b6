//! The session document: rebuilding it from storage, and measuring updates against it.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use atelier_protocol::ysync::decode_update;
use atelier_protocol::SessionId;
use yrs::{Doc, IdSet, ReadTxn, StateVector, Transact, Update};

use crate::store::StoredDoc;

/// Rebuilds a document from its snapshot and update tail.
///
/// Each stored part is decoded through the bounded validator and applied on its own. A part
/// that fails to decode or apply is skipped with an error log. A part whose application
/// *panics* inside yrs is a "poison" update: the half-applied document is discarded and rebuilt
/// without it, so one bad row cannot crash-loop the session forever (the next compaction then
/// drops it from storage). Returns the document and how many parts were skipped.
pub(crate) fn rebuild(session: SessionId, stored: &StoredDoc) -> (Doc, usize) {
    let parts: Vec<&[u8]> = stored
        .snapshot
        .as_deref()
        .into_iter()
        .chain(stored.updates.iter().map(|(_, update)| update.as_slice()))
        .collect();
    let mut skip = BTreeSet::new();
    loop {
        let doc = Doc::new();
        let mut poisoned = None;
        for (index, bytes) in parts.iter().enumerate() {
            if skip.contains(&index) {
                continue;
            }
            let update = match decode_update(bytes) {
                Ok(update) => update,
                Err(error) => {
                    tracing::error!(%session, index, %error, "skipping undecodable stored update");
                    skip.insert(index);
                    continue;
                }
            };
            match catch_unwind(AssertUnwindSafe(|| doc.transact_mut().apply_update(update))) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%session, index, %error, "skipping unappliable stored update");
                    skip.insert(index);
                }
                Err(_) => {
                    poisoned = Some(index);
                    break;
                }
            }
        }
        match poisoned {
            None => return (doc, skip.len()),
            Some(index) => {
                tracing::error!(%session, index, "stored update panics yrs; rebuilding without it");
                skip.insert(index);
            }
        }
    }
}

/// Size of the document's full encoded state: what a snapshot would weigh.
pub(crate) fn encoded_len(doc: &Doc) -> usize {
    full_state(doc).len()
}

/// The full state as one v1 update (the snapshot format).
pub(crate) fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Whether applying `update` would change nothing: every block is already integrated and (when
/// `check_deletes`) every deletion already happened.
///
/// Clients send such updates all the time — the step 2 answering the server's step 1 carries the
/// client's whole delete set even when nothing is new — and they should neither be stored nor,
/// from a viewer, be answered with "read-only". Checking deletions costs a pass over the document,
/// so callers only ask for it once per connection (step 2) or for viewers.
pub(crate) fn adds_nothing(doc: &Doc, update: &Update, check_deletes: bool) -> bool {
    let txn = doc.transact();
    let sv = txn.state_vector();
    let all_blocks_known = update
        .insertions(true)
        .iter()
        .all(|(client, ranges)| ranges.iter().all(|r| r.end <= sv.get(client)));
    if !all_blocks_known {
        return false;
    }
    let deletes = update.delete_set();
    if deletes.is_empty() {
        return true;
    }
    if !check_deletes {
        return false;
    }
    covered_by(deletes, &txn.snapshot().delete_set)
}

/// Every range of `inner` lies within one (merged) range of `outer`.
fn covered_by(inner: &IdSet, outer: &IdSet) -> bool {
    inner.iter().all(|(client, ranges)| {
        let Some(outer) = outer.get(client) else {
            return ranges.is_empty();
        };
        ranges
            .iter()
            .all(|r| r.is_empty() || outer.ranges().any(|o| o.start <= r.start && r.end <= o.end))
    })
}
