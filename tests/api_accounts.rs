//! Accounts over HTTP: signup, login, logout, /me, CSRF, rate limits, the usage log, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_code, Backend, TestServer, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn signup_login_logout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let (status, me) = server
        .call(Method::GET, "/me", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], ada.email.as_str());
    assert_eq!(me["name"], "Ada");
    assert!(me.get("password_hash").is_none());

    let second = server.login(&ada.email).await;
    assert_ne!(second, ada.token);
    // Emails are case-insensitive.
    let (status, _) = server
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ada.email.to_uppercase(), "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = server
        .call(Method::POST, "/auth/logout", Some(&second), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.call(Method::GET, "/me", Some(&second), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_credentials");
    // The other token still works.
    let (status, _) = server
        .call(Method::GET, "/me", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Wrong password and unknown email look the same.
    for body in [
        json!({"email": ada.email, "password": "wrong password here"}),
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    ] {
        let (status, res) = server
            .call(Method::POST, "/auth/login", None, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(res["error"]["message"], "wrong email or password");
    }
}

async fn bad_signups(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "X"}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": "x@example.com", "password": "short", "name": "X"}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": "x@example.com", "password": "aaaaaaaaaaaaaaa", "name": "X"}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": "x@example.com", "password": PASSWORD, "name": "  "}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": "x@example.com", "password": PASSWORD}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": 42, "password": PASSWORD, "name": "X"}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": "x@example.com", "password": PASSWORD, "name": "X", "admin": true}),
            400,
            "invalid_input",
        ),
        (
            json!({"email": ada.email, "password": PASSWORD, "name": "Again"}),
            409,
            "conflict",
        ),
        (
            json!({"email": ada.email.to_uppercase(), "password": PASSWORD, "name": "Again"}),
            409,
            "conflict",
        ),
    ];
    for (body, status, code) in cases {
        let (got, res) = server
            .call(Method::POST, "/auth/signup", None, Some(body.clone()))
            .await;
        assert_eq!(got.as_u16(), status, "{body} → {res}");
        assert_eq!(error_code(&res), code, "{body}");
    }

    // Malformed JSON, wrong content type, oversize body.
    let res = server
        .client
        .post(server.api("/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&res.json().await.unwrap()), "invalid_input");

    let res = server
        .client
        .post(server.api("/auth/signup"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        error_code(&res.json().await.unwrap()),
        "unsupported_media_type"
    );

    let huge = json!({"email": "x@example.com", "password": PASSWORD, "name": "x".repeat(200_000)});
    let res = server
        .client
        .post(server.api("/auth/signup"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&res.json().await.unwrap()), "payload_too_large");

    // Tokens: garbage, malformed header, unknown route.
    for header in ["Bearer nonsense", "Bearer atl_0000", "Basic abc", "Bearer "] {
        let res = server
            .client
            .get(server.api("/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
        error_code(&res.json().await.unwrap());
    }
    let (status, body) = server.call(Method::GET, "/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthenticated");
    let (status, body) = server.call(Method::GET, "/no/such/route", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

async fn cookie_auth_needs_csrf(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let res = browser
        .post(server.api("/auth/login"))
        .json(&json!({"email": ada.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("atelier_session="))
        .unwrap();
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    let csrf = res.json::<serde_json::Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Reads work with the cookie alone.
    let res = browser.get(server.api("/me")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A mutation without the CSRF header is refused, and nothing is created.
    let res = browser
        .post(server.api("/sessions"))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&res.json().await.unwrap()), "csrf_rejected");
    let res = browser
        .post(server.api("/sessions"))
        .header("x-csrf-token", "wrong")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let list: serde_json::Value = browser
        .get(server.api("/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    // With it, the mutation goes through.
    let res = browser
        .post(server.api("/sessions"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    // Logout clears the cookie session.
    let res = browser
        .post(server.api("/auth/logout"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = browser.get(server.api("/me")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn usage_log_records_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let session = server.create_session(&ada.token, "Usage").await;
    let _ = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&ada.token),
            None,
        )
        .await;
    let _ = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bob.token),
            None,
        )
        .await;
    let (status, usage) = server
        .call(Method::GET, "/me/usage", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let entries = usage.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["route"] == "/api/v1/sessions/{id}"
            && e["method"] == "GET"
            && e["status"] == 200),
        "{usage}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["route"] == "/api/v1/sessions" && e["status"] == 201),
        "{usage}"
    );
    // Bob's 404 is his, not Ada's.
    assert!(!entries.iter().any(|e| e["status"] == 404), "{usage}");
    let (_, bob_usage) = server
        .call(Method::GET, "/me/usage", Some(&bob.token), None)
        .await;
    assert!(
        bob_usage
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == 404),
        "{bob_usage}"
    );
    for e in entries {
        assert!(e["duration_ms"].as_i64().unwrap() >= 0);
        assert!(
            !e["route"].as_str().unwrap().contains(&session),
            "ids stay out of the log"
        );
    }
    let (status, _) = server
        .call(Method::GET, "/me/usage?limit=0", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .call(Method::GET, "/me/usage?limit=abc", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

on_both_backends!(
    signup_login_logout,
    bad_signups,
    cookie_auth_needs_csrf,
    usage_log_records_requests
);

#[tokio::test]
async fn login_is_rate_limited_per_ip() {
    let server = TestServer::start_with(Backend::Sqlite, &["--auth-rate-per-minute", "3"]).await;
    let body = json!({"email": "nobody@example.com", "password": PASSWORD});
    for _ in 0..3 {
        let (status, _) = server
            .call(Method::POST, "/auth/login", None, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let res = server
        .client
        .post(server.api("/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(error_code(&res.json().await.unwrap()), "rate_limited");
    // Signup shares the budget.
    let (status, _) = server
        .call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "new@example.com", "password": PASSWORD, "name": "New"})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}
