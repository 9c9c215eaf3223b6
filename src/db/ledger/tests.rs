//! Ledger tests against real databases: SQLite (a temp file) always, PostgreSQL (a fresh
//! database, dropped afterwards) when `ATELIER_TEST_POSTGRES_URL` is set. Includes property
//! tests (proptest): any interleaving of grants, holds, charges, settlements and replays keeps
//! `available >= 0`, conserves credits (hold = charged + released) and is idempotent.

use std::collections::HashMap;

use atelier_protocol::ids::AccountId;
use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::*;
use crate::db::Db;

/// A database for one test; a PostgreSQL one is dropped with it.
pub(crate) struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/ledger.db", dir.path().display());
        TestDb {
            db: Db::connect(&url, 16).await.unwrap(),
            _dir: Some(dir),
            pg: None,
        }
    }

    pub async fn postgres() -> Option<TestDb> {
        let base = std::env::var("ATELIER_TEST_POSTGRES_URL")
            .ok()
            .filter(|s| !s.is_empty())?;
        let name = format!("atelier_unit_{}", uuid::Uuid::new_v4().simple());
        admin(&base, &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Some(TestDb {
            db: Db::connect(url.as_str(), 16).await.unwrap(),
            _dir: None,
            pg: Some((base, name)),
        })
    }

    /// SQLite, then PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        match TestDb::postgres().await {
            Some(pg) => dbs.push(pg),
            None => eprintln!("ATELIER_TEST_POSTGRES_URL is not set: PostgreSQL run skipped"),
        }
        dbs
    }

    pub fn name(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub async fn account(&self) -> AccountId {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        self.db.create_account(&email, "T", "x").await.unwrap().id
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = self.pg.take() {
            admin(
                &base,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs one admin statement on its own thread and runtime (usable from Drop).
fn admin(base: &str, sql: &str) {
    let (base, sql) = (base.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::postgres::PgConnection::connect(&base).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        });
    })
    .join()
    .unwrap();
}

async fn assert_consistent(db: &Db, account: AccountId) -> Balance {
    let check = db.verify_balance(account).await.unwrap();
    assert!(check.agrees(), "materialised != summed: {check:?}");
    let b = check.materialised;
    assert!(b.held >= 0 && b.available >= 0, "{b:?}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_hold_grant_charge_settle_replay() {
    for t in TestDb::all().await {
        let db = &t.db;
        let a = t.account().await;
        assert_eq!(db.balance(a).await.unwrap(), Balance::default());
        let g = db
            .credit(a, EntryKind::Grant, 10_000, "g1", None)
            .await
            .unwrap();
        assert!(!g.is_replay());
        // Same key: nothing changes; same key for something else: conflict.
        assert!(db
            .credit(a, EntryKind::Grant, 10_000, "g1", None)
            .await
            .unwrap()
            .is_replay());
        assert_eq!(
            db.credit(a, EntryKind::Grant, 5, "g1", None)
                .await
                .unwrap_err()
                .code(),
            "conflict"
        );
        let h = HoldId::new_random();
        db.place_hold(a, h, 6_000, "h1").await.unwrap();
        let b = assert_consistent(db, a).await;
        assert_eq!((b.balance, b.held, b.available), (10_000, 6_000, 4_000));
        // Not enough left for a second hold of the same size.
        let err = db
            .place_hold(a, HoldId::new_random(), 6_000, "h2")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "insufficient_credits", "{}", t.name());
        db.charge_hold(h, 1_000, "c1").await.unwrap();
        assert!(db.charge_hold(h, 1_000, "c1").await.unwrap().is_replay());
        assert_eq!(
            db.charge_hold(h, 5_001, "c2").await.unwrap_err().code(),
            "conflict"
        );
        let s = db.settle_hold(h, 2_000, "final", "rel").await.unwrap();
        assert!(!s.replayed);
        assert_eq!(
            (s.hold.amount, s.hold.charged, s.hold.released),
            (6_000, 3_000, 3_000)
        );
        let again = db.settle_hold(h, 2_000, "final", "rel").await.unwrap();
        assert!(again.replayed);
        let b = assert_consistent(db, a).await;
        assert_eq!((b.balance, b.held, b.available), (7_000, 0, 7_000));
        let page = db.ledger_entries(a, None, 100).await.unwrap();
        let kinds: Vec<_> = page.iter().rev().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Grant,
                EntryKind::Hold,
                EntryKind::Charge,
                EntryKind::Charge,
                EntryKind::Release
            ]
        );
        let older = db.ledger_entries(a, Some(page[1].id), 100).await.unwrap();
        assert_eq!(older.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_may_leave_a_debt_that_blocks_holds() {
    for t in TestDb::all().await {
        let db = &t.db;
        let a = t.account().await;
        db.credit(a, EntryKind::Purchase, 5_000, "purchase:cs_1", Some("pi_1"))
            .await
            .unwrap();
        let h = HoldId::new_random();
        db.place_hold(a, h, 4_000, "h").await.unwrap();
        db.settle_hold(h, 4_000, "hc", "hr").await.unwrap();
        // A quarter refunded, twice (the same event) and then the rest as a chargeback.
        let r = db
            .reverse_purchase(
                "pi_1",
                EntryKind::PurchaseRefund,
                ReversalTarget::Fraction {
                    refunded: 250,
                    of: 1000,
                },
                "refund:ch:250",
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.entry().amount, -1_250);
        assert!(db
            .reverse_purchase(
                "pi_1",
                EntryKind::PurchaseRefund,
                ReversalTarget::Fraction {
                    refunded: 250,
                    of: 1000
                },
                "refund:ch:250"
            )
            .await
            .unwrap()
            .unwrap()
            .is_replay());
        let cb = db
            .reverse_purchase("pi_1", EntryKind::Chargeback, ReversalTarget::All, "cb:dp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cb.entry().amount, -3_750);
        let b = db.balance(a).await.unwrap();
        assert_eq!((b.balance, b.available), (-4_000, -4_000), "{}", t.name());
        assert!(db.verify_balance(a).await.unwrap().agrees());
        let err = db
            .place_hold(a, HoldId::new_random(), 1, "h2")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "insufficient_credits");
        assert!(err.to_string().contains("negative"), "{err}");
        // Nothing is left to take back; unknown purchases are ignored.
        assert!(db
            .reverse_purchase("pi_1", EntryKind::Chargeback, ReversalTarget::All, "cb:2")
            .await
            .unwrap()
            .is_none());
        assert!(db
            .reverse_purchase("pi_x", EntryKind::Chargeback, ReversalTarget::All, "cb:3")
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_never_overdraw() {
    for t in TestDb::all().await {
        let db = &t.db;
        let a = t.account().await;
        db.credit(a, EntryKind::Grant, 3_000, "g", None)
            .await
            .unwrap();
        let results = join_all((0..20).map(|i| {
            let db = db.clone();
            async move {
                db.place_hold(a, HoldId::new_random(), 1_000, &format!("h{i}"))
                    .await
            }
        }))
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 3, "{}: {results:?}", t.name());
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.code(), "insufficient_credits", "{}", t.name());
        }
        let b = assert_consistent(db, a).await;
        assert_eq!((b.balance, b.held, b.available), (3_000, 3_000, 0));
    }
}

// ---- property tests ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Grant(i64),
    Hold(i64),
    /// Charge the hold placed by op `target % len` (if that op placed one).
    Charge {
        target: usize,
        amount: i64,
    },
    Settle {
        target: usize,
        amount: i64,
    },
    /// Run op `target % len` again, with its key.
    Replay {
        target: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1i64..5_000).prop_map(Op::Grant),
        3 => (1i64..8_000).prop_map(Op::Hold),
        3 => (any::<usize>(), 1i64..3_000).prop_map(|(target, amount)| Op::Charge { target, amount }),
        2 => (any::<usize>(), 0i64..3_000).prop_map(|(target, amount)| Op::Settle { target, amount }),
        2 => any::<usize>().prop_map(|target| Op::Replay { target }),
    ]
}

