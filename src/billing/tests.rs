//! Lease and meter behaviour inside an actix system, on a real SQLite database, with recording
//! implementations of the ports: the job system's [`RuntimeHooks`] (a stand-in for a running
//! job), the [`EventSink`] (the session's participants) and a [`WorkerPool`] whose worker can
//! be lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::*;
use crate::db::ledger::tests::TestDb;
use crate::db::ledger::EntryKind;

#[derive(Default)]
struct Recorder {
    interrupts: Mutex<Vec<(SessionId, String)>>,
    events: Mutex<Vec<(SessionId, StudioEvent)>>,
}

impl RuntimeHooks for Recorder {
    fn interrupt_session_jobs(&self, session: SessionId, reason: &str) {
        self.interrupts
            .lock()
            .unwrap()
            .push((session, reason.to_string()));
    }
}

impl EventSink for Recorder {
    fn send(&self, session: SessionId, event: StudioEvent) {
        self.events.lock().unwrap().push((session, event));
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<&'static str> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.kind())
            .collect()
    }

    fn stopped(&self) -> Option<StudioEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .find(|e| matches!(e, StudioEvent::RuntimeStopped { .. }))
    }
}

/// A pool of one remote-like worker that heartbeats through a watch the test controls.
#[derive(Default)]
struct RemotePool {
    senders: Mutex<Vec<watch::Sender<WorkerHeartbeat>>>,
    released: Mutex<Vec<LeaseId>>,
    /// Leases given a worker: each gets one (a lease that lost it finds no other).
    served: Mutex<Vec<LeaseId>>,
}

impl WorkerPool for RemotePool {
    fn acquire(
        &self,
        lease: LeaseId,
        _gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let mut served = self.served.lock().unwrap();
        if served.contains(&lease) {
            return Box::pin(std::future::pending());
        }
        served.push(lease);
        drop(served);
        let (tx, rx) = watch::channel(WorkerHeartbeat::At(now_ms()));
        self.senders.lock().unwrap().push(tx);
        Box::pin(async move {
            Ok(WorkerAssignment {
                worker_id: WorkerId::new_random(),
                device: "cuda:0".into(),
                heartbeat: rx,
            })
        })
    }

    fn release(&self, lease: LeaseId, _worker: WorkerId) {
        self.released.lock().unwrap().push(lease);
    }
}

struct Fixture {
    t: TestDb,
    billing: Billing,
    rec: Arc<Recorder>,
    account: AccountId,
    session: SessionId,
}

fn settings(idle: Duration) -> BillingSettings {
    BillingSettings {
        prices: "cpu=60000,gpu=120000".parse().unwrap(),
        meter: MeterSettings {
            meter_interval: Duration::from_millis(50),
            checkpoint_interval: Duration::from_millis(300),
            idle_timeout: idle,
            low_balance_warning: Duration::from_secs(1),
        },
        max_prepaid_minutes: 60,
        resume_window: Duration::from_secs(60),
        node_id: "test-node".into(),
        clustered: false,
        takeover_delay: Duration::from_secs(5),
        reconnect_grace: Duration::from_secs(1),
        signup_credits: 0,
    }
}

async fn fixture(settings: BillingSettings, pool: Arc<dyn WorkerPool>, credits: i64) -> Fixture {
    let t = TestDb::sqlite().await;
    let account = t.account().await;
    let session = t.db.create_session(account, "s").await.unwrap().id;
    t.db.credit(account, EntryKind::Grant, credits, "g", None)
        .await
        .unwrap();
    let rec = Arc::new(Recorder::default());
    let billing = Billing::new(t.db.clone(), settings, rec.clone(), pool);
    billing.set_hooks(rec.clone());
    Fixture {
        t,
        billing,
        rec,
        account,
        session,
    }
}

fn in_process() -> Arc<dyn WorkerPool> {
    Arc::new(InProcessWorkerPool::new(
        ["cpu".to_string(), "gpu".to_string()],
        "cpu",
    ))
}

async fn until<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_ledger_settled(f: &Fixture, lease: LeaseId, hold: i64, s: &Settlement) {
    assert_eq!(s.charged + s.refunded, hold);
    let check = f.t.db.verify_balance(f.account).await.unwrap();
    assert!(check.agrees(), "{check:?}");
    assert_eq!(check.materialised.held, 0, "no hold may stay open");
    let entries = f.t.db.lease_entries(lease).await.unwrap();
    let charged: i64 = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Charge)
        .map(|e| -e.amount)
        .sum();
    let released: i64 = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Release)
        .map(|e| -e.held_delta)
        .sum();
    assert_eq!((charged, released), (s.charged, s.refunded), "{entries:#?}");
}

