//! Hostile input against the real binary, the server half of issue #9: bounded uploads and
//! exports, leases settled when a session disappears, access that ends on every open socket,
//! connection caps, overflowing numbers, and the small leaks (usage log, metrics labels,
//! readiness details, share links in cookies). On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{error_code, png, Backend, TestServer, PASSWORD};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(server: &TestServer, session: &str, token: &str) -> String {
    format!(
        "{}/ws/{session}?token={token}",
        server.base.replacen("http://", "ws://", 1)
    )
}

async fn connect(server: &TestServer, session: &str, token: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(server, session, token))
        .await
        .expect("WebSocket upgrade");
    ws
}

/// The upgrade's refusal: (status, JSON body).
async fn refused(server: &TestServer, session: &str, token: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(ws_url(server, session, token)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            (res.status().as_u16(), body)
        }
        Err(other) => panic!("unexpected upgrade error: {other}"),
    }
}

/// Reads until the server closes; returns its close code (None: no close within `timeout`).
async fn close_code(ws: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) | Ok(Some(Err(_))) => return Some(1006),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Whether the socket is still open after `wait` (the server closed nothing).
async fn still_open(ws: &mut Ws, wait: Duration) -> bool {
    close_code(ws, wait).await.is_none()
}

/// Peak resident memory of a process, in bytes, since the last [`reset_peak`].
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak-RSS counter of a process (Linux: `clear_refs` 5).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// Runs statements on the test server's database, as another client would.
async fn sql(server: &TestServer, statement: &str, binds: &[&str]) -> u64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.to_string()));
    for b in binds {
        q = q.bind(b.to_string());
    }
    let done = q.execute(&pool).await.unwrap().rows_affected();
    pool.close().await;
    done
}

