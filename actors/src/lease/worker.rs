//! [`WorkerLeaseActor`]: owns one lease's worker — acquires it from the [`WorkerPool`], watches
//! its heartbeats, tells the lease's meter ([`LeaseNews`]) and gives the worker back exactly
//! once ([`ReleaseWorker`], or when the actor stops).
//!
//! When its worker is lost, the lease gives the slot back and takes a free slot of its class on
//! another worker if one is free right now ([`LeaseNews::Moved`]: the meter bills the old worker
//! up to its last heartbeat, the new one from now, not the gap); otherwise the meter hears
//! [`LeaseNews::WorkerLost`] and the lease stops. So a job re-queued after its worker was lost
//! can run on another worker under the same lease.

use std::sync::Arc;

use actix::prelude::*;
use atelier_protocol::ids::{LeaseId, WorkerId};
use tokio::sync::watch;

use super::{PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool};

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
    /// The worker was lost (billable up to `last_heartbeat_ms`) and the lease moved at once to a
    /// free slot of another worker of its class: billing goes on from now, on that one.
    Moved {
        last_heartbeat_ms: i64,
        worker_id: WorkerId,
        device: String,
        heartbeat: watch::Receiver<WorkerHeartbeat>,
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
                        act.watch(&assignment, ctx);
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

impl WorkerLeaseActor {
    /// Holds `assignment`'s worker and watches it until it is lost.
    fn watch(&mut self, assignment: &WorkerAssignment, ctx: &mut Context<Self>) {
        let worker = assignment.worker_id;
        self.worker = Some(worker);
        let mut watch = assignment.heartbeat.clone();
        let lost = async move {
            loop {
                if let WorkerHeartbeat::Lost { last_heartbeat_ms } = *watch.borrow() {
                    return last_heartbeat_ms;
                }
                if watch.changed().await.is_err() {
                    // The pool dropped the worker without a word: lost as of now.
                    let last = *watch.borrow();
                    return last.billable_until(now_ms());
                }
            }
        };
        ctx.spawn(
            lost.into_actor(self)
                .map(move |last_heartbeat_ms, act, ctx| {
                    if act.worker == Some(worker) {
                        act.on_lost(worker, last_heartbeat_ms, ctx);
                    }
                }),
        );
    }

    /// The worker is lost: its slot goes back; a free slot of the class elsewhere, if there is
    /// one right now, takes the lease over, else the meter hears the worker is lost.
    fn on_lost(&mut self, worker: WorkerId, last_heartbeat_ms: i64, ctx: &mut Context<Self>) {
        self.worker = None;
        self.pool.release(self.lease, worker);
        // Polled once: a pool serves a free slot at once; anything else withdraws (dropped).
        let mut acquire = self.pool.acquire(self.lease, &self.gpu_class);
        let mut poll = std::task::Context::from_waker(std::task::Waker::noop());
        let moved = match acquire.as_mut().poll(&mut poll) {
            std::task::Poll::Ready(Ok(assignment)) => Some(assignment),
            _ => None,
        };
        drop(acquire);
        match moved {
            Some(assignment) => {
                self.watch(&assignment, ctx);
                self.meter.do_send(LeaseNews::Moved {
                    last_heartbeat_ms,
                    worker_id: assignment.worker_id,
                    device: assignment.device,
                    heartbeat: assignment.heartbeat,
                });
            }
            None => self
                .meter
                .do_send(LeaseNews::WorkerLost { last_heartbeat_ms }),
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
