//! The job workers' slots as the [`WorkerPool`] runtime leases take their worker from.
//!
//! A lease asks for a GPU class and holds one slot of a connected worker of that class
//! exclusively until it gives it back; when every slot of the class is held it waits in the
//! class's line (first come, first served), hearing its position as it moves
//! (`runtime.queued`), and is not billed while it waits: its meter starts on the assignment.
//! Dropping the request (the lease stopped while waiting) takes it out of line. The session's
//! jobs then run only on that slot. The state is the board's ([`super::board`]).
//!
//! The worker's liveness goes to the lease as a `watch` of [`WorkerHeartbeat`]s: every message a
//! remote worker sends moves its heartbeat forward; when it disconnects or misses its heartbeat
//! deadline the watch turns `Lost` at its last heartbeat, and the lease's meter stops billing
//! there.

use atelier_protocol::ids::{LeaseId, WorkerId};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::board::JobBoard;
use crate::billing::{PoolError, WorkerAssignment, WorkerPool};

#[cfg(test)]
use crate::billing::WorkerHeartbeat;

/// A lease's request for a slot: takes the lease out of its line when it is dropped before it
/// was answered — and gives back the slot when it was answered but the answer never read (the
/// lease stopped at that moment).
struct Request {
    board: JobBoard,
    lease: LeaseId,
    answer: Option<oneshot::Receiver<WorkerAssignment>>,
}

impl Request {
    /// The answer was read: the slot is the lease's, given back by `release`.
    fn answered(&mut self) {
        self.answer = None;
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let Some(mut answer) = self.answer.take() else {
            return; // read: the slot is the lease's to give back
        };
        let (moves, assigned) = self.board.lock().withdraw(self.lease);
        self.board.tell(moves, assigned);
        if let Ok(unread) = answer.try_recv() {
            let (moves, assigned) = self
                .board
                .lock()
                .release_lease(self.lease, unread.worker_id);
            self.board.tell(moves, assigned);
        }
    }
}

impl WorkerPool for JobBoard {
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let (reply, answer) = oneshot::channel();
        let (moves, served) = self.lock().join_line(lease, gpu_class, reply);
        self.tell(moves, served);
        let mut request = Request {
            board: self.clone(),
            lease,
            answer: Some(answer),
        };
        Box::pin(async move {
            let result = match request.answer.as_mut() {
                Some(answer) => answer
                    .await
                    .map_err(|_| PoolError::Unavailable("the job system stopped".into())),
                None => Err(PoolError::Unavailable("the request was answered".into())),
            };
            if result.is_ok() {
                request.answered();
            }
            result
        })
    }

    fn release(&self, lease: LeaseId, worker: WorkerId) {
        let (moves, assigned) = self.lock().release_lease(lease, worker);
        self.tell(moves, assigned);
    }
}

/// Cluster mode: a free slot held on this board for a lease about to be taken from its class's
/// lease line (`crate::cluster::lease_line`), so two leases never take one slot. Bound to the
/// lease once it is claimed (its meter's [`WorkerPool::acquire`] is then served from it at
/// once); given back when dropped unbound.
pub struct SlotReservation {
    board: JobBoard,
    worker: WorkerId,
    bound: bool,
}

impl SlotReservation {
    /// The slot is `lease`'s from now on (call before starting the lease's meter).
    pub fn bind(mut self, lease: LeaseId) {
        self.board.lock().bind_reserved(lease, self.worker);
        self.bound = true;
    }
}

impl Drop for SlotReservation {
    fn drop(&mut self) {
        if !self.bound {
            let (moves, assigned) = self.board.lock().unreserve(self.worker);
            self.board.tell(moves, assigned);
        }
    }
}

impl JobBoard {
    /// Holds a free slot of `gpu_class`, if this board has one.
    pub fn reserve_slot(&self, gpu_class: &str) -> Option<SlotReservation> {
        let worker = self.lock().reserve_slot(gpu_class)?;
        Some(SlotReservation {
            board: self.clone(),
            worker,
            bound: false,
        })
    }

    /// The slot bound to `lease` is free again (its meter could not start).
    pub fn give_back(&self, lease: LeaseId) {
        let (moves, assigned) = {
            let mut state = self.lock();
            match state.holder_of(lease) {
                Some(worker) => state.release_lease(lease, worker),
                None => return,
            }
        };
        self.tell(moves, assigned);
    }

