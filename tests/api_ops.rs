//! Operations: health, readiness, metrics, the OpenAPI document, the index page; configuration
//! errors, a fresh start with no configuration, graceful shutdown, and `atelier migrate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{error_code, Backend, TestServer, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every route of the API, as the OpenAPI document must list it (paths relative to `/api/v1`).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/auth/signup"),
    ("post", "/auth/login"),
    ("post", "/auth/logout"),
    ("get", "/me"),
    ("delete", "/me"),
    ("get", "/me/usage"),
    ("get", "/me/export"),
    ("post", "/sessions"),
    ("get", "/sessions"),
    ("get", "/sessions/{id}"),
    ("patch", "/sessions/{id}"),
    ("delete", "/sessions/{id}"),
    ("get", "/sessions/{id}/members"),
    ("post", "/sessions/{id}/members"),
    ("patch", "/sessions/{id}/members/{account_id}"),
    ("delete", "/sessions/{id}/members/{account_id}"),
    ("post", "/sessions/{id}/invitations"),
    ("get", "/sessions/{id}/invitations"),
    ("delete", "/sessions/{id}/invitations/{invitation_id}"),
    ("get", "/invitations/{token}"),
    ("post", "/invitations/{token}/accept"),
    ("get", "/me/invitations"),
    ("post", "/me/invitations/{id}/accept"),
    ("post", "/me/invitations/{id}/decline"),
    ("get", "/sessions/{id}/versions"),
    ("post", "/sessions/{id}/versions"),
    ("get", "/sessions/{id}/versions/{version}"),
    ("delete", "/sessions/{id}/versions/{version}"),
    ("get", "/sessions/{id}/versions/{a}/diff/{b}"),
    ("post", "/sessions/{id}/versions/{version}/restore"),
    ("post", "/sessions/{id}/share-links"),
    ("get", "/sessions/{id}/share-links"),
    ("delete", "/sessions/{id}/share-links/{link_id}"),
    ("post", "/media"),
    ("get", "/media"),
    ("get", "/media/{id}"),
    ("delete", "/media/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/me/api-keys"),
    ("get", "/me/api-keys"),
    ("delete", "/me/api-keys/{id}"),
    ("get", "/sessions/{id}/graph"),
    ("put", "/sessions/{id}/graph"),
    ("patch", "/sessions/{id}/graph"),
    ("post", "/sessions/{id}/jobs"),
    ("get", "/jobs/{id}/webhook-deliveries"),
    ("get", "/me/webhook-secret"),
    ("post", "/me/webhook-secret/rotate"),
];

