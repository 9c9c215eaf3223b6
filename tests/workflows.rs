//! Workflows end to end against the real binary, its in-process worker and the real models
//! (`scripts/fetch-models`: the terrain model and the generated workflow nodes): a 6-node graph
//! from an uploaded sketch to a coloured relief, progress per node at every participant, cached
//! re-runs that use no worker and cost nothing, a changed light that re-runs only what depends
//! on it, a batch whose recorded seeds reproduce its images exactly, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Backend, EventsClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use yrs::{Any, Doc, Map, MapPrelim, ReadTxn, Transact};

const MODELS: &[&str] = &[
    "image-input",
    "terrain-refine",
    "upscale",
    "hillshade",
    "colormap",
    "blend",
    "blur",
];
const SIX: &[&str] = &["in", "refine", "up", "shade", "color", "mix"];

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("ATELIER_MODELS_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
            PathBuf::from,
        );
    for m in MODELS {
        assert!(
            dir.join(m).join("model.json").is_file(),
            "{}/{m} is missing: run scripts/fetch-models",
            dir.display()
        );
    }
    dir
}

/// A hand-drawn-like sketch: a bright ridge across a dark plain, with a soft peak.
fn sketch_png() -> Vec<u8> {
    let (w, h) = (96u32, 96u32);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let ridge = (-((fy - 0.3 - 0.4 * fx).powi(2)) / 0.01).exp();
            let peak = (-((fx - 0.7).powi(2) + (fy - 0.65).powi(2)) / 0.02).exp();
            let v = (0.15 + 0.6 * ridge + 0.8 * peak).min(1.0);
            let g = (v * 255.0) as u8;
            rgb.extend_from_slice(&[g, g, g]);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&rgb).unwrap();
    }
    out
}

/// An editor's view of the session document: edits are made here and sent as updates.
struct Editor {
    doc: Doc,
    socket: EventsClient,
    /// A second participant that sees the relayed update: the server has applied it.
    witness: EventsClient,
}

fn any_of(v: &Value) -> Any {
    match v {
        Value::Number(n) if n.is_u64() => Any::Number((n.as_u64().unwrap() as i64).into()),
        Value::Number(n) => Any::Number(n.as_f64().unwrap().into()),
        Value::String(s) => Any::from(s.as_str()),
        Value::Bool(b) => Any::Bool(*b),
        _ => Any::Null,
    }
}

impl Editor {
    /// `f` gets the root maps `nodes` and `edges` (taken before the transaction: yrs takes
    /// a root type with a transaction of its own).
    async fn edit(&mut self, f: impl FnOnce(&yrs::MapRef, &yrs::MapRef, &mut yrs::TransactionMut)) {
        let before = self.doc.transact().state_vector();
        let nodes = self.doc.get_or_insert_map("nodes");
        let edges = self.doc.get_or_insert_map("edges");
        {
            let mut txn = self.doc.transact_mut();
            f(&nodes, &edges, &mut txn);
        }
        let update = self.doc.transact().encode_state_as_update_v1(&before);
        // Updates relayed earlier (the server's own: job outputs) must not be taken for this one.
        while self
            .witness
            .wait_for_update(Duration::from_millis(100))
            .await
        {}
        self.socket.send_update(&update).await;
        assert!(
            self.witness.wait_for_update(Duration::from_secs(5)).await,
            "the server did not relay the edit"
        );
    }

    async fn add_node(&mut self, id: &str, ty: &str, params: Value) {
        self.edit(|nodes, _, txn| {
            let node = nodes.insert(txn, id, MapPrelim::default());
            node.insert(txn, "type", ty);
            node.insert(txn, "x", 0.0);
            node.insert(txn, "y", 0.0);
            let p = node.insert(txn, "params", MapPrelim::default());
            for (k, v) in params.as_object().unwrap() {
                p.insert(txn, k.as_str(), any_of(v));
            }
        })
        .await;
    }

    async fn set_param(&mut self, node: &str, key: &str, value: Value) {
        let (node, key) = (node.to_string(), key.to_string());
        self.edit(move |nodes, _, txn| {
            let Some(yrs::Out::YMap(n)) = nodes.get(txn, &node) else {
                panic!("no node {node}")
            };
            let Some(yrs::Out::YMap(p)) = n.get(txn, "params") else {
                panic!("no params")
            };
            p.insert(txn, key.as_str(), any_of(&value));
        })
        .await;
    }

