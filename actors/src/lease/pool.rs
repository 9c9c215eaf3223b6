//! The [`WorkerPool`] port: where runtime leases get their workers, and what an assigned worker
//! reports ([`WorkerHeartbeat`]s over a `watch`).

use tokio::sync::watch;

use atelier_protocol::ids::{LeaseId, WorkerId};

use crate::store::BoxFuture;

/// The latest news of an assigned worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerHeartbeat {
    /// A worker inside this process: alive as long as the server is.
    InProcess,
    /// A remote worker's last heartbeat (epoch ms).
    At(i64),
    /// The worker stopped heartbeating; its last heartbeat (epoch ms).
    Lost { last_heartbeat_ms: i64 },
}

impl WorkerHeartbeat {
    /// The latest instant (epoch ms) the worker is known to have been working, given `now`.
    pub fn billable_until(self, now: i64) -> i64 {
        match self {
            WorkerHeartbeat::InProcess => now,
            WorkerHeartbeat::At(t) => t.min(now),
            WorkerHeartbeat::Lost { last_heartbeat_ms } => last_heartbeat_ms.min(now),
        }
    }
}

/// A worker given to a lease.
#[derive(Debug)]
pub struct WorkerAssignment {
    pub worker_id: WorkerId,
    /// e.g. `cuda:0` or `cpu`.
    pub device: String,
    /// The worker's heartbeats. The pool keeps the sender until the lease is released; a
    /// dropped sender without a `Lost` means the pool forgot the worker (treated as lost now).
    pub heartbeat: watch::Receiver<WorkerHeartbeat>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("no worker offers the GPU class {0:?}")]
    UnknownClass(String),
    #[error("no worker is available: {0}")]
    Unavailable(String),
}

/// Where leases get their workers. Implemented by the job system over real worker hosts.
pub trait WorkerPool: Send + Sync + 'static {
    /// Asks for a worker of `gpu_class` for `lease`; resolves once one is assigned (which may
    /// take a while when all are busy). Dropping the future withdraws the request.
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>>;

    /// Gives the lease's worker back.
    fn release(&self, lease: LeaseId, worker: WorkerId);
}
