//! The job board on one node, against the real binary on SQLite and PostgreSQL (issue 12):
//! exclusive runtime leases (a lease holds a worker slot; the next waits in line with its
//! position, unbilled, and may leave the line), queued jobs that survive a kill -9 of the server,
//! idempotent submits, and a remote worker killed before its job produced anything (the job is
//! re-queued and runs on the other worker) or after a preview (the job fails "worker lost").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::jobs::{job, job_event, session_with_graph, wide_graph};
use common::{error_code, Backend, EventsClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// 100 millicredits per second of cpu.
const PRICES: &str = "cpu=6000";
const CREDITS: i64 = 100_000;

/// A server on the tiny denoiser whose in-process worker (one cpu slot) is on or off.
async fn start(backend: Backend, in_process: bool) -> TestServer {
    let args = args(in_process);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_with(backend, &args).await
}

fn args(in_process: bool) -> Vec<String> {
    let mut args = common::in_process_worker_args();
    if !in_process {
        let on = args.iter().position(|a| a == "on").unwrap();
        args[on] = "off".into();
    }
    for a in [
        "--gpu-prices",
        PRICES,
        "--signup-credits",
        "100000",
        "--lease-idle-timeout-s",
        "120",
    ] {
        args.push(a.into());
    }
    args
}

/// A tiny-denoiser graph: `steps` steps at `size`².
fn graph(steps: u32, size: u32) -> Value {
    json!({
        "nodes": {
            "tiny": {"type": "tiny-denoiser", "x": 0, "y": 0,
                     "params": {"steps": steps, "width": size, "height": size}},
            "out": {"type": "output", "x": 200, "y": 0, "params": {}}
        },
        "edges": {
            "e1": {"source": "tiny", "source_port": "image", "target": "out", "target_port": "image"}
        }
    })
}

async fn start_lease(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn lease(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["lease"].clone()
}

async fn wait_until_running(server: &TestServer, token: &str, session: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lease = lease(server, token, session).await;
        if lease["status"] == "running" {
            return lease;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_lease(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn submit(
    server: &TestServer,
    token: &str,
    session: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(token),
            Some(body),
        )
        .await
}

/// Waits for a job to end; returns it.
async fn finished(server: &TestServer, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = job(server, token, id).await;
        if !["queued", "running"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event of `kind`, skipping others.
async fn event(events: &mut EventsClient, kind: &str) -> Value {
    events.wait_for(kind, Duration::from_secs(30)).await
}

/// Charges to the account so far (sum of the `charge` entries, positive).
async fn charged(server: &TestServer, token: &str) -> i64 {
    server
        .ledger(token)
        .await
        .iter()
        .filter(|e| e["kind"] == "charge")
        .map(|e| -e["amount"].as_i64().unwrap())
        .sum()
}

async fn two_sessions_share_the_only_slot(backend: Backend) {
    let server = start(backend, true).await;
    let (alice, bob, carol, dave) = (
        server.signup("Alice").await,
        server.signup("Bob").await,
        server.signup("Carol").await,
        server.signup("Dave").await,
    );
    let g = || graph(2, 32);
    let sa = session_with_graph(&server, &alice, "A", g()).await;
    let sb = session_with_graph(&server, &bob, "B", g()).await;
    let sc = session_with_graph(&server, &carol, "C", g()).await;
    let sd = session_with_graph(&server, &dave, "D", g()).await;
    let mut bob_events = EventsClient::connect(&server, &sb, &bob.token).await;

    start_lease(&server, &alice.token, &sa).await;
    wait_until_running(&server, &alice.token, &sa).await;

    // Bob asks for the only cpu slot: he waits first in line, held but not billed.
    let asked = std::time::Instant::now();
    let bobs = start_lease(&server, &bob.token, &sb).await;
    let queued = event(&mut bob_events, "runtime.queued").await;
    assert_eq!(queued["position"], 1, "{queued}");
    assert_eq!(queued["lease_id"], bobs["lease_id"]);
    assert_eq!(queued["gpu_class"], "cpu");
    assert_eq!(lease(&server, &bob.token, &sb).await["status"], "starting");
    // While waiting, a job is refused (no slot yet) and nothing is charged.
    let (status, body) = submit(&server, &bob.token, &sb, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (balance, held, _) = server.balance(&bob.token).await;
    assert_eq!(balance, CREDITS, "billed while waiting");
    assert_eq!(held, bobs["hold"].as_i64().unwrap());
    assert_eq!(charged(&server, &bob.token).await, 0);
    assert_eq!(lease(&server, &bob.token, &sb).await["used_ms"], 0);

    // Carol and Dave line up behind Bob; Carol leaves the line, Dave moves up.
    let mut dave_events = EventsClient::connect(&server, &sd, &dave.token).await;
    start_lease(&server, &carol.token, &sc).await;
    start_lease(&server, &dave.token, &sd).await;
    assert_eq!(
        event(&mut dave_events, "runtime.queued").await["position"],
        3
    );
    let left = stop_lease(&server, &carol.token, &sc).await;
    assert_eq!(left["charged"], 0, "{left}");
    assert_eq!(server.balance(&carol.token).await, (CREDITS, 0, CREDITS));
    assert_eq!(
        event(&mut dave_events, "runtime.queued").await["position"],
        2
    );

    // Alice stops: Bob gets the slot (and is billed from then on); Dave moves up to 1.
    stop_lease(&server, &alice.token, &sa).await;
    let started = event(&mut bob_events, "runtime.started").await;
    assert_eq!(started["lease_id"], bobs["lease_id"]);
    assert_eq!(
        event(&mut dave_events, "runtime.queued").await["position"],
        1
    );
    wait_until_running(&server, &bob.token, &sb).await;
    let (status, body) = submit(&server, &bob.token, &sb, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let done = finished(&server, &bob.token, body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let settled = stop_lease(&server, &bob.token, &sb).await;
    // Billed only from the assignment: far less than the time since the lease was asked for.
    let used = settled["used_ms"].as_i64().unwrap();
    let since_asked = i64::try_from(asked.elapsed().as_millis()).unwrap();
    assert!(
        used > 0 && used + 2500 <= since_asked,
        "{settled} ({since_asked} ms)"
    );
    assert_eq!(
        charged(&server, &bob.token).await,
        settled["charged"].as_i64().unwrap()
    );
    assert_eq!(
        event(&mut dave_events, "runtime.started").await["type"],
        "runtime.started"
    );
    stop_lease(&server, &dave.token, &sd).await;
    // Dave never held a slot while waiting: nothing charged beyond his own running time.
    assert_eq!(server.balance(&dave.token).await.1, 0);
}

async fn queued_jobs_survive_a_restart(backend: Backend) {
    let mut server = start(backend, true).await;
    let owner = server.signup("Owner").await;
    let session = session_with_graph(&server, &owner, "Restart", graph(16, 512)).await;
    start_lease(&server, &owner.token, &session).await;
    wait_until_running(&server, &owner.token, &session).await;
    let (status, body) = submit(&server, &owner.token, &session, json!({"batch": 4})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ids: Vec<String> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    // The lease's jobs run one at a time: the last ones are still queued.
    let last = job(&server, &owner.token, &ids[3]).await;
    assert_eq!(last["status"], "queued", "{last}");

    server.kill();
    let args = args(true);
    server.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut ends = Vec::new();
    for id in &ids {
        ends.push(finished(&server, &owner.token, id).await);
    }
    // Queued at the kill → queued again and run, in order; running at the kill → failed.
    let succeeded: Vec<&Value> = ends.iter().filter(|j| j["status"] == "succeeded").collect();
    assert!(succeeded.len() >= 2, "{ends:#?}");
    assert_eq!(ends[3]["status"], "succeeded", "{ends:#?}");
    for j in ends.iter().filter(|j| j["status"] != "succeeded") {
        assert_eq!(j["status"], "failed", "{j}");
        assert!(j["error"].as_str().unwrap().contains("restarted"), "{j}");
    }
    let started: Vec<i64> = succeeded
        .iter()
        .map(|j| j["started_at"].as_i64().unwrap())
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {ends:#?}"
    );
    stop_lease(&server, &owner.token, &session).await;
}

async fn an_idempotent_submit_makes_one_job(backend: Backend) {
    let server = start(backend, true).await;
    let owner = server.signup("Owner").await;
    let session = session_with_graph(&server, &owner, "Idem", graph(2, 32)).await;
    start_lease(&server, &owner.token, &session).await;
    wait_until_running(&server, &owner.token, &session).await;
    let post = |key: &str, body: Value| {
        server
            .client
            .post(server.api(&format!("/sessions/{session}/jobs")))
            .bearer_auth(&owner.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post("retry-1", json!({})).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = post("retry-1", json!({})).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "a retry made a second job");
    let (_, jobs) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/jobs"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");

    // The same key with another body is refused, and makes nothing.
    let other = post("retry-1", json!({"nodes": ["tiny"]})).await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let other: Value = other.json().await.unwrap();
    assert_eq!(error_code(&other), "conflict");
    assert!(other["error"]["message"]
        .as_str()
        .unwrap()
        .contains("different request body"));
    // Keys are bounded.
    let long = "k".repeat(256);
    let refused = post(&long, json!({})).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let ok = post(&"k".repeat(255), json!({})).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    // Another key, or none, makes another job.
    assert_eq!(
        post("retry-2", json!({})).await.unwrap().status(),
        StatusCode::CREATED
    );
    let (status, _) = submit(&server, &owner.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, jobs) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/jobs"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(jobs.as_array().unwrap().len(), 4, "{jobs}");
    // Finished jobs are replayed as they are now.
    finished(&server, &owner.token, first["id"].as_str().unwrap()).await;
    let replay: Value = post("retry-1", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(replay["status"], "succeeded", "{replay}");
    // A retried batch gets the same batch.
    let batch = post("batch-1", json!({"batch": 2}))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let batch_again = post("batch-1", json!({"batch": 2}))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let ids = |b: &Value| -> Vec<Value> {
        b["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect()
    };
    assert_eq!(ids(&batch).len(), 2);
    assert_eq!(ids(&batch), ids(&batch_again));
    stop_lease(&server, &owner.token, &session).await;
}

/// A remote `atelier worker` process.
struct RemoteWorker {
    child: Child,
    name: String,
}

impl RemoteWorker {
    fn spawn(server: &TestServer, token: &str, name: &str) -> RemoteWorker {
        static TINY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let models = TINY.get_or_init(common::tiny_models_dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .args([
                "worker",
                "--server",
                &server.base,
                "--token",
                token,
                "--name",
                name,
            ])
            .args(["--models-dir", &models.path().display().to_string()])
            .args(["--execution-provider", "cpu", "--gpu-class", "cpu"])
            .env("RUST_LOG", "warn")
            .env(
                "ORT_DYLIB_PATH",
                std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH"),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("start atelier worker");
        RemoteWorker {
            child,
            name: name.to_string(),
        }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The connected workers (admin view), once `n` are connected.
async fn connected_workers(server: &TestServer, admin: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, fleet) = server
            .call(Method::GET, "/admin/workers", Some(admin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{fleet}");
        let workers = fleet["workers"].as_array().unwrap().clone();
        if workers.len() == n {
            return workers;
        }
        assert!(tokio::time::Instant::now() < deadline, "{fleet}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_lost_worker_before_output_requeues_the_job(backend: Backend) {
    let server = start(backend, false).await;
    let admin = server.admin("Admin").await;
    let (ok, token, err) = server.admin_cli(&["create-worker-token", "--name", "fleet"], &[]);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let mut workers = [
        RemoteWorker::spawn(&server, &token, "w1"),
        RemoteWorker::spawn(&server, &token, "w2"),
    ];
    let listed = connected_workers(&server, &admin.token, 2).await;
    assert!(listed.iter().all(|w| w["slots"] == 1), "{listed:?}");
    let owner = server.signup("Owner").await;
    let session = session_with_graph(&server, &owner, "Lost", wide_graph(4, 16, 512)).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    start_lease(&server, &owner.token, &session).await;
    let running = wait_until_running(&server, &owner.token, &session).await;
    let name_of = |id: &Value| -> String {
        listed
            .iter()
            .find(|w| w["worker_id"] == *id)
            .map(|w| w["name"].as_str().unwrap().to_string())
            .unwrap()
    };
    let first_name = name_of(&running["worker_id"]);
    let first = workers.iter().position(|w| w.name == first_name).unwrap();

    // The lease's worker freezes (it cannot send anything), takes the job, and is killed.
    workers[first].signal("-STOP");
    let (status, body) = submit(&server, &owner.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job_id = body["id"].as_str().unwrap().to_string();
    let started = job_event(&mut events, "job.started", &job_id).await;
    assert_eq!(started["worker_id"], running["worker_id"]);
    workers[first].kill();
    let requeued = job_event(&mut events, "job.requeued", &job_id).await;
    assert!(
        requeued["reason"].as_str().unwrap().contains("worker lost"),
        "{requeued}"
    );
    let restarted = job_event(&mut events, "job.started", &job_id).await;
    assert_ne!(
        restarted["worker_id"], running["worker_id"],
        "ran on the lost worker"
    );
    let done = finished(&server, &owner.token, &job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The lease moved with the job; it is still running, on the other worker.
    let moved = lease(&server, &owner.token, &session).await;
    assert_eq!(moved["status"], "running", "{moved}");
    assert_eq!(moved["worker_id"], restarted["worker_id"]);

    // Killed once it reported progress (and its preview): the job fails "worker lost" (never
    // re-queued).
    let (status, body) = submit(&server, &owner.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job_id = body["id"].as_str().unwrap().to_string();
    job_event(&mut events, "job.progress", &job_id).await;
    // Frozen at once (the job has three more nodes to run), then killed.
    let second = 1 - first;
    workers[second].signal("-STOP");
    workers[second].kill();
    // The job fails and the lease stops (no slot left), in either order.
    let (mut failed, mut stopped) = (None, None);
    while failed.is_none() || stopped.is_none() {
        let e = events
            .next_event(Duration::from_secs(30))
            .await
            .expect("job.failed and runtime.stopped");
        match e["type"].as_str().unwrap() {
            "job.failed" if e["job_id"] == job_id.as_str() => failed = Some(e),
            "runtime.stopped" => stopped = Some(e),
            _ => {}
        }
    }
    let (failed, stopped) = (failed.unwrap(), stopped.unwrap());
    assert!(
        failed["error"].as_str().unwrap().contains("worker lost"),
        "{failed}"
    );
    let done = finished(&server, &owner.token, &job_id).await;
    assert_eq!(done["status"], "failed");
    // Billed to the last heartbeat.
    assert_eq!(stopped["reason"], "worker_lost", "{stopped}");
}

on_both_backends!(
    two_sessions_share_the_only_slot,
    queued_jobs_survive_a_restart,
    an_idempotent_submit_makes_one_job,
    a_lost_worker_before_output_requeues_the_job,
);

/// Submit → `job.started` on one node with the in-process worker and the tiny model (README,
/// Benchmarks): `cargo nextest run -p atelier --test fleet --run-ignored only submit_to_started`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn submit_to_started_latency() {
    let server = start(Backend::Sqlite, true).await;
    let owner = server.signup("Owner").await;
    let session = session_with_graph(&server, &owner, "Bench", graph(1, 8)).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    start_lease(&server, &owner.token, &session).await;
    wait_until_running(&server, &owner.token, &session).await;
    let mut samples = Vec::new();
    for i in 0..60 {
        let sent = std::time::Instant::now();
        let (status, body) = submit(&server, &owner.token, &session, json!({"from": "tiny"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        job_event(&mut events, "job.started", &id).await;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        job_event(&mut events, "job.succeeded", &id).await;
        if i >= 10 {
            samples.push(ms); // after warm-up
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "submit → job.started, one node, {} jobs: p50 {:.1} ms, p99 {:.1} ms",
        samples.len(),
        at(0.5),
        at(0.99)
    );
    stop_lease(&server, &owner.token, &session).await;
}
