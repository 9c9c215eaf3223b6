//! The `JobsSnapshot` port: what `session.hello` reports about unfinished jobs.

use atelier_protocol::SessionId;

use crate::store::{BoxError, BoxFuture};

/// Reports the current state of every unfinished job of a session, as the JSON objects the job
/// system also uses in its events. Called once per events-enabled connection, on join.
pub trait JobsSnapshot: Send + Sync + 'static {
    fn unfinished_jobs(
        &self,
        session: SessionId,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, BoxError>>;
}

/// No job system attached: `session.hello` lists no jobs.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoJobs;

impl JobsSnapshot for NoJobs {
    fn unfinished_jobs(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, BoxError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
