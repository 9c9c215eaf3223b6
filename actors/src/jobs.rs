//! The job system's ports: [`JobsSnapshot`], what `session.hello` reports about unfinished jobs,
//! and [`JobQueue`], where queued jobs are kept durably.

use atelier_protocol::ids::{AccountId, JobId, LeaseId, WorkerId};
use atelier_protocol::SessionId;

use crate::store::{BoxError, BoxFuture};

/// A queued job as the durable queue keeps it: enough to queue it again in another process.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub id: JobId,
    pub session: SessionId,
    pub account: AccountId,
    /// The runtime lease it runs under (its slot's holder).
    pub lease: Option<LeaseId>,
    /// The compiled steps (`[JobStep]` as JSON).
    pub steps: serde_json::Value,
    /// Nodes whose images are the job's outputs.
    pub output_nodes: Vec<String>,
    /// Uploaded images its nodes read.
    pub media_ids: Vec<String>,
    /// Times a lost worker sent it back to the queue.
    pub requeues: u32,
}

/// What the durable queue held when the process started.
#[derive(Debug, Default)]
pub struct RecoveredQueue {
    /// Jobs that cannot be queued again, ended now — claimed by a worker of the previous
    /// process (with the given reason), or never fully queued: (job, session, reason).
    pub ended: Vec<(JobId, SessionId, String)>,
    /// Still queued, in their queue order.
    pub queued: Vec<QueuedJob>,
}

/// The durable job queue. The job board holds the live queue in memory (its order, fairness,
/// which slot a job goes to); this port keeps each transition durable, so queued jobs outlive
/// the process. Single node: the jobs table (`atelier::db`). Cluster: the jobs table plus the
/// job stream of the node running the job's lease (`atelier::cluster::job_routing`):
/// `enqueue` is an `XADD` to that node's stream, its consumer's delivery puts the job on that
/// node's board, `ended` is the `XACK`, and a dead node's entries are `XAUTOCLAIM`ed by a live
/// node; `recover` then only concerns this node's own jobs.
pub trait JobQueue: Send + Sync + 'static {
    /// Keeps a queued job — before anyone is told it is queued.
    fn enqueue(&self, job: QueuedJob) -> BoxFuture<'_, Result<(), BoxError>>;
    /// A queued job was handed to a worker.
    fn claimed(
        &self,
        job: JobId,
        worker: WorkerId,
        device: String,
    ) -> BoxFuture<'_, Result<(), BoxError>>;
    /// A claimed job goes back to the head of the queue (its worker was lost).
    fn requeued(&self, job: JobId) -> BoxFuture<'_, Result<(), BoxError>>;
    /// The job ended (finished, failed or cancelled) and left this node's board: nothing to
    /// keep any more (its record's final status is written by then).
    fn ended(&self, _job: JobId) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
    /// Cluster: the job's lease moved to another node while the job waited here; it was taken
    /// off this node's board and goes on to the lease's node. False when this queue cannot
    /// hand it over (one node): it is then cancelled.
    fn hand_over(&self, _job: JobId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async { Ok(false) })
    }
    /// At start-up: the jobs the previous process had handed to workers end with `reason`
    /// (their workers' connections are gone); the queued ones come back in order.
    fn recover(&self, reason: String) -> BoxFuture<'_, Result<RecoveredQueue, BoxError>>;
}

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