/// The result of running an op, comparable across a replay.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Posted(Option<LedgerEntry>),
    Settled(Hold),
    Refused(&'static str),
}

struct Case {
    account: AccountId,
    holds: Vec<HoldId>,
    ops: Vec<Op>,
}

impl Case {
    fn new(account: AccountId, ops: Vec<Op>) -> Self {
        Case {
            account,
            holds: (0..ops.len()).map(|_| HoldId::new_random()).collect(),
            ops,
        }
    }

    /// Resolves replays to the op they repeat (a replay of a replay repeats the original).
    fn resolve(&self, mut i: usize) -> Option<usize> {
        for _ in 0..self.ops.len() {
            match self.ops[i] {
                Op::Replay { target } if target % self.ops.len() != i => {
                    i = target % self.ops.len();
                }
                Op::Replay { .. } => return None,
                _ => return Some(i),
            }
        }
        None
    }

    async fn run(&self, db: &Db, i: usize) -> std::result::Result<Outcome, String> {
        let Some(i) = self.resolve(i) else {
            return Ok(Outcome::Refused("self_replay"));
        };
        let n = self.ops.len();
        let key = |what: &str| format!("{}:{what}:{i}", self.account);
        let result = match &self.ops[i] {
            Op::Grant(amount) => db
                .credit(self.account, EntryKind::Grant, *amount, &key("g"), None)
                .await
                .map(|p| Outcome::Posted(Some(p.entry().clone()))),
            Op::Hold(amount) => db
                .place_hold(self.account, self.holds[i], *amount, &key("h"))
                .await
                .map(|p| Outcome::Posted(Some(p.entry().clone()))),
            Op::Charge { target, amount } => db
                .charge_hold(self.holds[target % n], *amount, &key("c"))
                .await
                .map(|p| Outcome::Posted(Some(p.entry().clone()))),
            Op::Settle { target, amount } => db
                .settle_hold(self.holds[target % n], *amount, &key("sc"), &key("sr"))
                .await
                .map(|s| Outcome::Settled(s.hold)),
            Op::Replay { .. } => return Err("unresolved replay".into()),
        };
        match result {
            Ok(outcome) => Ok(outcome),
            Err(e) if matches!(e.code(), "insufficient_credits" | "conflict" | "not_found") => {
                Ok(Outcome::Refused(e.code()))
            }
            Err(e) => Err(format!("op {i} {:?}: unexpected error {e:?}", self.ops[i])),
        }
    }
}

