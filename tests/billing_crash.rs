//! Crash safety of Pro runtime billing: the server is killed (SIGKILL) in the middle of a lease
//! and restarted on the same database. The lease is either resumed (downtime not billed) or
//! settled at its last checkpoint; never charged twice, never left holding credits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::billing::{charges, lease_of};
use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PRICE: i64 = 6000; // 100 millicredits per second
const HOLD: i64 = 6000; // one minute

/// Server flags; leases take the in-process worker.
fn args(resume_window_s: &'static str) -> Vec<&'static str> {
    static WORKER: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(common::in_process_worker_args);
    let mut args = vec![
        "--gpu-prices",
        "cpu=6000",
        "--signup-credits",
        "1000000",
        "--checkpoint-interval-s",
        "1",
        "--lease-resume-window-s",
        resume_window_s,
    ];
    args.extend(worker.iter().map(String::as_str));
    args
}

/// No double charge, no stuck hold: the ledger and the lease agree.
async fn check_settled(server: &TestServer, token: &str, lease: &str, settled: &Value) {
    let entries = server.ledger(token).await;
    let (charged, usage_ms, _) = charges(&entries, lease);
    let used = settled["used_ms"].as_i64().unwrap();
    assert_eq!(
        charged,
        settled["charged"].as_i64().unwrap(),
        "{entries:#?}"
    );
    assert_eq!(usage_ms, used, "charges cover exactly the used time");
    assert_eq!(charged, PRICE * used / 60_000, "charged = cost(used)");
    assert_eq!(charged + settled["refunded"].as_i64().unwrap(), HOLD);
    let mut keys: Vec<&str> = entries
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), entries.len());
    assert_eq!(
        server.balance(token).await,
        (1_000_000 - charged, 0, 1_000_000 - charged)
    );
    let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 1_000_000 - charged);
}

/// Starts a lease, lets it checkpoint, kills the server; returns (server, owner token,
/// session, lease id, ms the lease ran before the kill (an upper bound), charged before).
async fn run_then_kill(
    backend: Backend,
    resume_window_s: &'static str,
) -> (TestServer, String, String, String, i64) {
    let mut server = TestServer::start_with(backend, &args(resume_window_s)).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Crash").await;
    let t0 = Instant::now();
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    let lease_id = lease["lease_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let before = server.ledger(&owner.token).await;
    assert!(
        charges(&before, &lease_id).2 >= 1,
        "no checkpoint before the kill"
    );
    server.kill(); // SIGKILL
    let ran_ms = i64::try_from(t0.elapsed().as_millis()).unwrap();
    (server, owner.token, session, lease_id, ran_ms)
}

async fn killed_lease_resumes_without_billing_the_downtime(backend: Backend) {
    let (mut server, token, session, lease_id, ran_ms) = run_then_kill(backend, "120").await;
    let downtime = Duration::from_millis(3000);
    tokio::time::sleep(downtime).await;
    server.spawn(&args("120"));
    let restarted = Instant::now();
    let lease = lease_of(&server, &token, &session).await;
    assert_eq!(lease["lease_id"], lease_id.as_str());
    assert!(
        matches!(lease["status"].as_str(), Some("running" | "starting")),
        "{lease}"
    );
    // Credits are still held for it, nothing more.
    let (_, held, _) = server.balance(&token).await;
    assert!(held > 0 && held < HOLD, "held {held}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (status, settled) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let after_ms = i64::try_from(restarted.elapsed().as_millis()).unwrap();
    let used = settled["used_ms"].as_i64().unwrap();
    // Billed: at most what ran before the kill plus what ran after the restart — the 3 s of
    // downtime (and the start-up) are not in it; at least the time since the restart.
    assert!(
        used <= ran_ms + after_ms,
        "used {used} > {ran_ms} + {after_ms}"
    );
    assert!(used >= 2000, "used {used}");
    check_settled(&server, &token, &lease_id, &settled).await;
}

async fn killed_lease_is_settled_at_its_last_checkpoint(backend: Backend) {
    // A resume window of 0 s: the lease is too old to resume when the server comes back.
    let (mut server, token, session, lease_id, ran_ms) = run_then_kill(backend, "0").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.spawn(&args("0"));
    let lease = lease_of(&server, &token, &session).await;
    assert_eq!(lease["lease_id"], lease_id.as_str());
    assert_eq!(lease["status"], "stopped", "{lease}");
    assert_eq!(lease["reason"], "server_restarted");
    let used = lease["used_ms"].as_i64().unwrap();
    assert!(used > 0 && used <= ran_ms, "used {used}, ran {ran_ms}");
    let entries = server.ledger(&token).await;
    let (_, usage_ms, _) = charges(&entries, &lease_id);
    assert_eq!(usage_ms, used, "settled exactly at the last checkpoint");
    let settled = json!({
        "used_ms": used,
        "charged": lease["charged"],
        "refunded": lease["refunded"],
    });
    check_settled(&server, &token, &lease_id, &settled).await;
    // Restarting again changes nothing (no double settlement).
    server.kill();
    server.spawn(&args("0"));
    let again = lease_of(&server, &token, &session).await;
    assert_eq!(again, lease);
    assert_eq!(server.ledger(&token).await.len(), entries.len());
}

on_both_backends!(
    killed_lease_resumes_without_billing_the_downtime,
    killed_lease_is_settled_at_its_last_checkpoint,
);

/// A graceful stop (SIGTERM) settles every lease before the process exits.
async fn graceful_shutdown_settles_leases(backend: Backend) {
    let mut server = TestServer::start_with(backend, &args("120")).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Shutdown").await;
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = server.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.spawn(&args("120"));
    let stored = lease_of(&server, &owner.token, &session).await;
    assert_eq!(stored["status"], "stopped", "{stored}");
    assert_eq!(stored["reason"], "server_shutdown");
    let settled = json!({
        "used_ms": stored["used_ms"],
        "charged": stored["charged"],
        "refunded": stored["refunded"],
    });
    check_settled(
        &server,
        &owner.token,
        lease["lease_id"].as_str().unwrap(),
        &settled,
    )
    .await;
}

on_both_backends!(graceful_shutdown_settles_leases);
