//! Invitations against the real binary, on SQLite and PostgreSQL: an editor invitation link makes
//! whoever accepts it an editor (and the session appears in their list); single-use links admit
//! one person; revoked, expired and unknown links are refused with the reason; an email
//! invitation for an address without an account becomes a membership at signup (and a revoked
//! one does not); adding a member makes only a pending invitation whatever the address, and
//! everything the owner sees of it is the same whether or not the address has an account; a
//! person with an account accepts or declines it from `/me/invitations`, and nobody else can;
//! owners change members' roles. (Who may call what: `tests/authz_matrix.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{error_code, Backend, TestServer, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn invite(server: &TestServer, owner: &str, session: &str, body: Value) -> Value {
    let (status, created) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/invitations"),
            Some(owner),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn accept(server: &TestServer, token: &str, invitation: &str) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/invitations/{invitation}/accept"),
            Some(token),
            None,
        )
        .await
}

/// The caller's role in the session as `GET /sessions` lists it (None: not listed).
async fn listed_role(server: &TestServer, token: &str, session: &str) -> Option<String> {
    let (status, list) = server
        .call(Method::GET, "/sessions", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session)
        .map(|s| s["role"].as_str().unwrap().to_string())
}

/// Whether the caller may change the session: renaming it takes an editor (or owner).
async fn can_edit(server: &TestServer, token: &str, session: &str) -> StatusCode {
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/sessions/{session}"),
            Some(token),
            Some(json!({"title": "Renamed by an editor"})),
        )
        .await;
    assert_ne!(status, StatusCode::BAD_REQUEST, "{body}");
    status
}