#[actix::test]
async fn a_lease_with_a_job_meters_checkpoints_and_settles_on_stop() {
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 100_000).await;
    // Without a lease, jobs are refused with 402 payment_required.
    let err = f.billing.require_active_lease(f.session).unwrap_err();
    assert_eq!(err.code(), "payment_required");
    assert_eq!(
        actix_web::ResponseError::status_code(&err),
        actix_web::http::StatusCode::PAYMENT_REQUIRED
    );

    let view = f
        .billing
        .start_lease(f.session, f.account, "cpu", 60_000)
        .await
        .unwrap();
    assert_eq!(view.hold, 60_000);
    let started = Instant::now();
    // A second lease on the same session is refused.
    let again = f
        .billing
        .start_lease(f.session, f.account, "cpu", 60_000)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "conflict");

    until("assignment", Duration::from_secs(5), || {
        f.billing.require_active_lease(f.session).is_ok()
    })
    .await;
    let info = f.billing.require_active_lease(f.session).unwrap();
    assert_eq!(info.lease_id, view.lease_id);
    assert_eq!(info.account_id, f.account);
    // "A job" runs: the job system reports activity.
    for _ in 0..6 {
        f.billing.note_job_activity(info.lease_id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = f.billing.lease_view(f.session).await.unwrap().unwrap();
    assert_eq!(live.status, LeaseStatus::Running);
    assert!(live.used_ms > 900, "{live:?}");
    // At least one checkpoint has charged the ledger already.
    let entries = f.t.db.lease_entries(view.lease_id).await.unwrap();
    assert!(
        entries.iter().any(|e| e.kind == EntryKind::Charge),
        "{entries:#?}"
    );

    let s = f
        .billing
        .stop_lease(f.session, reason::STOPPED_BY_USER)
        .await
        .unwrap();
    let wall = i64::try_from(started.elapsed().as_millis()).unwrap();
    assert!(s.used_ms <= wall, "used {} > wall {wall}", s.used_ms);
    assert!(wall - s.used_ms <= 300, "used {} vs wall {wall}", s.used_ms);
    assert_eq!(s.charged, prices::cost(60_000, s.used_ms));
    assert_ledger_settled(&f, view.lease_id, view.hold, &s).await;
    assert_eq!(s.balance, 100_000 - s.charged);
    // The running job was interrupted, with the reason.
    assert_eq!(
        f.rec.interrupts.lock().unwrap().as_slice(),
        &[(f.session, "stopped_by_user".to_string())]
    );
    let kinds = f.rec.kinds();
    assert_eq!(kinds.first(), Some(&"runtime.started"));
    assert!(kinds.contains(&"runtime.meter"));
    assert_eq!(kinds.last(), Some(&"runtime.stopped"));
    assert_eq!(
        f.billing
            .require_active_lease(f.session)
            .unwrap_err()
            .code(),
        "payment_required"
    );
    // Stopping again: nothing open.
    assert_eq!(
        f.billing
            .stop_lease(f.session, reason::STOPPED_BY_USER)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    let shown = f.billing.lease_view(f.session).await.unwrap().unwrap();
    assert_eq!(shown.status, LeaseStatus::Stopped);
    assert_eq!(shown.refunded, Some(s.refunded));
}

#[actix::test]
async fn prepaid_time_running_out_stops_the_lease_and_interrupts_the_job() {
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 10_000).await;
    // 1.5 s at 1000 millicredits per second.
    let view = f
        .billing
        .start_lease(f.session, f.account, "cpu", 1_500)
        .await
        .unwrap();
    assert_eq!(view.hold, 1_500);
    until("runtime.stopped", Duration::from_secs(5), || {
        f.rec.stopped().is_some()
    })
    .await;
    let Some(StudioEvent::RuntimeStopped {
        reason,
        used_ms,
        charged,
        refunded,
        ..
    }) = f.rec.stopped()
    else {
        unreachable!()
    };
    assert_eq!(reason, "prepaid_time_used");
    assert_eq!((used_ms, charged, refunded), (1_500, 1_500, 0));
    assert_eq!(
        f.rec.interrupts.lock().unwrap().as_slice(),
        &[(f.session, "prepaid_time_used".to_string())]
    );
    let lease = f.t.db.lease(view.lease_id).await.unwrap().unwrap();
    assert_eq!(lease.status, LeaseStatus::Stopped);
    let b = f.t.db.balance(f.account).await.unwrap();
    assert_eq!((b.balance, b.held), (8_500, 0));
}

#[actix::test]
async fn an_extended_lease_warns_runs_past_its_first_end_and_settles_every_hold() {
    // Warned 1 s before the end (settings); 1.5 s prepaid, extended by 1.5 s after the warning.
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 10_000).await;
    let view = f
        .billing
        .start_lease(f.session, f.account, "cpu", 1_500)
        .await
        .unwrap();
    until("runtime.low_balance", Duration::from_secs(5), || {
        f.rec.kinds().contains(&"runtime.low_balance")
    })
    .await;
    // Only the payer may extend; a second account is refused.
    let other = f.t.account().await;
    assert_eq!(
        f.billing
            .extend_lease(f.session, other, 1_500)
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    let extended = f
        .billing
        .extend_lease(f.session, f.account, 1_500)
        .await
        .unwrap();
    assert_eq!((extended.prepaid_ms, extended.hold), (3_000, 3_000));
    // More than the credits left (10 000 − 3 000 held) is refused and changes nothing.
    assert_eq!(
        f.billing
            .extend_lease(f.session, f.account, 8_000)
            .await
            .unwrap_err()
            .code(),
        "insufficient_credits"
    );
    until("runtime.stopped", Duration::from_secs(8), || {
        f.rec.stopped().is_some()
    })
    .await;
    let Some(StudioEvent::RuntimeStopped {
        reason,
        used_ms,
        charged,
        refunded,
        ..
    }) = f.rec.stopped()
    else {
        unreachable!()
    };
    assert_eq!(reason, "prepaid_time_used");
    assert_eq!((used_ms, charged + refunded), (3_000, 3_000));
    let kinds = f.rec.kinds();
    let warnings = kinds
        .iter()
        .filter(|k| **k == "runtime.low_balance")
        .count();
    assert_eq!(
        warnings, 2,
        "one warning per stretch of prepaid time: {kinds:?}"
    );
    assert!(kinds.contains(&"runtime.extended"));
    let holds: i64 =
        f.t.db
            .lease_entries(view.lease_id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == EntryKind::Hold)
            .map(|e| e.held_delta)
            .sum();
    assert_eq!(holds, 3_000);
    let b = f.t.db.balance(f.account).await.unwrap();
    assert_eq!((b.balance, b.held), (10_000 - charged, 0));
}

#[actix::test]
async fn an_idle_lease_stops_itself_but_activity_keeps_it() {
    let f = fixture(settings(Duration::from_millis(400)), in_process(), 100_000).await;
    let view = f
        .billing
        .start_lease(f.session, f.account, "cpu", 60_000)
        .await
        .unwrap();
    until("assignment", Duration::from_secs(5), || {
        f.billing.require_active_lease(f.session).is_ok()
    })
    .await;
    for _ in 0..8 {
        f.billing.note_job_activity(view.lease_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(f.rec.stopped().is_none(), "stopped while active");
    until("idle stop", Duration::from_secs(5), || {
        f.rec.stopped().is_some()
    })
    .await;
    let Some(StudioEvent::RuntimeStopped { reason, .. }) = f.rec.stopped() else {
        unreachable!()
    };
    assert_eq!(reason, "idle");
}

#[actix::test]
async fn a_lost_worker_stops_billing_at_its_last_heartbeat() {
    let pool = Arc::new(RemotePool::default());
    let f = fixture(settings(Duration::from_secs(600)), pool.clone(), 200_000).await;
    let view = f
        .billing
        .start_lease(f.session, f.account, "gpu", 60_000)
        .await
        .unwrap();
    until("assignment", Duration::from_secs(5), || {
        f.billing.require_active_lease(f.session).is_ok()
    })
    .await;
    let assigned_at =
        f.t.db
            .lease(view.lease_id)
            .await
            .unwrap()
            .unwrap()
            .segment_started_at
            .unwrap();
    // Heartbeats for 400 ms, then silence, then the pool declares the worker lost.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.senders.lock().unwrap()[0]
            .send(WorkerHeartbeat::At(now_ms()))
            .unwrap();
    }
    let last = now_ms();
    tokio::time::sleep(Duration::from_millis(600)).await;
    pool.senders.lock().unwrap()[0]
        .send(WorkerHeartbeat::Lost {
            last_heartbeat_ms: last,
        })
        .unwrap();
    until("runtime.stopped", Duration::from_secs(5), || {
        f.rec.stopped().is_some()
    })
    .await;
    let Some(StudioEvent::RuntimeStopped {
        reason, used_ms, ..
    }) = f.rec.stopped()
    else {
        unreachable!()
    };
    assert_eq!(reason, "worker_lost");
    let used = i64::try_from(used_ms).unwrap();
    assert!(used <= last - assigned_at, "billed past the last heartbeat");
    assert!(
        used >= last - assigned_at - 60,
        "{used} vs {}",
        last - assigned_at
    );
    assert_eq!(pool.released.lock().unwrap().as_slice(), &[view.lease_id]);
    let lease = f.t.db.lease(view.lease_id).await.unwrap().unwrap();
    assert_eq!(lease.charged + lease.refunded.unwrap(), lease.hold_amount);
}

#[actix::test]
async fn recovery_resumes_recent_leases_and_settles_old_ones_at_their_checkpoint() {
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 200_000).await;
    // A lease "from the previous run": held, assigned, one checkpoint of 2 s — no meter.
    let db = &f.t.db;
    let other = db.create_session(f.account, "other").await.unwrap().id;
    let mut leases = Vec::new();
    for session in [f.session, other] {
        let lease = db
            .create_lease(&NewLease {
                id: LeaseId::new_random(),
                session_id: session,
                account_id: f.account,
                gpu_class: "cpu",
                price_per_minute: 60_000,
                prepaid_ms: 60_000,
                hold_amount: 60_000,
                owner_node: "previous-run",
            })
            .await
            .unwrap();
        db.lease_segment_started(
            lease.id,
            lease.epoch,
            WorkerId::new_random(),
            "cpu",
            now_ms() - 2_500,
        )
        .await
        .unwrap();
        let cp = db
            .lease_checkpoint(lease.id, lease.epoch, 1, 2_000, 2_000)
            .await
            .unwrap();
        assert!(cp.applied);
        // The same checkpoint again (a retry after an unknown commit) charges nothing more.
        let again = db
            .lease_checkpoint(lease.id, lease.epoch, 1, 2_400, 2_400)
            .await
            .unwrap();
        assert!(!again.applied);
        assert_eq!(again.lease.charged, 2_000);
        leases.push(lease);
    }

    // A zero window settles everything at its last checkpoint.
    let mut old = settings(Duration::from_secs(600));
    old.resume_window = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let settler = Billing::new(db.clone(), old, f.rec.clone(), in_process());
    let recovered = settler.recover().await.unwrap();
    assert_eq!(
        recovered,
        Recovery {
            resumed: 0,
            settled: 2,
            taken_over: 0,
        }
    );
    for lease in &leases {
        let stored = db.lease(lease.id).await.unwrap().unwrap();
        assert_eq!(stored.status, LeaseStatus::Stopped);
        assert_eq!(stored.stop_reason.as_deref(), Some("server_restarted"));
        assert_eq!((stored.used_ms, stored.charged), (2_000, 2_000));
        assert_eq!(stored.refunded, Some(58_000));
    }
    let b = db.verify_balance(f.account).await.unwrap();
    assert!(b.agrees());
    assert_eq!((b.materialised.balance, b.materialised.held), (196_000, 0));

    // A recent lease is resumed: metering continues from its checkpoint, not from the crash.
    let lease = db
        .create_lease(&NewLease {
            id: LeaseId::new_random(),
            session_id: f.session,
            account_id: f.account,
            gpu_class: "cpu",
            price_per_minute: 60_000,
            prepaid_ms: 60_000,
            hold_amount: 60_000,
            owner_node: "previous-run",
        })
        .await
        .unwrap();
    db.lease_segment_started(
        lease.id,
        lease.epoch,
        WorkerId::new_random(),
        "cpu",
        now_ms() - 10_000,
    )
    .await
    .unwrap();
    db.lease_checkpoint(lease.id, lease.epoch, 1, 3_000, 3_000)
        .await
        .unwrap();
    let resumed = f.billing.recover().await.unwrap();
    assert_eq!(
        resumed,
        Recovery {
            resumed: 1,
            settled: 0,
            taken_over: 0,
        }
    );
    until("resumed assignment", Duration::from_secs(5), || {
        f.billing.require_active_lease(f.session).is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = f
        .billing
        .stop_lease(f.session, reason::STOPPED_BY_USER)
        .await
        .unwrap();
    // 3 s from before the "crash" plus about half a second since the resume, not the 10 s
    // since the first assignment.
    assert!((3_400..4_500).contains(&s.used_ms), "{s:?}");
    assert_eq!(s.charged, s.used_ms);
    assert_ledger_settled(&f, lease.id, 60_000, &s).await;
}

#[actix::test]
async fn writes_at_a_stale_epoch_change_nothing_and_one_claim_wins() {
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 200_000).await;
    let db = &f.t.db;
    let lease = db
        .create_lease(&NewLease {
            id: LeaseId::new_random(),
            session_id: f.session,
            account_id: f.account,
            gpu_class: "cpu",
            price_per_minute: 60_000,
            prepaid_ms: 60_000,
            hold_amount: 60_000,
            owner_node: "node-a",
        })
        .await
        .unwrap();
    assert_eq!(
        (lease.owner_node.as_deref(), lease.epoch),
        (Some("node-a"), 1)
    );
    db.lease_segment_started(lease.id, 1, WorkerId::new_random(), "cpu", now_ms())
        .await
        .unwrap();
    db.lease_checkpoint(lease.id, 1, 1, 1_000, 1_000)
        .await
        .unwrap();
    // node-a is alive (fresh heartbeat): node-b may not claim it as stale...
    let stale_before = now_ms() - 5_000;
    assert!(db
        .claim_lease(lease.id, "node-b", 1, stale_before)
        .await
        .unwrap()
        .is_none());
    // ...but may claim it whoever owns it (a stop on node-b): epoch 2.
    let claimed = db
        .claim_lease(lease.id, "node-b", 1, i64::MAX)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.owner_node.as_deref(), claimed.epoch),
        (Some("node-b"), 2)
    );
    let entries = db.ledger_entries(f.account, None, 100).await.unwrap().len();
    // node-a, at epoch 1, can neither charge, extend nor settle.
    let fenced = |r: crate::error::Result<_>| matches!(r, Err(Error::LeaseFenced(_)));
    assert!(fenced(
        db.lease_checkpoint(lease.id, 1, 2, 5_000, 5_000)
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        db.extend_lease(lease.id, 1, 60_000, 3_600_000)
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        db.settle_lease(lease.id, 1, 9_000, 9_000, "x")
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        db.lease_segment_started(lease.id, 1, WorkerId::new_random(), "cpu", now_ms())
            .await
            .map(|_| ())
    ));
    assert_eq!(
        db.ledger_entries(f.account, None, 100).await.unwrap().len(),
        entries
    );
    // Two nodes racing for epoch 2: exactly one gets epoch 3.
    let (a, b) = tokio::join!(
        db.claim_lease(lease.id, "node-c", 2, i64::MAX),
        db.claim_lease(lease.id, "node-d", 2, i64::MAX),
    );
    let winners: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].epoch, 3);
    let s = db
        .settle_lease(lease.id, 3, 1_500, 1_500, "stopped_by_user")
        .await
        .unwrap();
    assert_eq!((s.used_ms, s.charged, s.refunded), (1_500, 1_500, 58_500));
    let b = db.verify_balance(f.account).await.unwrap();
    assert!(b.agrees());
    assert_eq!((b.materialised.balance, b.materialised.held), (198_500, 0));
}

#[actix::test]
async fn concurrent_starts_hold_only_what_the_credits_cover() {
    let f = fixture(settings(Duration::from_secs(600)), in_process(), 180_000).await;
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(
            f.t.db
                .create_session(f.account, &format!("s{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let results = futures_util::future::join_all(sessions.iter().map(|s| {
        let billing = f.billing.clone();
        let account = f.account;
        let session = *s;
        async move { billing.start_lease(session, account, "cpu", 60_000).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code(), "insufficient_credits");
    }
    f.billing.shutdown().await;
    let b = f.t.db.verify_balance(f.account).await.unwrap();
    assert!(b.agrees() && b.materialised.held == 0, "{b:?}");
}
