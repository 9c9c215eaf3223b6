//! [`BillingMeterActor`] against fakes of its ports (`meter_fakes`): what it records in the
//! ledger, tells its host and the session, and how it stops — prepaid time used, worker lost,
//! asked to — and that a failed settlement is tried again. Intervals are milliseconds, so the
//! meter ticks many times within a test.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::events::StudioEvent;
use tokio::sync::{oneshot, watch};

use super::meter_fakes::{
    new_lease, FakeHost, FakeLedger, HostCall, LedgerCall, LosablePool, RecordedEvents, BALANCE,
};
use crate::lease::{InProcessWorkerPool, WorkerHeartbeat, WorkerPool};
use crate::meter::cost::{cost, hold_for};
use crate::meter::{
    reason, BillingMeterActor, ExtendLease, LeaseState, LeaseStatus, MeterError, MeterPorts,
    MeterSettings, MeteredLease, StopLease,
};

/// A lease's price: one millicredit per millisecond, so charges read as times.
const PRICE: i64 = 60_000;

fn settings(checkpoint_interval: Duration) -> MeterSettings {
    MeterSettings {
        meter_interval: Duration::from_millis(10),
        checkpoint_interval,
        idle_timeout: Duration::from_secs(60),
        low_balance_warning: Duration::ZERO,
    }
}

struct Meter {
    addr: Addr<BillingMeterActor>,
    lease: MeteredLease,
    ledger: Arc<FakeLedger>,
    host: Arc<FakeHost>,
    events: Arc<RecordedEvents>,
    state: watch::Receiver<LeaseState>,
}

impl Meter {
    fn start(
        lease: MeteredLease,
        failing_settlements: u32,
        pool: Arc<dyn WorkerPool>,
        settings: MeterSettings,
    ) -> Meter {
        let ledger = FakeLedger::new(&lease, failing_settlements);
        let host = Arc::new(FakeHost::default());
        let events = Arc::new(RecordedEvents::default());
        let ports = MeterPorts {
            ledger: ledger.clone(),
            host: host.clone(),
            events: events.clone(),
            pool,
        };
        let actor = BillingMeterActor::new(ports, settings, lease.clone(), BALANCE, "Ada".into());
        let state = actor.state();
        let addr = actor.start();
        Meter {
            state,
            addr,
            lease,
            ledger,
            host,
            events,
        }
    }

    /// Waits (up to 5 s) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Meter) -> bool) {
        for _ in 0..500 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn sent(&self, kind: &str) -> Vec<StudioEvent> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e.kind() == kind)
            .collect()
    }

    fn segment_started_at(&self) -> Option<i64> {
        self.ledger.calls().into_iter().find_map(|call| match call {
            LedgerCall::SegmentStarted { at, .. } => Some(at),
            _ => None,
        })
    }

    async fn stopped(&self) -> StudioEvent {
        self.until("runtime.stopped", |m| !m.sent("runtime.stopped").is_empty())
            .await;
        self.sent("runtime.stopped").remove(0)
    }
}

fn in_process_pool() -> Arc<InProcessWorkerPool> {
    Arc::new(InProcessWorkerPool::new(["t4".to_string()], "cuda:0"))
}

#[actix::test]
async fn assignment_starts_a_segment_and_tells_the_session() {
    let pool = in_process_pool();
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        0,
        pool.clone(),
        settings(Duration::from_secs(60)),
    );
    meter
        .until("runtime.started", |m| !m.sent("runtime.started").is_empty())
        .await;
    assert_eq!(
        meter.sent("runtime.started"),
        vec![StudioEvent::RuntimeStarted {
            lease_id: meter.lease.id,
            gpu_class: "t4".into(),
        }]
    );
    let calls = meter.ledger.calls();
    assert!(
        matches!(&calls[0], LedgerCall::SegmentStarted { device, .. } if device == "cuda:0"),
        "{calls:?}"
    );
    let state = meter.state.borrow().clone();
    assert_eq!(state.status, LeaseStatus::Running);
    assert_eq!(state.lease.device.as_deref(), Some("cuda:0"));
    assert!(state.worker().is_some());
    assert_eq!(pool.assigned(), 1);
}

#[actix::test]
async fn ticks_meter_the_session_and_checkpoint_what_was_used() {
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        0,
        in_process_pool(),
        settings(Duration::from_millis(30)),
    );
    meter
        .until("two checkpoints", |m| {
            m.ledger
                .calls()
                .iter()
                .filter(|c| matches!(c, LedgerCall::Checkpoint { .. }))
                .count()
                >= 2
        })
        .await;
    let checkpoints: Vec<(i64, i64, i64)> = meter
        .ledger
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            LedgerCall::Checkpoint {
                seq,
                used_ms,
                charged,
            } => Some((seq, used_ms, charged)),
            _ => None,
        })
        .collect();
    // Numbered in order, each charging the total used so far.
    assert_eq!(checkpoints[0].0, 1);
    assert_eq!(checkpoints[1].0, 2);
    assert!(checkpoints[1].1 > checkpoints[0].1, "{checkpoints:?}");
    for (_, used_ms, charged) in &checkpoints {
        assert_eq!(*charged, cost(PRICE, *used_ms));
    }
    let meters = meter.sent("runtime.meter");
    assert!(!meters.is_empty());
    let StudioEvent::RuntimeMeter {
        balance, payer_id, ..
    } = meters.last().unwrap()
    else {
        unreachable!()
    };
    assert_eq!(*payer_id, meter.lease.account_id);
    assert!(balance.unwrap() < BALANCE);
}

