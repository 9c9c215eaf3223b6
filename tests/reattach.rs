//! Workers that reconnect (issue 12), one node, against the real binary on SQLite and
//! PostgreSQL: a remote `atelier worker` connected through a TCP proxy this test owns. When the
//! proxy cuts its connection mid-job (and refuses it for a while), the worker keeps running the
//! job and reconnects; the node adopts its lease (same lease, next epoch, the gap unbilled) and
//! its job, which finishes with its output. A worker that does not come back within the grace
//! (the heartbeat timeout) loses its job ("worker lost") and its lease stops `worker_lost`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::jobs::{job, job_event, session_with_graph, wide_graph};
use common::{Backend, EventsClient, TestServer, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The grace a disconnected worker has to come back (the worker heartbeat timeout).
const GRACE_S: u64 = 4;

/// A TCP proxy in front of the server: it can cut every connection through it, and refuse new
/// ones (accepted and closed at once) for as long as it is told to.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (open2, connections2) = (open.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections2.lock().unwrap().push(relay);
            }
        });
        Proxy {
            addr,
            open,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection through the proxy (both ends see it close), and from now on
    /// refuses new ones until [`Proxy::reopen`].
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A remote `atelier worker` (the tiny denoiser, class cpu) connected to `server_url`.
struct RemoteWorker(Child);

/// `atelier worker` (the tiny denoiser, class cpu) for `server_url`, reconnecting within 300 ms.
fn worker_command(server_url: &str, token: &str) -> Command {
    static TINY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let models = TINY.get_or_init(common::tiny_models_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ATELIER_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["worker", "--server", server_url, "--token", token])
        .args(["--name", "reattach", "--reconnect-max-ms", "300"])
        .args(["--models-dir", &models.path().display().to_string()])
        .args(["--execution-provider", "cpu", "--gpu-class", "cpu"])
        .env("RUST_LOG", "warn")
        .env(
            "ORT_DYLIB_PATH",
            std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH"),
        )
        .stdout(Stdio::null());
    cmd
}

impl RemoteWorker {
    fn spawn(server_url: &str, token: &str) -> RemoteWorker {
        RemoteWorker(
            worker_command(server_url, token)
                .spawn()
                .expect("start atelier worker"),
        )
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server without an in-process worker, on the tiny denoiser, 100 millicredits per cpu second.
async fn start(backend: Backend) -> TestServer {
    let mut args = common::in_process_worker_args();
    let on = args.iter().position(|a| a == "on").unwrap();
    args[on] = "off".into();
    let grace = GRACE_S.to_string();
    let extra = [
        "--gpu-prices",
        "cpu=6000",
        "--signup-credits",
        "100000",
        "--lease-idle-timeout-s",
        "120",
        "--worker-heartbeat-timeout-s",
        &grace,
    ];
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(extra);
    TestServer::start_with(backend, &all).await
}

async fn lease(server: &TestServer, token: &str, session: &str) -> Value {
    common::billing::lease_of(server, token, session).await
}

async fn running_lease(server: &TestServer, token: &str, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lease = lease(server, token, session).await;
        if lease["status"] == "running" {
            return lease;
        }
        assert!(Instant::now() < deadline, "{lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(server: &TestServer, token: &str, session: &str) -> String {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Sets up a server, its proxy, a worker connected through it, a user with a running lease and
/// a session whose job runs several seconds.
struct Setup {
    server: TestServer,
    proxy: Proxy,
    _worker: RemoteWorker,
    owner: User,
    session: String,
    /// When the lease was asked for (its wall time starts no earlier).
    asked: Instant,
    lease: Value,
}

async fn setup(backend: Backend) -> Setup {
    let server = start(backend).await;
    let target: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let proxy = Proxy::start(target).await;
    let (ok, token, err) = server.admin_cli(&["create-worker-token", "--name", "re"], &[]);
    assert!(ok, "{err}");
    let worker = RemoteWorker::spawn(&proxy.url(), token.trim());
    let owner = server.signup("Owner").await;
    let session = session_with_graph(&server, &owner, "Reattach", wide_graph(6, 16, 384)).await;
    // The worker connects (the engine loads first): the lease gets its slot then.
    let asked = Instant::now();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let lease = running_lease(&server, &owner.token, &session).await;
    Setup {
        server,
        proxy,
        _worker: worker,
        owner,
        session,
        asked,
        lease,
    }
}

async fn a_worker_that_reconnects_keeps_its_job_and_lease(backend: Backend) {
    let Setup {
        server,
        proxy,
        _worker,
        owner,
        session,
        asked,
        lease: before,
    } = setup(backend).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    let job_id = submit(&server, &owner.token, &session).await;
    job_event(&mut events, "job.progress", &job_id).await;

    // Cut mid-job, and keep the worker out for a while (less than the grace).
    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.reopen();
    let gap_ms = i64::try_from(cut.elapsed().as_millis()).unwrap();

    // The job goes on and finishes with every output; it neither fails nor starts again.
    let mut seen = Vec::new();
    let done = loop {
        let e = events
            .next_event(Duration::from_secs(60))
            .await
            .expect("the job's end");
        let kind = e["type"].as_str().unwrap().to_string();
        if e["job_id"] == job_id.as_str() {
            seen.push(kind.clone());
        }
        if e["job_id"] == job_id.as_str()
            && ["job.succeeded", "job.failed", "job.cancelled"].contains(&kind.as_str())
        {
            break e;
        }
    };
    assert_eq!(done["type"], "job.succeeded", "{done} after {seen:?}");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 6, "{done}");
    assert!(!seen
        .iter()
        .any(|k| k == "job.requeued" || k == "job.started"));
    let stored = job(&server, &owner.token, &job_id).await;
    assert_eq!(stored["status"], "succeeded", "{stored}");
    // No node's output was announced twice.
    let done_nodes = seen.iter().filter(|k| *k == "job.node_done").count();
    assert_eq!(done_nodes, 6, "{seen:?}");

    // The same lease runs on, adopted at the next epoch, on the worker's new connection.
    let after = running_lease(&server, &owner.token, &session).await;
    assert_eq!(after["lease_id"], before["lease_id"]);
    assert_eq!(
        after["epoch"].as_i64().unwrap(),
        before["epoch"].as_i64().unwrap() + 1,
        "{before} → {after}"
    );
    assert_ne!(after["worker_id"], before["worker_id"], "{after}");

    // A job submitted now runs on the reconnected worker.
    let next = submit(&server, &owner.token, &session).await;
    let next_done = job_event(&mut events, "job.succeeded", &next).await;
    assert_eq!(next_done["outputs"].as_array().unwrap().len(), 6);

    // Settled once: charged for what was used, the gap not billed, nothing charged twice.
    let (status, settled) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let wall_ms = i64::try_from(asked.elapsed().as_millis()).unwrap();
    let used = settled["used_ms"].as_i64().unwrap();
    assert!(
        used > 0 && used + gap_ms - 500 <= wall_ms,
        "used {used} ms of {wall_ms} ms with a gap of {gap_ms} ms: {settled}"
    );
    let entries = server.ledger(&owner.token).await;
    let lease_id = before["lease_id"].as_str().unwrap();
    let (charged, _, _) = common::billing::charges(&entries, lease_id);
    assert_eq!(
        charged,
        settled["charged"].as_i64().unwrap(),
        "{entries:#?}"
    );
    assert_eq!(
        settled["charged"].as_i64().unwrap() + settled["refunded"].as_i64().unwrap(),
        after["hold"].as_i64().unwrap(),
        "{settled}"
    );
    let (_, held, _) = server.balance(&owner.token).await;
    assert_eq!(held, 0);
}

async fn a_worker_that_does_not_come_back_loses_its_job_and_lease(backend: Backend) {
    let Setup {
        server,
        proxy,
        _worker,
        owner,
        session,
        lease: before,
        ..
    } = setup(backend).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    let job_id = submit(&server, &owner.token, &session).await;
    job_event(&mut events, "job.progress", &job_id).await;

    // Cut, and the worker never gets back in.
    proxy.cut();
    let cut = Instant::now();
    let (mut failed, mut stopped) = (None, None);
    while failed.is_none() || stopped.is_none() {
        let e = events
            .next_event(Duration::from_secs(30))
            .await
            .expect("job.failed and runtime.stopped");
        match e["type"].as_str().unwrap() {
            "job.failed" if e["job_id"] == job_id.as_str() => failed = Some(e),
            "runtime.stopped" => stopped = Some(e),
            "job.succeeded" => panic!("the job finished without its worker: {e}"),
            _ => {}
        }
    }
    let (failed, stopped) = (failed.unwrap(), stopped.unwrap());
    // Not before the grace: the worker might have come back until then.
    let waited = cut.elapsed();
    assert!(
        waited >= Duration::from_millis(GRACE_S * 1000 - 500),
        "ended after {waited:?}, before the {GRACE_S} s grace"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("worker lost"),
        "{failed}"
    );
    assert_eq!(stopped["reason"], "worker_lost", "{stopped}");
    assert_eq!(stopped["lease_id"], before["lease_id"]);
    let stored = job(&server, &owner.token, &job_id).await;
    assert_eq!(stored["status"], "failed", "{stored}");
    let settled = lease(&server, &owner.token, &session).await;
    assert_eq!(settled["status"], "stopped", "{settled}");
    // Billed up to the worker's last heartbeat, not through the grace.
    let entries = server.ledger(&owner.token).await;
    let (charged, _, _) = common::billing::charges(&entries, before["lease_id"].as_str().unwrap());
    assert_eq!(charged, stopped["charged"].as_i64().unwrap());
    assert_eq!(server.balance(&owner.token).await.1, 0, "a hold left");
}

/// Waits (at most `within`) for a worker process to exit; its status and what it logged.
async fn exits(mut child: Child, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            if let Some(mut err) = child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut log);
            }
            return (status, log);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not stop within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker with a token the server does not know stops with an error naming the refusal, and
/// so does a connected worker whose token is revoked — neither reconnects forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_worker_stops_instead_of_reconnecting() {
    let server = start(Backend::Sqlite).await;
    let admin = server.admin("Admin").await;
    // Its log is read for the reason.
    let spawn = |token: &str| {
        worker_command(&server.base, token)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start atelier worker")
    };
    let unknown = spawn("atw_not-a-token");
    let (status, log) = exits(unknown, Duration::from_secs(60)).await;
    assert!(!status.success(), "{status}");
    assert!(log.contains("refuses this worker"), "{log}");

    let (ok, token, err) = server.admin_cli(&["create-worker-token", "--name", "soon-gone"], &[]);
    assert!(ok, "{err}");
    let revoked = spawn(token.trim());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, fleet) = server
            .call(Method::GET, "/admin/workers", Some(&admin.token), None)
            .await;
        if fleet["workers"].as_array().is_some_and(|w| w.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{fleet}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, _, err) = server.admin_cli(&["revoke-worker-token", "--token", "soon-gone"], &[]);
    assert!(ok, "{err}");
    // The server re-checks tokens every few seconds, then closes it with 1008.
    let (status, log) = exits(revoked, Duration::from_secs(30)).await;
    assert!(!status.success(), "{status}");
    assert!(log.contains("revoked"), "{log}");
}

on_both_backends!(
    a_worker_that_reconnects_keeps_its_job_and_lease,
    a_worker_that_does_not_come_back_loses_its_job_and_lease,
);
