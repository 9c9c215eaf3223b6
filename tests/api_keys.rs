//! API keys against the real binary: made and listed with a login, scoped (each endpoint's
//! declared scope enforced), revoked at once on HTTP and on the WebSockets opened with them,
//! rate limited per key, and named in the usage log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{error_code, Backend, EventsClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let other = server.signup("Other").await;
    let session = server.create_session(&owner.token, "Keys").await;

    // Made with a login: the secret once, then only its prefix.
    let (status, made) = server
        .call(
            Method::POST,
            "/me/api-keys",
            Some(&owner.token),
            Some(
                json!({"name": "terrain batch", "scopes": ["sessions:read"], "expires_in_s": 3600}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap().to_string();
    let key_id = made["id"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("atk_") && secret.len() == 4 + 64,
        "{secret}"
    );
    assert!(secret[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(made["prefix"], json!(&secret[..12]));
    assert_eq!(made["scopes"], json!(["sessions:read"]));
    assert!(made["expires_at"].as_i64().is_some());

    for bad in [
        json!({"name": "x", "scopes": ["sessions:admin"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": " ", "scopes": ["jobs:run"]}),
        json!({"name": "a\u{7}bell", "scopes": ["jobs:run"]}),
        json!({"name": "x", "scopes": ["jobs:run"], "expires_in_s": 0}),
        json!({"name": "x", "scopes": ["jobs:run"], "extra": 1}),
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                "/me/api-keys",
                Some(&owner.token),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // What the key may do, and may not.
    let get = |path: String| {
        let server = &server;
        let secret = secret.clone();
        async move { server.call(Method::GET, &path, Some(&secret), None).await }
    };
    assert_eq!(get("/sessions".into()).await.0, StatusCode::OK);
    assert_eq!(get(format!("/sessions/{session}")).await.0, StatusCode::OK);
    assert_eq!(get("/me".into()).await.0, StatusCode::OK);
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/sessions/{session}"),
            Some(json!({"title": "no"})),
        ),
        (
            Method::POST,
            "/sessions".to_string(),
            Some(json!({"title": "no"})),
        ),
        (Method::GET, "/billing/balance".to_string(), None),
        (
            Method::POST,
            format!("/sessions/{session}/jobs"),
            Some(json!({})),
        ),
        // Keys are managed with a login only.
        (Method::GET, "/me/api-keys".to_string(), None),
        (
            Method::POST,
            "/me/api-keys".to_string(),
            Some(json!({"name": "x", "scopes": ["jobs:run"]})),
        ),
        (Method::GET, "/me/export".to_string(), None),
        (Method::POST, "/auth/logout".to_string(), None),
    ] {
        let (status, body) = server
            .call(method.clone(), &path, Some(&secret), body)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(
            error_code(&body),
            "insufficient_scope",
            "{method} {path}: {body}"
        );
    }

    // The usage log names the key; the list counts its requests.
    let (_, usage) = server
        .call(Method::GET, "/me/usage?limit=50", Some(&owner.token), None)
        .await;
    let by_key = usage
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["api_key_id"] == json!(key_id))
        .count();
    assert!(by_key >= 11, "usage by key: {usage}");
    let (status, list) = server
        .call(Method::GET, "/me/api-keys", Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed = &list.as_array().unwrap()[0];
    assert_eq!(listed["id"], json!(key_id));
    assert!(listed.get("secret").is_none(), "{listed}");
    assert!(listed["last_used_at"].as_i64().is_some(), "{listed}");
    assert!(listed["requests_24h"].as_i64().unwrap() >= 11, "{listed}");

    // Revoking: another account cannot; the owner can, and the key's socket closes at once.
    let mut socket = EventsClient::connect(&server, &session, &secret).await;
    let revoke = format!("/me/api-keys/{key_id}");
    let (status, _) = server
        .call(Method::DELETE, &revoke, Some(&other.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(Method::DELETE, &revoke, Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key cannot revoke keys");
    let started = std::time::Instant::now();
    let (status, _) = server
        .call(Method::DELETE, &revoke, Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(socket.close_code(Duration::from_secs(1)).await, Some(4401));
    println!("revoked key's socket closed after {:?}", started.elapsed());
    let (status, body) = get(format!("/sessions/{session}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, list) = server
        .call(Method::GET, "/me/api-keys", Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(list[0]["revoked_at"].as_i64().is_some(), "{list}");

    // An expired key is refused like a revoked one.
    let (status, made) = server
        .call(
            Method::POST,
            "/me/api-keys",
            Some(&owner.token),
            Some(json!({"name": "short", "scopes": ["sessions:read"], "expires_in_s": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = server
        .call(Method::GET, "/sessions", made["secret"].as_str(), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// A key without `sessions:write` joins live sessions as a viewer; without `sessions:read` it
/// does not join at all.
async fn keys_on_websockets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Live").await;
    let (_, read) = server.api_key(&owner.token, &["sessions:read"]).await;
    let (_, write) = server
        .api_key(&owner.token, &["sessions:read", "sessions:write"])
        .await;
    let (_, billing) = server.api_key(&owner.token, &["billing:read"]).await;
    for (key, role) in [(&read, "viewer"), (&write, "owner")] {
        let url = format!(
            "{}/ws/{session}?token={key}&events=1",
            server.base.replacen("http://", "ws://", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let hello = loop {
            use futures_util::StreamExt;
            let msg = ws.next().await.unwrap().unwrap();
            if let Some(event) = common::decode_event_frame(&msg.into_data()) {
                if event["type"] == "session.hello" {
                    break event;
                }
            }
        };
        assert_eq!(hello["role"], json!(role), "{hello}");
    }
    let url = format!(
        "{}/ws/{session}?token={billing}",
        server.base.replacen("http://", "ws://", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403)
        }
        other => panic!("a billing key joined a live session: {:?}", other.is_ok()),
    }
}

/// Each key has its own budget per minute, stated in headers; beyond it 429 with Retry-After.
async fn key_rate_limit(backend: Backend) {
    let server = TestServer::start_with(backend, &["--api-key-rate-per-minute", "3"]).await;
    let owner = server.signup("Owner").await;
    let (_, first) = server.api_key(&owner.token, &["sessions:read"]).await;
    let (_, second) = server.api_key(&owner.token, &["sessions:read"]).await;
    // The budget is per wall-clock minute: start early in one.
    let into_minute = common::unix_now() % 60;
    if into_minute > 50 {
        tokio::time::sleep(Duration::from_secs((61 - into_minute) as u64)).await;
    }
    let send = |key: String| {
        let server = &server;
        async move {
            server
                .client
                .get(server.api("/sessions"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let header = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for remaining in ["2", "1", "0"] {
        let res = send(first.clone()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&res, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        let reset: u64 = header(&res, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let res = send(first.clone()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&res, "x-ratelimit-remaining").as_deref(), Some("0"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
    // Another key, and the login, are not held back by it.
    assert_eq!(send(second).await.status(), StatusCode::OK);
    let res = send(owner.token.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "x-ratelimit-limit").is_none());
}

on_both_backends!(keys, keys_on_websockets, key_rate_limit);
