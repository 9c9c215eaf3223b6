//! Billing against the real binary, on SQLite and PostgreSQL: Pro runtime leases metered and
//! settled, concurrent leases against limited credits, signed payment webhooks, prepaid time
//! running out with every participant told, idle leases, usage and prices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{stripe_signature, unix_now, Backend, EventsClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "whsec_integration_test";
/// 100 millicredits per second: costs are easy to check.
const PRICES: &str = "cpu=6000,a100=120000";

fn cost(price_per_minute: i64, used_ms: i64) -> i64 {
    price_per_minute * used_ms / 60_000
}

async fn start(backend: Backend, extra: &[&str]) -> TestServer {
    // Leases take the in-process worker.
    let worker = common::in_process_worker_args();
    let mut args = vec!["--gpu-prices", PRICES, "--payment-webhook-secret", SECRET];
    args.extend(worker.iter().map(String::as_str));
    // No starter credits unless the test asks for some: the amounts below start from zero.
    if !extra.contains(&"--signup-credits") {
        args.extend_from_slice(&["--signup-credits", "0"]);
    }
    args.extend_from_slice(extra);
    TestServer::start_with(backend, &args).await
}

async fn start_lease(
    server: &TestServer,
    token: &str,
    session: &str,
    minutes: f64,
) -> (StatusCode, Value) {
    start_lease_of_class(server, token, session, "cpu", minutes).await
}

async fn start_lease_of_class(
    server: &TestServer,
    token: &str,
    session: &str,
    gpu_class: &str,
    minutes: f64,
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            Some(json!({"gpu_class": gpu_class, "prepaid_minutes": minutes})),
        )
        .await
}

/// A server whose leases stop after 2 s without a job (or without a worker), an owner with
/// 100 000 millicredits, a session and the owner's event stream on it.
async fn two_second_idle_timeout(
    backend: Backend,
    title: &str,
) -> (TestServer, common::User, String, EventsClient) {
    let server = start(
        backend,
        &["--signup-credits", "100000", "--lease-idle-timeout-s", "2"],
    )
    .await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, title).await;
    let events = EventsClient::connect(&server, &session, &owner.token).await;
    (server, owner, session, events)
}

/// The ledger agrees with the balance: materialised totals = sums, each entry's running totals
/// chain, nothing is held, and the lease's entries add up to its settlement.
async fn check_ledger(server: &TestServer, token: &str, lease: &str, settlement: &Value) {
    let (balance, held, available) = server.balance(token).await;
    let entries = server.ledger(token).await;
    let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    let held_sum: i64 = entries
        .iter()
        .map(|e| e["held_delta"].as_i64().unwrap())
        .sum();
    assert_eq!((sum, held_sum), (balance, held), "{entries:#?}");
    assert_eq!(held, 0, "a hold stayed open");
    assert_eq!(available, balance);
    let last = entries.last().unwrap();
    assert_eq!(last["balance_after"].as_i64().unwrap(), balance);
    let of_lease: Vec<&Value> = entries.iter().filter(|e| e["lease_id"] == lease).collect();
    let kind_sum = |kind: &str, field: &str| -> i64 {
        of_lease
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| -e[field].as_i64().unwrap())
            .sum()
    };
    let hold = -kind_sum("hold", "held_delta");
    let charged = kind_sum("charge", "amount");
    let released = kind_sum("release", "held_delta");
    assert_eq!(
        charged,
        settlement["charged"].as_i64().unwrap(),
        "{of_lease:#?}"
    );
    assert_eq!(released, settlement["refunded"].as_i64().unwrap());
    assert_eq!(hold, charged + released, "hold = charged + released");
    let mut keys: Vec<&str> = of_lease
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), of_lease.len(), "duplicate keys");
}

