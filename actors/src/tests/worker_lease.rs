//! [`WorkerLeaseActor`] against fake pools: what it tells the lease's meter (assigned, no worker,
//! worker lost) and that it gives its worker back exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::ids::{LeaseId, WorkerId};
use tokio::sync::{mpsc, watch};

use crate::lease::{
    InProcessWorkerPool, LeaseNews, PoolError, ReleaseWorker, WorkerAssignment, WorkerHeartbeat,
    WorkerLeaseActor, WorkerPool,
};
use crate::store::BoxFuture;

/// Stands in for the lease's meter: passes on what it is told.
struct MeterProbe(mpsc::UnboundedSender<LeaseNews>);

impl Actor for MeterProbe {
    type Context = Context<Self>;
}

impl Handler<LeaseNews> for MeterProbe {
    type Result = ();

    fn handle(&mut self, news: LeaseNews, _ctx: &mut Self::Context) {
        let _ = self.0.send(news);
    }
}

/// A pool of one remote worker whose heartbeats the test sends; `hold` keeps every acquire
/// pending (no worker free); `spare` offers a second worker after the first.
struct RemotePool {
    worker: WorkerId,
    hold: bool,
    spare: Option<WorkerId>,
    acquired: Mutex<usize>,
    heartbeats: Mutex<Vec<watch::Sender<WorkerHeartbeat>>>,
    released: Mutex<Vec<(LeaseId, WorkerId)>>,
}

impl RemotePool {
    fn new(hold: bool) -> Arc<RemotePool> {
        Self::with_spare(hold, None)
    }

    fn with_spare(hold: bool, spare: Option<WorkerId>) -> Arc<RemotePool> {
        Arc::new(RemotePool {
            worker: WorkerId::new_random(),
            hold,
            spare,
            acquired: Mutex::new(0),
            heartbeats: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        })
    }

    fn heartbeat(&self, beat: WorkerHeartbeat) {
        for sender in self.heartbeats.lock().unwrap().iter() {
            sender.send(beat).unwrap();
        }
    }

    fn released(&self) -> Vec<(LeaseId, WorkerId)> {
        self.released.lock().unwrap().clone()
    }
}

impl WorkerPool for RemotePool {
    fn acquire(
        &self,
        _lease: LeaseId,
        _gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let worker = {
            let mut acquired = self.acquired.lock().unwrap();
            *acquired += 1;
            match *acquired {
                1 => Some(self.worker),
                _ => self.spare,
            }
        };
        let Some(worker) = worker.filter(|_| !self.hold) else {
            return Box::pin(std::future::pending());
        };
        let (tx, rx) = watch::channel(WorkerHeartbeat::At(1_000));
        self.heartbeats.lock().unwrap().push(tx);
        let assignment = WorkerAssignment {
            worker_id: worker,
            device: "cuda:0".into(),
            heartbeat: rx,
        };
        Box::pin(async move { Ok(assignment) })
    }

    fn release(&self, lease: LeaseId, worker: WorkerId) {
        self.released.lock().unwrap().push((lease, worker));
    }
}

