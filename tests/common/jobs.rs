//! What the job and worker tests share: graphs that keep a worker busy, a session holding one,
//! and reading a job back (by `GET` or from the session's events).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{EventsClient, TestServer, User};

/// `n` independent tiny denoisers of `steps` steps at `size`², each into its own output: a job
/// that runs a while and reports progress and outputs all along.
pub fn wide_graph(n: u32, steps: u32, size: u32) -> Value {
    let (mut nodes, mut edges) = (serde_json::Map::new(), serde_json::Map::new());
    for i in 0..n {
        nodes.insert(
            format!("tiny{i}"),
            json!({"type": "tiny-denoiser", "x": 0, "y": i * 100,
                   "params": {"steps": steps, "width": size, "height": size}}),
        );
        nodes.insert(
            format!("out{i}"),
            json!({"type": "output", "x": 200, "y": i * 100, "params": {}}),
        );
        edges.insert(
            format!("e{i}"),
            json!({"source": format!("tiny{i}"), "source_port": "image",
                   "target": format!("out{i}"), "target_port": "image"}),
        );
    }
    json!({"nodes": nodes, "edges": edges})
}

/// A new session of `user` titled `title`, its graph set to `graph` over REST.
pub async fn session_with_graph(
    server: &TestServer,
    user: &User,
    title: &str,
    graph: Value,
) -> String {
    let session = server.create_session(&user.token, title).await;
    let res = server
        .client
        .put(server.api(&format!("/sessions/{session}/graph")))
        .bearer_auth(&user.token)
        .json(&graph)
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

/// `GET /jobs/{id}`.
pub async fn job(server: &TestServer, token: &str, id: &str) -> Value {
    let (status, body) = server
        .call(Method::GET, &format!("/jobs/{id}"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The next event of `kind` about `job`, skipping others (60 s at most).
pub async fn job_event(events: &mut EventsClient, kind: &str, job: &str) -> Value {
    loop {
        let event = events.wait_for(kind, Duration::from_secs(60)).await;
        if event["job_id"] == job {
            return event;
        }
    }
}
