//! The server → worker wire against the real binary (issue 12): an `assign` whose input is a
//! few-MiB uploaded image reaches a remote `atelier worker` as binary frames and its job
//! succeeds with the image intact; and a worker that stops reading its socket is closed with
//! 1008 "too slow…" while the server's memory stays bounded, its job handled as a lost worker's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::jobs::job_event;
use common::{Backend, EventsClient, TestServer, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The heartbeat timeout the servers here run with: also how long a frame may wait for a worker
/// that does not read.
const HEARTBEAT_TIMEOUT_S: u64 = 3;

/// A models directory with the image-input node only.
fn image_input_models() -> tempfile::TempDir {
    models_with(&["image-input"])
}

/// A models directory with these models of `ATELIER_MODELS_DIR`.
fn models_with(names: &[&str]) -> tempfile::TempDir {
    let models = std::env::var_os("ATELIER_MODELS_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
            std::path::PathBuf::from,
        );
    let tmp = tempfile::tempdir().unwrap();
    for name in names {
        let dst = tmp.path().join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(models.join(name)).expect("the model (scripts/fetch-models)") {
            let f = f.unwrap();
            std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
        }
    }
    tmp
}

async fn start(backend: Backend, models: &tempfile::TempDir) -> TestServer {
    let dir = models.path().display().to_string();
    let timeout = HEARTBEAT_TIMEOUT_S.to_string();
    TestServer::start_with(
        backend,
        &[
            "--models-dir",
            &dir,
            "--in-process-worker",
            "off",
            "--gpu-prices",
            "cpu=6000",
            "--signup-credits",
            "100000",
            "--worker-heartbeat-timeout-s",
            &timeout,
        ],
    )
    .await
}

/// A 1024×1024 RGBA PNG of noise (incompressible: about 4 MiB), different for each `seed`.
fn noise_png(seed: u32) -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (1024u32, 1024u32);
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    let rgba: Vec<u8> = (0..w * h * 4)
        .map(|i| {
            if i % 4 == 3 {
                return 255;
            }
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 11) as u8
        })
        .collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&rgba).unwrap();
    }
    (out, rgba)
}