#[actix::test]
async fn prepaid_time_used_up_stops_and_settles_within_the_hold() {
    let pool = in_process_pool();
    let lease = new_lease(PRICE, 200);
    let meter = Meter::start(
        lease.clone(),
        0,
        pool.clone(),
        settings(Duration::from_millis(30)),
    );
    let StudioEvent::RuntimeStopped {
        reason: why,
        used_ms,
        charged,
        refunded,
        ..
    } = meter.stopped().await
    else {
        unreachable!()
    };
    assert_eq!(why, reason::PREPAID_TIME_USED);
    assert_eq!(used_ms, 200);
    assert_eq!(charged, cost(PRICE, 200));
    assert!(charged <= lease.hold_amount);
    assert_eq!(charged + refunded, lease.hold_amount);
    assert_eq!(
        meter.ledger.settlements(),
        vec![(200, charged, reason::PREPAID_TIME_USED.to_string())]
    );
    let host = meter.host.calls();
    assert_eq!(
        host[..],
        [
            HostCall::InterruptJobs(reason::PREPAID_TIME_USED.into()),
            HostCall::Forget,
        ]
    );
    meter
        .until("the meter to stop and the worker to go back", |m| {
            !m.addr.connected() && pool.assigned() == 0
        })
        .await;
}

#[actix::test]
async fn a_lost_worker_is_billed_to_its_last_heartbeat() {
    let pool = LosablePool::new();
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        0,
        pool.clone(),
        settings(Duration::from_secs(60)),
    );
    meter
        .until("the segment", |m| m.segment_started_at().is_some())
        .await;
    let started = meter.segment_started_at().unwrap();
    // The worker goes on a while after its last heartbeat, unbilled.
    tokio::time::sleep(Duration::from_millis(100)).await;
    pool.heartbeat(WorkerHeartbeat::Lost {
        last_heartbeat_ms: started + 40,
    });
    let StudioEvent::RuntimeStopped {
        reason: why,
        used_ms,
        charged,
        ..
    } = meter.stopped().await
    else {
        unreachable!()
    };
    assert_eq!(why, reason::WORKER_LOST);
    assert_eq!(used_ms, 40);
    assert_eq!(charged, cost(PRICE, 40));
}

#[actix::test]
async fn a_failed_settlement_is_retried_and_the_stopping_lease_cannot_be_extended() {
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        1,
        in_process_pool(),
        settings(Duration::from_secs(60)),
    );
    meter
        .until("the segment", |m| m.segment_started_at().is_some())
        .await;
    let (reply, settled) = oneshot::channel();
    meter
        .addr
        .send(StopLease {
            reason: reason::STOPPED_BY_USER.into(),
            reply,
        })
        .await
        .unwrap();
    let first = settled.await.unwrap();
    assert!(
        matches!(&first, Err(MeterError::NotSettledYet(why)) if why == "the database is down"),
        "{first:?}"
    );
    // Stopping: no more prepaid time.
    let (reply, extended) = oneshot::channel();
    meter
        .addr
        .send(ExtendLease {
            add_ms: 60_000,
            max_prepaid_ms: 600_000,
            reply,
        })
        .await
        .unwrap();
    assert!(matches!(extended.await.unwrap(), Err(MeterError::Stopping)));
    let StudioEvent::RuntimeStopped { reason: why, .. } = meter.stopped().await else {
        unreachable!()
    };
    assert_eq!(why, reason::STOPPED_BY_USER);
    let settlements = meter.ledger.settlements();
    assert_eq!(settlements.len(), 2, "{settlements:?}");
    assert_eq!(settlements[0], settlements[1], "the retry settles the same");
}

#[actix::test]
async fn an_extension_adds_prepaid_time_and_tells_the_session() {
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        0,
        in_process_pool(),
        settings(Duration::from_secs(60)),
    );
    meter
        .until("the segment", |m| m.segment_started_at().is_some())
        .await;
    let (reply, extended) = oneshot::channel();
    meter
        .addr
        .send(ExtendLease {
            add_ms: 30_000,
            max_prepaid_ms: 600_000,
            reply,
        })
        .await
        .unwrap();
    let extended = extended.await.unwrap().unwrap();
    assert_eq!(extended.prepaid_ms, 90_000);
    let state = meter.state.borrow().clone();
    assert_eq!(state.lease.prepaid_ms, 90_000);
    assert_eq!(state.lease.hold_amount, hold_for(PRICE, 90_000));
    assert!(matches!(
        meter.sent("runtime.extended")[..],
        [StudioEvent::RuntimeExtended {
            prepaid_ms: 90_000,
            ..
        }]
    ));
}

#[actix::test]
async fn a_fenced_meter_stops_without_charging_or_settling() {
    let pool = in_process_pool();
    let meter = Meter::start(
        new_lease(PRICE, 60_000),
        0,
        pool.clone(),
        settings(Duration::from_millis(30)),
    );
    meter
        .until("a checkpoint", |m| {
            m.ledger
                .calls()
                .iter()
                .any(|c| matches!(c, LedgerCall::Checkpoint { .. }))
        })
        .await;
    // Another node claims the lease: the next checkpoint is refused at this meter's epoch.
    meter.ledger.fence();
    let calls_before = meter.ledger.calls();
    meter
        .until("the meter to stop and the worker to go back", |m| {
            !m.addr.connected() && pool.assigned() == 0
        })
        .await;
    // Nothing recorded after the fence: no charge, no settlement (the new owner settles).
    assert_eq!(meter.ledger.calls(), calls_before);
    assert!(meter.ledger.settlements().is_empty());
    assert!(meter.sent("runtime.stopped").is_empty());
    assert_eq!(
        meter.host.calls(),
        [
            HostCall::Fenced,
            HostCall::InterruptJobs(reason::TAKEN_OVER.into()),
            HostCall::Forget,
        ]
    );
    assert_eq!(meter.state.borrow().status, LeaseStatus::Stopped);
}