    async fn add_edge(&mut self, id: &str, from: (&str, &str), to: (&str, &str)) {
        self.edit(|_, edges, txn| {
            let e = edges.insert(txn, id, MapPrelim::default());
            e.insert(txn, "source", from.0);
            e.insert(txn, "source_port", from.1);
            e.insert(txn, "target", to.0);
            e.insert(txn, "target_port", to.1);
        })
        .await;
    }

    async fn remove_edge(&mut self, id: &str) {
        let id = id.to_string();
        self.edit(move |_, edges, txn| {
            edges.remove(txn, &id);
        })
        .await;
    }
}

/// Events of one job until it ends (job.succeeded / failed / cancelled), in order.
async fn job_events(events: &mut EventsClient, job: &str, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .next_event(left)
            .await
            .unwrap_or_else(|| panic!("job {job} did not end in time; saw {out:#?}"));
        if e["job_id"] != job {
            continue;
        }
        let ty = e["type"].as_str().unwrap_or_default().to_string();
        out.push(e);
        if matches!(
            ty.as_str(),
            "job.succeeded" | "job.failed" | "job.cancelled"
        ) {
            return out;
        }
    }
}

fn nodes_with(events: &[Value], ty: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["type"] == ty)
        .map(|e| e["node_id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn run(server: &TestServer, token: &str, session: &str, body: Value) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(token),
            Some(body),
        )
        .await
}

/// Runs and returns (job id, its events seen by `events`); asserts success.
async fn run_ok(
    server: &TestServer,
    token: &str,
    session: &str,
    events: &mut EventsClient,
    body: Value,
) -> (String, Vec<Value>) {
    let (status, job) = run(server, token, session, body).await;
    assert_eq!(status, StatusCode::CREATED, "run: {job}");
    let id = job["id"].as_str().unwrap().to_string();
    let evs = job_events(events, &id, Duration::from_secs(120)).await;
    assert_eq!(
        evs.last().unwrap()["type"],
        "job.succeeded",
        "job failed: {evs:#?}"
    );
    (id, evs)
}

struct Rgb {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
}

fn decode_rgb(bytes: &[u8]) -> Rgb {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb, "the relief is RGB");
    let px = buf[..frame.buffer_size()]
        .chunks_exact(3)
        .map(|c| [c[0] as f32, c[1] as f32, c[2] as f32])
        .collect();
    Rgb {
        w: frame.width as usize,
        h: frame.height as usize,
        px,
    }
}

/// Pearson correlation of horizontally neighbouring luminances: smooth relief is near 1, noise
/// near 0.
fn neighbour_correlation(img: &Rgb) -> f64 {
    let lum = |p: &[f32; 3]| f64::from(0.3 * p[0] + 0.59 * p[1] + 0.11 * p[2]);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for y in 0..img.h {
        for x in 0..img.w - 1 {
            a.push(lum(&img.px[y * img.w + x]));
            b.push(lum(&img.px[y * img.w + x + 1]));
        }
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

async fn start_runtime(server: &TestServer, token: &str, session: &str, events: &mut EventsClient) {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "runtime: {body}");
    events
        .wait_for("runtime.started", Duration::from_secs(10))
        .await;
}

async fn stop_runtime(server: &TestServer, token: &str, session: &str) {
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "stop runtime: {body}");
}