async fn invitation_links(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let bea = server.signup("Bea").await;
    let cy = server.signup("Cy").await;
    let session = server.create_session(&owner.token, "Invited").await;

    // An editor link, usable any number of times.
    let link = invite(&server, &owner.token, &session, json!({"role": "editor"})).await;
    let token = link["token"].as_str().unwrap();
    assert!(token.starts_with("ati_"), "{link}");
    assert_eq!(link["role"], "editor");
    assert_eq!(link["kind"], "link");
    assert_eq!(link["uses"], 0);
    assert!(
        link["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#/invite/{token}")),
        "{link}"
    );
    // Before accepting, Bea sees what it offers, and has no access.
    let (status, preview) = server
        .call(
            Method::GET,
            &format!("/invitations/{token}"),
            Some(&bea.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["session_title"], "Invited");
    assert_eq!(preview["role"], "editor");
    assert_eq!(listed_role(&server, &bea.token, &session).await, None);
    assert_eq!(
        can_edit(&server, &bea.token, &session).await,
        StatusCode::NOT_FOUND
    );
    // Accepting makes her an editor: the session is in her list, and she edits.
    let (status, accepted) = accept(&server, &bea.token, token).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["session_id"], session.as_str());
    assert_eq!(accepted["role"], "editor");
    assert_eq!(
        listed_role(&server, &bea.token, &session).await.as_deref(),
        Some("editor")
    );
    assert_eq!(
        can_edit(&server, &bea.token, &session).await,
        StatusCode::OK
    );
    // The owner following their own editor link stays an owner.
    let (status, same) = accept(&server, &owner.token, token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["role"], "owner");
    // A viewer link does not demote an editor.
    let viewer_link = invite(&server, &owner.token, &session, json!({"role": "viewer"})).await;
    let (_, kept) = accept(&server, &bea.token, viewer_link["token"].as_str().unwrap()).await;
    assert_eq!(kept["role"], "editor");

    // A single-use link admits one person.
    let single = invite(
        &server,
        &owner.token,
        &session,
        json!({"role": "viewer", "max_uses": 1}),
    )
    .await;
    let single_token = single["token"].as_str().unwrap();
    let (status, _) = accept(&server, &cy.token, single_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed_role(&server, &cy.token, &session).await.as_deref(),
        Some("viewer")
    );
    let dan = server.signup("Dan").await;
    let (status, refused) = accept(&server, &dan.token, single_token).await;
    assert_eq!(status, StatusCode::GONE, "{refused}");
    assert_eq!(error_code(&refused), "gone");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used"),
        "{refused}"
    );
    assert_eq!(listed_role(&server, &dan.token, &session).await, None);

    // A revoked link is refused, and says so.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!(
                "/sessions/{session}/invitations/{}",
                link["id"].as_str().unwrap()
            ),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, path) in [
        (Method::GET, format!("/invitations/{token}")),
        (Method::POST, format!("/invitations/{token}/accept")),
    ] {
        let (status, refused) = server.call(method, &path, Some(&dan.token), None).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revoked"),
            "{refused}"
        );
    }
    assert_eq!(listed_role(&server, &dan.token, &session).await, None);
    // Revoking what the session does not have is 404.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/invitations/{}", uuid::Uuid::new_v4()),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An expired link is refused, and says so.
    let expiring = invite(
        &server,
        &owner.token,
        &session,
        json!({"role": "editor", "expires_in_s": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, refused) = accept(&server, &dan.token, expiring["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::GONE, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refused}"
    );
    assert_eq!(listed_role(&server, &dan.token, &session).await, None);

    // An unknown token is 404.
    let (status, refused) = accept(&server, &dan.token, "ati_0123456789abcdef").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");

    // The owner's list shows each invitation with its state.
    let (status, list) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4, "{list:?}");
    let by_id = |id: &Value| list.iter().find(|i| &i["id"] == id).unwrap().clone();
    assert_eq!(
        by_id(&link["id"])["uses"],
        1,
        "the owner's accept did not count"
    );
    assert!(by_id(&link["id"])["revoked_at"].is_i64());
    assert_eq!(by_id(&single["id"])["uses"], 1);
    assert!(
        list.iter().all(|i| i.get("token").is_none()),
        "tokens are shown once"
    );

    // Bad requests.
    for body in [
        json!({"role": "owner"}),
        json!({"role": "editor", "expires_in_s": 0}),
        json!({"role": "editor", "max_uses": 0}),
        json!({"role": "editor", "max_uses": -3}),
        json!({"role": "editor", "note": "hi"}),
        json!({}),
    ] {
        let (status, res) = server
            .call(
                Method::POST,
                &format!("/sessions/{session}/invitations"),
                Some(&owner.token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
    }
}

async fn email_invitations_and_no_enumeration(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let known = server.signup("Known").await;
    let session = server.create_session(&owner.token, "By email").await;
    let members = format!("/sessions/{session}/members");
    let unknown_email = format!("newcomer-{}@example.com", uuid::Uuid::new_v4().simple());

    // Adding a member answers identically for an address with and without an account.
    let (known_status, known_body) = server
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"email": known.email, "role": "editor"})),
        )
        .await;
    let (unknown_status, unknown_body) = server
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"email": unknown_email.to_uppercase(), "role": "editor"})),
        )
        .await;
    assert_eq!(known_status, StatusCode::OK, "{known_body}");
    assert_eq!(unknown_status, known_status);
    assert_eq!(
        known_body,
        json!({"email": known.email, "role": "editor", "invited": true})
    );
    assert_eq!(
        unknown_body,
        json!({"email": unknown_email, "role": "editor", "invited": true})
    );
    // Invalid requests are refused the same way for both.
    for email in [known.email.as_str(), unknown_email.as_str()] {
        let (status, res) = server
            .call(
                Method::POST,
                &members,
                Some(&owner.token),
                Some(json!({"email": email, "role": "admin"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
        assert!(!res.to_string().contains("account"), "{res}");
    }
    // Nobody is a member yet: the member list is unchanged, and both addresses wait as email
    // invitations that look the same to the owner apart from the address, id and time.
    let member_list = |token: String| {
        let server = &server;
        let members = members.clone();
        async move {
            let (status, list) = server.call(Method::GET, &members, Some(&token), None).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            list
        }
    };
    let only_owner = member_list(owner.token.clone()).await;
    assert_eq!(only_owner.as_array().unwrap().len(), 1, "{only_owner}");
    assert_eq!(only_owner[0]["account_id"], owner.id.as_str());
    assert_eq!(listed_role(&server, &known.token, &session).await, None);
    let (_, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    let pending: Vec<&Value> = invitations
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "email")
        .collect();
    assert_eq!(pending.len(), 2, "{invitations}");
    let of = |email: &str| (*pending.iter().find(|i| i["email"] == email).unwrap()).clone();
    let (known_invitation, unknown_invitation) = (of(&known.email), of(&unknown_email));
    // Blank out what differs by nature (address, generated id, timestamp) and compare bytes.
    let blanked = |mut i: Value| {
        for field in ["email", "id", "created_at"] {
            assert!(i.get(field).is_some(), "{i}");
            i[field] = json!("…");
        }
        serde_json::to_vec(&i).unwrap()
    };
    assert_eq!(
        blanked(known_invitation.clone()),
        blanked(unknown_invitation.clone()),
        "{known_invitation} vs {unknown_invitation}"
    );
    assert_eq!(unknown_invitation["role"], "editor");
    assert_eq!(unknown_invitation["uses"], 0);

    // The known account sees its invitation on its dashboard; nobody else can use it.
    let mine = |token: String| {
        let server = &server;
        async move {
            let (status, list) = server
                .call(Method::GET, "/me/invitations", Some(&token), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{list}");
            list
        }
    };
    let known_mine = mine(known.token.clone()).await;
    assert_eq!(known_mine.as_array().unwrap().len(), 1, "{known_mine}");
    assert_eq!(known_mine[0]["id"], known_invitation["id"]);
    assert_eq!(known_mine[0]["session_id"], session.as_str());
    assert_eq!(known_mine[0]["session_title"], "By email");
    assert_eq!(known_mine[0]["role"], "editor");
    assert_eq!(known_mine[0]["invited_by"], "Owner");
    let stranger = server.signup("Stranger").await;
    assert_eq!(mine(stranger.token.clone()).await, json!([]));
    let on_mine = |token: String, id: Value, what: &'static str| {
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    &format!("/me/invitations/{}/{what}", id.as_str().unwrap()),
                    Some(&token),
                    None,
                )
                .await
        }
    };
    for (token, id) in [
        // Someone whose email does not match, for either invitation.
        (&stranger.token, &known_invitation["id"]),
        (&stranger.token, &unknown_invitation["id"]),
        (&owner.token, &known_invitation["id"]),
        // The known account, for the invitation addressed to someone else.
        (&known.token, &unknown_invitation["id"]),
    ] {
        for what in ["accept", "decline"] {
            let (status, res) = on_mine(token.clone(), id.clone(), what).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{what} {id}: {res}");
        }
    }
    assert_eq!(only_owner, member_list(owner.token.clone()).await);
    let (status, res) = on_mine(
        known.token.clone(),
        json!(uuid::Uuid::new_v4().to_string()),
        "accept",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{res}");

    // Accepting makes the known account an editor, once.
    let (status, accepted) = on_mine(
        known.token.clone(),
        known_invitation["id"].clone(),
        "accept",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted, json!({"session_id": session, "role": "editor"}));
    assert_eq!(
        listed_role(&server, &known.token, &session)
            .await
            .as_deref(),
        Some("editor")
    );
    assert_eq!(
        can_edit(&server, &known.token, &session).await,
        StatusCode::OK
    );
    assert_eq!(mine(known.token.clone()).await, json!([]));
    let (status, _) = on_mine(
        known.token.clone(),
        known_invitation["id"].clone(),
        "accept",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Declining leaves the account out; the owner sees the invitation revoked.
    let other_session = server.create_session(&owner.token, "Declined").await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/sessions/{other_session}/members"),
            Some(&owner.token),
            Some(json!({"email": stranger.email, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stranger_mine = mine(stranger.token.clone()).await;
    let declined_id = stranger_mine[0]["id"].clone();
    let (status, res) = on_mine(stranger.token.clone(), declined_id.clone(), "decline").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{res}");
    assert_eq!(mine(stranger.token.clone()).await, json!([]));
    let (status, _) = on_mine(stranger.token.clone(), declined_id.clone(), "accept").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        listed_role(&server, &stranger.token, &other_session).await,
        None
    );
    let (_, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{other_session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    assert!(invitations[0]["revoked_at"].is_i64(), "{invitations}");

    // Signing up with that address makes the newcomer an editor of the session.
    let (status, signed_up) = server
        .call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": unknown_email, "password": PASSWORD, "name": "Newcomer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{signed_up}");
    let newcomer = signed_up["token"].as_str().unwrap();
    assert_eq!(
        listed_role(&server, newcomer, &session).await.as_deref(),
        Some("editor")
    );
    assert_eq!(can_edit(&server, newcomer, &session).await, StatusCode::OK);
    let (_, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    let used = invitations
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == unknown_email.as_str())
        .unwrap();
    assert_eq!(used["uses"], 1, "{invitations}");

    // A revoked email invitation does not admit its address at signup.
    let late_email = format!("late-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) = server
        .call(
            Method::POST,
            &members,
            Some(&owner.token),
            Some(json!({"email": late_email, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    let late = invitations
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == late_email.as_str())
        .unwrap()
        .clone();
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!(
                "/sessions/{session}/invitations/{}",
                late["id"].as_str().unwrap()
            ),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, signed_up) = server
        .call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": late_email, "password": PASSWORD, "name": "Late"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        listed_role(&server, signed_up["token"].as_str().unwrap(), &session).await,
        None
    );
}

async fn changing_roles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.signup("Owner").await;
    let ed = server.signup("Ed").await;
    let stranger = server.signup("Stranger").await;
    let session = server.create_session(&owner.token, "Roles").await;
    server
        .add_member(&owner.token, &session, &ed, "editor")
        .await;
    assert_eq!(can_edit(&server, &ed.token, &session).await, StatusCode::OK);
    let patch = |account: String, role: &'static str| {
        let server = &server;
        let owner = owner.token.clone();
        let session = session.clone();
        async move {
            server
                .call(
                    Method::PATCH,
                    &format!("/sessions/{session}/members/{account}"),
                    Some(&owner),
                    Some(json!({"role": role})),
                )
                .await
        }
    };
    let (status, member) = patch(ed.id.clone(), "viewer").await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["account_id"], ed.id.as_str());
    assert_eq!(member["role"], "viewer");
    assert_eq!(
        can_edit(&server, &ed.token, &session).await,
        StatusCode::FORBIDDEN
    );
    let (status, _) = patch(ed.id.clone(), "editor").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(can_edit(&server, &ed.token, &session).await, StatusCode::OK);
    // The creator stays an owner; a non-member is not made one by a role change.
    let (status, res) = patch(owner.id.clone(), "viewer").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    let (status, res) = patch(stranger.id.clone(), "editor").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{res}");
    assert_eq!(listed_role(&server, &stranger.token, &session).await, None);
    let (status, res) = patch(ed.id.clone(), "admin").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
}

on_both_backends!(
    invitation_links,
    email_invitations_and_no_enumeration,
    changing_roles
);
