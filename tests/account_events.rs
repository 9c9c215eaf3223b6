//! The account's live channel (`GET /api/v1/me/events`, server-sent events) against the real
//! binary, on SQLite and PostgreSQL: an invitation by email to the account's address, accepting
//! it, an invitation link accepted in another tab, a role change, a removal, a withdrawn
//! invitation, a deleted session and its owner's deleted account each reach every open stream of that account — and no
//! other account's — within a second; the channel needs a login (or a key with
//! `sessions:read`) and is capped per account (a ninth stream ends the oldest). (Across cluster nodes: `tests/node/test/cluster.test.mjs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Within this an event must arrive.
const LIVE: Duration = Duration::from_secs(1);

/// One open stream: its events, parsed.
struct EventStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    async fn open(server: &TestServer, token: &str) -> EventStream {
        let (status, stream) = EventStream::try_open(server, token).await;
        assert_eq!(status, StatusCode::OK);
        let mut stream = stream.unwrap();
        assert_eq!(stream.next(LIVE).await, Some(json!({"type": "ready"})));
        stream
    }

    async fn try_open(server: &TestServer, token: &str) -> (StatusCode, Option<EventStream>) {
        let res = server
            .client
            .get(server.api("/me/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        (
            status,
            Some(EventStream {
                body: Box::pin(res.bytes_stream()),
                buffer: String::new(),
            }),
        )
    }

    /// The next event's data within `timeout` (keep-alive comments skipped), None if none came.
    async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    return Some(serde_json::from_str(&data.join("\n")).unwrap());
                }
            }
            let chunk = tokio::time::timeout_at(until, self.body.next())
                .await
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    async fn expect(&mut self, expected: Value) {
        let got = self.next(LIVE).await;
        assert_eq!(got, Some(expected));
    }

    async fn expect_quiet(&mut self) {
        let got = self.next(Duration::from_millis(300)).await;
        assert_eq!(got, None);
    }
}

async fn call_ok(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (status, res) = server.call(method, path, Some(token), body).await;
    assert!(status.is_success(), "{path}: {status} {res}");
    res
}