/// What a simple in-memory model predicts, applied in order.
#[derive(Default)]
struct Model {
    balance: i64,
    held: i64,
    /// hold op index → (amount, charged, settled)
    holds: HashMap<usize, (i64, i64, bool)>,
    done: HashMap<usize, bool>,
}

impl Model {
    fn apply(&mut self, case: &Case, i: usize) {
        let Some(i) = case.resolve(i) else { return };
        let n = case.ops.len();
        if let Some(true) = self.done.get(&i) {
            return; // a replay of an applied op changes nothing
        }
        let applied = match case.ops[i] {
            Op::Grant(a) => {
                self.balance += a;
                true
            }
            Op::Hold(a) => {
                if self.done.contains_key(&i) || self.balance - self.held < a {
                    false
                } else {
                    self.held += a;
                    self.holds.insert(i, (a, 0, false));
                    true
                }
            }
            Op::Charge { target, amount } => match self.holds.get_mut(&(target % n)) {
                Some((a, c, false)) if amount <= *a - *c => {
                    *c += amount;
                    self.balance -= amount;
                    self.held -= amount;
                    true
                }
                _ => false,
            },
            Op::Settle { target, amount } => match self.holds.get_mut(&(target % n)) {
                Some((a, c, settled @ false)) if amount <= *a - *c => {
                    *c += amount;
                    self.balance -= amount;
                    self.held -= *a - (*c - amount);
                    *settled = true;
                    true
                }
                _ => false,
            },
            Op::Replay { .. } => false,
        };
        // A refused op is not remembered: its key is free, so running it again may succeed.
        if applied {
            self.done.insert(i, true);
        }
    }
}