    /// The GPU classes with a free slot on this board now.
    pub fn free_classes(&self) -> Vec<String> {
        self.lock().free_classes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::jobs::board::WorkerEntry;

    fn add_worker_with(
        board: &JobBoard,
        gpu_class: &str,
        slots: u32,
        heartbeat: WorkerHeartbeat,
    ) -> WorkerId {
        let id = WorkerId::new_random();
        let entry = WorkerEntry::idle_for_test(gpu_class, slots, heartbeat);
        board.lock().add_worker(id, entry);
        id
    }

    fn add_worker(board: &JobBoard, gpu_class: &str, heartbeat: WorkerHeartbeat) -> WorkerId {
        add_worker_with(board, gpu_class, 2, heartbeat)
    }

    fn leases_on(board: &JobBoard, worker: WorkerId) -> u32 {
        board.lock().leases_on(worker)
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
        assert_eq!(board.lock().waiting(), 0);
    }

    #[tokio::test]
    async fn a_slot_is_held_exclusively_and_the_line_moves_up() {
        let board = JobBoard::default();
        let worker = add_worker_with(&board, "cpu", 1, WorkerHeartbeat::InProcess);
        let first = LeaseId::new_random();
        board.acquire(first, "cpu").await.unwrap();
        let second = tokio::spawn(board.acquire(LeaseId::new_random(), "cpu"));
        let third_lease = LeaseId::new_random();
        let third = board.acquire(third_lease, "cpu");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the only slot is held");
        assert_eq!(board.lock().waiting(), 2);
        drop(third); // leaves the line
        assert_eq!(board.lock().waiting(), 1);
        board.release(first, worker);
        assert_eq!(second.await.unwrap().unwrap().worker_id, worker);
        assert_eq!(leases_on(&board, worker), 1);
    }

    #[tokio::test]
    async fn a_reserved_slot_serves_its_lease_at_once_and_nobody_else() {
        let board = JobBoard::default();
        let worker = add_worker_with(&board, "cpu", 1, WorkerHeartbeat::InProcess);
        assert_eq!(board.free_classes(), vec!["cpu".to_string()]);
        let reservation = board.reserve_slot("cpu").unwrap();
        assert!(board.free_classes().is_empty());
        assert!(board.reserve_slot("cpu").is_none(), "one slot, reserved");
        let other = tokio::spawn(board.acquire(LeaseId::new_random(), "cpu"));
        let lease = LeaseId::new_random();
        reservation.bind(lease);
        let assignment = board.acquire(lease, "cpu").await.unwrap();
        assert_eq!(assignment.worker_id, worker);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !other.is_finished(),
            "the reserved slot is not another lease's"
        );
        // Dropped unbound: the slot is free again, and the waiting lease takes it.
        board.release(lease, worker);
        assert_eq!(other.await.unwrap().unwrap().worker_id, worker);
        drop(board.reserve_slot("cpu"));
        assert_eq!(leases_on(&board, worker), 1);
    }

    #[tokio::test]
    async fn an_answer_never_read_gives_its_slot_back() {
        let board = JobBoard::default();
        let worker = add_worker_with(&board, "cpu", 1, WorkerHeartbeat::InProcess);
        // Served at once, but the lease stopped before it read the answer.
        drop(board.acquire(LeaseId::new_random(), "cpu"));
        assert_eq!(leases_on(&board, worker), 0);
        let next = board.acquire(LeaseId::new_random(), "cpu").await.unwrap();
        assert_eq!(next.worker_id, worker);
    }

    #[tokio::test]
    async fn a_release_by_the_former_holder_does_not_undo_an_adoption() {
        let board = JobBoard::default();
        let old = add_worker_with(&board, "cpu", 1, WorkerHeartbeat::At(1_000));
        let lease = LeaseId::new_random();
        assert_eq!(board.acquire(lease, "cpu").await.unwrap().worker_id, old);
        let new = add_worker_with(&board, "cpu", 1, WorkerHeartbeat::At(2_000));
        // The worker reconnected as `new`: the lease's slot moves there.
        assert!(board.lock().bind_lease(lease, new, "cpu"));
        assert_eq!((leases_on(&board, old), leases_on(&board, new)), (0, 1));
        // The old meter gives its slot back late: nothing changes.
        board.release(lease, old);
        assert!(board.lock().holds(lease, new));
        assert_eq!(leases_on(&board, new), 1);
        // No slot left on `new`, and never one of another class.
        assert!(!board.lock().bind_lease(LeaseId::new_random(), new, "cpu"));
        board.release(lease, new);
        assert!(!board.lock().bind_lease(LeaseId::new_random(), new, "t4"));
    }

    #[tokio::test]
    async fn an_away_worker_takes_no_lease_and_is_lost_after_its_grace() {
        let board = JobBoard::default();
        let worker = add_worker_with(&board, "cpu", 2, WorkerHeartbeat::At(3_000));
        let held = board.acquire(LeaseId::new_random(), "cpu").await.unwrap();
        assert!(board.lock().mark_away(worker).is_some());
        // Its free slot is not offered while it is away.
        let waiting = tokio::spawn(board.acquire(LeaseId::new_random(), "cpu"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        assert_eq!(*held.heartbeat.borrow(), WorkerHeartbeat::At(3_000));
        // Being adopted: its grace does not end it.
        board.lock().hold_for_adoption(worker);
        assert!(board.lock().remove_if_away(worker).is_none());
        board.lock().workers.get_mut(&worker).unwrap().adopting = false;
        assert!(board.lock().remove_if_away(worker).is_some());
        assert_eq!(
            *held.heartbeat.borrow(),
            WorkerHeartbeat::Lost {
                last_heartbeat_ms: 3_000
            }
        );
        waiting.abort();
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
