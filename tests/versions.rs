//! Version history against the real binary, on SQLite and PostgreSQL: automatic versions after
//! a burst of editing settles, named versions, one per job run (its graph is what ran), diff,
//! restore (and its undo), compaction and restarts keep versions, viewers and share links
//! cannot name or restore, and the per-session storage bound evicts automatic versions first.
//! (A restore converging with two stock Yjs clients editing meanwhile is tested with
//! y-websocket in `tests/node/test/versions.test.mjs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{error_code, Backend, EventsClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn graph(steps: u32) -> Value {
    json!({
        "nodes": {
            "tiny": {"type": "tiny-denoiser", "x": 10, "y": 20, "params": {"steps": steps}},
            "out": {"type": "output", "x": 300, "y": 20, "params": {}}
        },
        "edges": {
            "e1": {"source": "tiny", "source_port": "image", "target": "out", "target_port": "image"}
        }
    })
}

async fn put_graph(server: &TestServer, token: &str, session: &str, graph: &Value) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/sessions/{session}/graph"),
            Some(token),
            Some(graph.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "put graph: {body}");
}

async fn live_graph(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/graph"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    json!({"nodes": body["nodes"], "edges": body["edges"]})
}

async fn versions(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/versions"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the newest version is an automatic one showing `want`.
async fn await_auto_version(
    server: &TestServer,
    token: &str,
    session: &str,
    want: &Value,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = versions(server, token, session).await;
        if let Some(newest) = list["versions"].as_array().and_then(|v| v.first()) {
            if newest["kind"] == "auto" {
                let id = newest["id"].as_str().unwrap();
                let (_, content) = version(server, token, session, id).await;
                if &content["graph"] == want {
                    return newest.clone();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no automatic version of {want} came: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn version(server: &TestServer, token: &str, session: &str, id: &str) -> (StatusCode, Value) {
    server
        .call(
            Method::GET,
            &format!("/sessions/{session}/versions/{id}"),
            Some(token),
            None,
        )
        .await
}

async fn name_version(
    server: &TestServer,
    token: &str,
    session: &str,
    name: &str,
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/sessions/{session}/versions"),
            Some(token),
            Some(json!({"name": name})),
        )
        .await
}

const FAST_VERSIONS: [&str; 6] = [
    "--version-settle-ms",
    "150",
    // Every stored update is compacted into the snapshot at once: versions must not depend on
    // the update log.
    "--compact-every-updates",
    "1",
    "--compact-interval-s",
    "1",
];

async fn versions_by_every_trigger(backend: Backend) {
    let mut args: Vec<String> = common::in_process_worker_args();
    args.extend(FAST_VERSIONS.iter().map(|s| s.to_string()));
    args.extend(["--signup-credits".to_string(), "100000".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let viewer = server.signup("Viewer").await;
    let session = server.create_session(&owner.token, "History").await;
    server
        .add_member(&owner.token, &session, &viewer, "viewer")
        .await;
    let (_, link) = server.share_link(&owner.token, &session, None).await;

    // 1. Automatic: editing settles, a version appears, made by the editor.
    let g1 = graph(2);
    put_graph(&server, &owner.token, &session, &g1).await;
    let auto = await_auto_version(&server, &owner.token, &session, &g1).await;
    assert_eq!(auto["created_by"]["account_id"], owner.id.as_str());
    assert_eq!(auto["created_by"]["name"], "Owner");

    // 2. Named, by an editor; refused to a viewer and a share link (403), bad names 400.
    let (status, named) = name_version(&server, &owner.token, &session, "first draft").await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    assert_eq!(named["kind"], "named");
    assert_eq!(named["name"], "first draft");
    for token in [&viewer.token, &link] {
        let (status, body) = name_version(&server, token, &session, "nope").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = name_version(&server, &owner.token, &session, " ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let named_id = named["id"].as_str().unwrap().to_string();

    // 3. A job run records the version it ran; its graph is what ran.
    let g2 = graph(3);
    put_graph(&server, &owner.token, &session, &g2).await;
    let mut events = EventsClient::connect(&server, &session, &owner.token).await;
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "runtime: {body}");
    events
        .wait_for("runtime.started", Duration::from_secs(10))
        .await;
    let (status, job) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let job_version = job["version_id"]
        .as_str()
        .expect("the job's version")
        .to_string();
    let (status, fetched) = server
        .call(
            Method::GET,
            &format!("/jobs/{job_id}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["version_id"], job_version.as_str());
    let (status, ran) = version(&server, &viewer.token, &session, &job_version).await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["kind"], "job");
    assert_eq!(ran["graph"], g2);
    assert_eq!(ran["jobs"], json!([job_id]));
    let plan_nodes: Vec<&str> = job["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node_id"].as_str().unwrap())
        .collect();
    assert!(plan_nodes.contains(&"tiny"), "{job}");
    assert!(!ran["state"].as_str().unwrap().is_empty());
    // The state alone, as bytes.
    let bytes = server
        .client
        .get(server.api(&format!("/sessions/{session}/versions/{job_version}")))
        .bearer_auth(&owner.token)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.status(), StatusCode::OK);
    assert!(bytes.bytes().await.unwrap().len() > 50);

    // 4. Diff: the param that changed, nothing else.
    let (status, diff) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/versions/{named_id}/diff/{job_version}"),
            Some(&viewer.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["nodes"]["added"], json!({}));
    assert_eq!(diff["nodes"]["removed"], json!({}));
    assert_eq!(
        diff["nodes"]["changed"],
        json!([{"id": "tiny", "fields": [], "params": [{"name": "steps", "before": 2, "after": 3}]}])
    );
    assert_eq!(diff["edges"]["changed"], json!([]));

    // 5. Restore: viewers and share links cannot; an editor can, and the live graph is the
    // version's; the restore is a version, and its undo brings the graph back.
    let restore_path = format!("/sessions/{session}/versions/{named_id}/restore");
    for token in [&viewer.token, &link] {
        let (status, body) = server
            .call(Method::POST, &restore_path, Some(token), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, restored) = server
        .call(Method::POST, &restore_path, Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{restored}");
    assert_eq!(restored["version"]["kind"], "restore");
    assert_eq!(restored["version"]["restored_from"], named_id.as_str());
    assert_eq!(live_graph(&server, &owner.token, &session).await, g1);
    let undo = restored["undo"].as_str().unwrap().to_string();
    let (_, before) = version(&server, &owner.token, &session, &undo).await;
    assert_eq!(before["graph"], g2);
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/versions/{undo}/restore"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(live_graph(&server, &owner.token, &session).await, g2);

    // The list: newest first, every kind, with who and when, and the storage used.
    let list = versions(&server, &viewer.token, &session).await;
    let kinds: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    for kind in ["auto", "named", "job", "restore"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let times: Vec<i64> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    assert!(list["storage"]["bytes"].as_i64().unwrap() > 0);
    assert_eq!(
        list["storage"]["versions"].as_u64().unwrap() as usize,
        kinds.len()
    );
    // Paging.
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/versions?limit=2&offset=1"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["versions"].as_array().unwrap().len(), 2);
    assert_eq!(page["versions"][0]["id"], list["versions"][1]["id"]);
    assert_eq!(page["next_offset"], 3);
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/versions?limit=0"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Someone else's version id, or none: 404.
    let (status, body) = version(
        &server,
        &owner.token,
        &session,
        &uuid::Uuid::new_v4().to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");

    // 6. A restart keeps every version (the document was compacted all along).
    drop(events);
    server.kill();
    server.spawn(&args);
    let after = versions(&server, &owner.token, &session).await;
    assert_eq!(after["versions"], list["versions"]);
    let (_, first) = version(&server, &owner.token, &session, &named_id).await;
    assert_eq!(first["graph"], g1);
    let (status, job_after) = server
        .call(
            Method::GET,
            &format!("/jobs/{job_id}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job_after["version_id"], job_version.as_str());
}

async fn storage_is_bounded(backend: Backend) {
    let models = common::tiny_models_dir();
    let models_dir = models.path().display().to_string();
    // About four small graphs' worth.
    let server = TestServer::start_with(
        backend,
        &[
            "--models-dir",
            &models_dir,
            "--in-process-worker",
            "off",
            "--version-settle-ms",
            "100",
            "--versions-max-bytes-per-session",
            "1200",
        ],
    )
    .await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Bounded").await;
    for steps in 1..=8 {
        let g = graph(steps);
        put_graph(&server, &owner.token, &session, &g).await;
        await_auto_version(&server, &owner.token, &session, &g).await;
    }
    let list = versions(&server, &owner.token, &session).await;
    let bytes = list["storage"]["bytes"].as_i64().unwrap();
    assert!(bytes <= 1200, "{list:#}");
    assert_eq!(list["storage"]["max_bytes"], 1200);
    let kept = list["versions"].as_array().unwrap().len();
    assert!(
        (1..8).contains(&kept),
        "oldest automatic versions evicted: {list:#}"
    );
    // The newest survive.
    let (_, newest) = version(
        &server,
        &owner.token,
        &session,
        list["versions"][0]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(newest["graph"], graph(8));
    // Named versions evict automatic ones, and are refused once only named ones are left.
    let mut refused = None;
    for i in 0..20 {
        let mut g = graph(8);
        g["nodes"]["tiny"]["x"] = json!(1000 + i);
        put_graph(&server, &owner.token, &session, &g).await;
        let (status, body) = name_version(&server, &owner.token, &session, &format!("v{i}")).await;
        if status != StatusCode::CREATED {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("named versions are bounded too");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let list = versions(&server, &owner.token, &session).await;
    assert!(list["storage"]["bytes"].as_i64().unwrap() <= 1200);
    assert!(list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["kind"] == "named"));
}

on_both_backends!(versions_by_every_trigger, storage_is_bounded);
