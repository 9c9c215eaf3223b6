//! Job webhooks against the real binary and a receiver in this test: messages are signed
//! (Standard Webhooks), a receiver's 500 is retried with the same `webhook-id` (so receivers can
//! dedupe), every attempt is visible at `GET /jobs/{id}/webhook-deliveries`, and webhooks to
//! private addresses are refused unless the operator allows them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{error_code, Backend, TestServer};
use hmac::Mac;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    answered: u16,
}

/// Answers the first request with 500, every later one with 200.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move { this.serve(socket).await });
            }
        });
        url
    }

    async fn serve(&self, socket: tokio::net::TcpStream) {
        let mut stream = BufReader::new(socket);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                stream.read_line(&mut h).await.unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.insert(k.trim().to_lowercase(), v.trim().to_string());
            }
            let len: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await.unwrap();
            let answered = {
                let mut seen = self.seen.lock().unwrap();
                let answered = if seen.is_empty() { 500 } else { 200 };
                seen.push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                    answered,
                });
                answered
            };
            let reply = format!(
                "HTTP/1.1 {answered} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
            );
            stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Verifies a Standard Webhooks signature as a receiver does.
fn verify(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{}",
        r.headers["webhook-id"], r.headers["webhook-timestamp"], r.body
    );
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

fn graph() -> Value {
    json!({
        "nodes": {
            "tiny": {"type": "tiny-denoiser", "x": 0, "y": 0, "params": {"steps": 3, "width": 32, "height": 32}},
            "out": {"type": "output", "x": 200, "y": 0, "params": {}}
        },
        "edges": {
            "e1": {"source": "tiny", "source_port": "image", "target": "out", "target_port": "image"}
        }
    })
}

