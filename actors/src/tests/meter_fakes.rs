//! Fakes for [`BillingMeterActor`](crate::meter::BillingMeterActor)'s ports: a ledger that
//! keeps one lease in memory and records every call (and can be told to fail settlements), a
//! host and an event sink that record what they are told, and a pool whose one remote worker
//! the test can lose.

use std::sync::{Arc, Mutex};

use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};
use tokio::sync::watch;

use crate::events::EventSink;
use crate::lease::{PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool};
use crate::meter::cost::hold_for;
use crate::meter::{
    Checkpointed, LeaseStatus, Ledger, LedgerError, MeterHost, MeteredLease, Settlement,
};
use crate::store::BoxFuture;

/// What the meter asked of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCall {
    SegmentStarted {
        worker: WorkerId,
        device: String,
        at: i64,
    },
    Checkpoint {
        seq: i64,
        used_ms: i64,
        charged: i64,
    },
    Settle {
        used_ms: i64,
        charged: i64,
        reason: String,
    },
    Extend {
        add_ms: i64,
    },
}

/// A stored lease (new, nothing used) of `prepaid_ms` at `price_per_minute`.
pub fn new_lease(price_per_minute: i64, prepaid_ms: i64) -> MeteredLease {
    MeteredLease {
        id: LeaseId::new_random(),
        session_id: SessionId::new_random(),
        account_id: AccountId::new_random(),
        gpu_class: "t4".into(),
        price_per_minute,
        prepaid_ms,
        hold_amount: hold_for(price_per_minute, prepaid_ms),
        status: LeaseStatus::Starting,
        worker_id: None,
        device: None,
        created_at: 0,
        assigned_at: None,
        segment_base_ms: 0,
        used_ms: 0,
        charged: 0,
        checkpoint_seq: 0,
        stopped_at: None,
        stop_reason: None,
        refunded: None,
        extensions: 0,
        owner_node: Some("node-a".into()),
        epoch: 1,
    }
}

/// The payer's balance before the lease's charges.
pub const BALANCE: i64 = 1_000_000;

/// One lease in memory; every call recorded.
pub struct FakeLedger {
    lease: Mutex<MeteredLease>,
    calls: Mutex<Vec<LedgerCall>>,
    /// How many settlements fail before one succeeds.
    failing_settlements: Mutex<u32>,
    /// Set: another node claimed the lease; every write is refused as fenced.
    fenced: Mutex<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the database is down")]
struct DatabaseDown;

#[derive(Debug, thiserror::Error)]
#[error("the lease's epoch is stale")]
struct StaleEpoch;

impl FakeLedger {
    pub fn new(lease: &MeteredLease, failing_settlements: u32) -> Arc<FakeLedger> {
        Arc::new(FakeLedger {
            lease: Mutex::new(lease.clone()),
            calls: Mutex::new(Vec::new()),
            failing_settlements: Mutex::new(failing_settlements),
            fenced: Mutex::new(false),
        })
    }

    /// Another node claims the lease: from now on every write is refused (and not recorded).
    pub fn fence(&self) {
        *self.fenced.lock().unwrap() = true;
    }

    fn refused<T: Send + 'static>(&self) -> Option<BoxFuture<'static, Result<T, LedgerError>>> {
        if *self.fenced.lock().unwrap() {
            Some(Box::pin(async {
                Err(LedgerError::Fenced(Box::new(StaleEpoch)))
            }))
        } else {
            None
        }
    }

    pub fn calls(&self) -> Vec<LedgerCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn settlements(&self) -> Vec<(i64, i64, String)> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                LedgerCall::Settle {
                    used_ms,
                    charged,
                    reason,
                } => Some((used_ms, charged, reason)),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: LedgerCall) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Ledger for FakeLedger {
    fn segment_started(
        &self,
        _lease: LeaseId,
        _epoch: i64,
        worker: WorkerId,
        device: &str,
        at: i64,
    ) -> BoxFuture<'static, Result<Option<MeteredLease>, LedgerError>> {
        if let Some(refused) = self.refused() {
            return refused;
        }
        self.record(LedgerCall::SegmentStarted {
            worker,
            device: device.into(),
            at,
        });
        let mut lease = self.lease.lock().unwrap();
        lease.status = LeaseStatus::Running;
        lease.worker_id = Some(worker);
        lease.device = Some(device.into());
        lease.assigned_at = Some(at);
        lease.segment_base_ms = lease.used_ms;
        let lease = lease.clone();
        Box::pin(async move { Ok(Some(lease)) })
    }