/// The "done when" graph: image-input (the sketch) → terrain-refine → upscale ×4 → hillshade
/// and colormap → blend (multiply) → output.
async fn build_six(editor: &mut Editor, sketch: &str) {
    editor
        .add_node("in", "image-input", json!({"media": sketch}))
        .await;
    editor
        .add_node(
            "refine",
            "terrain-refine",
            json!({"strength": 0.65, "difficulty": 15, "seed": 42}),
        )
        .await;
    editor.add_node("up", "upscale", json!({"factor": 4})).await;
    editor
        .add_node(
            "shade",
            "hillshade",
            json!({"azimuth": 315, "altitude": 40, "z_factor": 60}),
        )
        .await;
    editor.add_node("color", "colormap", json!({})).await;
    editor
        .add_node("mix", "blend", json!({"factor": 0.85, "mode": 1}))
        .await;
    editor.add_node("out", "output", json!({})).await;
    editor
        .add_edge("e1", ("in", "heightmap"), ("refine", "heightmap"))
        .await;
    editor
        .add_edge("e2", ("refine", "heightmap"), ("up", "in"))
        .await;
    editor
        .add_edge("e3", ("up", "out"), ("shade", "heightmap"))
        .await;
    editor
        .add_edge("e4", ("up", "out"), ("color", "heightmap"))
        .await;
    editor
        .add_edge("e5", ("color", "image"), ("mix", "a"))
        .await;
    editor
        .add_edge("e6", ("shade", "image"), ("mix", "b"))
        .await;
    editor
        .add_edge("e7", ("mix", "out"), ("out", "image"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_node_workflow_caches_batches_and_refuses() {
    let models = models_dir();
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            "--models-dir",
            models.to_str().unwrap(),
            "--in-process-worker",
            "on",
            "--execution-provider",
            "cpu",
            "--signup-credits",
            "100000",
        ],
    )
    .await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "relief").await;
    let mut events = EventsClient::connect(&server, &session, &ada.token).await;
    let (_, link_token) = server.share_link(&ada.token, &session, None).await;
    let mut viewer = EventsClient::connect(&server, &session, &link_token).await;
    let mut editor = Editor {
        doc: Doc::new(),
        socket: EventsClient::connect(&server, &session, &ada.token).await,
        witness: EventsClient::connect(&server, &session, &ada.token).await,
    };

    // GET /node-types: typed ports; the tiny test model is not in the palette.
    let (status, types) = server.call(Method::GET, "/node-types", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let by_name: BTreeMap<&str, &Value> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t))
        .collect();
    assert_eq!(by_name["hillshade"]["inputs"][0]["type"], "heightmap");
    assert_eq!(by_name["hillshade"]["outputs"][0]["type"], "image");
    assert_eq!(by_name["blend"]["inputs"][2]["optional"], true);
    assert_eq!(by_name["terrain-refine"]["stochastic"], true);
    assert_eq!(by_name["upscale"]["stochastic"], false);
    assert!(by_name["terrain"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["name"] != "steps"));

    let (status, media) = server
        .upload(&ada.token, sketch_png(), "sketch.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED, "upload: {media}");
    let sketch = media["id"].as_str().unwrap().to_string();

    build_six(&mut editor, &sketch).await;
    // Feeds no output: never runs.
    editor.add_node("stray", "blur", json!({})).await;
    editor
        .add_edge("e8", ("in", "image"), ("stray", "in"))
        .await;

    // Without a runtime, a graph that has to run is refused (402).
    let (status, body) = run(&server, &ada.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");

    // 1. Cold run: every node runs, with progress, at every participant.
    start_runtime(&server, &ada.token, &session, &mut events).await;
    let started = Instant::now();
    let (job, evs) = run_ok(&server, &ada.token, &session, &mut events, json!({})).await;
    let cold = started.elapsed();
    assert_eq!(nodes_with(&evs, "job.node_done"), set(SIX), "{evs:#?}");
    assert_eq!(nodes_with(&evs, "job.progress"), set(SIX));
    assert!(nodes_with(&evs, "job.node_cached").is_empty());
    let seen_by_viewer = job_events(&mut viewer, &job, Duration::from_secs(30)).await;
    assert_eq!(nodes_with(&seen_by_viewer, "job.progress"), set(SIX));
    assert_eq!(nodes_with(&seen_by_viewer, "job.node_done"), set(SIX));
    let outputs = evs.last().unwrap()["outputs"].as_array().unwrap().clone();
    assert_eq!(outputs.len(), 1, "one output: the blend");
    let (status, relief) = server
        .media_bytes(&ada.token, outputs[0].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workflow-relief.png");
    std::fs::write(&shot, &relief).unwrap();
    println!("saved {}", shot.display());
    let img = decode_rgb(&relief);
    assert_eq!((img.w, img.h), (512, 512), "128² terrain upscaled ×4");
    // Plausible coloured relief: smooth, not flat, and coloured (channels differ).
    let corr = neighbour_correlation(&img);
    let mean = |c: usize| img.px.iter().map(|p| f64::from(p[c])).sum::<f64>() / img.px.len() as f64;
    let (r, g, b) = (mean(0), mean(1), mean(2));
    let lum_sd = {
        let l: Vec<f64> = img
            .px
            .iter()
            .map(|p| f64::from(p[0] + p[1] + p[2]) / 3.0)
            .collect();
        let m = l.iter().sum::<f64>() / l.len() as f64;
        (l.iter().map(|v| (v - m).powi(2)).sum::<f64>() / l.len() as f64).sqrt()
    };
    println!("relief: neighbour correlation {corr:.3}, mean rgb ({r:.0}, {g:.0}, {b:.0}), sd {lum_sd:.1}, cold {cold:?}");
    assert!(corr > 0.85, "smooth relief, not noise: {corr}");
    assert!(lum_sd > 8.0, "not flat: {lum_sd}");
    assert!((r - b).abs() > 5.0 || (g - b).abs() > 5.0, "coloured");
    let record = server
        .call(Method::GET, &format!("/jobs/{job}"), Some(&ada.token), None)
        .await
        .1;
    let refine_seed = |rec: &Value| {
        rec["plan"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["node_id"] == "refine")
            .unwrap()["seed"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(refine_seed(&record), 42);
    assert!(record["plan"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["node_id"] != "stray"));

    // 2. Unchanged re-run, runtime stopped: every node cached, no worker, no charge.
    stop_runtime(&server, &ada.token, &session).await;
    let before = server.balance(&ada.token).await;
    let started = Instant::now();
    let (cached_job, evs) = run_ok(&server, &ada.token, &session, &mut events, json!({})).await;
    let warm = started.elapsed();
    println!("6-node graph: cold {cold:?}, all cached {warm:?}");
    assert_eq!(nodes_with(&evs, "job.node_cached"), set(SIX));
    assert!(nodes_with(&evs, "job.node_done").is_empty());
    assert!(!evs.iter().any(|e| e["type"] == "job.started"));
    assert_eq!(evs.last().unwrap()["outputs"], json!(outputs));
    let record = server
        .call(
            Method::GET,
            &format!("/jobs/{cached_job}"),
            Some(&ada.token),
            None,
        )
        .await
        .1;
    assert!(record["worker_id"].is_null(), "{record}");
    assert_eq!(server.balance(&ada.token).await, before, "nothing charged");

    // 3. Only the light changes: hillshade and blend run, the rest is cached.
    editor.set_param("shade", "azimuth", json!(135)).await;
    start_runtime(&server, &ada.token, &session, &mut events).await;
    let (_, evs) = run_ok(&server, &ada.token, &session, &mut events, json!({})).await;
    assert_eq!(nodes_with(&evs, "job.node_done"), set(&["shade", "mix"]));
    assert_eq!(
        nodes_with(&evs, "job.node_cached"),
        set(&["in", "refine", "up", "color"])
    );

    // 4. A batch of 4: different images, recorded seeds 42..45; a seed copied back into the
    // graph reproduces its image exactly (run from that node, so it is computed again).
    let (status, batch) = run(&server, &ada.token, &session, json!({"batch": 4})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let jobs = batch["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 4);
    let mut images = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(refine_seed(j), 42 + i as u64);
        let id = j["id"].as_str().unwrap();
        let evs = job_events(&mut events, id, Duration::from_secs(120)).await;
        assert_eq!(evs.last().unwrap()["type"], "job.succeeded", "{evs:#?}");
        let media = evs.last().unwrap()["outputs"][0]
            .as_str()
            .unwrap()
            .to_string();
        images.push(server.media_bytes(&ada.token, &media).await.1);
    }
    let distinct: BTreeSet<&Vec<u8>> = images.iter().collect();
    assert_eq!(distinct.len(), 4, "4 different outputs");
    editor.set_param("refine", "seed", json!(44)).await;
    let (_, evs) = run_ok(
        &server,
        &ada.token,
        &session,
        &mut events,
        json!({"from": "refine"}),
    )
    .await;
    assert_eq!(
        nodes_with(&evs, "job.node_done"),
        set(&["refine", "up", "shade", "color", "mix"])
    );
    let media = evs.last().unwrap()["outputs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let again = server.media_bytes(&ada.token, &media).await.1;
    assert!(again == images[2], "seed 44 reproduces variation 2 exactly");

    // 5. Refusals, naming the edge or the node.
    editor.add_node("bad", "hillshade", json!({})).await;
    editor
        .add_edge("ebad", ("in", "image"), ("bad", "heightmap"))
        .await;
    let (status, body) = run(&server, &ada.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("edge ebad") && msg.contains("image"), "{msg}");
    editor.remove_edge("ebad").await;
    editor
        .add_edge("ebad2", ("up", "out"), ("bad", "heightmap"))
        .await;

    editor
        .set_param("in", "media", json!(uuid::Uuid::new_v4().to_string()))
        .await;
    let (status, body) = run(&server, &ada.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node in"),
        "{body}"
    );

    let bob = server.signup("Bob").await;
    let bobs = server.create_session(&bob.token, "bob's").await;
    let (_, theirs) = server
        .upload(&bob.token, sketch_png(), "mine.png", Some(&bobs))
        .await;
    editor
        .set_param("in", "media", json!(theirs["id"].as_str().unwrap()))
        .await;
    let (status, body) = run(&server, &ada.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node in"),
        "{body}"
    );

    // Out-of-range parameters are refused naming the node.
    editor.set_param("in", "media", json!(sketch)).await;
    editor.set_param("up", "factor", json!(8)).await;
    let (status, body) = run(&server, &ada.token, &session, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node up"),
        "{body}"
    );
}

/// The bench row: the 6-node graph's wall time cold (every node forced to run) and all cached,
/// and the per-node overhead beyond the ONNX Runtime run. Not run by default:
/// `cargo test --release --test workflows -- --ignored --nocapture` (scripts/bench runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_six_node_graph() {
    let models = models_dir();
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            "--models-dir",
            models.to_str().unwrap(),
            "--in-process-worker",
            "on",
            "--execution-provider",
            "cpu",
            "--signup-credits",
            "1000000",
        ],
    )
    .await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "bench").await;
    let mut events = EventsClient::connect(&server, &session, &ada.token).await;
    let mut editor = Editor {
        doc: Doc::new(),
        socket: EventsClient::connect(&server, &session, &ada.token).await,
        witness: EventsClient::connect(&server, &session, &ada.token).await,
    };
    let (_, media) = server
        .upload(&ada.token, sketch_png(), "sketch.png", Some(&session))
        .await;
    build_six(&mut editor, media["id"].as_str().unwrap()).await;
    start_runtime(&server, &ada.token, &session, &mut events).await;
    let rounds = 5;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("| 6-node graph, CPU, median of {rounds} | cold (every node runs) | all cached | per node beyond ONNX Runtime: on the worker / end to end |");
    println!("|---|---|---|---|");
    for factor in [4, 2] {
        editor.set_param("up", "factor", json!(factor)).await;
        let size = 128 * factor;
        let (mut cold, mut warm, mut overhead_worker, mut overhead_e2e) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            let (_, evs) = run_ok(
                &server,
                &ada.token,
                &session,
                &mut events,
                json!({"from": "in"}),
            )
            .await;
            let wall = t.elapsed().as_secs_f64() * 1000.0;
            let done: Vec<&Value> = evs
                .iter()
                .filter(|e| e["type"] == "job.node_done")
                .collect();
            assert_eq!(done.len(), 6);
            let inference: f64 = done
                .iter()
                .map(|e| e["inference_ms"].as_f64().unwrap())
                .sum();
            let worker: f64 = done.iter().map(|e| e["worker_ms"].as_f64().unwrap()).sum();
            cold.push(wall);
            overhead_worker.push((worker - inference) / 6.0);
            overhead_e2e.push((wall - inference) / 6.0);
            let t = Instant::now();
            let (_, evs) = run_ok(&server, &ada.token, &session, &mut events, json!({})).await;
            assert_eq!(nodes_with(&evs, "job.node_cached").len(), 6);
            warm.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "| sketch → 128² terrain → {size}² relief | {:.0} ms | {:.1} ms | {:.1} ms / {:.1} ms |",
            median(&mut cold),
            median(&mut warm),
            median(&mut overhead_worker),
            median(&mut overhead_e2e)
        );
    }
}

/// A models directory with the repository's manifests (`models-manifests/`) over the model
/// files of `models_dir()`: what `scripts/fetch-models` would install from this checkout.
fn repo_manifest_models_dir() -> tempfile::TempDir {
    let src = models_dir();
    let manifests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models-manifests");
    let tmp = tempfile::tempdir().unwrap();
    for model in std::fs::read_dir(&src).unwrap() {
        let model = model.unwrap();
        if !model.path().is_dir() {
            continue;
        }
        let name = model.file_name();
        let dst = tmp.path().join(&name);
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(model.path()).unwrap() {
            let f = f.unwrap();
            if f.file_name() != "model.json" {
                let target = std::fs::canonicalize(f.path()).unwrap();
                std::os::unix::fs::symlink(target, dst.join(f.file_name())).unwrap();
            }
        }
        let manifest = manifests.join(format!("{}.json", name.to_string_lossy()));
        let manifest = if manifest.is_file() {
            manifest
        } else {
            model.path().join("model.json")
        };
        std::fs::copy(manifest, dst.join("model.json")).unwrap();
    }
    tmp
}

/// A 16-bit heightmap PNG as heights (its `value_min`/`value_max` text chunks undo the
/// normalisation), with its size.
fn decode_heights(bytes: &[u8]) -> (usize, usize, Vec<f64>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let text = |key: &str| -> f64 {
        reader
            .info()
            .uncompressed_latin1_text
            .iter()
            .find(|t| t.keyword == key)
            .unwrap_or_else(|| panic!("no {key} chunk"))
            .text
            .parse()
            .unwrap()
    };
    let (min, max) = (text("value_min"), text("value_max"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.bit_depth, png::BitDepth::Sixteen);
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let heights = buf[..frame.buffer_size()]
        .chunks_exact(2)
        .map(|b| f64::from(u16::from_be_bytes([b[0], b[1]])) / 65535.0 * (max - min) + min)
        .collect();
    (frame.width as usize, frame.height as usize, heights)
}

/// Mean |h(x+1) - h(x)| over the rows, between columns `x` and `x + 1`.
fn column_step(w: usize, h: &[f64], x: usize) -> f64 {
    let rows = h.len() / w;
    (0..rows)
        .map(|y| (h[y * w + x + 1] - h[y * w + x]).abs())
        .sum::<f64>()
        / rows as f64
}

/// `terrain` above the model's 128²: overlapping tiles blended at their seams, one progress
/// event per tile, seams as smooth as the terrain itself (where two independent 128² tiles put
/// side by side — naive tiling — jump); sizes that are not whole tiles or too large refused
/// before anything runs, naming the node and the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_terrain_is_tiled_with_smooth_seams() {
    let models = repo_manifest_models_dir();
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            "--models-dir",
            models.path().to_str().unwrap(),
            "--in-process-worker",
            "on",
            "--execution-provider",
            "cpu",
            "--signup-credits",
            "100000",
        ],
    )
    .await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "big").await;
    let mut events = EventsClient::connect(&server, &session, &ada.token).await;
    let mut editor = Editor {
        doc: Doc::new(),
        socket: EventsClient::connect(&server, &session, &ada.token).await,
        witness: EventsClient::connect(&server, &session, &ada.token).await,
    };
    let (_, types) = server.call(Method::GET, "/node-types", None, None).await;
    let terrain = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "terrain")
        .unwrap()
        .clone();
    let width = terrain["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "width")
        .unwrap();
    assert_eq!(
        (&width["min"], &width["max"], &width["multiple_of"]),
        (&json!(128.0), &json!(512.0), &json!(64))
    );

    editor
        .add_node(
            "t",
            "terrain",
            json!({"width": 256, "height": 256, "difficulty": 60, "seed": 7}),
        )
        .await;
    editor.add_node("out", "output", json!({})).await;
    editor
        .add_edge("e1", ("t", "heightmap"), ("out", "image"))
        .await;

    // Refused at validation, before anything runs: not whole tiles, too large.
    start_runtime(&server, &ada.token, &session, &mut events).await;
    for (key, value, says) in [
        ("width", 200, "multiple of 64, got 200"),
        ("height", 1024, "between 128 and 512, got 1024"),
    ] {
        editor.set_param("t", key, json!(value)).await;
        let (status, body) = run(&server, &ada.token, &session, json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("node t") && msg.contains(key) && msg.contains(says),
            "{msg}"
        );
        editor.set_param("t", key, json!(256)).await;
    }

    let (_, evs) = run_ok(&server, &ada.token, &session, &mut events, json!({})).await;
    let progress: Vec<(u64, u64)> = evs
        .iter()
        .filter(|e| e["type"] == "job.progress")
        .map(|e| (e["step"].as_u64().unwrap(), e["total"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        progress,
        (1..=9).map(|i| (i, 9)).collect::<Vec<_>>(),
        "one progress event per tile of the 3x3 grid"
    );
    let inference_ms = |evs: &[Value]| {
        evs.iter()
            .find(|e| e["type"] == "job.node_done")
            .and_then(|e| e["inference_ms"].as_f64())
            .unwrap()
    };
    let big_ms = inference_ms(&evs);
    let media = evs.last().unwrap()["outputs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (status, png) = server.media_bytes(&ada.token, &media).await;
    assert_eq!(status, StatusCode::OK);
    let (w, h, big) = decode_heights(&png);
    assert_eq!((w, h), (256, 256));

    // Naive tiling's seam, for comparison: the last column of one 128² terrain against the
    // first of another (a batch of two seeds).
    editor.set_param("t", "width", json!(128)).await;
    editor.set_param("t", "height", json!(128)).await;
    let (status, batch) = run(&server, &ada.token, &session, json!({"batch": 2})).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let mut tiles = Vec::new();
    let batch_jobs = batch["jobs"].as_array().unwrap();
    // A batch's jobs record their batch and place in it (the studio's grid reads them).
    assert_eq!(batch_jobs[0]["batch"]["index"], 0);
    assert_eq!(batch_jobs[1]["batch"]["index"], 1);
    assert!(batch_jobs[0]["batch"]["id"].is_string());
    assert_eq!(batch_jobs[0]["batch"]["id"], batch_jobs[1]["batch"]["id"]);
    for j in batch_jobs {
        let evs = job_events(
            &mut events,
            j["id"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(evs.last().unwrap()["type"], "job.succeeded", "{evs:#?}");
        assert_eq!(
            evs.iter().filter(|e| e["type"] == "job.progress").count(),
            1,
            "128² is one model run"
        );
        println!(
            "terrain in ONNX Runtime: 256² (9 tiles) {big_ms:.0} ms, 128² {:.0} ms",
            inference_ms(&evs)
        );
        let id = evs.last().unwrap()["outputs"][0]
            .as_str()
            .unwrap()
            .to_string();
        let (tw, th, heights) = decode_heights(&server.media_bytes(&ada.token, &id).await.1);
        assert_eq!((tw, th), (128, 128));
        tiles.push(heights);
    }
    let (_, listed) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/jobs"),
            Some(&ada.token),
            None,
        )
        .await;
    let batches: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["batch"])
        .collect();
    assert_eq!(
        batches.iter().filter(|b| b.is_null()).count(),
        1,
        "the single run has no batch: {batches:?}"
    );
    assert_eq!(
        batches
            .iter()
            .filter(|b| b["id"] == batch_jobs[0]["batch"]["id"])
            .count(),
        2
    );
    let naive_seam = (0..128)
        .map(|y| (tiles[0][y * 128 + 127] - tiles[1][y * 128]).abs())
        .sum::<f64>()
        / 128.0;
    let naive_interior = (0..127)
        .map(|x| column_step(128, &tiles[0], x))
        .sum::<f64>()
        / 127.0;

    let interior = (0..w - 1).map(|x| column_step(w, &big, x)).sum::<f64>() / (w - 1) as f64;
    // The columns where tiles begin and end (tiles at 0, 64 and 128).
    let seams: Vec<f64> = [63, 127, 191]
        .iter()
        .map(|&x| column_step(w, &big, x))
        .collect();
    println!(
        "256² terrain: neighbour step {interior:.4} m, at tile edges {seams:.4?} m; naive tiling: \
         {naive_seam:.4} m at the seam, {naive_interior:.4} m inside"
    );
    assert!(interior > 0.0, "not flat");
    for s in &seams {
        assert!(*s < 2.0 * interior, "seam step {s} vs interior {interior}");
    }
    assert!(
        naive_seam > 2.0 * naive_interior,
        "the comparison is meaningful: naive tiling jumps ({naive_seam} vs {naive_interior})"
    );
}
