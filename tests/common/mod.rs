//! Test harness: starts the real `atelier` binary on a free port against SQLite (a temp dir) or
//! PostgreSQL (a fresh database per server, dropped afterwards), and talks HTTP to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod billing;
pub mod jobs;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple";

/// The repository's ONNX Runtime library and models (`scripts/fetch-models`), unless the
/// environment names others.
fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A models directory holding a copy of the tiny denoiser only.
pub fn tiny_models_dir() -> tempfile::TempDir {
    let models = std::env::var_os("ATELIER_MODELS_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(|| repo_path("models"), PathBuf::from);
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = models.join("tiny-denoiser");
    let dst = tmp.path().join("tiny-denoiser");
    std::fs::create_dir_all(&dst).expect("models dir");
    for f in std::fs::read_dir(&src).expect("the tiny denoiser (run scripts/fetch-models)") {
        let f = f.expect("model file");
        std::fs::copy(f.path(), dst.join(f.file_name())).expect("copy model file");
    }
    tmp
}

/// Flags for a server whose in-process worker (class `cpu`) runs the tiny denoiser only: what a
/// runtime lease needs to get a worker, at a fraction of the terrain model's start-up cost.
pub fn in_process_worker_args() -> Vec<String> {
    static TINY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = TINY.get_or_init(tiny_models_dir);
    vec![
        "--models-dir".into(),
        dir.path().display().to_string(),
        "--in-process-worker".into(),
        "on".into(),
        "--execution-provider".into(),
        "cpu".into(),
    ]
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// Base URL of a PostgreSQL server (from ATELIER_TEST_POSTGRES_URL).
    Postgres(String),
}

impl Backend {
    pub fn postgres() -> Option<Backend> {
        std::env::var("ATELIER_TEST_POSTGRES_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .map(Backend::Postgres)
    }
}

/// Runs an async test body on SQLite, and again on PostgreSQL when ATELIER_TEST_POSTGRES_URL is set.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::common::Backend::postgres() {
                    Some(backend) => super::$name(backend).await,
                    None => eprintln!("ATELIER_TEST_POSTGRES_URL is not set: PostgreSQL run skipped"),
                }
            }
        }
    )*};
}

/// A fresh PostgreSQL database, dropped when this value is dropped.
pub struct PgDatabase {
    pub base: String,
    pub name: String,
}

impl PgDatabase {
    pub fn create(base: &str) -> PgDatabase {
        // The creation time in the name lets `scripts/test` drop what interrupted runs left
        // behind without touching the databases of a run still going.
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("atelier_test_{created}_{}", uuid::Uuid::new_v4().simple());
        run_pg(base, &format!("CREATE DATABASE {name}"));
        PgDatabase {
            base: base.to_string(),
            name,
        }
    }

    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&self.base).expect("ATELIER_TEST_POSTGRES_URL is a URL");
        url.set_path(&self.name);
        url.to_string()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        run_pg(
            &self.base,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement on its own thread and runtime (usable from Drop and from async tests).
fn run_pg(base: &str, sql: &str) {
    let base = base.to_string();
    let sql = sql.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::postgres::PgConnection::connect(&base)
                .await
                .expect("connect to ATELIER_TEST_POSTGRES_URL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("run admin statement");
        });
    })
    .join()
    .unwrap();
}

/// A running `atelier serve`. Killed on drop.
pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub child: Child,
    pub pg: Option<PgDatabase>,
    pub client: reqwest::Client,
}