    fn checkpoint(
        &self,
        _lease: LeaseId,
        _epoch: i64,
        seq: i64,
        used_ms: i64,
        charged_total: i64,
    ) -> BoxFuture<'static, Result<Checkpointed, LedgerError>> {
        if let Some(refused) = self.refused() {
            return refused;
        }
        self.record(LedgerCall::Checkpoint {
            seq,
            used_ms,
            charged: charged_total,
        });
        let mut lease = self.lease.lock().unwrap();
        if seq > lease.checkpoint_seq {
            lease.used_ms = used_ms;
            lease.charged = charged_total;
            lease.checkpoint_seq = seq;
        }
        let checkpointed = Checkpointed {
            lease: lease.clone(),
            balance: BALANCE - lease.charged,
            session_exists: true,
        };
        Box::pin(async move { Ok(checkpointed) })
    }

    fn settle(
        &self,
        _lease: LeaseId,
        _epoch: i64,
        used_ms: i64,
        charged_total: i64,
        reason: &str,
    ) -> BoxFuture<'static, Result<Settlement, LedgerError>> {
        if let Some(refused) = self.refused() {
            return refused;
        }
        self.record(LedgerCall::Settle {
            used_ms,
            charged: charged_total,
            reason: reason.into(),
        });
        let mut failing = self.failing_settlements.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Box::pin(async { Err(LedgerError::Failed(Box::new(DatabaseDown))) });
        }
        let lease = self.lease.lock().unwrap();
        let settlement = Settlement {
            lease_id: lease.id,
            session_id: lease.session_id,
            account_id: lease.account_id,
            used_ms,
            charged: charged_total,
            refunded: lease.hold_amount - charged_total,
            reason: reason.into(),
            balance: BALANCE - charged_total,
        };
        Box::pin(async move { Ok(settlement) })
    }

    fn extend(
        &self,
        _lease: LeaseId,
        _epoch: i64,
        add_ms: i64,
        _max_prepaid_ms: i64,
    ) -> BoxFuture<'static, Result<MeteredLease, LedgerError>> {
        if let Some(refused) = self.refused() {
            return refused;
        }
        self.record(LedgerCall::Extend { add_ms });
        let mut lease = self.lease.lock().unwrap();
        lease.prepaid_ms += add_ms;
        lease.hold_amount = hold_for(lease.price_per_minute, lease.prepaid_ms);
        lease.extensions += 1;
        let lease = lease.clone();
        Box::pin(async move { Ok(lease) })
    }
}

/// What the meter told its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCall {
    Forget,
    InterruptJobs(String),
    Fenced,
}

#[derive(Default)]
pub struct FakeHost(Mutex<Vec<HostCall>>);

impl FakeHost {
    pub fn calls(&self) -> Vec<HostCall> {
        self.0.lock().unwrap().clone()
    }
}

impl MeterHost for FakeHost {
    fn forget(&self, _session: SessionId, _lease: LeaseId) {
        self.0.lock().unwrap().push(HostCall::Forget);
    }

    fn interrupt_jobs(&self, _session: SessionId, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push(HostCall::InterruptJobs(reason.into()));
    }

    fn fenced(&self, _lease: LeaseId) {
        self.0.lock().unwrap().push(HostCall::Fenced);
    }
}

/// Records every studio event sent.
#[derive(Default)]
pub struct RecordedEvents(Mutex<Vec<(SessionId, StudioEvent)>>);

impl RecordedEvents {
    pub fn events(&self) -> Vec<StudioEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl EventSink for RecordedEvents {
    fn send(&self, session: SessionId, event: StudioEvent) {
        self.0.lock().unwrap().push((session, event));
    }
}

/// One remote worker, heartbeating at `now` until the test says it is lost. It is offered once:
/// a lease that lost it finds no other worker (it does not move).
pub struct LosablePool {
    pub worker: WorkerId,
    heartbeat: Mutex<Option<watch::Sender<WorkerHeartbeat>>>,
}

impl LosablePool {
    pub fn new() -> Arc<LosablePool> {
        Arc::new(LosablePool {
            worker: WorkerId::new_random(),
            heartbeat: Mutex::new(None),
        })
    }

    pub fn heartbeat(&self, beat: WorkerHeartbeat) {
        if let Some(sender) = self.heartbeat.lock().unwrap().as_ref() {
            sender.send(beat).unwrap();
        }
    }
}

impl WorkerPool for LosablePool {
    fn acquire(
        &self,
        _lease: LeaseId,
        _gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let mut offered = self.heartbeat.lock().unwrap();
        if offered.is_some() {
            return Box::pin(std::future::pending());
        }
        let (tx, rx) = watch::channel(WorkerHeartbeat::At(i64::MAX));
        *offered = Some(tx);
        drop(offered);
        let assignment = WorkerAssignment {
            worker_id: self.worker,
            device: "cuda:0".into(),
            heartbeat: rx,
        };
        Box::pin(async move { Ok(assignment) })
    }

    fn release(&self, _lease: LeaseId, _worker: WorkerId) {}
}
