//! The `VersionRecorder` port: where a session hands a settled burst of editing, so the server
//! can keep it as an automatic version of the document.
//!
//! The session actor knows when people edit and holds the document, so it decides *when* (a
//! burst has settled, or has gone on for too long); the server decides *whether and how* to keep
//! it (deduplication, retention, storage bounds).

use std::time::SystemTime;

use atelier_protocol::ids::AccountId;
use atelier_protocol::SessionId;

use crate::store::{BoxError, BoxFuture};

/// A burst of editing that has settled (or lasted the longest a burst may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditBurst {
    pub session: SessionId,
    /// The full document state (v1) at the end of the burst.
    pub state: Vec<u8>,
    /// The accounts whose edits are in the burst, in order of their last edit (last = latest).
    pub authors: Vec<AccountId>,
    /// When the burst's first and last edits were stored.
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
}

/// Keeps automatic versions. Called at most once per burst by the session that saw it.
pub trait VersionRecorder: Send + Sync + 'static {
    fn edits_settled(&self, burst: EditBurst) -> BoxFuture<'_, Result<(), BoxError>>;
}

/// No version history attached (the actors' own tests): bursts are forgotten.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVersions;

impl VersionRecorder for NoVersions {
    fn edits_settled(&self, _burst: EditBurst) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}
