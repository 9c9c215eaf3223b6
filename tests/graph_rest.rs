//! The session graph over REST against the real binary: read with its version, replaced with
//! `PUT`, changed with a JSON Merge Patch, conditional on `If-Match` (412), validated as jobs are,
//! and refused to those who may not edit. (That a `PATCH` reaches a live stock Yjs client at
//! once is tested with y-websocket in `tests/node/test/graph-rest.test.mjs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_code, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn graph() -> Value {
    json!({
        "nodes": {
            "tiny": {"type": "tiny-denoiser", "x": 10, "y": 20, "params": {"steps": 2}},
            "out": {"type": "output", "x": 300, "y": 20, "params": {}}
        },
        "edges": {
            "e1": {"source": "tiny", "source_port": "image", "target": "out", "target_port": "image"}
        }
    })
}

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<(&str, Value)>,
    if_match: Option<&str>,
) -> Answer {
    let mut req = server
        .client
        .request(method, server.api(path))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        req = req
            .header("content-type", content_type)
            .body(body.to_string());
    }
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.json().await.unwrap_or(Value::Null);
    Answer { status, etag, body }
}

async fn graph_over_rest(backend: Backend) {
    // The tiny denoiser's node type, without running a worker.
    let models = common::tiny_models_dir();
    let models_dir = models.path().display().to_string();
    let server = TestServer::start_with(
        backend,
        &["--models-dir", &models_dir, "--in-process-worker", "off"],
    )
    .await;
    let owner = server.signup("Owner").await;
    let viewer = server.signup("Viewer").await;
    let session = server.create_session(&owner.token, "Graph").await;
    server
        .add_member(&owner.token, &session, &viewer, "viewer")
        .await;
    let path = format!("/sessions/{session}/graph");

    // An empty graph, with a version.
    let empty = send(&server, Method::GET, &path, &owner.token, None, None).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body["nodes"], json!({}));
    let v0 = empty.body["version"].as_str().unwrap().to_string();
    assert_eq!(empty.etag.as_deref(), Some(format!("\"{v0}\"").as_str()));

    // PUT replaces it.
    let put = send(
        &server,
        Method::PUT,
        &path,
        &owner.token,
        Some(("application/json", graph())),
        Some(&format!("\"{v0}\"")),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["nodes"], graph()["nodes"]);
    assert_eq!(put.body["edges"], graph()["edges"]);
    let v1 = put.body["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v0);
    let read = send(&server, Method::GET, &path, &viewer.token, None, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["nodes"], graph()["nodes"]);
    assert_eq!(read.body["version"], json!(v1));

    // A merge patch: one param changes, a field goes, the rest stays.
    let patch = json!({"nodes": {"tiny": {"params": {"steps": 3}, "y": null}}});
    let patched = send(
        &server,
        Method::PATCH,
        &path,
        &owner.token,
        Some(("application/merge-patch+json", patch)),
        Some(&format!("\"{v1}\"")),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        patched.body["nodes"]["tiny"],
        json!({"type": "tiny-denoiser", "x": 10, "params": {"steps": 3}})
    );
    assert_eq!(patched.body["nodes"]["out"], graph()["nodes"]["out"]);
    let v2 = patched.body["version"].as_str().unwrap().to_string();

    // A write against an old version: 412, nothing changes.
    let stale = send(
        &server,
        Method::PATCH,
        &path,
        &owner.token,
        Some((
            "application/merge-patch+json",
            json!({"nodes": {"tiny": {"x": 99}}}),
        )),
        Some(&format!("\"{v1}\"")),
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(error_code(&stale.body), "precondition_failed");
    let now = send(&server, Method::GET, &path, &owner.token, None, None).await;
    assert_eq!(now.body["version"], json!(v2));
    assert_eq!(now.body["nodes"]["tiny"]["x"], json!(10));

    // Validation as for jobs: the result must be a graph that runs.
    for (bad, why) in [
        (
            json!({"nodes": {"x": {"type": "nope"}}}),
            "unknown node type",
        ),
        (
            json!({"edges": {"e1": {"target_port": "nothing"}}}),
            "no input port",
        ),
        (json!({"nodes": {"tiny": {"params": "steps"}}}), "params"),
        (json!({"meta": {"title": "x"}}), "only nodes and edges"),
        (json!([1, 2]), "JSON object"),
    ] {
        let res = send(
            &server,
            Method::PATCH,
            &path,
            &owner.token,
            Some(("application/merge-patch+json", bad.clone())),
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}: {}", res.body);
        let message = res.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{bad}: {message}");
    }
    let res = send(
        &server,
        Method::PATCH,
        &path,
        &owner.token,
        Some(("text/plain", json!({}))),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A body past the JSON limit is 413 in the error shape, whatever its size.
    for size in [100 * 1024, 1024 * 1024] {
        let huge = json!({"nodes": {"tiny": {"params": {"prompt": "x".repeat(size)}}}});
        let res = send(
            &server,
            Method::PATCH,
            &path,
            &owner.token,
            Some(("application/merge-patch+json", huge)),
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{size}");
        assert_eq!(error_code(&res.body), "payload_too_large");
    }

    // Who may write: not a viewer, not a read-only key; a write key may.
    let patch = json!({"nodes": {"tiny": {"x": 42}}});
    let res = send(
        &server,
        Method::PATCH,
        &path,
        &viewer.token,
        Some(("application/merge-patch+json", patch.clone())),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let (_, read_key) = server.api_key(&owner.token, &["sessions:read"]).await;
    let res = send(
        &server,
        Method::PATCH,
        &path,
        &read_key,
        Some(("application/merge-patch+json", patch.clone())),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&res.body), "insufficient_scope");
    assert_eq!(
        send(&server, Method::GET, &path, &read_key, None, None)
            .await
            .status,
        StatusCode::OK
    );
    let (_, write_key) = server
        .api_key(&owner.token, &["sessions:read", "sessions:write"])
        .await;
    let res = send(
        &server,
        Method::PATCH,
        &path,
        &write_key,
        Some(("application/merge-patch+json", patch)),
        Some("*"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.body["nodes"]["tiny"]["x"], json!(42));

    // A session nobody may see does not exist.
    let stranger = server.signup("Stranger").await;
    let res = send(&server, Method::GET, &path, &stranger.token, None, None).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

on_both_backends!(graph_over_rest);