pub struct ServerOptions {
    pub extra_args: Vec<String>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra_args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/atelier.db", dir.path().display()),
                None,
            ),
            Backend::Postgres(base) => {
                let db = PgDatabase::create(&base);
                (db.url(), Some(db))
            }
        };
        let mut server = TestServer {
            base: String::new(),
            database_url,
            child: Command::new("true").spawn().unwrap(),
            pg,
            client: reqwest::Client::new(),
            dir,
        };
        server.spawn(extra_args);
        server
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// (Re)starts the process on the same database and storage.
    pub fn spawn(&mut self, extra_args: &[&str]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(["--database-url", &self.database_url])
            .args([
                "--storage-url",
                &format!("file://{}", self.objects_dir().display()),
            ])
            .args(extra_args)
            .current_dir(self.dir.path())
            // A generous default that a test's own flag overrides.
            .env("ATELIER_AUTH_RATE_PER_MINUTE", "100000")
            .env("RUST_LOG", "warn")
            .env(
                "ORT_DYLIB_PATH",
                std::env::var_os("ORT_DYLIB_PATH").unwrap_or_else(|| {
                    repo_path(".tools/onnxruntime/libonnxruntime.so.1.31.1").into_os_string()
                }),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start atelier");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent {
                    if let Some(url) = line.strip_prefix("atelier listening on ") {
                        let _ = tx.send(url.to_string());
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server printed its address");
        self.base = url;
        let _ = self.child.kill();
        self.child = child;
    }

    /// Runs `atelier admin <args>` on this server's database; (success, stdout, stderr).
    pub fn admin_cli(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .arg("admin")
            .args(args)
            .env("ATELIER_DATABASE_URL", &self.database_url)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run atelier admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A new account made admin from the command line.
    pub async fn admin(&self, name: &str) -> User {
        let user = self.signup(name).await;
        let (ok, out, err) = self.admin_cli(
            &["set-role", "--email", &user.email, "--role", "admin"],
            &[],
        );
        assert!(ok, "set-role failed: {out} {err}");
        user
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    /// Sends a JSON request with an optional bearer token; returns status and JSON body (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.api(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// `GET /media/{id}`: status and bytes.
    pub async fn media_bytes(&self, token: &str, id: &str) -> (StatusCode, Vec<u8>) {
        let res = self
            .client
            .get(self.api(&format!("/media/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        (status, res.bytes().await.expect("body read").to_vec())
    }

    pub async fn signup(&self, name: &str) -> User {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": email, "password": PASSWORD, "name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "signup: {body}");
        User {
            id: body["account"]["id"].as_str().unwrap().to_string(),
            email,
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn login(&self, email: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn create_session(&self, token: &str, title: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/sessions",
                Some(token),
                Some(json!({"title": title})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create session: {body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Makes `invitee` a member: the owner invites their address (`POST …/members`, which only
    /// records a pending invitation), then the invitee accepts it from `GET /me/invitations`.
    pub async fn add_member(&self, owner: &str, session: &str, invitee: &User, role: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/sessions/{session}/members"),
                Some(owner),
                Some(json!({"email": invitee.email, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "add member: {body}");
        let (status, mine) = self
            .call(Method::GET, "/me/invitations", Some(&invitee.token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "my invitations: {mine}");
        let invitation = mine
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["session_id"] == session)
            .unwrap_or_else(|| panic!("no invitation to {session} in {mine}"));
        let (status, body) = self
            .call(
                Method::POST,
                &format!(
                    "/me/invitations/{}/accept",
                    invitation["id"].as_str().unwrap()
                ),
                Some(&invitee.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "accept invitation: {body}");
    }

    /// Changes a member's role (`PATCH …/members/{account}`, owners).
    pub async fn set_role(&self, owner: &str, session: &str, member: &User, role: &str) {
        let (status, body) = self
            .call(
                Method::PATCH,
                &format!("/sessions/{session}/members/{}", member.id),
                Some(owner),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "change role: {body}");
    }

    /// Returns (link id, token).
    pub async fn share_link(
        &self,
        token: &str,
        session: &str,
        expires_in_s: Option<i64>,
    ) -> (String, String) {
        let mut body = json!({"role": "viewer"});
        if let Some(s) = expires_in_s {
            body["expires_in_s"] = json!(s);
        }
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/sessions/{session}/share-links"),
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "share link: {body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }

    /// Makes an API key with these scopes (`POST /me/api-keys`, with a login); (id, secret).
    pub async fn api_key(&self, login: &str, scopes: &[&str]) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/me/api-keys",
                Some(login),
                Some(json!({"name": "test key", "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "api key: {body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["secret"].as_str().unwrap().to_string(),
        )
    }

    pub async fn upload(
        &self,
        token: &str,
        bytes: Vec<u8>,
        filename: &str,
        session: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
        );
        if let Some(s) = session {
            form = form.text("session_id", s.to_string());
        }
        let res = self
            .client
            .post(self.api("/media"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        let status = res.status();
        let value = res.json().await.unwrap_or(Value::Null);
        (status, value)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// A valid PNG of the given size (real encoder output, not just a magic number).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..width * height).map(|i| (i % 251) as u8).collect();
        writer.write_image_data(&data).unwrap();
    }
    out
}

/// Asserts the error body shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"].as_str();
    assert!(code.is_some(), "expected an error body, got {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    code.unwrap()
}

// ---- billing helpers ----------------------------------------------------------------------------

/// An events-enabled WebSocket participant of a session (`/ws/{session}?token=…&events=1`).
pub struct EventsClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// Reads a lib0 varUint at `*pos`.
fn read_var_uint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// The JSON of a type-100 frame (`varUint(100) varString(json)`), if it is one.
pub fn decode_event_frame(frame: &[u8]) -> Option<Value> {
    let mut pos = 0;
    if read_var_uint(frame, &mut pos)? != 100 {
        return None;
    }
    let len = usize::try_from(read_var_uint(frame, &mut pos)?).ok()?;
    let json = frame.get(pos..pos + len)?;
    serde_json::from_slice(json).ok()
}

impl EventsClient {
    pub async fn connect(server: &TestServer, session: &str, token: &str) -> EventsClient {
        let url = format!(
            "{}/ws/{session}?token={token}&events=1",
            server.base.replacen("http://", "ws://", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("events WebSocket");
        let mut client = EventsClient { ws };
        client
            .wait_for("session.hello", Duration::from_secs(10))
            .await;
        client
    }

    /// The next studio event, or None after `timeout` (or when the socket closes).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = msg {
                if let Some(event) = decode_event_frame(&bytes) {
                    return Some(event);
                }
            }
        }
    }

    /// Sends a Yjs update (y-sync type 0, sub-type 2) as an editor.
    pub async fn send_update(&mut self, update: &[u8]) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                atelier_protocol::ysync::encode_update_frame(update).into(),
            ))
            .await
            .expect("update sent");
    }

    /// Waits for a relayed Yjs update (a sync frame of sub-type 2); false after `timeout`.
    pub async fn wait_for_update(&mut self, timeout: Duration) -> bool {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return false;
            };
            if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = msg {
                if bytes.len() > 2 && bytes[0] == 0 && bytes[1] == 2 {
                    return true;
                }
            }
        }
    }

    /// Reads until the server closes the socket; its close code, or None after `timeout`.
    pub async fn close_code(&mut self, timeout: Duration) -> Option<u16> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return Some(1006),
            }
        }
    }

    /// Skips events until one of type `kind` arrives; panics after `timeout`.
    pub async fn wait_for(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) if event["type"] == kind => return event,
                Some(_) => {}
                None => panic!("no {kind} event within {timeout:?}"),
            }
        }
    }
}

/// A `Stripe-Signature` header for `body` signed with `secret` at unix time `t`.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl TestServer {
    /// POSTs a raw webhook body with the given signature header (None: no header).
    pub async fn webhook(&self, body: &str, signature: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.api("/billing/webhook"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(sig) = signature {
            req = req.header("Stripe-Signature", sig);
        }
        let res = req.send().await.expect("webhook sent");
        let status = res.status();
        let value = res.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// `GET /billing/balance` → (balance, held, available).
    pub async fn balance(&self, token: &str) -> (i64, i64, i64) {
        let (status, b) = self
            .call(Method::GET, "/billing/balance", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "balance: {b}");
        (
            b["balance"].as_i64().unwrap(),
            b["held"].as_i64().unwrap(),
            b["available"].as_i64().unwrap(),
        )
    }

    /// Every ledger entry of the caller, oldest first (follows the pages).
    pub async fn ledger(&self, token: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let path = match before {
                Some(b) => format!("/billing/ledger?limit=50&before={b}"),
                None => "/billing/ledger?limit=50".to_string(),
            };
            let (status, page) = self.call(Method::GET, &path, Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "ledger: {page}");
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        entries.reverse();
        entries
    }
}
