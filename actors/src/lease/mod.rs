//! Worker assignment for runtime leases: the [`WorkerPool`] port and the [`WorkerLeaseActor`]
//! that owns one lease's assignment.
//!
//! The pool hands out workers of a GPU class; the server's job system implements it over the
//! connected worker hosts (`atelier::jobs::leasing`). [`InProcessWorkerPool`] is a fixed stand-in for tests
//! of billing alone: it offers every configured class and assigns immediately.
//!
//! A worker's liveness travels with its assignment as a `watch` of [`WorkerHeartbeat`]s: the
//! meter reads the latest heartbeat to bill only up to it, and the lease actor tells the meter
//! when the worker is lost so billing stops at its last heartbeat.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use atelier_protocol::ids::{LeaseId, WorkerId};
use tokio::sync::watch;

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

/// The server's own worker: one per configured class, always free, assigned at once.
pub struct InProcessWorkerPool {
    workers: HashMap<String, WorkerId>,
    device: String,
    /// Heartbeat senders of the current assignments (kept so the receivers stay quiet).
    assigned: Mutex<HashMap<LeaseId, watch::Sender<WorkerHeartbeat>>>,
}

impl InProcessWorkerPool {
    pub fn new(classes: impl IntoIterator<Item = String>, device: impl Into<String>) -> Self {
        let classes: BTreeSet<String> = classes.into_iter().collect();
        InProcessWorkerPool {
            workers: classes
                .into_iter()
                .map(|c| (c, WorkerId::new_random()))
                .collect(),
            device: device.into(),
            assigned: Mutex::new(HashMap::new()),
        }
    }

    /// How many leases hold a worker right now.
    pub fn assigned(&self) -> usize {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl WorkerPool for InProcessWorkerPool {
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let result = match self.workers.get(gpu_class) {
            Some(worker_id) => {
                let (tx, rx) = watch::channel(WorkerHeartbeat::InProcess);
                self.assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(lease, tx);
                Ok(WorkerAssignment {
                    worker_id: *worker_id,
                    device: self.device.clone(),
                    heartbeat: rx,
                })
            }
            None => Err(PoolError::UnknownClass(gpu_class.to_string())),
        };
        Box::pin(async move { result })
    }

    fn release(&self, lease: LeaseId, _worker: WorkerId) {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease);
    }
}

/// What the lease actor tells its meter.
#[derive(Message)]
#[rtype(result = "()")]
pub enum LeaseNews {
    Assigned {
        worker_id: WorkerId,
        device: String,
        heartbeat: watch::Receiver<WorkerHeartbeat>,
    },
    AssignFailed(PoolError),
    WorkerLost {
        last_heartbeat_ms: i64,
    },
}

/// Gives the worker back and stops the lease actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseWorker;

/// Owns one lease's worker: acquires it, watches it, releases it exactly once.
pub struct WorkerLeaseActor {
    lease: LeaseId,
    gpu_class: String,
    pool: Arc<dyn WorkerPool>,
    meter: Recipient<LeaseNews>,
    worker: Option<WorkerId>,
}

impl WorkerLeaseActor {
    pub fn new(
        lease: LeaseId,
        gpu_class: String,
        pool: Arc<dyn WorkerPool>,
        meter: Recipient<LeaseNews>,
    ) -> Self {
        WorkerLeaseActor {
            lease,
            gpu_class,
            pool,
            meter,
            worker: None,
        }
    }
}

impl Actor for WorkerLeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let acquire = self.pool.acquire(self.lease, &self.gpu_class);
        ctx.spawn(
            acquire
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(assignment) => {
                        act.worker = Some(assignment.worker_id);
                        let mut watch = assignment.heartbeat.clone();
                        let lost = async move {
                            loop {
                                if let WorkerHeartbeat::Lost { last_heartbeat_ms } = *watch.borrow()
                                {
                                    return last_heartbeat_ms;
                                }
                                if watch.changed().await.is_err() {
                                    // The pool dropped the worker without a word: lost as of now.
                                    let last = *watch.borrow();
                                    return last.billable_until(now_ms());
                                }
                            }
                        };
                        ctx.spawn(lost.into_actor(act).map(|last_heartbeat_ms, act, _| {
                            if act.worker.is_some() {
                                act.meter
                                    .do_send(LeaseNews::WorkerLost { last_heartbeat_ms });
                            }
                        }));
                        act.meter.do_send(LeaseNews::Assigned {
                            worker_id: assignment.worker_id,
                            device: assignment.device,
                            heartbeat: assignment.heartbeat,
                        });
                    }
                    Err(error) => act.meter.do_send(LeaseNews::AssignFailed(error)),
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(worker) = self.worker.take() {
            self.pool.release(self.lease, worker);
        }
    }
}

impl Handler<ReleaseWorker> for WorkerLeaseActor {
    type Result = ();

    fn handle(&mut self, _msg: ReleaseWorker, ctx: &mut Self::Context) {
        // `stopped` gives the worker back; a pending acquire is withdrawn with its future.
        if let Some(worker) = self.worker.take() {
            self.pool.release(self.lease, worker);
        }
        ctx.stop();
    }
}

/// Milliseconds since the Unix epoch (as the server stores times).
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