async fn webhooks_are_signed_retried_and_visible(backend: Backend) {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let mut args = common::in_process_worker_args();
    for a in [
        "--webhook-allow-private",
        "--webhook-retry-base-ms",
        "200",
        "--webhook-progress-interval-ms",
        "0",
    ] {
        args.push(a.into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Hooks").await;
    let (_, key) = server
        .api_key(
            &owner.token,
            &["sessions:read", "sessions:write", "jobs:run"],
        )
        .await;
    let res = server
        .client
        .put(server.api(&format!("/sessions/{session}/graph")))
        .bearer_auth(&key)
        .json(&graph())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&key),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    wait_until_running(&server, &key, &session).await;
    let (status, secret) = server
        .call(Method::GET, "/me/webhook-secret", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{secret}");
    let secret = secret["secret"].as_str().unwrap().to_string();

    // Bad webhooks are refused before the job is queued.
    for bad in [
        json!({"url": "ftp://example.com/x", "events": ["completed"]}),
        json!({"url": "not a url", "events": ["completed"]}),
        json!({"url": url, "events": []}),
        json!({"url": url, "events": ["finished"]}),
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/sessions/{session}/jobs"),
                Some(&key),
                Some(json!({"webhook": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (status, job) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(&key),
            Some(json!({"webhook": {"url": url, "events": ["started", "progress", "completed", "failed"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = job["id"].as_str().unwrap().to_string();

    // Every message delivered (the first after a retry).
    let deliveries_path = format!("/jobs/{job}/webhook-deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let deliveries = loop {
        let (status, list) = server
            .call(Method::GET, &deliveries_path, Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let list = list.as_array().unwrap().clone();
        let done = list.iter().any(|d| d["event"] == "completed")
            && list.iter().all(|d| d["status"] == "delivered");
        if done {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all delivered: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events: Vec<&str> = deliveries
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"started"), "{events:?}");
    assert_eq!(events.last(), Some(&"completed"), "{events:?}");
    assert!(events.contains(&"progress"), "{events:?}");
    // The message that met the 500 was tried again, with the same id and body (so a receiver
    // dedupes), after the backoff.
    let seen = receiver.seen();
    assert_eq!(seen[0].answered, 500);
    let refused_id = seen[0].headers["webhook-id"].clone();
    let again: Vec<&Received> = seen
        .iter()
        .filter(|r| r.headers["webhook-id"] == refused_id)
        .collect();
    assert_eq!(again.len(), 2, "{seen:?}");
    assert_eq!(again[1].body, again[0].body);
    assert_eq!(again[1].answered, 200);
    let retried = deliveries
        .iter()
        .find(|d| d["id"] == json!(refused_id))
        .unwrap();
    assert_eq!(retried["attempts"], json!(2), "{retried}");
    let log = retried["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["status_code"], json!(500));
    assert_eq!(log[1]["status_code"], json!(200));
    assert!(log[1]["at"].as_i64().unwrap() >= log[0]["at"].as_i64().unwrap() + 200);
    assert!(log.iter().all(|a| a["latency_ms"].as_i64().is_some()));
    let once = deliveries
        .iter()
        .filter(|d| d["attempts"] == json!(1))
        .count();
    assert_eq!(once, deliveries.len() - 1);
    for r in &seen {
        assert!(verify(&secret, r), "signature does not verify: {r:?}");
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        assert!((ts - common::unix_now()).abs() < 300);
        let payload: Value = serde_json::from_str(&r.body).unwrap();
        assert!(payload["type"].as_str().unwrap().starts_with("job."));
        assert_eq!(payload["data"]["job_id"], json!(job));
        assert_eq!(payload["data"]["session_id"], json!(session));
    }
    let ids: std::collections::HashSet<&str> = seen
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(ids.len(), deliveries.len(), "one id per message");
    let completed: Value = seen
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .find(|p| p["type"] == "job.completed")
        .unwrap();
    assert_eq!(completed["data"]["outputs"].as_array().unwrap().len(), 1);

    // Another account does not see the deliveries.
    let other = server.signup("Other").await;
    let (status, _) = server
        .call(Method::GET, &deliveries_path, Some(&other.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Without `ATELIER_WEBHOOK_ALLOW_PRIVATE`, loopback, private and link-local destinations are
/// refused when the job is submitted.
async fn private_addresses_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Guarded").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
        "http://[fd00::1]/hook",
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/sessions/{session}/jobs"),
                Some(&owner.token),
                Some(json!({"webhook": {"url": url, "events": ["completed"]}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(error_code(&body), "invalid_input");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("private") || message.contains("public"),
            "{url}: {message}"
        );
    }
}

/// A job cut short by a restart still ends for its webhook: `failed`, delivered by the restarted
/// server.
async fn a_restart_fails_jobs_to_their_webhooks(backend: Backend) {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let args = ["--webhook-allow-private", "--webhook-retry-base-ms", "100"];
    let mut server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Restarted").await;
    // A job that was running when the server went down (made directly: running one takes a
    // worker, and this one must never finish).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
    let job = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, session_id, account_id, status, plan, created_at, started_at, \
         webhook_url, webhook_events) VALUES ($1, $2, $3, 'running', '[]', 1, 2, $4, 'failed')",
    )
    .bind(job.clone())
    .bind(session.clone())
    .bind(owner.id.clone())
    .bind(url.clone())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    server.kill();
    server.spawn(&args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let found = receiver.seen().into_iter().find(|r| r.answered == 200);
        if let Some(r) = found {
            break serde_json::from_str::<Value>(&r.body).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["type"], "job.failed");
    assert_eq!(failed["data"]["job_id"], json!(job));
    assert!(failed["data"]["error"]
        .as_str()
        .unwrap()
        .contains("restarted"));
}

/// A finished job and webhook messages to deliver for it, made directly in the database (what
/// the server itself stores when a job event happens), each to one of `urls`.
async fn job_with_messages(server: &TestServer, owner: &common::User, urls: &[String]) -> String {
    let session = server.create_session(&owner.token, "Messages").await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
    let job = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, session_id, account_id, status, plan, created_at, finished_at) \
         VALUES ($1, $2, $3, 'succeeded', '[]', 1, 2)",
    )
    .bind(job.clone())
    .bind(session)
    .bind(owner.id.clone())
    .execute(&pool)
    .await
    .unwrap();
    let now = common::unix_now() * 1000;
    for url in urls {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, account_id, url, event, payload, status, \
             attempts, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, 'completed', '{\"type\":\"job.completed\"}', 'pending', 0, $5, $5)",
        )
        .bind(format!("msg_{}", uuid::Uuid::new_v4().simple()))
        .bind(job.clone())
        .bind(owner.id.clone())
        .bind(url.clone())
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    job
}

/// Jobs are refused while the runtime is still starting (no worker assigned yet), which on a
/// loaded machine can outlast the start request.
async fn wait_until_running(server: &TestServer, token: &str, session: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/sessions/{session}/runtime"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["lease"]["status"] == "running" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job's deliveries once each has had `attempts` attempts.
async fn after_attempts(server: &TestServer, token: &str, job: &str, attempts: i64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, list) = server
            .call(
                Method::GET,
                &format!("/jobs/{job}/webhook-deliveries"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let list = list.as_array().unwrap().clone();
        if list
            .iter()
            .all(|d| d["attempts"].as_i64().unwrap() >= attempts)
        {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receiver that misbehaves by path: `/redirect` answers 302 to `/target`, `/slow` answers
/// after 8 s, `/endless` promises a huge body and never finishes it. Counts what it got by path.
async fn misbehaving_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(socket);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    stream.read_line(&mut h).await.unwrap();
                    if h.trim_end().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                stream.read_exact(&mut body).await.unwrap();
                let socket = stream.get_mut();
                match path.as_str() {
                    "/redirect" => {
                        let reply =
                            "HTTP/1.1 302 Found\r\nlocation: /target\r\ncontent-length: 0\r\n\r\n";
                        socket.write_all(reply.as_bytes()).await.unwrap();
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(8)).await;
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    "/endless" => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n";
                        socket.write_all(head.as_bytes()).await.unwrap();
                        let chunk = vec![b'x'; 256 * 1024];
                        let _ = socket.write_all(&chunk).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    _ => {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    (base, paths)
}

/// Redirects are not followed (a 302 is a failed attempt), a receiver that does not answer in
/// time fails the attempt, and an answer is read no further than the cap (an endless body does
/// not hold the attempt). The timeout is long (6 s) so that the bounds below separate a capped
/// read from one that waited for the timeout even on a loaded machine.
async fn no_redirects_timeouts_and_capped_answers(backend: Backend) {
    let (base, paths) = misbehaving_receiver().await;
    let args = [
        "--webhook-allow-private",
        "--webhook-timeout-ms",
        "6000",
        "--webhook-max-attempts",
        "1",
    ];
    let server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let urls: Vec<String> = ["/redirect", "/slow", "/endless"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    let job = job_with_messages(&server, &owner, &urls).await;
    let list = after_attempts(&server, &owner.token, &job, 1).await;
    let by_url = |suffix: &str| {
        list.iter()
            .find(|d| d["url"].as_str().unwrap().ends_with(suffix))
            .unwrap()
            .clone()
    };
    let redirect = by_url("/redirect");
    assert_eq!(redirect["attempt_log"][0]["status_code"], json!(302));
    assert_eq!(
        redirect["status"], "failed",
        "one attempt allowed: given up"
    );
    let slow = by_url("/slow");
    assert_eq!(slow["attempt_log"][0]["status_code"], Value::Null);
    assert!(
        slow["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{slow}"
    );
    assert!(
        slow["attempt_log"][0]["latency_ms"].as_i64().unwrap() < 8000,
        "{slow}"
    );
    let endless = by_url("/endless");
    assert_eq!(endless["status"], "delivered", "{endless}");
    // An uncapped read would have run into the 6 s timeout.
    assert!(
        endless["attempt_log"][0]["latency_ms"].as_i64().unwrap() < 5000,
        "{endless}"
    );
    assert!(
        !paths.lock().unwrap().iter().any(|p| p == "/target"),
        "a redirect was followed"
    );
}

/// Without `ATELIER_WEBHOOK_ALLOW_PRIVATE`, a message whose URL points at a private address is
/// not sent, however it got stored: a literal address is given up at once, a name that resolves
/// to one is refused by the resolver at connection time (DNS rebinding).
async fn the_guard_holds_at_delivery_time(backend: Backend) {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let urls = vec![
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ];
    let job = job_with_messages(&server, &owner, &urls).await;
    let list = after_attempts(&server, &owner.token, &job, 1).await;
    let literal = list.iter().find(|d| d["url"] == json!(urls[0])).unwrap();
    assert_eq!(literal["status"], "failed", "{literal}");
    let why = literal["attempt_log"][0]["error"].as_str().unwrap();
    assert!(why.contains("private"), "{why}");
    let named = list.iter().find(|d| d["url"] == json!(urls[1])).unwrap();
    let why = named["attempt_log"][0]["error"].as_str().unwrap();
    assert!(why.contains("no public address"), "{why}");
    assert!(receiver.seen().is_empty(), "a private address was reached");
}

on_both_backends!(
    webhooks_are_signed_retried_and_visible,
    private_addresses_are_refused,
    a_restart_fails_jobs_to_their_webhooks,
    no_redirects_timeouts_and_capped_answers,
    the_guard_holds_at_delivery_time
);