async fn lease_runs_meters_and_settles(backend: Backend) {
    let server = start(backend, &["--signup-credits", "1000000"]).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Runtime").await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    assert_eq!(
        server.balance(&owner.token).await,
        (1_000_000, 0, 1_000_000)
    );

    let t0 = Instant::now();
    let (status, lease) = start_lease(&server, &owner.token, &session, 1.0).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    let lease_id = lease["lease_id"].as_str().unwrap().to_string();
    assert_eq!(lease["hold"], 6000);
    assert_eq!(lease["price_per_minute"], 6000);
    let started = events
        .wait_for("runtime.started", Duration::from_secs(5))
        .await;
    assert_eq!(started["lease_id"], lease_id.as_str());
    assert_eq!(started["gpu_class"], "cpu");
    let meter = events
        .wait_for("runtime.meter", Duration::from_secs(5))
        .await;
    assert_eq!(meter["lease_id"], lease_id.as_str());

    let (status, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["lease"]["status"], "running", "{shown}");
    let (_, held, _) = server.balance(&owner.token).await;
    assert_eq!(held, 6000);

    tokio::time::sleep(Duration::from_millis(5000)).await;
    let (status, settled) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    let wall = i64::try_from(t0.elapsed().as_millis()).unwrap();
    assert_eq!(status, StatusCode::OK, "{settled}");
    let used = settled["used_ms"].as_i64().unwrap();
    assert!(used <= wall, "used {used} ms > wall {wall} ms");
    assert!(
        wall - used <= 1000,
        "used {used} ms vs wall {wall} ms: more than one meter period"
    );
    let charged = settled["charged"].as_i64().unwrap();
    let refunded = settled["refunded"].as_i64().unwrap();
    assert_eq!(charged, cost(6000, used));
    assert_eq!(charged + refunded, 6000);
    assert_eq!(settled["reason"], "stopped_by_user");
    assert_eq!(settled["balance"].as_i64().unwrap(), 1_000_000 - charged);

    let stopped = events
        .wait_for("runtime.stopped", Duration::from_secs(5))
        .await;
    assert_eq!(stopped["used_ms"].as_i64().unwrap(), used);
    assert_eq!(stopped["charged"].as_i64().unwrap(), charged);
    assert_eq!(stopped["refunded"].as_i64().unwrap(), refunded);
    assert_eq!(
        server.balance(&owner.token).await,
        (1_000_000 - charged, 0, 1_000_000 - charged)
    );
    check_ledger(&server, &owner.token, &lease_id, &settled).await;

    // The runtime now shows the stopped lease; stopping again finds nothing to stop.
    let (_, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(shown["lease"]["status"], "stopped");
    assert_eq!(shown["lease"]["refunded"].as_i64().unwrap(), refunded);
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Usage: the GPU time of this session today.
    let (status, usage) = server
        .call(Method::GET, "/billing/usage", Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = usage["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    assert_eq!(rows[0]["session_id"], session.as_str());
    assert_eq!(rows[0]["gpu_class"], "cpu");
    assert_eq!(rows[0]["used_ms"].as_i64().unwrap(), used);
    assert_eq!(rows[0]["charged"].as_i64().unwrap(), charged);
    assert!((rows[0]["gpu_seconds"].as_f64().unwrap() - used as f64 / 1000.0).abs() < 1e-6);
}

async fn twenty_concurrent_leases_on_credits_for_three(backend: Backend) {
    // One minute of cpu holds 6000; the signup grant covers exactly three.
    let server = start(backend, &["--signup-credits", "18000"]).await;
    let owner = server.signup("Owner").await;
    let mut sessions = Vec::new();
    for i in 0..20 {
        sessions.push(server.create_session(&owner.token, &format!("S{i}")).await);
    }
    let watcher = async {
        // The balance is never negative while the requests race.
        for _ in 0..20 {
            let (_, _, available) = server.balance(&owner.token).await;
            assert!(available >= 0, "available went negative: {available}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let starts = futures_util::future::join_all(
        sessions
            .iter()
            .map(|s| start_lease(&server, &owner.token, s, 1.0)),
    );
    let (results, ()) = tokio::join!(starts, watcher);
    let ok: Vec<usize> = (0..20)
        .filter(|&i| results[i].0 == StatusCode::CREATED)
        .collect();
    assert_eq!(ok.len(), 3, "{results:#?}");
    for (status, body) in results.iter().filter(|r| r.0 != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(common::error_code(body), "insufficient_credits");
    }
    assert_eq!(server.balance(&owner.token).await, (18_000, 18_000, 0));
    for i in ok {
        let (status, body) = server
            .call(
                Method::DELETE,
                &format!("/sessions/{}/runtime", sessions[i]),
                Some(&owner.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (balance, held, available) = server.balance(&owner.token).await;
    assert!(balance > 0 && held == 0 && available == balance);
    let entries = server.ledger(&owner.token).await;
    let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, balance);
    assert!(entries.iter().all(|e| {
        e["balance_after"].as_i64().unwrap() - e["held_after"].as_i64().unwrap() >= 0
    }));
}

fn checkout_event(event_id: &str, checkout: &str, account: &str, credits: i64) -> String {
    json!({
        "id": event_id,
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": checkout,
            "payment_status": "paid",
            "payment_intent": format!("pi_{checkout}"),
            "metadata": {"account_id": account, "credits": credits.to_string()}
        }}
    })
    .to_string()
}

async fn signed_webhooks_credit_once_and_reversals_block_leases(backend: Backend) {
    let server = start(backend, &[]).await;
    let buyer = server.signup("Buyer").await;
    assert_eq!(server.balance(&buyer.token).await, (0, 0, 0));
    let body = checkout_event("evt_1", "cs_1", &buyer.id, 50_000);
    let sig = stripe_signature(SECRET, unix_now(), &body);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let (status, res) = server.webhook(&body, Some(&sig)).await;
        assert_eq!(status, StatusCode::OK, "{res}");
        assert_eq!(res["event_id"], "evt_1");
        outcomes.push(res["outcome"].as_str().unwrap().to_string());
    }
    assert_eq!(outcomes, ["credited", "duplicate", "duplicate"]);
    assert_eq!(server.balance(&buyer.token).await, (50_000, 0, 50_000));
    let purchases: Vec<Value> = server
        .ledger(&buyer.token)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "purchase")
        .collect();
    assert_eq!(purchases.len(), 1);

    // Refused: wrong secret, tampered body, stale timestamp, no or garbled header.
    let other = checkout_event("evt_2", "cs_2", &buyer.id, 1_000_000);
    let cases = [
        (
            other.clone(),
            Some(stripe_signature("not-the-secret", unix_now(), &other)),
        ),
        (other.clone(), Some(sig.clone())),
        (
            other.clone(),
            Some(stripe_signature(SECRET, unix_now() - 3600, &other)),
        ),
        (other.clone(), None),
        (other.clone(), Some("t=1,v1=zz".to_string())),
    ];
    for (body, sig) in cases {
        let (status, res) = server.webhook(&body, sig.as_deref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
        assert_eq!(common::error_code(&res), "invalid_signature");
    }
    assert_eq!(server.balance(&buyer.token).await, (50_000, 0, 50_000));

    // Spend some, then the purchase is refunded in part and charged back: the balance goes
    // negative, the running lease is stopped and no new lease may start.
    let session = server.create_session(&buyer.token, "Spend").await;
    let mut events = EventsClient::connect(&server, &session, &buyer.token).await;
    let (status, lease) = start_lease(&server, &buyer.token, &session, 1.0).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    events
        .wait_for("runtime.started", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refund = json!({"id": "evt_3", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "payment_intent": "pi_cs_1", "amount": 1000, "amount_refunded": 500}}})
    .to_string();
    let (status, res) = server
        .webhook(
            &refund,
            Some(&stripe_signature(SECRET, unix_now(), &refund)),
        )
        .await;
    assert_eq!(
        (status, res["outcome"].as_str()),
        (StatusCode::OK, Some("reversed"))
    );
    let dispute = json!({"id": "evt_4", "type": "charge.dispute.created", "data": {"object": {
        "id": "dp_1", "payment_intent": "pi_cs_1"}}})
    .to_string();
    for expected in ["reversed", "duplicate"] {
        let (status, res) = server
            .webhook(
                &dispute,
                Some(&stripe_signature(SECRET, unix_now(), &dispute)),
            )
            .await;
        assert_eq!(
            (status, res["outcome"].as_str()),
            (StatusCode::OK, Some(expected))
        );
    }
    let stopped = events
        .wait_for("runtime.stopped", Duration::from_secs(5))
        .await;
    assert_eq!(stopped["reason"], "payment_reversed");
    let charged = stopped["charged"].as_i64().unwrap();
    assert!(charged > 0);
    let (balance, held, available) = server.balance(&buyer.token).await;
    assert_eq!((balance, held, available), (-charged, 0, -charged));
    let other_session = server.create_session(&buyer.token, "Again").await;
    let (status, res) = start_lease(&server, &buyer.token, &other_session, 0.1).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{res}");
    assert_eq!(common::error_code(&res), "insufficient_credits");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .contains("negative"));
    // A new purchase pays the debt off and leases work again.
    let body = checkout_event("evt_5", "cs_5", &buyer.id, 20_000);
    let (status, _) = server
        .webhook(&body, Some(&stripe_signature(SECRET, unix_now(), &body)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, res) = start_lease(&server, &buyer.token, &other_session, 0.1).await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
}

async fn prepaid_time_out_stops_the_lease_for_every_participant(backend: Backend) {
    let server = start(backend, &["--signup-credits", "100000"]).await;
    let owner = server.signup("Owner").await;
    let editor = server.signup("Editor").await;
    let session = server.create_session(&owner.token, "Out of time").await;
    server
        .add_member(&owner.token, &session, &editor, "editor")
        .await;
    let (_, link) = server.share_link(&owner.token, &session, None).await;
    let mut participants = vec![
        EventsClient::connect(&server, &session, &owner.token).await,
        EventsClient::connect(&server, &session, &editor.token).await,
        EventsClient::connect(&server, &session, &link).await,
    ];
    // The editor starts (and pays for) three seconds.
    let (status, lease) = start_lease(&server, &editor.token, &session, 0.05).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    assert_eq!(lease["prepaid_ms"], 3000);
    assert_eq!(lease["hold"], 300);
    for p in &mut participants {
        let stopped = p.wait_for("runtime.stopped", Duration::from_secs(10)).await;
        assert_eq!(stopped["reason"], "prepaid_time_used", "{stopped}");
        assert_eq!(stopped["lease_id"], lease["lease_id"]);
        assert_eq!(stopped["used_ms"], 3000);
        assert_eq!(stopped["charged"], 300);
        assert_eq!(stopped["refunded"], 0);
    }
    assert_eq!(server.balance(&editor.token).await, (99_700, 0, 99_700));
    assert_eq!(server.balance(&owner.token).await, (100_000, 0, 100_000));
    let (_, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&link),
            None,
        )
        .await;
    assert_eq!(shown["lease"]["status"], "stopped");
    assert_eq!(shown["lease"]["reason"], "prepaid_time_used");
}

async fn an_idle_lease_stops_by_itself(backend: Backend) {
    let (server, owner, session, mut events) = two_second_idle_timeout(backend, "Idle").await;
    let (status, _) = start_lease(&server, &owner.token, &session, 1.0).await;
    assert_eq!(status, StatusCode::CREATED);
    let stopped = events
        .wait_for("runtime.stopped", Duration::from_secs(10))
        .await;
    assert_eq!(stopped["reason"], "idle");
    let used = stopped["used_ms"].as_i64().unwrap();
    assert!((2000..3500).contains(&used), "{used}");
    assert_eq!(server.balance(&owner.token).await.1, 0);
}

async fn a_lease_without_a_worker_of_its_class_stops_unbilled(backend: Backend) {
    let (server, owner, session, mut events) =
        two_second_idle_timeout(backend, "No a100 here").await;
    let (status, started) =
        start_lease_of_class(&server, &owner.token, &session, "a100", 0.5).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let (_, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(shown["lease"]["status"], "starting", "{shown}");
    let stopped = events
        .wait_for("runtime.stopped", Duration::from_secs(10))
        .await;
    assert_eq!(stopped["reason"], "no_worker");
    assert_eq!(stopped["used_ms"], 0);
    assert_eq!(stopped["charged"], 0);
    assert_eq!(server.balance(&owner.token).await, (100_000, 0, 100_000));
}

async fn prices_and_validation(backend: Backend) {
    let server = start(
        backend,
        &["--signup-credits", "100000", "--max-prepaid-minutes", "30"],
    )
    .await;
    let (status, prices) = server
        .call(Method::GET, "/billing/prices", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prices["unit"], "millicredits_per_minute");
    assert_eq!(prices["max_prepaid_minutes"], 30);
    assert_eq!(
        prices["prices"],
        json!([{"gpu_class": "a100", "price_per_minute": 120000},
               {"gpu_class": "cpu", "price_per_minute": 6000}])
    );
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "V").await;
    let path = format!("/sessions/{session}/runtime");
    for body in [
        json!({"gpu_class": "h100", "prepaid_minutes": 1}),
        json!({"gpu_class": "cpu", "prepaid_minutes": 0}),
        json!({"gpu_class": "cpu", "prepaid_minutes": 31}),
        json!({"gpu_class": "cpu"}),
    ] {
        let (status, res) = server
            .call(Method::POST, &path, Some(&owner.token), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {res}");
    }
    // 30 minutes of a100 is 3 600 000 millicredits: more than the account has.
    let (status, res) = start_lease_of_class(&server, &owner.token, &session, "a100", 30.0).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(common::error_code(&res), "insufficient_credits");
    // One lease per session.
    let (status, _) = start_lease(&server, &owner.token, &session, 1.0).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, res) = start_lease(&server, &owner.token, &session, 1.0).await;
    assert_eq!(status, StatusCode::CONFLICT, "{res}");
    // Deleting the session settles its lease.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (balance, held, _) = server.balance(&owner.token).await;
    assert_eq!(held, 0);
    assert!(balance <= 100_000);
    let entries = server.ledger(&owner.token).await;
    assert!(entries.iter().any(|e| e["kind"] == "release"));
    // Ledger paging.
    let (status, page) = server
        .call(
            Method::GET,
            "/billing/ledger?limit=1",
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert!(page["next_before"].is_i64());
    let (status, _) = server
        .call(
            Method::GET,
            "/billing/ledger?limit=0",
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A lease of 6 s warned 3 s before its end, extended by the payer: everyone is warned, the
/// extension is a further hold, and charged + refunded = the sum of the holds.
async fn extending_a_lease_warns_first_and_holds_more(backend: Backend) {
    // 10 000 millicredits: a 6-second lease holds 600; 1.6 more minutes (9600) do not fit.
    let server = start(
        backend,
        &["--signup-credits", "10000", "--low-balance-warning-s", "3"],
    )
    .await;
    let owner = server.signup("Owner").await;
    let editor = server.signup("Editor").await;
    let session = server.create_session(&owner.token, "Extend").await;
    server
        .add_member(&owner.token, &session, &editor, "editor")
        .await;
    let (_, link) = server.share_link(&owner.token, &session, None).await;
    let mut payer = EventsClient::connect(&server, &session, &owner.token).await;
    let mut others = vec![
        EventsClient::connect(&server, &session, &editor.token).await,
        EventsClient::connect(&server, &session, &link).await,
    ];
    let (status, lease) = start_lease(&server, &owner.token, &session, 0.1).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    assert_eq!(lease["hold"], 600);
    let lease_id = lease["lease_id"].as_str().unwrap().to_string();

    // Money is private: the payer's meter has the balance, the others' do not (but they see
    // that it runs, its class and who pays).
    let mine = payer
        .wait_for("runtime.meter", Duration::from_secs(5))
        .await;
    assert!(mine["balance"].is_i64(), "{mine}");
    for other in &mut others {
        let theirs = other
            .wait_for("runtime.meter", Duration::from_secs(5))
            .await;
        assert!(theirs.get("balance").is_none(), "{theirs}");
        assert_eq!(theirs["gpu_class"], "cpu");
        assert_eq!(theirs["payer_name"], "Owner");
        assert_eq!(theirs["payer_id"], owner.id.as_str());
    }
    // Everyone is warned ~3 s before the end.
    let warned = payer
        .wait_for("runtime.low_balance", Duration::from_secs(6))
        .await;
    assert_eq!(warned["lease_id"], lease_id.as_str());
    let remaining = warned["remaining_ms"].as_i64().unwrap();
    assert!((1..=3000).contains(&remaining), "{warned}");
    for other in &mut others {
        other
            .wait_for("runtime.low_balance", Duration::from_secs(2))
            .await;
    }
    let path = format!("/sessions/{session}/runtime");
    // Only the payer extends; credits must be there.
    let (status, body) = server
        .call(
            Method::PATCH,
            &path,
            Some(&editor.token),
            Some(json!({"add_minutes": 0.1})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .call(
            Method::PATCH,
            &path,
            Some(&link),
            Some(json!({"add_minutes": 0.1})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"add_minutes": 1.6})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_credits");
    let (status, body) = server
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"add_minutes": -1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, extended) = server
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"add_minutes": 0.1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{extended}");
    assert_eq!(extended["prepaid_ms"], 12_000);
    assert_eq!(extended["hold"], 1200);
    assert_eq!(extended["status"], "running");
    assert_eq!(server.balance(&owner.token).await.1, 1200);
    let news = payer
        .wait_for("runtime.extended", Duration::from_secs(2))
        .await;
    assert_eq!(news["prepaid_ms"], 12_000);
    // It runs past the first 6 s, is warned again before the new end, then stops there.
    let again = payer
        .wait_for("runtime.low_balance", Duration::from_secs(10))
        .await;
    assert!(again["remaining_ms"].as_i64().unwrap() <= 3000);
    let stopped = payer
        .wait_for("runtime.stopped", Duration::from_secs(10))
        .await;
    assert_eq!(stopped["reason"], "prepaid_time_used");
    assert_eq!(stopped["used_ms"], 12_000);
    assert_eq!(stopped["charged"], 1200);
    let (status, body) = server
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"add_minutes": 0.1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let entries = server.ledger(&owner.token).await;
    let holds: i64 = entries
        .iter()
        .filter(|e| e["lease_id"] == lease_id.as_str() && e["kind"] == "hold")
        .map(|e| e["held_delta"].as_i64().unwrap())
        .sum();
    assert_eq!(holds, 1200);
    let settled = json!({"charged": stopped["charged"], "refunded": stopped["refunded"]});
    check_ledger(&server, &owner.token, &lease_id, &settled).await;
    // The statement folds the lease's hold, extension, checkpoints and release into one line.
    let (_, statement) = server
        .call(Method::GET, "/billing/statement", Some(&owner.token), None)
        .await;
    let lines = statement["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{statement}");
    assert_eq!(lines[0]["kind"], "runtime");
    assert_eq!(lines[0]["amount"], -1200);
    assert_eq!(lines[0]["session_title"], "Extend");
    assert_eq!(lines[0]["used_ms"], 12_000);
    assert_eq!(lines[1]["kind"], "grant");
}

on_both_backends!(
    extending_a_lease_warns_first_and_holds_more,
    lease_runs_meters_and_settles,
    twenty_concurrent_leases_on_credits_for_three,
    signed_webhooks_credit_once_and_reversals_block_leases,
    prepaid_time_out_stops_the_lease_for_every_participant,
    an_idle_lease_stops_by_itself,
    a_lease_without_a_worker_of_its_class_stops_unbilled,
    prices_and_validation,
);
