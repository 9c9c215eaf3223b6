//! Lease ownership and fencing against the real binary: a lease is owned by the node that
//! meters it, at an epoch. When another owner claims the lease behind the node's back (as a
//! node taking over from one it thought dead does), the node's next checkpoint is refused at its
//! stale epoch: it stops metering that lease and charges nothing more; the lease is settled once,
//! by whoever owns it then, at the last checkpoint that was committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::billing::{charges, lease_of};
use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PRICE: i64 = 6000; // 100 millicredits per second
const HOLD: i64 = 6000; // one minute
const CREDITS: i64 = 1_000_000;

fn args() -> Vec<String> {
    let mut args: Vec<String> = [
        "--gpu-prices",
        "cpu=6000",
        "--signup-credits",
        "1000000",
        "--checkpoint-interval-s",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(common::in_process_worker_args());
    args
}

/// Runs one statement on the server's database, as another node would.
async fn sql(server: &TestServer, statement: &str, binds: &[&str]) -> u64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.to_string()));
    for b in binds {
        q = q.bind(b.to_string());
    }
    let done = q.execute(&pool).await.unwrap().rows_affected();
    pool.close().await;
    done
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn a_stale_owner_stops_charging_and_the_new_owner_settles_once(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        &args().iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Fenced").await;
    let (status, started) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let lease_id = started["lease_id"].as_str().unwrap().to_string();
    assert_eq!(started["epoch"], 1, "{started}");
    let node = started["owner_node"].as_str().unwrap().to_string();

    // Metered and checkpointed by this node.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while charges(&server.ledger(&owner.token).await, &lease_id).2 < 2 {
        assert!(std::time::Instant::now() < deadline, "no checkpoints");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = lease_of(&server, &owner.token, &session).await;
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(running["owner_node"], node.as_str());

    // Another node claims the lease (a takeover: the next epoch, its heartbeat fresh).
    let now_ms = common::unix_now() * 1000;
    let claimed = sql(
        &server,
        &format!(
            "UPDATE runtime_leases SET owner_node = 'intruder', epoch = epoch + 1, \
             owner_heartbeat_at = {now_ms} WHERE id = $1"
        ),
        &[&lease_id],
    )
    .await;
    assert_eq!(claimed, 1);
    let at_claim = charges(&server.ledger(&owner.token).await, &lease_id);

    // Three checkpoint intervals later: the node's meter was refused at its stale epoch and
    // stopped; not one more millicredit was charged for the lease.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let entries = server.ledger(&owner.token).await;
    assert_eq!(charges(&entries, &lease_id), at_claim, "{entries:#?}");
    assert_eq!(metric(&server, "atelier_lease_fenced_total").await, 1.0);
    let (_, held, _) = server.balance(&owner.token).await;
    assert!(held > 0, "the hold stays until the owner settles");
    // The view shows who meters it now.
    let view = lease_of(&server, &owner.token, &session).await;
    assert_eq!(view["owner_node"], "intruder", "{view}");
    assert_eq!(view["epoch"], 2);
    assert_eq!(view["status"], "running");
    // The node no longer counts the lease as its own: jobs are refused.
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(&owner.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");

    // Stopping it here claims it back (epoch 3) and settles it once, at the last checkpoint.
    let (status, settled) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let entries = server.ledger(&owner.token).await;
    let (charged, usage_ms, _) = charges(&entries, &lease_id);
    let used = settled["used_ms"].as_i64().unwrap();
    assert_eq!(
        charged,
        settled["charged"].as_i64().unwrap(),
        "{entries:#?}"
    );
    assert_eq!(
        (charged, usage_ms),
        (at_claim.0, at_claim.1),
        "settled at the claim's checkpoint"
    );
    assert_eq!(usage_ms, used);
    assert_eq!(charged, PRICE * used / 60_000);
    assert_eq!(charged + settled["refunded"].as_i64().unwrap(), HOLD);
    let mut keys: Vec<&str> = entries
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), entries.len(), "a ledger key charged twice");
    assert_eq!(
        server.balance(&owner.token).await,
        (CREDITS - charged, 0, CREDITS - charged)
    );
    let stored = lease_of(&server, &owner.token, &session).await;
    assert_eq!(stored["status"], "stopped");
    assert_eq!(stored["epoch"], 3);
    assert_eq!(stored["owner_node"], node.as_str());
}

on_both_backends!(a_stale_owner_stops_charging_and_the_new_owner_settles_once);

/// Waits until the lease has at least `n` charge entries.
async fn until_charges(server: &TestServer, token: &str, lease: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while charges(&server.ledger(token).await, lease).2 < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two meters race for one lease: a second server on the same database (its start-up recovery
/// claims every open lease, as a restarted single node does) takes the lease over while the
/// first still meters it. The first is fenced at its next checkpoint and stops charging; the
/// second meters on from the last committed checkpoint; one settlement, every key once.
async fn two_meters_racing_for_a_lease_charge_it_once(backend: Backend) {
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = TestServer::start_with(backend, &args).await;
    let owner = first.signup("Owner").await;
    let session = first.create_session(&owner.token, "Raced").await;
    let t0 = std::time::Instant::now();
    let (status, started) = first
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let lease_id = started["lease_id"].as_str().unwrap().to_string();
    let first_node = started["owner_node"].as_str().unwrap().to_string();
    until_charges(&first, &owner.token, &lease_id, 1).await;

    // The second server, same database, its own node id and in-process worker.
    let mut second = TestServer {
        base: String::new(),
        dir: tempfile::tempdir().unwrap(),
        database_url: first.database_url.clone(),
        child: std::process::Command::new("true").spawn().unwrap(),
        pg: None,
        client: reqwest::Client::new(),
    };
    second.spawn(&args);
    let claimed = lease_of(&second, &owner.token, &session).await;
    assert_eq!(claimed["epoch"], 2, "{claimed}");
    let second_node = claimed["owner_node"].as_str().unwrap().to_string();
    assert_ne!(second_node, first_node);

    // The first meter's next checkpoint is refused: it stops; the second one charges on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&first, "atelier_lease_fenced_total").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first meter was not fenced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_fence = charges(&first.ledger(&owner.token).await, &lease_id).2;
    until_charges(&second, &owner.token, &lease_id, after_fence + 2).await;
    let view = lease_of(&first, &owner.token, &session).await;
    assert_eq!(view["owner_node"], second_node.as_str(), "{view}");

    let (status, settled) = second
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let wall_ms = i64::try_from(t0.elapsed().as_millis()).unwrap();
    let entries = second.ledger(&owner.token).await;
    let (charged, usage_ms, _) = charges(&entries, &lease_id);
    let used = settled["used_ms"].as_i64().unwrap();
    assert_eq!(
        charged,
        settled["charged"].as_i64().unwrap(),
        "{entries:#?}"
    );
    assert_eq!(usage_ms, used, "charges cover exactly the used time");
    assert!(used <= wall_ms, "used {used} ms of {wall_ms} ms wall time");
    assert_eq!(charged, PRICE * used / 60_000);
    assert_eq!(charged + settled["refunded"].as_i64().unwrap(), HOLD);
    let mut keys: Vec<&str> = entries
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), entries.len(), "a ledger key charged twice");
    assert_eq!(
        second.balance(&owner.token).await,
        (CREDITS - charged, 0, CREDITS - charged)
    );
}

on_both_backends!(two_meters_racing_for_a_lease_charge_it_once);