async fn operations_endpoints(backend: Backend) {
    let server = TestServer::start(backend).await;

    let (status, body) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["storage"], "ok", "{body}");

    // Metrics: Prometheus text, counting the requests just made by route and status.
    let res = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(
        text.contains("# TYPE atelier_http_requests_total counter"),
        "{text}"
    );
    let healthz_line = text
        .lines()
        .find(|l| {
            l.starts_with("atelier_http_requests_total{")
                && l.contains("route=\"/api/v1/healthz\"")
                && l.contains("status=\"200\"")
                && l.contains("method=\"GET\"")
        })
        .unwrap_or_else(|| panic!("no healthz counter in {text}"));
    let count: f64 = healthz_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{healthz_line}");
    assert!(text.contains("atelier_http_request_seconds"), "{text}");
    // Metrics never carry ids or tokens: only route patterns.
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Metered").await;
    let _ = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&ada.token),
            None,
        )
        .await;
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("route=\"/api/v1/sessions/{id}\""), "{text}");
    assert!(!text.contains(&session) && !text.contains(&ada.token));

    // The OpenAPI document lists every route.
    let (status, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()))[*method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for schema in ["SessionView", "Media", "CreatedShareLink", "Account"] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    // And everything it lists is served: no documented operation hits the no-route fallback.
    for (path, item) in paths {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "00000000-0000-4000-8000-000000000000"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let (status, body) = server
                .call(
                    method.to_uppercase().parse().unwrap(),
                    &concrete,
                    None,
                    None,
                )
                .await;
            let no_route = status == StatusCode::NOT_FOUND
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no API route"));
            assert!(
                !no_route,
                "documented {method} {path} is not served: {body}"
            );
        }
    }

    // The index page.
    let res = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = res.text().await.unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html}");

    // Unknown API routes answer in the error shape.
    let (status, body) = server.call(Method::GET, "/nonexistent", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

on_both_backends!(operations_endpoints);

// ---------------------------------------------------------------------------------------------
// The process itself.

/// `atelier` with no ATELIER_* configuration from the test's environment, run in `cwd`.
fn atelier(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ATELIER_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd).env("RUST_LOG", "warn");
    cmd
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs to completion; fails the test if it is still running after `limit`.
fn run(mut cmd: Command, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atelier");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}; stderr: {}",
                err_reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        took: started.elapsed(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Asserts a quick, non-zero exit whose stderr names the setting (every one of `names`).
fn assert_config_error(cmd: Command, names: &[&str]) {
    let done = run(cmd, Duration::from_secs(20));
    assert!(
        !done.status.success(),
        "exited successfully: {}",
        done.stderr
    );
    assert!(
        done.took < Duration::from_secs(10),
        "took {:?} to fail",
        done.took
    );
    for name in names {
        assert!(
            done.stderr.contains(name),
            "stderr does not name {name:?}: {}",
            done.stderr
        );
    }
    assert!(
        !done.stdout.contains("atelier listening on"),
        "{}",
        done.stdout
    );
}

#[test]
fn bad_configuration_fails_fast_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/atelier.db", dir.path().display());
    let objects = format!("file://{}/objects", dir.path().display());

    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", "nonsense"]);
    assert_config_error(cmd, &["--bind", "nonsense"]);

    let mut cmd = atelier(dir.path());
    cmd.args(["serve"]).env("ATELIER_BIND", "not-an-address");
    assert_config_error(cmd, &["--bind", "not-an-address"]);

    let mut cmd = atelier(dir.path());
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        "mysql://x",
    ]);
    assert_config_error(cmd, &["ATELIER_DATABASE_URL", "mysql://x"]);

    // A password in a rejected URL is not echoed.
    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("ATELIER_DATABASE_URL", "mysql://user:hunter2@db/x");
    let done = run(cmd, Duration::from_secs(20));
    assert!(!done.status.success());
    assert!(
        done.stderr.contains("ATELIER_DATABASE_URL"),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("hunter2"), "{}", done.stderr);

    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--database-url", &db])
        .args(["--storage-url", "ftp://x"]);
    assert_config_error(cmd, &["ATELIER_STORAGE_URL", "ftp://x"]);

    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--database-url", &db])
        .args(["--storage-url", &objects])
        .env("ATELIER_MAX_UPLOAD_BYTES", "abc");
    assert_config_error(cmd, &["max-upload-bytes", "abc"]);

    for (flag, value) in [
        ("--max-upload-bytes", "0"),
        ("--storage-quota-bytes", "-5"),
        ("--max-json-bytes", "10"),
        ("--auth-rate-per-minute", "0"),
        ("--database-max-connections", "0"),
        ("--log-format", "xml"),
    ] {
        let mut cmd = atelier(dir.path());
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--database-url", &db])
            .args(["--storage-url", &objects])
            .arg(format!("{flag}={value}"));
        assert_config_error(cmd, &[flag.trim_start_matches('-')]);
    }

    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", &addr, "--database-url", &db])
        .args(["--storage-url", &objects]);
    assert_config_error(cmd, &["ATELIER_BIND", &addr]);

    // None of this created the default ./data directory.
    assert!(!dir.path().join("data").exists());
}

