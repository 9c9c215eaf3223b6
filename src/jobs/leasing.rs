//! The connected job workers as the [`WorkerPool`] runtime leases take their worker from.
//!
//! A lease asks for a GPU class; it gets the connected worker of that class with the fewest
//! leases (workers are shared: the server's in-process worker serves every session), or waits
//! until one connects. The session's jobs then run only on that worker. The worker's liveness
//! goes to the lease as a `watch` of [`WorkerHeartbeat`]s: every message a remote worker sends
//! moves its heartbeat forward; when it disconnects or misses its heartbeat deadline the watch
//! turns `Lost` at its last heartbeat, and the lease's meter stops billing there.

use atelier_protocol::ids::{LeaseId, WorkerId};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::service::{JobBoard, State, WorkerEntry};
use crate::billing::{PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool};

/// A lease waiting for a worker of its class.
pub(super) struct Waiter {
    lease: LeaseId,
    gpu_class: String,
    reply: oneshot::Sender<WorkerAssignment>,
}

impl State {
    /// Gives waiting leases a worker of their class where one is connected.
    pub(super) fn serve_lease_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.lease_waiters);
        for waiter in waiters {
            if waiter.reply.is_closed() {
                continue; // the lease stopped waiting
            }
            let chosen = self
                .workers
                .iter()
                .filter(|(_, w)| w.gpu_class == waiter.gpu_class && !w.draining)
                .min_by_key(|(_, w)| w.leases)
                .map(|(id, _)| *id);
            let Some((id, entry)) = chosen.and_then(|id| Some((id, self.workers.get_mut(&id)?)))
            else {
                self.lease_waiters.push(waiter);
                continue;
            };
            let assignment = WorkerAssignment {
                worker_id: id,
                device: entry.device.clone(),
                heartbeat: entry.heartbeat.subscribe(),
            };
            if waiter.reply.send(assignment).is_ok() {
                entry.leases += 1;
                self.lease_workers.insert(waiter.lease, id);
            }
        }
    }

    /// Takes a worker off the board; the leases on it learn it is lost as of its last heartbeat.
    pub(super) fn remove_worker(&mut self, worker: WorkerId) -> Option<WorkerEntry> {
        let entry = self.workers.remove(&worker)?;
        entry.heartbeat.send_modify(|h| {
            let last = h.billable_until(crate::db::now_ms());
            *h = WorkerHeartbeat::Lost {
                last_heartbeat_ms: last,
            };
        });
        Some(entry)
    }
}

impl WorkerPool for JobBoard {
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let (reply, assigned) = oneshot::channel();
        {
            let mut state = self.lock();
            state.lease_waiters.push(Waiter {
                lease,
                gpu_class: gpu_class.to_string(),
                reply,
            });
            state.serve_lease_waiters();
        }
        Box::pin(async move {
            assigned
                .await
                .map_err(|_| PoolError::Unavailable("the job system stopped".into()))
        })
    }

    fn release(&self, lease: LeaseId, worker: WorkerId) {
        let mut state = self.lock();
        if state.lease_workers.remove(&lease).is_some() {
            if let Some(entry) = state.workers.get_mut(&worker) {
                entry.leases = entry.leases.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn add_worker(board: &JobBoard, gpu_class: &str, heartbeat: WorkerHeartbeat) -> WorkerId {
        let id = WorkerId::new_random();
        let mut state = board.lock();
        state
            .workers
            .insert(id, WorkerEntry::idle_for_test(gpu_class, heartbeat));
        state.serve_lease_waiters();
        id
    }

    fn leases_on(board: &JobBoard, worker: WorkerId) -> usize {
        board.lock().workers.get(&worker).map_or(0, |w| w.leases)
    }

    #[tokio::test]
    async fn a_lease_waits_for_a_worker_of_its_class() {
        let board = JobBoard::default();
        let lease = LeaseId::new_random();
        let acquire = tokio::spawn(board.acquire(lease, "t4"));
        add_worker(&board, "cpu", WorkerHeartbeat::InProcess);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !acquire.is_finished(),
            "a cpu worker does not serve a t4 lease"
        );
        let t4 = add_worker(&board, "t4", WorkerHeartbeat::At(1_000));
        let assignment = acquire.await.unwrap().unwrap();
        assert_eq!(assignment.worker_id, t4);
        assert_eq!(*assignment.heartbeat.borrow(), WorkerHeartbeat::At(1_000));
        assert_eq!(leases_on(&board, t4), 1);
        board.release(lease, t4);
        board.release(lease, t4); // twice: counted once
        assert_eq!(leases_on(&board, t4), 0);
    }

    #[tokio::test]
    async fn leases_spread_over_the_workers_of_a_class() {
        let board = JobBoard::default();
        let a = add_worker(&board, "cpu", WorkerHeartbeat::InProcess);
        let b = add_worker(&board, "cpu", WorkerHeartbeat::InProcess);
        for _ in 0..4 {
            board.acquire(LeaseId::new_random(), "cpu").await.unwrap();
        }
        assert_eq!((leases_on(&board, a), leases_on(&board, b)), (2, 2));
    }

    #[tokio::test]
    async fn a_withdrawn_request_takes_no_worker() {
        let board = JobBoard::default();
        drop(board.acquire(LeaseId::new_random(), "cpu"));
        let worker = add_worker(&board, "cpu", WorkerHeartbeat::InProcess);
        assert_eq!(leases_on(&board, worker), 0);
        assert!(board.lock().lease_waiters.is_empty());
    }

    #[tokio::test]
    async fn a_removed_worker_is_lost_at_its_last_heartbeat() {
        let board = JobBoard::default();
        let worker = add_worker(&board, "cpu", WorkerHeartbeat::At(5_000));
        let assignment = board.acquire(LeaseId::new_random(), "cpu").await.unwrap();
        assert!(board.lock().remove_worker(worker).is_some());
        assert_eq!(
            *assignment.heartbeat.borrow(),
            WorkerHeartbeat::Lost {
                last_heartbeat_ms: 5_000
            }
        );
    }
}