async fn check_history(db: &Db, account: AccountId) -> std::result::Result<(), String> {
    let check = db
        .verify_balance(account)
        .await
        .map_err(|e| e.to_string())?;
    if !check.agrees() {
        return Err(format!("materialised != summed: {check:?}"));
    }
    let entries = db
        .ledger_entries(account, None, 10_000)
        .await
        .map_err(|e| e.to_string())?;
    for e in &entries {
        if e.held_after < 0 || e.balance_after - e.held_after < 0 {
            return Err(format!("entry left available/held negative: {e:?}"));
        }
    }
    // Conservation per hold: reserved = charged + released, and open holds add up to `held`.
    let mut per_hold: HashMap<HoldId, (i64, i64, i64)> = HashMap::new();
    for e in &entries {
        if let Some(h) = e.hold_id {
            let t = per_hold.entry(h).or_default();
            match e.kind {
                EntryKind::Hold => t.0 += e.held_delta,
                EntryKind::Charge => t.1 -= e.amount,
                EntryKind::Release => t.2 -= e.held_delta,
                _ => return Err(format!("unexpected entry on a hold: {e:?}")),
            }
        }
    }
    let mut open = 0;
    for (id, (reserved, charged, released)) in per_hold {
        let hold = db
            .hold(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("hold row missing")?;
        if (hold.amount, hold.charged, hold.released) != (reserved, charged, released) {
            return Err(format!("hold row disagrees with its entries: {hold:?}"));
        }
        match hold.status {
            HoldStatus::Settled if reserved != charged + released => {
                return Err(format!("settled hold does not add up: {hold:?}"));
            }
            HoldStatus::Open => open += reserved - charged,
            _ => {}
        }
    }
    if open != check.materialised.held {
        return Err(format!(
            "open holds {open} != held {}",
            check.materialised.held
        ));
    }
    Ok(())
}

/// Replays every op: nothing may change, and each applied op reports the same result.
async fn check_idempotent(
    db: &Db,
    case: &Case,
    first: &HashMap<usize, Outcome>,
) -> std::result::Result<(), String> {
    let before = db.balance(case.account).await.map_err(|e| e.to_string())?;
    let count = db
        .ledger_entries(case.account, None, 10_000)
        .await
        .map_err(|e| e.to_string())?
        .len();
    for (i, outcome) in first {
        if matches!(outcome, Outcome::Refused(_)) {
            continue;
        }
        let again = case.run(db, *i).await?;
        let same = match (&again, outcome) {
            (Outcome::Settled(a), Outcome::Settled(b)) => a.id == b.id && a.status == b.status,
            (a, b) => a == b,
        };
        if !same {
            return Err(format!(
                "replaying op {i} gave {again:?}, first {outcome:?}"
            ));
        }
    }
    let after = db.balance(case.account).await.map_err(|e| e.to_string())?;
    let count_after = db
        .ledger_entries(case.account, None, 10_000)
        .await
        .map_err(|e| e.to_string())?
        .len();
    if before != after || count != count_after {
        return Err("a replay changed the ledger".into());
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Ops one at a time: the database agrees with the model after every op.
fn sequential_property(t: &TestDb, rt: &tokio::runtime::Runtime, cases: u32) {
    let db = &t.db;
    runner(cases)
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                let account = t.account().await;
                let case = Case::new(account, ops);
                let mut model = Model::default();
                let mut first = HashMap::new();
                for i in 0..case.ops.len() {
                    let outcome = case.run(db, i).await.map_err(TestCaseError::fail)?;
                    model.apply(&case, i);
                    if let Some(r) = case.resolve(i) {
                        first.entry(r).or_insert(outcome);
                    }
                    let b = db
                        .balance(account)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(
                        (b.balance, b.held),
                        (model.balance, model.held),
                        "after op {} {:?}",
                        i,
                        case.ops[i]
                    );
                    prop_assert!(b.available >= 0);
                }
                check_history(db, account)
                    .await
                    .map_err(TestCaseError::fail)?;
                check_idempotent(db, &case, &first)
                    .await
                    .map_err(TestCaseError::fail)?;
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{}: {e}", t.name()));
}

/// Ops in concurrent batches (any interleaving the database allows): the invariants hold.
fn concurrent_property(t: &TestDb, rt: &tokio::runtime::Runtime, cases: u32) {
    let db = &t.db;
    let strategy = (prop::collection::vec(op(), 1..40), 1usize..8);
    runner(cases)
        .run(&strategy, |(ops, batch)| {
            rt.block_on(async {
                let account = t.account().await;
                let case = Case::new(account, ops);
                let mut first = HashMap::new();
                let indices: Vec<usize> = (0..case.ops.len()).collect();
                for chunk in indices.chunks(batch) {
                    let outcomes = join_all(chunk.iter().map(|&i| case.run(db, i))).await;
                    for (&i, outcome) in chunk.iter().zip(outcomes) {
                        let outcome = outcome.map_err(TestCaseError::fail)?;
                        if let Some(r) = case.resolve(i) {
                            // Keep the outcome of the run that succeeded, if any did.
                            let slot = first.entry(r).or_insert(outcome.clone());
                            if matches!(slot, Outcome::Refused(_)) {
                                *slot = outcome;
                            }
                        }
                    }
                    let b = db
                        .balance(account)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(b.available >= 0 && b.held >= 0, "{:?}", b);
                }
                check_history(db, account)
                    .await
                    .map_err(TestCaseError::fail)?;
                check_idempotent(db, &case, &first)
                    .await
                    .map_err(TestCaseError::fail)?;
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{}: {e}", t.name()));
}

fn property_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn property_sequential_ops_match_the_model() {
    let rt = property_runtime();
    for t in rt.block_on(TestDb::all()) {
        let cases = if t.pg.is_some() { 12 } else { 48 };
        sequential_property(&t, &rt, cases);
        rt.block_on(async { t.db.close().await });
    }
}

#[test]
fn property_concurrent_ops_keep_the_invariants() {
    let rt = property_runtime();
    for t in rt.block_on(TestDb::all()) {
        let cases = if t.pg.is_some() { 8 } else { 24 };
        concurrent_property(&t, &rt, cases);
        rt.block_on(async { t.db.close().await });
    }
}