/// A server process started by a test; killed on drop if still running.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    fn start(mut cmd: Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start atelier");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("atelier listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "no 'atelier listening on' line: {e}; exit: {:?}",
                    child.try_wait()
                );
            }
        };
        Process { child, base }
    }

    fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The exit status (fails the test if it takes longer than `limit`).
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the exit status.
    async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit(limit).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_start_with_no_configuration_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let serve = || {
        let mut cmd = atelier(dir.path());
        cmd.args(["serve", "--bind", "127.0.0.1:0"]);
        cmd
    };
    let mut server = Process::start(serve());
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    // The embedded defaults: SQLite and objects under ./data.
    assert!(dir.path().join("data/atelier.db").is_file());
    assert!(dir.path().join("data/objects").is_dir());

    let client = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let res = client.get(api("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let email = "first@example.com";
    let res = client
        .post(api("/auth/signup"))
        .json(&json!({"email": email, "password": PASSWORD, "name": "First"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = common::png(4, 4);
    let res = client
        .post(api("/media"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("a.png"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let media = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dir.path().join("data/objects/media").is_dir());

    // SIGTERM: a clean, prompt exit (the client still holds an idle keep-alive connection).
    let status = server.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // The data survives a restart.
    let mut server = Process::start(serve());
    let api = |path: &str| format!("{}/api/v1{path}", server.base);
    let res = client
        .get(api("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .post(api("/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .get(api(&format!("/media/{media}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);
    let status = server.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// `serve` on SQLite in `dir` with in-memory objects.
fn serve_in(dir: &Path) -> Command {
    let mut cmd = atelier(dir);
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .args([
            "--database-url",
            &format!("sqlite://{}/atelier.db", dir.display()),
        ])
        .args(["--storage-url", "memory://"]);
    cmd
}

/// Once the address is announced, a SIGTERM is a graceful stop: never the default action
/// (immediate termination, exit status 143) of a process that has no handler yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let mut server = Process::start(serve_in(dir.path()));
        let status = server.terminate(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status: {status:?}");
    }
}

/// SIGTERM lets a request that is under way finish (its body arrives after the signal), then
/// exits with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(serve_in(dir.path()));
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/api/v1/auth/signup", server.base))
        .json(&json!({"email": "slow@example.com", "password": PASSWORD, "name": "Slow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // A multipart upload whose body is sent in two parts, the second only after SIGTERM.
    let image = common::png(32, 32);
    let mut head =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n\
Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
    head.extend_from_slice(&image[..image.len() / 2]);
    let mut tail = image[image.len() / 2..].to_vec();
    tail.extend_from_slice(b"\r\n--XyZ--\r\n");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let request = client
        .post(format!("{}/api/v1/media", server.base))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let response = tokio::spawn(request);
    tx.send(Ok(head)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.send_sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.is_running(), "exited with a request in flight");
    tx.send(Ok(tail)).await.unwrap();
    drop(tx);
    let res = response
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(res.status(), StatusCode::CREATED);
    let media: Value = res.json().await.unwrap();
    assert_eq!(media["size_bytes"].as_u64(), Some(image.len() as u64));
    let status = server.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db", dir.path().display());
    for _ in 0..2 {
        // Twice: applying migrations is idempotent.
        let mut cmd = atelier(dir.path());
        cmd.args(["migrate", "--database-url", &url]);
        let done = run(cmd, Duration::from_secs(30));
        assert!(done.status.success(), "{}", done.stderr);
        assert!(
            done.stdout.contains("migrations applied"),
            "{}",
            done.stdout
        );
    }
    assert!(dir.path().join("m.db").is_file());
    // A migrated database serves.
    let mut cmd = atelier(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url])
        .args(["--storage-url", "memory://"]);
    let mut server = Process::start(cmd);
    assert!(server.terminate(Duration::from_secs(5)).await.success());

    // The environment variable works too, and bad URLs fail.
    let mut cmd = atelier(dir.path());
    cmd.arg("migrate").env(
        "ATELIER_DATABASE_URL",
        format!("sqlite://{}/env.db", dir.path().display()),
    );
    assert!(run(cmd, Duration::from_secs(30)).status.success());
    assert!(dir.path().join("env.db").is_file());
    let mut cmd = atelier(dir.path());
    cmd.args(["migrate", "--database-url", "mysql://x"]);
    assert_config_error(cmd, &["ATELIER_DATABASE_URL"]);

    if let Some(Backend::Postgres(base)) = Backend::postgres() {
        let db = common::PgDatabase::create(&base);
        for _ in 0..2 {
            let mut cmd = atelier(dir.path());
            cmd.args(["migrate", "--database-url", &db.url()]);
            let done = run(cmd, Duration::from_secs(30));
            assert!(done.status.success(), "{}", done.stderr);
        }
    }
}
