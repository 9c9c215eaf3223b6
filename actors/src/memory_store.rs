//! An in-memory [`DocStore`] for tests (and for trying the actors without a database).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use atelier_protocol::SessionId;

use crate::store::{BoxFuture, DocStore, DocStoreError, StoredDoc, StoredUpdate};

#[derive(Default)]
struct Stored {
    doc: StoredDoc,
    next_seq: i64,
}

/// Keeps documents in a map. It can be told to fail (to exercise error paths) and records the
/// size of every appended batch (to observe group commit).
///
/// The std `Mutex` is fine: it is never held across an `.await` (every method completes
/// synchronously inside the returned future).
#[derive(Default)]
pub struct MemoryDocStore {
    docs: Mutex<HashMap<SessionId, Stored>>,
    failing: AtomicBool,
    batches: Mutex<Vec<usize>>,
    deleted: Mutex<HashSet<SessionId>>,
}

impl MemoryDocStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails with [`DocStoreError::Backend`].
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Deletes a session's document; from now on every call for it fails with
    /// [`DocStoreError::SessionNotFound`] (like a database whose session row is gone).
    pub fn delete_session(&self, session: SessionId) {
        if let Ok(mut docs) = self.docs.lock() {
            docs.remove(&session);
        }
        if let Ok(mut deleted) = self.deleted.lock() {
            deleted.insert(session);
        }
    }

    /// Sizes of all batches passed to `append`, in call order.
    pub fn append_batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// What is stored for `session` right now.
    pub fn stored(&self, session: SessionId) -> StoredDoc {
        self.docs
            .lock()
            .ok()
            .and_then(|docs| docs.get(&session).map(|s| s.doc.clone()))
            .unwrap_or_default()
    }

    fn check(&self, session: SessionId) -> Result<(), DocStoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DocStoreError::backend("memory store told to fail"));
        }
        let deleted = self
            .deleted
            .lock()
            .map_err(|_| DocStoreError::backend("memory store lock poisoned"))?;
        if deleted.contains(&session) {
            return Err(DocStoreError::SessionNotFound(session));
        }
        Ok(())
    }

    fn with_docs<T>(
        &self,
        session: SessionId,
        f: impl FnOnce(&mut HashMap<SessionId, Stored>) -> T,
    ) -> Result<T, DocStoreError> {
        self.check(session)?;
        let mut docs = self
            .docs
            .lock()
            .map_err(|_| DocStoreError::backend("memory store lock poisoned"))?;
        Ok(f(&mut docs))
    }
}

impl DocStore for MemoryDocStore {
    fn load(&self, session: SessionId) -> BoxFuture<'_, Result<StoredDoc, DocStoreError>> {
        let result = self.with_docs(session, |docs| {
            docs.get(&session)
                .map(|s| s.doc.clone())
                .unwrap_or_default()
        });
        Box::pin(async move { result })
    }

    fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<i64, DocStoreError>> {
        let count = updates.len();
        let result = self.with_docs(session, |docs| {
            let stored = docs.entry(session).or_default();
            for update in updates {
                stored.next_seq += 1;
                stored.doc.updates.push((stored.next_seq, update));
            }
            stored.next_seq
        });
        if result.is_ok() {
            if let Ok(mut batches) = self.batches.lock() {
                batches.push(count);
            }
        }
        Box::pin(async move { result })
    }

    fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<StoredUpdate>>, DocStoreError>> {
        let result = self.with_docs(session, |docs| {
            let Some(stored) = docs.get(&session) else {
                return Some(Vec::new());
            };
            (stored.doc.snapshot_seq <= after_seq).then(|| {
                stored
                    .doc
                    .updates
                    .iter()
                    .filter(|(seq, _)| *seq > after_seq)
                    .cloned()
                    .collect()
            })
        });
        Box::pin(async move { result })
    }

    fn compact(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> BoxFuture<'_, Result<(), DocStoreError>> {
        let result = self.with_docs(session, |docs| {
            let stored = docs.entry(session).or_default();
            if stored.doc.snapshot_seq <= upto_seq {
                stored.doc.snapshot = Some(snapshot);
                stored.doc.snapshot_seq = upto_seq;
                stored.doc.updates.retain(|(seq, _)| *seq > upto_seq);
            }
        });
        Box::pin(async move { result })
    }
}
