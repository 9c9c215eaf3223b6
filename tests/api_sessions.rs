//! Studio sessions over HTTP: CRUD, the caller's list, bad input, members, and share links.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{error_code, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const NO_SUCH_ID: &str = "00000000-0000-4000-8000-000000000000";

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

async fn create_list_get_rename_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;

    // Create: 201, the body is the session with the caller's role; the title is trimmed.
    let (status, created) = server
        .call(
            Method::POST,
            "/sessions",
            Some(&ada.token),
            Some(json!({"title": "  Moodboard  "})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{created}");
    assert_eq!(created["title"], "Moodboard");
    assert_eq!(created["owner_id"], ada.id.as_str());
    assert_eq!(created["role"], "owner");
    let created_at = created["created_at"].as_i64().unwrap();
    assert!(created_at > 1_600_000_000_000, "epoch ms: {created}");
    assert_eq!(created["updated_at"].as_i64(), Some(created_at));

    let second = server.create_session(&ada.token, "Storyboard").await;
    let bobs = server.create_session(&bob.token, "Bob's own").await;
    assert_ne!(first, second);

    // The list holds the caller's sessions only, each with the caller's role.
    let (status, list) = server
        .call(Method::GET, "/sessions", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(got, want, "{list}");
    for s in list.as_array().unwrap() {
        assert_eq!(s["role"], "owner", "{list}");
        assert_eq!(s["owner_id"], ada.id.as_str());
    }
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&bob.token), None)
        .await;
    assert_eq!(ids(&list), vec![bobs.clone()]);

    // Membership makes a session appear in the member's list, with the member's role.
    server.add_member(&ada.token, &first, &bob, "viewer").await;
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&bob.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(find(&list, &first)["role"], "viewer");
    assert_eq!(find(&list, &first)["title"], "Moodboard");
    assert_eq!(find(&list, &bobs)["role"], "owner");

    // Get: members see it with their role; others get 404 (not 403); anonymous 401.
    let (status, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{first}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], first.as_str());
    assert_eq!(got["role"], "owner");
    let (status, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{first}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["role"], "viewer");
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{second}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = server
        .call(Method::GET, &format!("/sessions/{first}"), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthenticated");

    // Rename: owner yes (updated_at moves), viewer 403 and nothing changes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, renamed) = server
        .call(
            Method::PATCH,
            &format!("/sessions/{first}"),
            Some(&ada.token),
            Some(json!({"title": "Mood board v2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["title"], "Mood board v2");
    assert_eq!(renamed["role"], "owner");
    let (_, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{first}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(got["title"], "Mood board v2");
    assert!(got["updated_at"].as_i64().unwrap() > created_at, "{got}");
    assert_eq!(got["created_at"].as_i64(), Some(created_at));
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/sessions/{first}"),
            Some(&bob.token),
            Some(json!({"title": "Bob was here"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
    // An editor may rename.
    server.add_member(&ada.token, &first, &bob, "editor").await;
    let (status, renamed) = server
        .call(
            Method::PATCH,
            &format!("/sessions/{first}"),
            Some(&bob.token),
            Some(json!({"title": "Edited by Bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["role"], "editor");

    // Delete: an editor may not; the owner may; afterwards it is gone for everyone.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{first}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{first}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&ada.token, &bob.token] {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/sessions/{first}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");
    }
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{first}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&ada.token), None)
        .await;
    assert_eq!(ids(&list), vec![second.clone()]);
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&bob.token), None)
        .await;
    assert_eq!(ids(&list), vec![bobs]);
}

async fn bad_session_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Keep me").await;

    let bad_bodies = [
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "x".repeat(10_000)}),
        json!({"title": "é".repeat(201)}),
        json!({"title": "line\nbreak"}),
        json!({"title": "nul\u{0}byte"}),
        json!({"title": 42}),
        json!({"title": null}),
        json!({"title": ["a"]}),
        json!({"title": {"text": "a"}}),
        json!({}),
        json!({"title": "ok", "owner_id": ada.id}),
        json!("title"),
        json!(42),
    ];
    for body in &bad_bodies {
        let (status, res) = server
            .call(
                Method::POST,
                "/sessions",
                Some(&ada.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {body} → {res}");
        assert_eq!(error_code(&res), "invalid_input", "{body}");
        let (status, res) = server
            .call(
                Method::PATCH,
                &format!("/sessions/{session}"),
                Some(&ada.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH {body} → {res}");
        assert_eq!(error_code(&res), "invalid_input", "{body}");
    }
    // Nothing was created or renamed.
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&ada.token), None)
        .await;
    assert_eq!(ids(&list), vec![session.clone()]);
    assert_eq!(list[0]["title"], "Keep me");

    // The limit is 200 characters (not bytes).
    let (status, res) = server
        .call(
            Method::POST,
            "/sessions",
            Some(&ada.token),
            Some(json!({"title": "é".repeat(200)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
    assert_eq!(res["title"].as_str().unwrap().chars().count(), 200);

    // Malformed JSON and a missing content type.
    let res = server
        .client
        .post(server.api("/sessions"))
        .bearer_auth(&ada.token)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&res.json().await.unwrap()), "invalid_input");
    let res = server
        .client
        .post(server.api("/sessions"))
        .bearer_auth(&ada.token)
        .header("content-type", "text/plain")
        .body("{\"title\": \"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    error_code(&res.json().await.unwrap());

    // Unknown and malformed ids name nothing: 404 everywhere, in the error shape.
    for id in [NO_SUCH_ID, "not-a-uuid", "123", "%20"] {
        for (method, path, body) in [
            (Method::GET, format!("/sessions/{id}"), None),
            (
                Method::PATCH,
                format!("/sessions/{id}"),
                Some(json!({"title": "x"})),
            ),
            (Method::DELETE, format!("/sessions/{id}"), None),
            (Method::GET, format!("/sessions/{id}/members"), None),
            (
                Method::POST,
                format!("/sessions/{id}/members"),
                Some(json!({"email": ada.email, "role": "viewer"})),
            ),
            (
                Method::POST,
                format!("/sessions/{id}/share-links"),
                Some(json!({"role": "viewer"})),
            ),
            (Method::GET, format!("/sessions/{id}/share-links"), None),
            (
                Method::DELETE,
                format!("/sessions/{id}/share-links/{NO_SUCH_ID}"),
                None,
            ),
        ] {
            let (status, res) = server
                .call(method.clone(), &path, Some(&ada.token), body)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} → {res}");
            assert_eq!(error_code(&res), "not_found", "{method} {path}");
        }
    }
}

async fn members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let carol = server.signup("Carol").await;
    let session = server.create_session(&ada.token, "Team").await;
    let members_path = format!("/sessions/{session}/members");

    let (status, list) = server
        .call(Method::GET, &members_path, Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["account_id"], ada.id.as_str());
    assert_eq!(list[0]["email"], ada.email.as_str());
    assert_eq!(list[0]["name"], "Ada");
    assert_eq!(list[0]["role"], "owner");

    // Add by email (case and surrounding spaces do not matter): a pending invitation, which
    // Bob accepts to become a member.
    let (status, member) = server
        .call(
            Method::POST,
            &members_path,
            Some(&ada.token),
            Some(json!({"email": format!("  {}  ", bob.email.to_uppercase()), "role": "editor"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{member}");
    // The answer does not say whether the address has an account (tests/invitations.rs).
    assert_eq!(
        member,
        json!({"email": bob.email, "role": "editor", "invited": true})
    );
    let accept_pending = |token: String| {
        let server = &server;
        let session = session.clone();
        async move {
            let (_, mine) = server
                .call(Method::GET, "/me/invitations", Some(&token), None)
                .await;
            let id = mine
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["session_id"] == session.as_str())
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            server
                .call(
                    Method::POST,
                    &format!("/me/invitations/{id}/accept"),
                    Some(&token),
                    None,
                )
                .await
        }
    };
    let (status, accepted) = accept_pending(bob.token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["role"], "editor");
    let (_, list) = server
        .call(Method::GET, &members_path, Some(&ada.token), None)
        .await;
    let bob_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["account_id"] == bob.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(bob_row["email"], bob.email.as_str());
    assert_eq!(bob_row["name"], "Bob");
    assert_eq!(bob_row["role"], "editor");
    let (_, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(got["role"], "editor");

    // A role change is a PATCH; there is still one row for Bob.
    let (status, member) = server
        .call(
            Method::PATCH,
            &format!("{members_path}/{}", bob.id),
            Some(&ada.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member["role"], "viewer");
    // Inviting a member again does not lower their role: accepting keeps the stronger one.
    let (status, _) = server
        .call(
            Method::POST,
            &members_path,
            Some(&ada.token),
            Some(json!({"email": bob.email, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, accepted) = accept_pending(bob.token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["role"], "viewer");
    let (status, list) = server
        .call(Method::GET, &members_path, Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "viewers see the member list");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list.iter()
            .filter(|m| m["account_id"] == bob.id.as_str())
            .map(|m| m["role"].clone())
            .collect::<Vec<_>>(),
        vec![json!("viewer")]
    );
    let (_, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(got["role"], "viewer");

    // Bad member requests.
    let cases = [
        json!({"email": "not-an-email", "role": "viewer"}),
        json!({"email": carol.email, "role": "admin"}),
        json!({"email": carol.email, "role": "Editor"}),
        json!({"email": carol.email}),
        json!({"role": "viewer"}),
        json!({"email": carol.email, "role": "viewer", "note": "hi"}),
        json!({"email": 7, "role": "viewer"}),
        // The creator always stays an owner.
        json!({"email": ada.email, "role": "editor"}),
        json!({"email": ada.email, "role": "viewer"}),
    ];
    for body in cases {
        let (status, res) = server
            .call(
                Method::POST,
                &members_path,
                Some(&ada.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
        assert_eq!(error_code(&res), "invalid_input", "{body}");
    }
    // An address without an account is not an error (that would tell which addresses have
    // one): it becomes a pending invitation.
    let (status, res) = server
        .call(
            Method::POST,
            &members_path,
            Some(&ada.token),
            Some(json!({"email": "nobody-here@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    // Re-affirming the creator as owner is harmless.
    let (status, member) = server
        .call(
            Method::POST,
            &members_path,
            Some(&ada.token),
            Some(json!({"email": ada.email, "role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member["role"], "owner");

    // Only owners manage members.
    let (status, res) = server
        .call(
            Method::POST,
            &members_path,
            Some(&bob.token),
            Some(json!({"email": carol.email, "role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{res}");
    let (status, _) = server
        .call(
            Method::POST,
            &members_path,
            Some(&carol.token),
            Some(json!({"email": carol.email, "role": "owner"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "non-members cannot see the session"
    );

    // A second owner can manage members, but cannot demote or remove the creator either.
    server
        .add_member(&ada.token, &session, &carol, "owner")
        .await;
    let (status, _) = server
        .call(
            Method::POST,
            &members_path,
            Some(&carol.token),
            Some(json!({"email": ada.email, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for token in [&ada.token, &carol.token] {
        let (status, res) = server
            .call(
                Method::DELETE,
                &format!("{members_path}/{}", ada.id),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
        assert_eq!(error_code(&res), "invalid_input");
    }
    let (_, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(got["role"], "owner");

    // Removing: a viewer may not; an owner may; the removed member loses access at once.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("{members_path}/{}", carol.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("{members_path}/{}", bob.id),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&bob.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    // Removing someone who is not a member (any more), or a malformed id: 404.
    for who in [bob.id.as_str(), NO_SUCH_ID, "not-a-uuid"] {
        let (status, res) = server
            .call(
                Method::DELETE,
                &format!("{members_path}/{who}"),
                Some(&ada.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who} → {res}");
        assert_eq!(error_code(&res), "not_found");
    }
    let (_, list) = server
        .call(Method::GET, &members_path, Some(&ada.token), None)
        .await;
    let mut roles: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["account_id"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    roles.sort();
    let mut want = vec![
        (ada.id.clone(), "owner".to_string()),
        (carol.id.clone(), "owner".to_string()),
    ];
    want.sort();
    assert_eq!(roles, want);
}

async fn share_links(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let session = server.create_session(&ada.token, "Shared").await;
    let other = server.create_session(&ada.token, "Not shared").await;
    server
        .add_member(&ada.token, &session, &bob, "viewer")
        .await;
    let links_path = format!("/sessions/{session}/share-links");

    let (status, created) = server
        .call(
            Method::POST,
            &links_path,
            Some(&ada.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let link_id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ats_"), "{token}");
    assert!(token.len() >= 4 + 32, "{token}");
    let url = created["url"].as_str().unwrap();
    assert!(url.contains(&token), "{url}");
    assert!(url.contains(&session), "{url}");
    assert!(url.starts_with("http"), "{url}");
    assert!(created["expires_at"].is_null(), "{created}");

    // The link opens its session as a viewer, and nothing else.
    let (status, got) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["role"], "viewer");
    assert_eq!(got["title"], "Shared");
    let (status, res) = server
        .call(
            Method::GET,
            &format!("/sessions/{other}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a link of A gives 404 on B: {res}"
    );
    assert_eq!(error_code(&res), "not_found");
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/sessions/{session}"),
            Some(json!({"title": "hijacked"})),
        ),
        (Method::GET, format!("/sessions/{session}/members"), None),
        (Method::GET, links_path.clone(), None),
        (
            Method::POST,
            links_path.clone(),
            Some(json!({"role": "viewer"})),
        ),
        (Method::GET, "/sessions".to_string(), None),
        (Method::GET, "/me".to_string(), None),
    ] {
        let (status, res) = server.call(method.clone(), &path, Some(&token), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} → {res}");
        error_code(&res);
    }

    // Editors create links too; viewers may not.
    server
        .add_member(&ada.token, &session, &bob, "editor")
        .await;
    let (bobs_link_id, bobs_link) = server.share_link(&bob.token, &session, None).await;
    server.set_role(&ada.token, &session, &bob, "viewer").await;
    // Links die with their creator's right to share: Bob, now a viewer, cannot share, so the
    // link he made stops working (and is listed as revoked).
    let (status, res) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bobs_link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{res}");
    let (other_link_id, other_link) = server.share_link(&ada.token, &session, None).await;
    let (status, res) = server
        .call(
            Method::POST,
            &links_path,
            Some(&bob.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{res}");

    // The listing shows the links but never their tokens.
    let (status, list) = server
        .call(Method::GET, &links_path, Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut listed = ids(&list);
    listed.sort();
    let mut want = vec![link_id.clone(), bobs_link_id.clone(), other_link_id.clone()];
    want.sort();
    assert_eq!(listed, want, "{list}");
    let text = list.to_string();
    assert!(
        !text.contains(&token) && !text.contains(&bobs_link) && !text.contains(&other_link),
        "{text}"
    );
    assert!(!text.contains("ats_"), "{text}");
    assert!(!text.contains("token"), "no token field: {text}");
    let entry = find(&list, &link_id);
    assert_eq!(entry["role"], "viewer");
    assert_eq!(entry["session_id"], session.as_str());
    assert_eq!(entry["created_by"], ada.id.as_str());
    assert!(entry["revoked_at"].is_null());
    assert!(entry["expires_at"].is_null());
    assert_eq!(find(&list, &bobs_link_id)["created_by"], bob.id.as_str());

    // Revoking through another session's path does nothing.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{other}/share-links/{link_id}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Unknown and malformed link ids.
    for id in [NO_SUCH_ID, "nope"] {
        let (status, res) = server
            .call(
                Method::DELETE,
                &format!("{links_path}/{id}"),
                Some(&ada.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id} → {res}");
        assert_eq!(error_code(&res), "not_found");
    }

    // Revoke: the token is refused (401) from then on; the other link keeps working.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("{links_path}/{link_id}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, res) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{res}");
    assert_eq!(error_code(&res), "invalid_credentials");
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&other_link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = server
        .call(Method::GET, &links_path, Some(&ada.token), None)
        .await;
    let revoked_at = find(&list, &link_id)["revoked_at"].as_i64();
    assert!(revoked_at.is_some_and(|at| at > 0), "{list}");
    assert!(find(&list, &other_link_id)["revoked_at"].is_null());
    assert!(
        find(&list, &bobs_link_id)["revoked_at"].as_i64().is_some(),
        "{list}"
    );
    // Revoking again keeps the first revocation time.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("{links_path}/{link_id}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert!(
        status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    let (_, list) = server
        .call(Method::GET, &links_path, Some(&ada.token), None)
        .await;
    assert_eq!(find(&list, &link_id)["revoked_at"].as_i64(), revoked_at);
}

async fn share_link_expiry_and_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Expiring").await;
    let links_path = format!("/sessions/{session}/share-links");

    let before = now_ms();
    let (status, created) = server
        .call(
            Method::POST,
            &links_path,
            Some(&ada.token),
            Some(json!({"role": "viewer", "expires_in_s": 1})),
        )
        .await;
    let created_at = Instant::now();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let expires_at = created["expires_at"].as_i64().unwrap();
    assert!(
        (before + 1000..=now_ms() + 1000).contains(&expires_at),
        "{created}"
    );
    let token = created["token"].as_str().unwrap().to_string();
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "works before it expires");
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(created_at.elapsed())).await;
    let (status, res) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired: {res}");
    assert_eq!(error_code(&res), "invalid_credentials");
    let (_, list) = server
        .call(Method::GET, &links_path, Some(&ada.token), None)
        .await;
    assert_eq!(list[0]["expires_at"].as_i64(), Some(expires_at), "{list}");

    // The longest allowed expiry is one year.
    let year = 365 * 24 * 3600_i64;
    let (status, created) = server
        .call(
            Method::POST,
            &links_path,
            Some(&ada.token),
            Some(json!({"role": "viewer", "expires_in_s": year})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let long_token = created["token"].as_str().unwrap().to_string();
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&long_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let bad = [
        json!({"role": "viewer", "expires_in_s": 0}),
        json!({"role": "viewer", "expires_in_s": -1}),
        json!({"role": "viewer", "expires_in_s": -3600}),
        json!({"role": "viewer", "expires_in_s": year + 1}),
        json!({"role": "viewer", "expires_in_s": i64::MAX}),
        json!({"role": "viewer", "expires_in_s": 1.5}),
        json!({"role": "viewer", "expires_in_s": "60"}),
        json!({"role": "viewer", "expires_in_s": 1e30}),
        json!({"role": "editor"}),
        json!({"role": "owner"}),
        json!({"role": "admin"}),
        json!({"role": null}),
        json!({}),
        json!({"expires_in_s": 60}),
        json!({"role": "viewer", "session_id": session}),
    ];
    for body in bad {
        let (status, res) = server
            .call(
                Method::POST,
                &links_path,
                Some(&ada.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
        assert_eq!(error_code(&res), "invalid_input", "{body}");
    }
    // Only the two good links exist.
    let (_, list) = server
        .call(Method::GET, &links_path, Some(&ada.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

async fn deleting_a_session_kills_its_links(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let doomed = server.create_session(&ada.token, "Doomed").await;
    let kept = server.create_session(&ada.token, "Kept").await;
    let (_, doomed_link) = server.share_link(&ada.token, &doomed, None).await;
    let (_, timed_link) = server.share_link(&ada.token, &doomed, Some(3600)).await;
    let (_, kept_link) = server.share_link(&ada.token, &kept, None).await;
    for (link, session) in [
        (&doomed_link, &doomed),
        (&timed_link, &doomed),
        (&kept_link, &kept),
    ] {
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/sessions/{session}"),
                Some(link),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{doomed}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for link in [&doomed_link, &timed_link] {
        let (status, res) = server
            .call(
                Method::GET,
                &format!("/sessions/{doomed}"),
                Some(link),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{res}");
        error_code(&res);
    }
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{kept}"),
            Some(&kept_link),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another session's link is untouched"
    );
    let (status, res) = server
        .call(
            Method::GET,
            &format!("/sessions/{doomed}/share-links"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{res}");
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

on_both_backends!(
    create_list_get_rename_delete,
    bad_session_input,
    members,
    share_links,
    share_link_expiry_and_input,
    deleting_a_session_kills_its_links,
);
