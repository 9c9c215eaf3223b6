//! The `DocStore` port: where session documents are made durable.
//!
//! A document is stored as an optional snapshot (a full v1 state) plus a tail of v1 updates, each
//! with a sequence number increasing per session. The session actor appends every accepted
//! update *before* fanning it out, and periodically compacts the tail into a new snapshot.
//! `src/` implements this on SQLite/PostgreSQL; [`crate::MemoryDocStore`] serves tests.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use atelier_protocol::SessionId;
use thiserror::Error;

/// A boxed, `Send` future, so ports stay dyn-compatible (`Arc<dyn DocStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A type-erased error from an adapter (database driver, network…).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One stored update: `(seq, v1 update)`.
pub type StoredUpdate = (i64, Vec<u8>);

/// A session document as stored: snapshot first, then the updates after it, in `seq` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// Full document state (`encode_state_as_update_v1` of an empty state vector), if compacted.
    pub snapshot: Option<Vec<u8>>,
    /// `(seq, v1 update)` appended after the snapshot, ascending by `seq`.
    pub updates: Vec<(i64, Vec<u8>)>,
    /// The last `seq` the snapshot covers (0 without one).
    pub snapshot_seq: i64,
}

impl StoredDoc {
    /// The last `seq` this stored state includes: everything up to it is in the snapshot or the
    /// updates.
    pub fn head_seq(&self) -> i64 {
        self.updates
            .last()
            .map_or(self.snapshot_seq, |(seq, _)| (*seq).max(self.snapshot_seq))
    }
}

/// Why the store could not do what was asked. Cloneable so one failure can be reported to every
/// waiter of a batch.
#[derive(Debug, Clone, Error)]
pub enum DocStoreError {
    /// The session does not exist (any more); e.g. it was deleted while live.
    #[error("session {0} does not exist")]
    SessionNotFound(SessionId),
    /// The backend failed; the operation may or may not be retried by the caller.
    #[error("document storage failed: {0}")]
    Backend(Arc<dyn StdError + Send + Sync + 'static>),
}

impl DocStoreError {
    /// Wraps an adapter's error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(Arc::from(error.into()))
    }
}

/// Durable storage of session documents.
///
/// Contract the session actor relies on:
/// - `append` stores the whole batch in ONE transaction (all or nothing) and returns the `seq` of
///   its last update; sequence numbers of a session only grow.
/// - `compact` writes `snapshot` and deletes every update with `seq <= upto_seq` in one
///   transaction, leaving later updates in place.
/// - Calls for one session never overlap in ways that matter: the session actor has at most one
///   append and one compaction in flight, and compaction only covers already-appended updates.
pub trait DocStore: Send + Sync + 'static {
    /// Loads the snapshot and the updates after it, as one consistent read.
    fn load(&self, session: SessionId) -> BoxFuture<'_, Result<StoredDoc, DocStoreError>>;

    /// Appends a batch of v1 updates (group commit) and returns the last `seq` assigned.
    fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<i64, DocStoreError>>;

    /// The updates with `seq > after_seq`, ascending — or `None` when some of them were already
    /// folded into a snapshot (the caller then loads the whole document).
    fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<StoredUpdate>>, DocStoreError>>;

    /// Replaces everything up to `upto_seq` with `snapshot`.
    fn compact(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> BoxFuture<'_, Result<(), DocStoreError>>;
}