async fn dashboard_follows_every_change(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let bea = server.signup("Bea").await;
    let other = server.signup("Other").await;
    let session = server.create_session(&owner.token, "Shared live").await;
    let mut tab1 = EventStream::open(&server, &bea.token).await;
    let mut tab2 = EventStream::open(&server, &bea.token).await;
    let mut others = EventStream::open(&server, &other.token).await;

    // An invitation by email to Bea's address.
    call_ok(
        &server,
        Method::POST,
        &format!("/sessions/{session}/members"),
        &owner.token,
        Some(json!({"email": bea.email, "role": "editor"})),
    )
    .await;
    let mine = call_ok(&server, Method::GET, "/me/invitations", &bea.token, None).await;
    let invitation = mine[0]["id"].as_str().unwrap().to_owned();
    let received =
        json!({"type": "invitation.received", "invitation_id": invitation, "session_id": session});
    tab1.expect(received.clone()).await;
    tab2.expect(received).await;

    // Accepted in one tab: every tab lists the session.
    call_ok(
        &server,
        Method::POST,
        &format!("/me/invitations/{invitation}/accept"),
        &bea.token,
        None,
    )
    .await;
    let added = json!({"type": "membership.added", "session_id": session, "role": "editor"});
    tab1.expect(added.clone()).await;
    tab2.expect(added).await;

    // The owner changes her role, then removes her.
    call_ok(
        &server,
        Method::PATCH,
        &format!("/sessions/{session}/members/{}", bea.id),
        &owner.token,
        Some(json!({"role": "viewer"})),
    )
    .await;
    tab1.expect(json!({"type": "membership.changed", "session_id": session, "role": "viewer"}))
        .await;
    call_ok(
        &server,
        Method::DELETE,
        &format!("/sessions/{session}/members/{}", bea.id),
        &owner.token,
        None,
    )
    .await;
    tab1.expect(json!({"type": "membership.removed", "session_id": session}))
        .await;

    // An invitation link accepted in another tab.
    let link = call_ok(
        &server,
        Method::POST,
        &format!("/sessions/{session}/invitations"),
        &owner.token,
        Some(json!({"role": "editor"})),
    )
    .await;
    call_ok(
        &server,
        Method::POST,
        &format!("/invitations/{}/accept", link["token"].as_str().unwrap()),
        &bea.token,
        None,
    )
    .await;
    tab1.expect(json!({"type": "membership.added", "session_id": session, "role": "editor"}))
        .await;

    // An invitation withdrawn by the owner, one declined by Bea.
    let second = server.create_session(&owner.token, "Second").await;
    for _ in 0..2 {
        call_ok(
            &server,
            Method::POST,
            &format!("/sessions/{second}/members"),
            &owner.token,
            Some(json!({"email": bea.email, "role": "viewer"})),
        )
        .await;
    }
    // Re-inviting replaces the open invitation: two received events, one open invitation.
    let first_id = tab1.next(LIVE).await.unwrap()["invitation_id"].clone();
    let open_id = tab1.next(LIVE).await.unwrap()["invitation_id"].clone();
    assert_ne!(first_id, open_id);
    call_ok(
        &server,
        Method::DELETE,
        &format!(
            "/sessions/{second}/invitations/{}",
            open_id.as_str().unwrap()
        ),
        &owner.token,
        None,
    )
    .await;
    tab1.expect(
        json!({"type": "invitation.withdrawn", "invitation_id": open_id, "session_id": second}),
    )
    .await;
    call_ok(
        &server,
        Method::POST,
        &format!("/sessions/{second}/members"),
        &owner.token,
        Some(json!({"email": bea.email, "role": "viewer"})),
    )
    .await;
    let third_id = tab1.next(LIVE).await.unwrap()["invitation_id"].clone();
    call_ok(
        &server,
        Method::POST,
        &format!("/me/invitations/{}/decline", third_id.as_str().unwrap()),
        &bea.token,
        None,
    )
    .await;
    tab1.expect(
        json!({"type": "invitation.withdrawn", "invitation_id": third_id, "session_id": second}),
    )
    .await;

    // The session is deleted: its members hear it.
    call_ok(
        &server,
        Method::DELETE,
        &format!("/sessions/{session}"),
        &owner.token,
        None,
    )
    .await;
    tab1.expect(json!({"type": "membership.removed", "session_id": session}))
        .await;

    // The owner of a session she is in deletes their account: it goes from her dashboard too.
    let leaving = server.signup("Leaving").await;
    let theirs = server.create_session(&leaving.token, "Theirs").await;
    let link = call_ok(
        &server,
        Method::POST,
        &format!("/sessions/{theirs}/invitations"),
        &leaving.token,
        Some(json!({"role": "viewer"})),
    )
    .await;
    call_ok(
        &server,
        Method::POST,
        &format!("/invitations/{}/accept", link["token"].as_str().unwrap()),
        &bea.token,
        None,
    )
    .await;
    tab1.expect(json!({"type": "membership.added", "session_id": theirs, "role": "viewer"}))
        .await;
    call_ok(&server, Method::DELETE, "/me", &leaving.token, None).await;
    tab1.expect(json!({"type": "membership.removed", "session_id": theirs}))
        .await;

    // Nothing of this reached another account.
    others.expect_quiet().await;
    drop(tab2);
}

async fn the_channel_is_authenticated_and_capped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bea = server.signup("Bea").await;
    let (status, _) = EventStream::try_open(&server, "atl_not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let res = server
        .client
        .get(server.api("/me/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A share link is no account.
    let session = server.create_session(&bea.token, "Linked").await;
    let (_, link) = server.share_link(&bea.token, &session, None).await;
    let (status, _) = EventStream::try_open(&server, &link).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // API keys need sessions:read.
    let (_, reader) = server.api_key(&bea.token, &["sessions:read"]).await;
    let (_, billing) = server.api_key(&bea.token, &["billing:read"]).await;
    let mut keyed = EventStream::open(&server, &reader).await;
    let (status, _) = EventStream::try_open(&server, &billing).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // At most 8 streams per account (the key's counts): a ninth ends the oldest.
    let mut open = Vec::new();
    for _ in 1..8 {
        open.push(EventStream::open(&server, &bea.token).await);
    }
    let mut newest = EventStream::open(&server, &bea.token).await;
    let mut ended = false;
    let until = tokio::time::Instant::now() + LIVE;
    while !ended && tokio::time::Instant::now() < until {
        ended = tokio::time::timeout(Duration::from_millis(50), keyed.body.next())
            .await
            .is_ok_and(|chunk| chunk.is_none());
    }
    assert!(ended, "the oldest stream was not ended");
    // The others still hear events.
    let owner = server.signup("Owner").await;
    let theirs = server.create_session(&owner.token, "Theirs").await;
    call_ok(
        &server,
        Method::POST,
        &format!("/sessions/{theirs}/members"),
        &owner.token,
        Some(json!({"email": bea.email, "role": "viewer"})),
    )
    .await;
    let received = newest.next(LIVE).await.unwrap();
    assert_eq!(received["type"], "invitation.received");
    assert_eq!(received["session_id"], theirs.as_str());
    assert_eq!(open[0].next(LIVE).await.unwrap(), received);
}

on_both_backends!(
    dashboard_follows_every_change,
    the_channel_is_authenticated_and_capped
);