fn start(
    lease: LeaseId,
    class: &str,
    pool: Arc<dyn WorkerPool>,
) -> (Addr<WorkerLeaseActor>, mpsc::UnboundedReceiver<LeaseNews>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let meter = MeterProbe(tx).start();
    let actor = WorkerLeaseActor::new(lease, class.into(), pool, meter.recipient()).start();
    (actor, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<LeaseNews>) -> LeaseNews {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the lease actor said nothing")
        .expect("the meter probe stopped")
}

async fn stopped(actor: &Addr<WorkerLeaseActor>) -> bool {
    for _ in 0..100 {
        if !actor.connected() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[actix::test]
async fn an_assigned_worker_is_reported_and_given_back_once() {
    let pool = Arc::new(InProcessWorkerPool::new(["cpu".to_string()], "cpu"));
    let lease = LeaseId::new_random();
    let (actor, mut news) = start(lease, "cpu", pool.clone());
    match next(&mut news).await {
        LeaseNews::Assigned {
            device, heartbeat, ..
        } => {
            assert_eq!(device, "cpu");
            assert_eq!(*heartbeat.borrow(), WorkerHeartbeat::InProcess);
        }
        _ => panic!("expected the assignment"),
    }
    assert_eq!(pool.assigned(), 1);
    actor.send(ReleaseWorker).await.unwrap();
    assert!(stopped(&actor).await, "the lease actor did not stop");
    assert_eq!(pool.assigned(), 0);
}

#[actix::test]
async fn a_class_no_worker_offers_fails_the_assignment() {
    let pool = Arc::new(InProcessWorkerPool::new(["cpu".to_string()], "cpu"));
    let (_actor, mut news) = start(LeaseId::new_random(), "a100", pool.clone());
    match next(&mut news).await {
        LeaseNews::AssignFailed(error) => {
            assert_eq!(error, PoolError::UnknownClass("a100".into()));
        }
        _ => panic!("expected the failed assignment"),
    }
    assert_eq!(pool.assigned(), 0);
}

#[actix::test]
async fn a_lost_worker_is_reported_with_its_last_heartbeat() {
    let pool = RemotePool::new(false);
    let lease = LeaseId::new_random();
    let (actor, mut news) = start(lease, "t4", pool.clone());
    assert!(matches!(next(&mut news).await, LeaseNews::Assigned { .. }));
    pool.heartbeat(WorkerHeartbeat::At(2_000));
    pool.heartbeat(WorkerHeartbeat::Lost {
        last_heartbeat_ms: 2_000,
    });
    match next(&mut news).await {
        LeaseNews::WorkerLost { last_heartbeat_ms } => assert_eq!(last_heartbeat_ms, 2_000),
        _ => panic!("expected the lost worker"),
    }
    actor.send(ReleaseWorker).await.unwrap();
    assert!(stopped(&actor).await);
    assert_eq!(pool.released(), vec![(lease, pool.worker)]);
}

#[actix::test]
async fn a_lost_worker_with_a_free_slot_elsewhere_moves_the_lease() {
    let spare = WorkerId::new_random();
    let pool = RemotePool::with_spare(false, Some(spare));
    let lease = LeaseId::new_random();
    let (actor, mut news) = start(lease, "t4", pool.clone());
    assert!(matches!(next(&mut news).await, LeaseNews::Assigned { .. }));
    pool.heartbeats.lock().unwrap()[0]
        .send(WorkerHeartbeat::Lost {
            last_heartbeat_ms: 4_000,
        })
        .unwrap();
    match next(&mut news).await {
        LeaseNews::Moved {
            last_heartbeat_ms,
            worker_id,
            ..
        } => assert_eq!((last_heartbeat_ms, worker_id), (4_000, spare)),
        _ => panic!("expected the lease to move"),
    }
    // The lost worker's slot went back at once; the spare's when the lease ends.
    assert_eq!(pool.released(), vec![(lease, pool.worker)]);
    actor.send(ReleaseWorker).await.unwrap();
    assert!(stopped(&actor).await);
    assert_eq!(pool.released(), vec![(lease, pool.worker), (lease, spare)]);
}

#[actix::test]
async fn a_worker_the_pool_forgot_is_lost_at_its_last_heartbeat() {
    let pool = RemotePool::new(false);
    let (_actor, mut news) = start(LeaseId::new_random(), "t4", pool.clone());
    assert!(matches!(next(&mut news).await, LeaseNews::Assigned { .. }));
    pool.heartbeat(WorkerHeartbeat::At(3_000));
    // The pool drops the sender without a `Lost`.
    pool.heartbeats.lock().unwrap().clear();
    match next(&mut news).await {
        LeaseNews::WorkerLost { last_heartbeat_ms } => assert_eq!(last_heartbeat_ms, 3_000),
        _ => panic!("expected the lost worker"),
    }
}

#[actix::test]
async fn releasing_while_waiting_for_a_worker_withdraws_the_request() {
    let pool = RemotePool::new(true);
    let (actor, mut news) = start(LeaseId::new_random(), "t4", pool.clone());
    actor.send(ReleaseWorker).await.unwrap();
    assert!(stopped(&actor).await);
    // Nothing was assigned, so nothing is given back and the meter hears nothing.
    assert!(pool.released().is_empty());
    assert!(news.try_recv().is_err());
}