/// Waits (up to 3 s) until no upload reservation is left: failed uploads clean up on a task of
/// their own, right after their error was answered.
async fn reservations_released(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while count(server, "SELECT COUNT(*) FROM storage_reservations").await > 0 {
        assert!(
            Instant::now() < deadline,
            "an upload reservation was left behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(server: &TestServer, query: &str) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_one(&pool)
        .await
        .unwrap();
    let n: i64 = row.try_get(0).unwrap();
    pool.close().await;
    n
}

/// A file the server takes for a PNG: the header of a real one, then `size` bytes in all.
fn png_of_size(size: usize) -> Vec<u8> {
    let mut bytes = png(2, 2);
    bytes.resize(size, 7);
    bytes
}

// ---- item 7: numbers from the client ---------------------------------------------------------

async fn extreme_numbers_get_a_4xx(backend: Backend) {
    let secret = "whsec_hostile";
    let server = TestServer::start_with(backend, &["--payment-webhook-secret", secret]).await;
    let body = r#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{}}}"#;
    for t in [
        "-9223372036854775808",
        "9223372036854775807",
        "-1",
        "99999999999999999999",
    ] {
        let header = format!("t={t},v1={}", "0".repeat(64));
        let (status, res) = server.webhook(body, Some(&header)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "t={t}: {res}");
        assert_eq!(error_code(&res), "invalid_signature");
    }
    let user = server.signup("Numbers").await;
    let session = server.create_session(&user.token, "n").await;
    let t = Some(user.token.as_str());
    for path in [
        "/billing/ledger?before=-9223372036854775808&limit=4294967295",
        "/billing/ledger?limit=-1",
        "/billing/ledger?before=99999999999999999999",
        "/billing/usage?days=4294967295",
        "/billing/usage?days=-1",
        "/me/usage?limit=9223372036854775807",
        "/me/usage?limit=-9223372036854775808",
    ] {
        let (status, res) = server.call(Method::GET, path, t, None).await;
        assert!(status.is_client_error(), "{path}: {status} {res}");
    }
    for expires in [json!(i64::MAX), json!(i64::MIN), json!(1e300), json!(-1)] {
        let (status, res) = server
            .call(
                Method::POST,
                &format!("/sessions/{session}/share-links"),
                t,
                Some(json!({"role": "viewer", "expires_in_s": expires})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "expires_in_s={expires}: {res}"
        );
    }
    for minutes in [json!(1e308), json!(-1e308), json!(i64::MAX), json!(0)] {
        let (status, res) = server
            .call(
                Method::POST,
                &format!("/sessions/{session}/runtime"),
                t,
                Some(json!({"gpu_class": "cpu", "prepaid_minutes": minutes})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "prepaid_minutes={minutes}: {res}"
        );
    }
    // Nothing above took a worker down.
    let (status, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

// ---- item 8: the small leaks -----------------------------------------------------------------

async fn usage_log_keeps_accounts_only_for_the_retention(backend: Backend) {
    let mut server = TestServer::start_with(backend, &["--usage-log-retention-days", "1"]).await;
    for _ in 0..20 {
        server.call(Method::GET, "/healthz", None, None).await;
        server.call(Method::GET, "/me", None, None).await;
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM api_usage").await, 0);
    let user = server.signup("Logged").await;
    server
        .call(Method::GET, "/me", Some(&user.token), None)
        .await;
    let (_, usage) = server
        .call(Method::GET, "/me/usage", Some(&user.token), None)
        .await;
    assert!(!usage.as_array().unwrap().is_empty(), "{usage}");
    // A row older than the retention goes at the next purge (one at every start).
    let old = common::unix_now() * 1000 - 2 * 86_400_000;
    sql(
        &server,
        &format!(
            "INSERT INTO api_usage (account_id, method, route, status, duration_ms, at) \
             VALUES ($1, 'GET', '/api/v1/me', 200, 1, {old})"
        ),
        &[&user.id],
    )
    .await;
    let total = count(&server, "SELECT COUNT(*) FROM api_usage").await;
    server.spawn(&["--usage-log-retention-days", "1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &server,
        &format!("SELECT COUNT(*) FROM api_usage WHERE at = {old}"),
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "the old entry was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(count(&server, "SELECT COUNT(*) FROM api_usage").await >= total - 1);
}

async fn made_up_methods_share_one_metrics_label(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..5 {
        let method = Method::from_bytes(format!("HOSTILE{i}").as_bytes()).unwrap();
        let res = server
            .client
            .request(method, server.api("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("HOSTILE"),
        "made-up methods became labels"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

async fn readyz_keeps_failure_details_to_the_log(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The readiness probe writes this object: a directory in its place makes storage fail.
    let probe = server.objects_dir().join(".atelier-readyz");
    let _ = std::fs::remove_file(&probe);
    std::fs::create_dir_all(probe.join("in-the-way")).unwrap();
    let res = server
        .client
        .get(server.api("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["storage"], "unavailable", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    let dir = server.dir.path().display().to_string();
    assert!(
        !text.contains(&dir) && !text.contains("error"),
        "details leaked: {text}"
    );
}

async fn the_websocket_cookie_takes_login_tokens_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Cookie").await;
    let session = server.create_session(&owner.token, "c").await;
    let (_, link) = server.share_link(&owner.token, &session, None).await;
    let upgrade = |cookie: String| {
        Request::builder()
            .uri(format!(
                "{}/ws/{session}",
                server.base.replacen("http://", "ws://", 1)
            ))
            .header("Host", server.base.trim_start_matches("http://"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", generate_key())
            .header("Cookie", cookie)
            .body(())
            .unwrap()
    };
    let err = tokio_tungstenite::connect_async(upgrade(format!("atelier_session={link}")))
        .await
        .expect_err("a share link in the session cookie was accepted");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
        other => panic!("{other}"),
    }
    // The login token in the cookie still works.
    tokio_tungstenite::connect_async(upgrade(format!("atelier_session={}", owner.token)))
        .await
        .expect("cookie with a login token");
}

// ---- item 6: access ends on every open socket ------------------------------------------------

async fn an_expiring_link_closes_its_open_sockets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "s").await;
    let (_, link) = server.share_link(&owner.token, &session, Some(2)).await;
    let mut ws = connect(&server, &session, &link).await;
    let started = Instant::now();
    let code = close_code(&mut ws, Duration::from_secs(4)).await;
    assert_eq!(code, Some(4403), "the socket outlived its link");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn links_die_with_their_creators_right_to_share(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let editor = server.signup("Editor").await;
    let session = server.create_session(&owner.token, "s").await;
    server
        .add_member(&owner.token, &session, &editor, "editor")
        .await;
    let (_, removed_link) = server.share_link(&editor.token, &session, None).await;
    let (_, owners_link) = server.share_link(&owner.token, &session, None).await;
    let mut guest = connect(&server, &session, &removed_link).await;
    let mut other_guest = connect(&server, &session, &owners_link).await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/members/{}", editor.id),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut guest, Duration::from_secs(1)).await,
        Some(4403)
    );
    assert!(still_open(&mut other_guest, Duration::from_millis(300)).await);
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&removed_link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Back as an editor: the old link stays dead (it was revoked).
    server
        .add_member(&owner.token, &session, &editor, "editor")
        .await;
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&removed_link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A downgrade to viewer ends the links too.
    let (_, second) = server.share_link(&editor.token, &session, None).await;
    let mut guest = connect(&server, &session, &second).await;
    server
        .set_role(&owner.token, &session, &editor, "viewer")
        .await;
    assert_eq!(
        close_code(&mut guest, Duration::from_secs(1)).await,
        Some(4403)
    );
}

async fn a_link_revoked_during_the_upgrade_never_stays_connected(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "s").await;
    for _ in 0..15 {
        let (link_id, link) = server.share_link(&owner.token, &session, None).await;
        let upgrade = connect_or_refusal(&server, &session, &link);
        let path = format!("/sessions/{session}/share-links/{link_id}");
        let revoke = server.call(Method::DELETE, &path, Some(&owner.token), None);
        let (ws, (status, _)) = tokio::join!(upgrade, revoke);
        assert_eq!(status, StatusCode::NO_CONTENT);
        if let Some(mut ws) = ws {
            assert_eq!(
                close_code(&mut ws, Duration::from_secs(1)).await,
                Some(4403),
                "a socket of a revoked link stayed open"
            );
        }
    }
}

async fn connect_or_refusal(server: &TestServer, session: &str, token: &str) -> Option<Ws> {
    tokio_tungstenite::connect_async(ws_url(server, session, token))
        .await
        .ok()
        .map(|(ws, _)| ws)
}

async fn a_password_change_closes_the_other_logins_sockets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "s").await;
    let phone = server.login(&owner.email).await;
    let mut on_phone = connect(&server, &session, &phone).await;
    let mut on_laptop = connect(&server, &session, &owner.token).await;
    let (status, _) = server
        .call(
            Method::POST,
            "/me/password",
            Some(&owner.token),
            Some(json!({"current_password": PASSWORD, "new_password": "another long passphrase"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut on_phone, Duration::from_secs(1)).await,
        Some(4401)
    );
    assert!(
        still_open(&mut on_laptop, Duration::from_millis(300)).await,
        "the login that changed the password lost its socket"
    );
}

async fn logout_and_account_deletion_close_their_sockets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let member = server.signup("Member").await;
    let session = server.create_session(&owner.token, "s").await;
    server
        .add_member(&owner.token, &session, &member, "editor")
        .await;
    let laptop = member.token.clone();
    let phone = server.login(&member.email).await;
    let mut on_laptop = connect(&server, &session, &laptop).await;
    let mut on_phone = connect(&server, &session, &phone).await;
    let (status, _) = server
        .call(Method::POST, "/auth/logout", Some(&laptop), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut on_laptop, Duration::from_secs(1)).await,
        Some(4401)
    );
    assert!(
        still_open(&mut on_phone, Duration::from_millis(300)).await,
        "another login's socket closed"
    );
    // The member deletes the account: every socket of it closes.
    let mut owners_own = connect(&server, &session, &owner.token).await;
    let (status, _) = server.call(Method::DELETE, "/me", Some(&phone), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut on_phone, Duration::from_secs(1)).await,
        Some(4401)
    );
    assert!(still_open(&mut owners_own, Duration::from_millis(300)).await);
    // The owner deletes theirs: the session goes, with every socket in it.
    let (_, link) = server.share_link(&owner.token, &session, None).await;
    let mut guest = connect(&server, &session, &link).await;
    let (status, _) = server
        .call(Method::DELETE, "/me", Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        close_code(&mut owners_own, Duration::from_secs(1)).await,
        Some(4401)
    );
    assert!(matches!(
        close_code(&mut guest, Duration::from_secs(1)).await,
        Some(4404 | 4403)
    ));
}

// ---- item 2 (server side): connection caps ----------------------------------------------------

async fn connection_caps_refuse_with_429(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        &["--ws-max-per-share-link", "2", "--ws-max-per-account", "3"],
    )
    .await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "s").await;
    let (_, link) = server.share_link(&owner.token, &session, None).await;
    let first = connect(&server, &session, &link).await;
    let _second = connect(&server, &session, &link).await;
    let (status, body) = refused(&server, &session, &link).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "too_many_connections");
    // Another link of the same session has its own count; a closed socket frees its place.
    let (_, other) = server.share_link(&owner.token, &session, None).await;
    let _third = connect(&server, &session, &other).await;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(ws) = connect_or_refusal(&server, &session, &link).await {
            drop(ws);
            break;
        }
        assert!(Instant::now() < deadline, "a closed socket kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(connect(&server, &session, &owner.token).await);
    }
    let (status, body) = refused(&server, &session, &owner.token).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "too_many_connections");
}

async fn connections_per_ip_are_capped(backend: Backend) {
    let server = TestServer::start_with(backend, &["--ws-max-per-ip", "2"]).await;
    let a = server.signup("A").await;
    let b = server.signup("B").await;
    let session = server.create_session(&a.token, "s").await;
    server.add_member(&a.token, &session, &b, "viewer").await;
    let _one = connect(&server, &session, &a.token).await;
    let _two = connect(&server, &session, &b.token).await;
    let (status, body) = refused(&server, &session, &a.token).await;
    assert_eq!(status, 429, "{body}");
}

// ---- item 3: uploads and exports -------------------------------------------------------------

async fn concurrent_uploads_cannot_overrun_the_quota(backend: Backend) {
    let quota = 100_000u64;
    let server =
        TestServer::start_with(backend, &["--storage-quota-bytes", &quota.to_string()]).await;
    let user = server.signup("Quota").await;
    let uploads = (0..12).map(|_| server.upload(&user.token, png_of_size(30_000), "q.png", None));
    let results = futures_util::future::join_all(uploads).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    for (status, body) in &results {
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::PAYLOAD_TOO_LARGE
                    && error_code(body) == "quota_exceeded"),
            "{status} {body}"
        );
    }
    assert!(
        (1..=3).contains(&created),
        "{created} uploads of 30 kB fit a 100 kB quota"
    );
    let (_, media) = server
        .call(Method::GET, "/media", Some(&user.token), None)
        .await;
    let total: i64 = media
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["size_bytes"].as_i64().unwrap())
        .sum();
    assert!(
        total as u64 <= quota,
        "{total} bytes stored under a quota of {quota}"
    );
    // Failed uploads gave their reservations back.
    reservations_released(&server).await;
}

async fn a_large_upload_streams_through(backend: Backend) {
    let size = 96 * 1024 * 1024;
    let server = TestServer::start_with(
        backend,
        &[
            "--max-upload-bytes",
            "200000000",
            "--storage-quota-bytes",
            "400000000",
        ],
    )
    .await;
    let user = server.signup("Large").await;
    let pid = server.child.id();
    let before = rss(pid);
    reset_peak(pid);
    let (status, media) = server
        .upload(&user.token, png_of_size(size), "big.png", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let grew = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "a {} MiB upload grew the server's RSS by {} MiB",
        size >> 20,
        grew >> 20
    );
    assert!(
        grew < 48 * 1024 * 1024,
        "RSS grew by {grew} bytes for a {size}-byte upload"
    );
    let res = server
        .client
        .get(server.api(&format!("/media/{}", media["id"].as_str().unwrap())))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, size);
    // An upload over the limit is refused and leaves nothing behind.
    let (status, body) = server
        .upload(&user.token, png_of_size(210_000_000), "huge.png", None)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    reservations_released(&server).await;
}

async fn an_export_of_large_media_streams_a_valid_zip(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        &[
            "--max-upload-bytes",
            "100000000",
            "--storage-quota-bytes",
            "400000000",
            "--max-concurrent-exports",
            "1",
        ],
    )
    .await;
    let user = server.signup("Export").await;
    let sizes = [40 * 1024 * 1024, 40 * 1024 * 1024, 30 * 1024 * 1024, 1000];
    for (i, size) in sizes.iter().enumerate() {
        let (status, body) = server
            .upload(&user.token, png_of_size(*size), &format!("{i}.png"), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let pid = server.child.id();
    let before = rss(pid);
    reset_peak(pid);
    let res = server
        .client
        .get(server.api("/me/export"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A second export while this one is unread: refused, not queued in memory.
    let (status, body) = server
        .call(Method::GET, "/me/export", Some(&user.token), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "too_many_exports");
    let zip_path = server.dir.path().join("export.zip");
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&zip_path).unwrap();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.unwrap()).unwrap();
        }
    }
    let grew = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "exporting {} MiB grew the server's RSS by {} MiB",
        sizes.iter().sum::<usize>() >> 20,
        grew >> 20
    );
    assert!(
        grew < 48 * 1024 * 1024,
        "RSS grew by {grew} bytes during the export"
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    assert_eq!(archive.len(), 1 + sizes.len());
    let mut found: Vec<u64> = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        if entry.name() == "account.json" {
            let account: Value = serde_json::from_reader(&mut entry).unwrap();
            assert_eq!(account["media"].as_array().unwrap().len(), sizes.len());
        } else {
            // Reading checks the CRC.
            found.push(std::io::copy(&mut entry, &mut std::io::sink()).unwrap());
        }
    }
    found.sort_unstable();
    let mut want: Vec<u64> = sizes.iter().map(|s| *s as u64).collect();
    want.sort_unstable();
    assert_eq!(found, want);
    // The slot is free again.
    let (status, _) = server
        .call(Method::GET, "/me/export", Some(&user.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

// ---- item 4: a session that disappears settles its lease --------------------------------------

async fn deleting_the_owner_settles_a_members_lease(backend: Backend) {
    let mut args: Vec<String> = common::in_process_worker_args();
    args.extend([
        "--signup-credits".into(),
        "100000".into(),
        "--checkpoint-interval-s".into(),
        "1".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let payer = server.signup("Payer").await;
    let session = server.create_session(&owner.token, "paid").await;
    server
        .add_member(&owner.token, &session, &payer, "editor")
        .await;
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&payer.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = server
        .call(Method::DELETE, "/me", Some(&owner.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Settled at once: nothing held any more.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, held, _) = server.balance(&payer.token).await;
        if held == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the payer's lease on the deleted session still holds {held}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (balance, held, available) = server.balance(&payer.token).await;
    assert_eq!((held, available), (0, balance));
    let ledger = server.ledger(&payer.token).await;
    let charged: i64 = ledger
        .iter()
        .filter(|e| e["kind"] == "charge")
        .map(|e| -e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(balance, 100_000 - charged, "{ledger:?}");
    assert!(
        charged > 0 && charged < 100 * 60,
        "charged {charged} for a few seconds"
    );
    assert!(
        ledger.iter().any(|e| e["kind"] == "release"),
        "no release of the unused hold: {ledger:?}"
    );
    // No longer charged.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.balance(&payer.token).await.0, balance);
    let stopped = count(
        &server,
        &format!("SELECT COUNT(*) FROM runtime_leases WHERE stop_reason = 'session_deleted' AND account_id = '{}'", payer.id),
    )
    .await;
    assert_eq!(stopped, 1);
}

on_both_backends!(
    extreme_numbers_get_a_4xx,
    usage_log_keeps_accounts_only_for_the_retention,
    made_up_methods_share_one_metrics_label,
    readyz_keeps_failure_details_to_the_log,
    the_websocket_cookie_takes_login_tokens_only,
    an_expiring_link_closes_its_open_sockets,
    links_die_with_their_creators_right_to_share,
    a_link_revoked_during_the_upgrade_never_stays_connected,
    logout_and_account_deletion_close_their_sockets,
    a_password_change_closes_the_other_logins_sockets,
    connection_caps_refuse_with_429,
    connections_per_ip_are_capped,
    concurrent_uploads_cannot_overrun_the_quota,
    a_large_upload_streams_through,
    an_export_of_large_media_streams_a_valid_zip,
    deleting_the_owner_settles_a_members_lease,
);

// ---- items 5 and 9: jobs run the live graph; their outputs are stored before success ---------

/// Sends one y-sync update frame.
async fn send_update(ws: &mut Ws, update: Vec<u8>) {
    use futures_util::SinkExt;
    let frame = atelier_protocol::ysync::Frame::update(update).encode();
    ws.send(Message::Binary(frame.into())).await.unwrap();
}

/// The document as a fresh client gets it (step 1 with an empty state vector, step 2 back).
async fn fetch_document(server: &TestServer, session: &str, token: &str) -> yrs::Doc {
    use atelier_protocol::ysync::{decode_frame, Frame, SyncMessage};
    use futures_util::SinkExt;
    use yrs::updates::decoder::Decode;
    use yrs::Transact;
    let mut ws = connect(server, session, token).await;
    let step1 = Frame::step1(yrs::StateVector::default()).encode();
    ws.send(Message::Binary(step1.into())).await.unwrap();
    let doc = yrs::Doc::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("step 2 in time")
            .unwrap()
            .unwrap();
        if let Message::Binary(bytes) = msg {
            if let Ok(Frame::Sync(SyncMessage::SyncStep2(update))) = decode_frame(&bytes) {
                let update = yrs::Update::decode_v1(&update).unwrap();
                doc.transact_mut().apply_update(update).unwrap();
                return doc;
            }
        }
    }
}

async fn jobs_run_the_live_graph_and_store_outputs_before_success(backend: Backend) {
    use yrs::{Map, MapPrelim, ReadTxn, Transact};
    let mut args: Vec<String> = common::in_process_worker_args();
    args.extend(["--signup-credits".into(), "100000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with(backend, &args).await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "jobs").await;
    let (status, lease) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/runtime"),
            Some(&owner.token),
            Some(json!({"gpu_class": "cpu", "prepaid_minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, shown) = server
            .call(
                Method::GET,
                &format!("/sessions/{session}/runtime"),
                Some(&owner.token),
                None,
            )
            .await;
        if shown["lease"]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An update row the live session never accepted (garbage, as if written behind its back):
    // a graph rebuilt from the database trips over it; the live session's graph does not.
    let mut editor = connect(&server, &session, &owner.token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&server.database_url).await.unwrap();
        sqlx::query("INSERT INTO doc_updates (session_id, seq, data) VALUES ($1, 1000000, $2)")
            .bind(session.clone())
            .bind(b"not a yjs update".to_vec())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // An edit over the WebSocket, and the job asked for right after it.
    let doc = yrs::Doc::new();
    let before = doc.transact().state_vector();
    {
        let nodes = doc.get_or_insert_map("nodes");
        let mut txn = doc.transact_mut();
        let params = MapPrelim::from([("steps".to_string(), yrs::Any::from(1.0))]);
        let node = MapPrelim::from([
            (
                "type".to_string(),
                yrs::In::from(yrs::Any::from("tiny-denoiser")),
            ),
            ("x".to_string(), yrs::In::from(yrs::Any::from(0.0))),
            ("y".to_string(), yrs::In::from(yrs::Any::from(0.0))),
            ("params".to_string(), yrs::In::Map(params)),
        ]);
        nodes.insert(&mut txn, "d", node);
    }
    send_update(
        &mut editor,
        doc.transact().encode_state_as_update_v1(&before),
    )
    .await;
    let (status, job) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(&owner.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the job did not see the edit: {job}"
    );
    let job_id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let (_, record) = server
            .call(
                Method::GET,
                &format!("/jobs/{job_id}"),
                Some(&owner.token),
                None,
            )
            .await;
        if record["status"] != "queued" && record["status"] != "running" {
            break record;
        }
        assert!(Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    // Success was reported after the outputs were stored in the document: a client that
    // connects right now finds them.
    let doc = fetch_document(&server, &session, &owner.token).await;
    let txn = doc.transact();
    let outputs = txn.get_map("outputs").expect("no outputs map");
    let stored = outputs
        .get(&txn, "d")
        .map(|v| v.to_string(&txn))
        .unwrap_or_default();
    for media in finished["outputs"].as_array().unwrap() {
        assert!(
            stored.contains(media.as_str().unwrap()),
            "{stored} lacks {media}"
        );
    }
}

on_both_backends!(jobs_run_the_live_graph_and_store_outputs_before_success);