/// A session whose graph is one image-input node per uploaded image, each into an output.
async fn session_with_images(server: &TestServer, user: &User, pngs: Vec<Vec<u8>>) -> String {
    let session = server.create_session(&user.token, "Wire").await;
    let (mut nodes, mut edges) = (serde_json::Map::new(), serde_json::Map::new());
    for (i, png) in pngs.into_iter().enumerate() {
        let (status, media) = server
            .upload(&user.token, png, "noise.png", Some(&session))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{media}");
        nodes.insert(
            format!("in{i}"),
            json!({"type": "image-input", "x": 0, "y": i * 100, "params": {"media": media["id"]}}),
        );
        nodes.insert(
            format!("out{i}"),
            json!({"type": "output", "x": 200, "y": i * 100, "params": {}}),
        );
        edges.insert(
            format!("e{i}"),
            json!({"source": format!("in{i}"), "source_port": "image",
                   "target": format!("out{i}"), "target_port": "image"}),
        );
    }
    let res = server
        .client
        .put(server.api(&format!("/sessions/{session}/graph")))
        .bearer_auth(&user.token)
        .json(&json!({"nodes": nodes, "edges": edges}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    session
}

/// Starts the session's runtime and waits until it has its worker.
async fn start_lease(server: &TestServer, token: &str, session: &str, events: &mut EventsClient) {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    events
        .wait_for("runtime.started", Duration::from_secs(30))
        .await;
}

async fn submit(server: &TestServer, token: &str, session: &str) -> String {
    submit_with(server, token, session, json!({})).await
}

async fn submit_with(server: &TestServer, token: &str, session: &str, body: Value) -> String {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn connected_workers(server: &TestServer, admin: &str) -> Vec<Value> {
    let (status, fleet) = server
        .call(Method::GET, "/admin/workers", Some(admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{fleet}");
    fleet["workers"].as_array().unwrap().clone()
}

async fn until_workers(server: &TestServer, admin: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let workers = connected_workers(server, admin).await;
        if workers.len() == n {
            return workers;
        }
        assert!(tokio::time::Instant::now() < deadline, "{workers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn worker_token(server: &TestServer) -> String {
    let (ok, token, err) = server.admin_cli(&["create-worker-token", "--name", "wire"], &[]);
    assert!(ok, "{err}");
    token.trim().to_string()
}

/// A remote `atelier worker` process, killed on drop.
struct RemoteWorker(Child);

impl RemoteWorker {
    fn spawn(server: &TestServer, token: &str, models: &tempfile::TempDir) -> RemoteWorker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .args(["worker", "--server", &server.base, "--token", token])
            .args(["--name", "remote", "--gpu-class", "cpu"])
            .args(["--models-dir", &models.path().display().to_string()])
            .args(["--execution-provider", "cpu"])
            .env("RUST_LOG", "warn")
            .env(
                "ORT_DYLIB_PATH",
                std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH"),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("start atelier worker");
        RemoteWorker(child)
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decode_rgb(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    let rgb = match frame.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => panic!("unexpected colour type {other:?}"),
    };
    (frame.width, frame.height, rgb)
}

async fn a_large_image_input_reaches_a_remote_worker_as_binary(backend: Backend) {
    let models = image_input_models();
    let server = start(backend, &models).await;
    let admin = server.admin("Admin").await;
    let token = worker_token(&server);
    let _worker = RemoteWorker::spawn(&server, &token, &models);
    let remote = until_workers(&server, &admin.token, 1).await;
    let owner = server.signup("Owner").await;
    let (png, rgba) = noise_png(1);
    assert!(png.len() > 3 * 1024 * 1024, "{} bytes", png.len());
    let session = session_with_images(&server, &owner, vec![png]).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    start_lease(&server, &owner.token, &session, &mut events).await;
    let job = submit(&server, &owner.token, &session).await;
    let started = job_event(&mut events, "job.started", &job).await;
    assert_eq!(started["worker_id"], remote[0]["worker_id"], "{started}");
    let end = loop {
        let e = events
            .next_event(Duration::from_secs(60))
            .await
            .expect("the job ends");
        if e["job_id"] == job.as_str()
            && ["job.succeeded", "job.failed", "job.cancelled"]
                .contains(&e["type"].as_str().unwrap())
        {
            break e;
        }
    };
    assert_eq!(end["type"], "job.succeeded", "{end}");
    // The worker read the whole image, byte for byte: its output is the same picture.
    let output = end["outputs"][0].as_str().unwrap();
    let (status, bytes) = server.media_bytes(&owner.token, output).await;
    assert_eq!(status, StatusCode::OK);
    let (w, h, rgb) = decode_rgb(&bytes);
    assert_eq!((w, h), (1024, 1024));
    let expected: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    assert!(rgb == expected, "the output differs from the input image");
}

/// The job's events up to its end (in order); the last is `job.succeeded`, `job.failed` or
/// `job.cancelled`.
async fn events_until_end(events: &mut EventsClient, job: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = events
            .next_event(Duration::from_secs(60))
            .await
            .expect("the job ends");
        if e["job_id"] != job {
            continue;
        }
        let end = ["job.succeeded", "job.failed", "job.cancelled"]
            .contains(&e["type"].as_str().unwrap_or_default());
        seen.push(e);
        if end {
            return seen;
        }
    }
}

/// A cached node's output tensor (12 MiB: a 1024² RGB image as floats) goes to a remote worker
/// as a binary input frame when a job re-runs only what follows it, and gives the same result.
async fn a_cached_tensor_reaches_a_remote_worker_as_binary(backend: Backend) {
    let models = models_with(&["image-input", "blur"]);
    let server = start(backend, &models).await;
    let admin = server.admin("Admin").await;
    let token = worker_token(&server);
    let _worker = RemoteWorker::spawn(&server, &token, &models);
    until_workers(&server, &admin.token, 1).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Tensor").await;
    let (status, media) = server
        .upload(&owner.token, noise_png(7).0, "noise.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let graph = json!({
        "nodes": {
            "in": {"type": "image-input", "x": 0, "y": 0, "params": {"media": media["id"]}},
            "soft": {"type": "blur", "x": 100, "y": 0, "params": {"radius": 1.0}},
            "out": {"type": "output", "x": 200, "y": 0, "params": {}}
        },
        "edges": {
            "e1": {"source": "in", "source_port": "image", "target": "soft", "target_port": "in"},
            "e2": {"source": "soft", "source_port": "out", "target": "out", "target_port": "image"}
        }
    });
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/sessions/{session}/graph"),
            Some(&owner.token),
            Some(graph),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    start_lease(&server, &owner.token, &session, &mut events).await;
    let first = submit(&server, &owner.token, &session).await;
    let evs = events_until_end(&mut events, &first).await;
    let end = evs.last().unwrap().clone();
    assert_eq!(end["type"], "job.succeeded", "{evs:#?}");
    // Again from the blur: the image input comes from the cache, its tensor sent to the worker.
    let second = submit_with(&server, &owner.token, &session, json!({"from": "soft"})).await;
    let evs = events_until_end(&mut events, &second).await;
    let again = evs.last().unwrap().clone();
    assert_eq!(again["type"], "job.succeeded", "{evs:#?}");
    let kinds = |kind: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["node_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds("job.node_cached"), ["in"], "{evs:#?}");
    assert_eq!(kinds("job.node_done"), ["soft"], "{evs:#?}");
    let image = |end: &Value| end["outputs"][0].as_str().unwrap().to_string();
    let (_, before) = server.media_bytes(&owner.token, &image(&end)).await;
    let (_, after) = server.media_bytes(&owner.token, &image(&again)).await;
    assert!(!before.is_empty());
    assert!(
        before == after,
        "the re-run from the cached tensor gives the same image"
    );
}

/// The server's resident memory, in KiB.
fn rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A worker connection whose client says hello, heartbeats, and never reads: a receive buffer of
/// a few KiB, so what the server writes backs up into the server's own socket at once.
async fn worker_that_never_reads(server: &TestServer, token: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/workers/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// One masked client text frame.
fn client_text(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![0x81];
    match u16::try_from(payload.len()) {
        Ok(len) if len < 126 => out.push(0x80 | len as u8),
        Ok(len) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => panic!("a short text"),
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

async fn a_worker_that_stops_reading_is_closed_as_too_slow(backend: Backend) {
    let models = image_input_models();
    let server = start(backend, &models).await;
    let admin = server.admin("Admin").await;
    let token = worker_token(&server);
    let stream = worker_that_never_reads(&server, &token).await;
    let (reader, mut writer) = stream.into_split();
    let hello = json!({"type": "hello", "name": "deaf", "version": "test",
        "devices": [{"name": "cpu", "description": "CPU", "execution_provider": "cpu"}],
        "models": ["image-input"], "gpu_class": "cpu", "slots": 1});
    writer
        .write_all(&client_text(&hello.to_string()))
        .await
        .unwrap();
    // Heartbeats keep it from being closed for silence: only not reading can close it.
    let heartbeats = tokio::spawn(async move {
        loop {
            let beat = client_text(r#"{"type":"heartbeat"}"#);
            if writer.write_all(&beat).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    until_workers(&server, &admin.token, 1).await;

    let owner = server.signup("Owner").await;
    let pngs: Vec<Vec<u8>> = (0..3).map(|i| noise_png(10 + i).0).collect();
    let input_bytes: usize = pngs.iter().map(Vec::len).sum();
    let session = session_with_images(&server, &owner, pngs).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    start_lease(&server, &owner.token, &session, &mut events).await;
    let rss_before = rss_kib(&server);
    let job = submit(&server, &owner.token, &session).await;
    job_event(&mut events, "job.started", &job).await;
    let sent = tokio::time::Instant::now();

    // Closed within the heartbeat timeout (a frame waited that long) and a bit; the job, which
    // produced nothing, is handled as a lost worker's: re-queued, or failed when the lease (which
    // had no other worker to move to) stopped first.
    let lost = loop {
        let e = events
            .next_event(Duration::from_secs(60))
            .await
            .expect("the job learns its worker is lost");
        if e["job_id"] == job.as_str()
            && ["job.requeued", "job.failed"].contains(&e["type"].as_str().unwrap())
        {
            break e;
        }
    };
    let took = sent.elapsed();
    let reason = lost["reason"].as_str().or(lost["error"].as_str()).unwrap();
    // Lost with its connection: the server closed it (the close code is checked below); the job
    // waited the reconnect grace (the heartbeat timeout) for a worker that never came back.
    assert!(reason.starts_with("worker lost"), "{lost}");
    assert!(
        took < Duration::from_secs(HEARTBEAT_TIMEOUT_S * 5),
        "closed after {took:?}"
    );
    until_workers(&server, &admin.token, 0).await;
    let rss_after = rss_kib(&server);
    println!(
        "{input_bytes} bytes of input; a worker that does not read closed after {took:?}; \
         server RSS {rss_before} KiB before the job, {rss_after} KiB after"
    );
    // The job's inputs are held once (shared by the board and the wire) and at most one frame
    // is encoded at a time: far less than a copy per queued message.
    assert!(
        rss_after.saturating_sub(rss_before) < 96 * 1024,
        "{rss_before} KiB → {rss_after} KiB"
    );

    // What the worker did get, read now: the welcome, the leases holding its slot (what a
    // reconnecting worker re-announces), the assign naming its three inputs, input frames
    // (kind 3, binary), then the close frame, 1008 "too slow…".
    heartbeats.abort();
    let mut reader = reader;
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut wire))
        .await
        .expect("the server ends the connection")
        .unwrap();
    let is_leases = |(op, payload): &(u8, Vec<u8>)| {
        *op == 0x1 && serde_json::from_slice::<Value>(payload).is_ok_and(|m| m["type"] == "leases")
    };
    let frames: Vec<_> = server_frames(&wire)
        .into_iter()
        .filter(|f| !is_leases(f))
        .collect();
    assert!(frames.len() >= 4, "{} frames", frames.len());
    assert_eq!(frames[0].0, 0x1);
    let assign: Value = serde_json::from_slice(&frames[1].1).unwrap();
    assert_eq!(assign["type"], "assign", "{assign}");
    assert_eq!(assign["inputs"].as_array().unwrap().len(), 3, "{assign}");
    assert!(assign["inputs"][0]["bytes"].as_u64().unwrap() > 3 * 1024 * 1024);
    assert!(assign.get("media").is_none(), "no base64 copy: {assign}");
    let inputs: Vec<_> = frames[2..].iter().filter(|(op, _)| *op == 0x2).collect();
    assert!(
        !inputs.is_empty() && inputs.len() < 3,
        "{} input frames",
        inputs.len()
    );
    assert!(inputs.iter().all(|(_, p)| p[0] == 3), "media input frames");
    let (op, close) = frames.last().unwrap();
    assert_eq!(*op, 0x8);
    let code = u16::from_be_bytes([close[0], close[1]]);
    let reason = String::from_utf8_lossy(&close[2..]);
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.starts_with("too slow"), "{reason}");
}

/// The frames a server wrote (unmasked, unfragmented): opcode and payload each.
fn server_frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while wire.len() >= 2 {
        let op = wire[0] & 0x0f;
        let (len, at) = match wire[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(wire[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            n => (usize::from(n), 2),
        };
        if wire.len() < at + len {
            break;
        }
        // Pings are the server's own liveness checks.
        if op != 0x9 {
            frames.push((op, wire[at..at + len].to_vec()));
        }
        wire = &wire[at + len..];
    }
    frames
}

/// A stand-in server that speaks the worker protocol to a real `atelier worker`: hostile
/// `assign`s fail their jobs with a reason, and the worker goes on taking jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_assign_fails_its_job_never_the_worker() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let models = image_input_models();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
            &format!("http://{addr}"),
            "--token",
            "atw_x",
        ])
        .args([
            "--name",
            "w",
            "--gpu-class",
            "cpu",
            "--execution-provider",
            "cpu",
        ])
        .args(["--models-dir", &models.path().display().to_string()])
        .env("RUST_LOG", "warn")
        .env(
            "ORT_DYLIB_PATH",
            std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH"),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _worker = RemoteWorker(child);
    let (stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("the worker connects")
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    // The worker's next message other than a heartbeat.
    async fn next_json<S>(ws: &mut S) -> Value
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("a message from the worker")
                .expect("open")
                .expect("readable");
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["type"] != "heartbeat" {
                    return v;
                }
            }
        }
    }
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let welcome = json!({"type": "welcome", "worker_id": uuid(), "heartbeat_interval_ms": 1000});
    ws.send(Message::text(welcome.to_string())).await.unwrap();
    let session = uuid();
    let assign = |job: &str, inputs: Value| {
        Message::text(
            json!({"type": "assign", "job_id": job, "session_id": session, "steps": [],
                   "inputs": inputs})
            .to_string(),
        )
    };
    // kind 3 frame: job id, media id, bytes.
    let media_frame = |job: &str, media: &str, data: &[u8]| {
        let mut f = vec![3u8];
        f.extend_from_slice(uuid::Uuid::parse_str(job).unwrap().as_bytes());
        f.push(media.len() as u8);
        f.extend_from_slice(media.as_bytes());
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        Message::binary(f)
    };

    // Over the worker's budget: refused before anything arrives.
    let a = uuid();
    ws.send(assign(
        &a,
        json!([{"kind": "media", "media_id": "m", "bytes": 200u64 << 20}]),
    ))
    .await
    .unwrap();
    let failed = next_json(&mut ws).await;
    assert_eq!(
        (&failed["type"], &failed["job_id"]),
        (&json!("failed"), &json!(a))
    );
    assert!(
        failed["error"].as_str().unwrap().contains("at most"),
        "{failed}"
    );

    // A frame of another size than declared; then frames of no waiting job, one unreadable.
    let b = uuid();
    ws.send(assign(
        &b,
        json!([{"kind": "media", "media_id": "m", "bytes": 10}]),
    ))
    .await
    .unwrap();
    ws.send(media_frame(&b, "m", &[0; 11])).await.unwrap();
    let failed = next_json(&mut ws).await;
    assert_eq!(failed["job_id"], b.as_str(), "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("its assign said 10"),
        "{failed}"
    );
    ws.send(media_frame(&b, "m", &[0; 10])).await.unwrap();
    ws.send(Message::binary(vec![3u8, 1, 2])).await.unwrap();
    ws.send(Message::binary(vec![1u8; 40])).await.unwrap();

    // A valid assign with a 20 MiB input (more than a WebSocket library's default frame limit):
    // assembled and run (no steps: it succeeds at once).
    let c = uuid();
    let big = vec![7u8; 20 << 20];
    ws.send(assign(
        &c,
        json!([{"kind": "media", "media_id": "m", "bytes": big.len()}]),
    ))
    .await
    .unwrap();
    ws.send(media_frame(&c, "m", &big)).await.unwrap();
    let done = next_json(&mut ws).await;
    assert_eq!(done, json!({"type": "succeeded", "job_id": c}));
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

on_both_backends!(
    a_large_image_input_reaches_a_remote_worker_as_binary,
    a_cached_tensor_reaches_a_remote_worker_as_binary,
    a_worker_that_stops_reading_is_closed_as_too_slow,
);
