//! [`WorkerLeaseActor`]: owns one lease's worker — acquires it from the [`WorkerPool`], watches
//! its heartbeats, tells the lease's meter ([`LeaseNews`]) and gives the worker back exactly
//! once ([`ReleaseWorker`], or when the actor stops).

use std::sync::Arc;

use actix::prelude::*;
use atelier_protocol::ids::{LeaseId, WorkerId};
use tokio::sync::watch;

use super::{PoolError, WorkerHeartbeat, WorkerPool};

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
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
