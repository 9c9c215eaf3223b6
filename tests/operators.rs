//! The operator's side against the real binary, on SQLite and PostgreSQL: the admin made from
//! the command line, grants and deductions in the user's ledger, suspension (sockets closed,
//! leases settled, tokens refused), worker tokens revoked from the API and the command line,
//! the audit log, and starter credits on the embedded defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{error_code, Backend, EventsClient, TestServer, PASSWORD};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn audit_actions(server: &TestServer, admin: &str) -> Vec<Value> {
    let (status, page) = server
        .call(Method::GET, "/admin/audit?limit=500", Some(admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"].as_array().unwrap().clone()
}

async fn ledger_entries(server: &TestServer, token: &str) -> Vec<Value> {
    server.ledger(token).await
}

async fn cli_creates_the_admin_and_grants_reach_the_ledger(backend: Backend) {
    let server = TestServer::start(backend).await;
    // A new account gets an hour of the cheapest class on the embedded defaults (cpu=100).
    let user = server.signup("User").await;
    assert_eq!(server.balance(&user.token).await, (6000, 0, 6000));

    // Nobody is admin by signing up; the CLI makes the first one.
    let (status, body) = server
        .call(Method::GET, "/admin/accounts", Some(&user.token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let email = "root@example.com";
    let (ok, out, err) = server.admin_cli(
        &[
            "create-admin",
            "--email",
            email,
            "--password-env",
            "ADMIN_PW",
        ],
        &[("ADMIN_PW", PASSWORD)],
    );
    assert!(ok, "create-admin: {out} {err}");
    let admin = server.login(email).await;
    let (status, me) = server.call(Method::GET, "/me", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["role"], "admin");
    // Without --password-env and without a terminal, a password is generated and shown once.
    let (ok, out, err) = server.admin_cli(&["create-admin", "--email", "ops@example.com"], &[]);
    assert!(ok, "create-admin: {out} {err}");
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("the generated password is printed");
    let (status, _) = server
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "ops@example.com", "password": generated})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Search, then grant with a reason: the user's ledger shows it, with the admin.
    let search = format!("/admin/accounts?search={}", &user.email[..8]);
    let (status, found) = server.call(Method::GET, &search, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let row = &found["accounts"][0];
    assert_eq!(row["id"], user.id.as_str(), "{found}");
    assert_eq!(row["balance"], 6000);
    let grant = json!({"amount": 25_000, "reason": "sorry for the outage", "idempotency_key": "grant-outage-1"});
    let path = format!("/admin/accounts/{}/credits", user.id);
    let (status, granted) = server
        .call(Method::POST, &path, Some(&admin), Some(grant.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["replayed"], false);
    let (status, again) = server
        .call(Method::POST, &path, Some(&admin), Some(grant))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(server.balance(&user.token).await.0, 31_000);
    let entries = ledger_entries(&server, &user.token).await;
    let entry = entries
        .iter()
        .find(|e| e["note"] == "sorry for the outage")
        .expect("the grant is in the user's ledger");
    assert_eq!(entry["kind"], "grant");
    assert_eq!(entry["amount"], 25_000);
    assert_eq!(entry["admin_id"].as_str(), me["id"].as_str());

    // A deduction is an adjustment; it cannot take more than is available.
    let (status, body) = server
        .call(Method::POST, &path, Some(&admin),
              Some(json!({"amount": -1000, "reason": "duplicate grant", "idempotency_key": "deduct-dup-1"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry"]["kind"], "adjustment");
    let (status, body) = server
        .call(Method::POST, &path, Some(&admin),
              Some(json!({"amount": -1_000_000, "reason": "too much", "idempotency_key": "deduct-big-1"})))
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    for bad in [
        json!({"amount": 0, "reason": "x", "idempotency_key": "zero-amount"}),
        json!({"amount": 5, "reason": " ", "idempotency_key": "no-reason-1"}),
        json!({"amount": 5, "reason": "x", "idempotency_key": "short"}),
        json!({"amount": -5, "kind": "grant", "reason": "x", "idempotency_key": "neg-grant-1"}),
    ] {
        let (status, body) = server
            .call(Method::POST, &path, Some(&admin), Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "invalid_input");
    }
    assert_eq!(server.balance(&user.token).await.0, 30_000);

    // The same from the command line.
    let (ok, out, err) = server.admin_cli(
        &[
            "grant-credits",
            "--email",
            &user.email,
            "--amount",
            "500",
            "--reason",
            "beta tester",
        ],
        &[],
    );
    assert!(ok, "grant-credits: {out} {err}");
    assert!(out.contains("balance 30500"), "{out}");
    let entries = ledger_entries(&server, &user.token).await;
    let cli_grant = entries.iter().find(|e| e["note"] == "beta tester").unwrap();
    assert!(cli_grant.get("admin_id").is_none(), "{cli_grant}");
    let (ok, _, err) = server.admin_cli(
        &[
            "grant-credits",
            "--email",
            "nobody@example.com",
            "--amount",
            "1",
            "--reason",
            "x",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("no account"), "{err}");

    // set-role from the command line makes another admin.
    let second = server.admin("Second").await;
    let (status, _) = server
        .call(Method::GET, "/admin/jobs", Some(&second.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Every action is in the audit log, naming who did it.
    let audit = audit_actions(&server, &admin).await;
    let find = |action: &str| {
        audit
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    let grants = find("grant_credits");
    assert!(grants.iter().any(|e| e["actor"] == email
        && e["reason"] == "sorry for the outage"
        && e["target"] == user.id.as_str()));
    assert!(grants
        .iter()
        .any(|e| e["actor"].as_str().unwrap().starts_with("cli:") && e["reason"] == "beta tester"));
    assert!(find("deduct_credits")
        .iter()
        .any(|e| e["reason"] == "duplicate grant"));
    assert!(find("create_admin").len() >= 2);
    assert!(find("set_role")
        .iter()
        .any(|e| e["actor"].as_str().unwrap().starts_with("cli:")));
    assert!(find("list_accounts").iter().any(|e| e["actor"] == email));
    assert!(find("list_jobs")
        .iter()
        .any(|e| e["admin_id"] == second.id.as_str()));
}

async fn suspension_closes_sockets_and_settles_leases(backend: Backend) {
    let worker = common::in_process_worker_args();
    let mut args: Vec<&str> = worker.iter().map(String::as_str).collect();
    args.extend(["--signup-credits", "100000"]);
    let server = TestServer::start_with(backend, &args).await;
    let admin = server.admin("Admin").await;
    let user = server.signup("Suspect").await;
    let other = server.signup("Bystander").await;
    let session = server.create_session(&user.token, "Suspended work").await;
    server
        .add_member(&user.token, &session, &other, "editor")
        .await;
    let mut user_socket = EventsClient::connect(&server, &session, &user.token).await;
    let mut other_socket = EventsClient::connect(&server, &session, &other.token).await;
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&user.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    other_socket
        .wait_for("runtime.started", Duration::from_secs(10))
        .await;
    let (_, held, _) = server.balance(&user.token).await;
    assert_eq!(held, 1000);

    let path = format!("/admin/accounts/{}/suspend", user.id);
    let (status, body) = server
        .call(Method::POST, &path, Some(&admin.token), Some(json!({})))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a reason is required: {body}"
    );
    let (status, body) = server
        .call(
            Method::POST,
            &path,
            Some(&admin.token),
            Some(json!({"reason": "chargeback fraud"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["suspended_at"].is_i64(), "{body}");
    // Their socket closes at once with 4403; the other participant stays and sees the lease
    // settle.
    assert_eq!(
        user_socket.close_code(Duration::from_secs(5)).await,
        Some(4403)
    );
    let stopped = other_socket
        .wait_for("runtime.stopped", Duration::from_secs(5))
        .await;
    assert_eq!(stopped["reason"], "account_suspended");
    assert_eq!(
        stopped["charged"].as_i64().unwrap() + stopped["refunded"].as_i64().unwrap(),
        1000
    );
    let (status, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&other.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["lease"]["status"], "stopped");
    // Its tokens and its password are refused; a new socket too.
    let (status, body) = server
        .call(Method::GET, "/me", Some(&user.token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "account_suspended");
    let (status, body) = server
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": user.email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let url = format!(
        "{}/ws/{session}?token={}",
        server.base.replacen("http://", "ws://", 1),
        user.token
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // The admin sees it, with nothing held.
    let (_, detail) = server
        .call(
            Method::GET,
            &format!("/admin/accounts/{}", user.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(detail["account"]["held"], 0, "{detail}");
    assert_eq!(detail["account"]["suspended_reason"], "chargeback fraud");
    assert_eq!(detail["account"]["sessions"], 1);

    // Lifting it restores access.
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/admin/accounts/{}/unsuspend", user.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .call(Method::GET, "/me", Some(&user.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit = audit_actions(&server, &admin.token).await;
    assert!(audit.iter().any(|e| e["action"] == "suspend_account"
        && e["reason"] == "chargeback fraud"
        && e["target"] == user.id.as_str()
        && e["actor"] == admin.email.as_str()));
    assert!(audit.iter().any(|e| e["action"] == "unsuspend_account"));
}

async fn admins_stop_leases_and_list_what_runs(backend: Backend) {
    let worker = common::in_process_worker_args();
    let mut args: Vec<&str> = worker.iter().map(String::as_str).collect();
    args.extend(["--signup-credits", "100000"]);
    let server = TestServer::start_with(backend, &args).await;
    let admin = server.admin("Admin").await;
    let user = server.signup("User").await;
    let session = server.create_session(&user.token, "Runs").await;
    let mut events = EventsClient::connect(&server, &session, &user.token).await;
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&user.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    events
        .wait_for("runtime.started", Duration::from_secs(10))
        .await;
    let (status, leases) = server
        .call(Method::GET, "/admin/leases", Some(&admin.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leases[0]["lease_id"], lease["lease_id"], "{leases}");
    assert_eq!(leases[0]["account_id"], user.id.as_str());
    let (_, fleet) = server
        .call(Method::GET, "/admin/workers", Some(&admin.token), None)
        .await;
    let worker = &fleet["workers"][0];
    assert_eq!(worker["in_process"], true, "{fleet}");
    assert_eq!(worker["leases"], 1);
    let stop = format!("/admin/leases/{}/stop", lease["lease_id"].as_str().unwrap());
    let (status, settled) = server
        .call(
            Method::POST,
            &stop,
            Some(&admin.token),
            Some(json!({"reason": "abuse report"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(settled["reason"], "stopped_by_admin");
    let stopped = events
        .wait_for("runtime.stopped", Duration::from_secs(5))
        .await;
    assert_eq!(stopped["reason"], "stopped_by_admin");
    let (status, _) = server
        .call(
            Method::POST,
            &stop,
            Some(&admin.token),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Draining: the worker takes no new lease until it is put back.
    let worker_id = worker["worker_id"].as_str().unwrap();
    let drain = format!("/admin/workers/{worker_id}/drain");
    let (status, _) = server
        .call(
            Method::POST,
            &drain,
            Some(&admin.token),
            Some(json!({"reason": "maintenance"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&user.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 5})),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, shown) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(shown["lease"]["status"], "starting", "{shown}");
    let (status, _) = server
        .call(
            Method::POST,
            &drain,
            Some(&admin.token),
            Some(json!({"draining": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let started = events
        .wait_for("runtime.started", Duration::from_secs(5))
        .await;
    assert_eq!(started["lease_id"], lease["lease_id"]);
    let (status, _) = server
        .call(
            Method::POST,
            "/admin/jobs/00000000-0000-0000-0000-000000000000/cancel",
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A remote worker's socket, after its hello.
async fn connect_worker(
    server: &TestServer,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let url = format!(
        "{}/api/v1/workers/ws",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let hello = json!({"type": "hello", "name": "remote", "version": "test", "models": [],
                       "devices": [{"name": "cpu", "description": "test", "execution_provider": "cpu"}]});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    Ok(ws)
}

/// Waits for the server to close a worker socket; its close code.
async fn worker_closed(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    timeout: Duration,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return Some(1006),
        }
    }
}

async fn revoked_worker_tokens_are_refused_and_disconnected(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin("Admin").await;
    let user = server.signup("User").await;
    let (status, _) = server
        .call(
            Method::POST,
            "/admin/worker-tokens",
            Some(&user.token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // From the API: revoking disconnects the worker at once.
    let (status, created) = server
        .call(
            Method::POST,
            "/admin/worker-tokens",
            Some(&admin.token),
            Some(json!({"name": "gpu-api"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap();
    let mut ws = connect_worker(&server, token).await.unwrap();
    let listed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (_, fleet) = server
                .call(Method::GET, "/admin/workers", Some(&admin.token), None)
                .await;
            if let Some(w) = fleet["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["token_id"] == created["id"])
            {
                return w.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the worker is listed");
    assert_eq!(listed["name"], "remote");
    assert_eq!(listed["slots"], 1);
    let revoke = format!(
        "/admin/worker-tokens/{}/revoke",
        created["id"].as_str().unwrap()
    );
    let (status, body) = server
        .call(
            Method::POST,
            &revoke,
            Some(&admin.token),
            Some(json!({"reason": "stolen laptop"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disconnected"], 1);
    assert_eq!(
        worker_closed(&mut ws, Duration::from_secs(2)).await,
        Some(1008)
    );
    assert!(
        connect_worker(&server, token).await.is_err(),
        "a revoked token is refused"
    );
    let (status, _) = server
        .call(Method::POST, &revoke, Some(&admin.token), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // From the command line (another process): the connected worker is dropped within a
    // heartbeat check (5 s), new connections at once.
    let (ok, token, err) = server.admin_cli(&["create-worker-token", "--name", "gpu-cli"], &[]);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("atw_"));
    let mut ws = connect_worker(&server, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out, err) = server.admin_cli(&["revoke-worker-token", "--token", "gpu-cli"], &[]);
    assert!(ok, "{out} {err}");
    assert!(connect_worker(&server, &token).await.is_err());
    assert_eq!(
        worker_closed(&mut ws, Duration::from_secs(8)).await,
        Some(1008)
    );
    let (ok, _, err) = server.admin_cli(&["revoke-worker-token", "--token", "no-such-token"], &[]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let audit = audit_actions(&server, &admin.token).await;
    assert!(audit
        .iter()
        .any(|e| e["action"] == "revoke_worker_token" && e["reason"] == "stolen laptop"));
    assert!(audit.iter().any(|e| e["action"] == "revoke_worker_token"
        && e["actor"].as_str().unwrap().starts_with("cli:")));
    assert!(audit.iter().any(|e| e["action"] == "create_worker_token"
        && e["actor"].as_str().unwrap().starts_with("cli:")));
}

async fn starter_credits_follow_the_prices(backend: Backend) {
    // An hour of the cheapest class; 0 means none.
    let server =
        TestServer::start_with(backend.clone(), &["--gpu-prices", "t4=2000,cpu=250"]).await;
    let user = server.signup("User").await;
    assert_eq!(server.balance(&user.token).await.0, 15_000);
    let entries = server.ledger(&user.token).await;
    assert_eq!(entries[0]["kind"], "grant");
    drop(server);
    let server = TestServer::start_with(backend, &["--signup-credits", "0"]).await;
    let user = server.signup("User").await;
    assert_eq!(server.balance(&user.token).await, (0, 0, 0));
    assert!(server.ledger(&user.token).await.is_empty());
}

/// A remote worker's binary media frames are parsed strictly: a kind the server does not know
/// closes it with 1003, a truncated frame with 1002, an image declared beyond the limit with
/// 1009, media before its hello with 1008; a well-formed preview about a job it does not run
/// (one cancelled a moment ago, say) is dropped and the worker stays connected.
async fn hostile_worker_media_frames_close_the_worker(backend: Backend) {
    use atelier_protocol::ids::JobId;
    use atelier_protocol::worker_frame::{self, MediaFrame, MediaKind};

    let server = TestServer::start(backend).await;
    let admin = server.admin("Admin").await;
    let (status, created) = server
        .call(
            Method::POST,
            "/admin/worker-tokens",
            Some(&admin.token),
            Some(json!({"name": "hostile"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap();
    let preview = worker_frame::encode(&MediaFrame {
        job_id: JobId::new_random(),
        node_id: "n1".into(),
        mime: "image/png".into(),
        kind: MediaKind::Preview { step: 1 },
        image: vec![0x89, b'P', b'N', b'G'],
    });

    let mut wrong_kind = preview.clone();
    wrong_kind[0] = 9;
    let mut oversize = preview.clone();
    let at = oversize.len() - 4 - 4;
    oversize[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let truncated = preview[..preview.len() - 1].to_vec();
    for (frame, code) in [(wrong_kind, 1003), (truncated, 1002), (oversize, 1009)] {
        let mut ws = connect_worker(&server, token).await.unwrap();
        ws.send(Message::Binary(frame.into())).await.unwrap();
        assert_eq!(
            worker_closed(&mut ws, Duration::from_secs(5)).await,
            Some(code)
        );
    }

    // Media before the hello.
    let url = format!(
        "{}/api/v1/workers/ws",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Binary(preview.clone().into()))
        .await
        .unwrap();
    assert_eq!(
        worker_closed(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );

    // A well-formed preview of a job it does not run: dropped, the worker stays.
    let mut ws = connect_worker(&server, token).await.unwrap();
    ws.send(Message::Binary(preview.into())).await.unwrap();
    ws.send(Message::Text(
        json!({"type": "heartbeat"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(worker_closed(&mut ws, Duration::from_secs(1)).await, None);
}

on_both_backends!(
    cli_creates_the_admin_and_grants_reach_the_ledger,
    suspension_closes_sockets_and_settles_leases,
    admins_stop_leases_and_list_what_runs,
    revoked_worker_tokens_are_refused_and_disconnected,
    hostile_worker_media_frames_close_the_worker,
    starter_credits_follow_the_prices,
);
