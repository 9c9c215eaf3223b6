//! The authorization matrix: every endpoint × every kind of caller, on SQLite and PostgreSQL.
//!
//! Each (endpoint, caller) cell runs against its own fresh session fixture, so a destructive call
//! in one cell (delete, revoke, remove member) cannot change the outcome of another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{png, Backend, TestServer, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    OtherAccount,
    ViewerMember,
    Editor,
    Owner,
    ShareLink,
    RevokedLink,
    ExpiredLink,
}

const CALLERS: [Caller; 8] = [
    Caller::Anonymous,
    Caller::OtherAccount,
    Caller::ViewerMember,
    Caller::Editor,
    Caller::Owner,
    Caller::ShareLink,
    Caller::RevokedLink,
    Caller::ExpiredLink,
];

struct People {
    owner: User,
    editor: User,
    viewer: User,
    other: User,
}

/// One session with everything a cell may touch.
struct Fixture {
    session: String,
    link: String,
    spare_link_id: String,
    revoked: String,
    expired: String,
    media: String,
    private_media: String,
}

async fn fixture(server: &TestServer, p: &People) -> Fixture {
    let session = server.create_session(&p.owner.token, "Matrix").await;
    server
        .add_member(&p.owner.token, &session, &p.editor.email, "editor")
        .await;
    server
        .add_member(&p.owner.token, &session, &p.viewer.email, "viewer")
        .await;
    let (_, link) = server.share_link(&p.owner.token, &session, None).await;
    let (spare_link_id, _) = server.share_link(&p.owner.token, &session, None).await;
    let (revoked_id, revoked) = server.share_link(&p.owner.token, &session, None).await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/share-links/{revoked_id}"),
            Some(&p.owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, expired) = server.share_link(&p.owner.token, &session, Some(1)).await;
    let (status, media) = server
        .upload(&p.owner.token, png(4, 4), "m.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let (status, private_media) = server
        .upload(&p.owner.token, png(2, 2), "p.png", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{private_media}");
    Fixture {
        session,
        link,
        spare_link_id,
        revoked,
        expired,
        media: media["id"].as_str().unwrap().to_string(),
        private_media: private_media["id"].as_str().unwrap().to_string(),
    }
}

fn token<'a>(caller: Caller, p: &'a People, f: &'a Fixture) -> Option<&'a str> {
    match caller {
        Caller::Anonymous => None,
        Caller::OtherAccount => Some(&p.other.token),
        Caller::ViewerMember => Some(&p.viewer.token),
        Caller::Editor => Some(&p.editor.token),
        Caller::Owner => Some(&p.owner.token),
        Caller::ShareLink => Some(&f.link),
        Caller::RevokedLink => Some(&f.revoked),
        Caller::ExpiredLink => Some(&f.expired),
    }
}

struct Endpoint {
    method: Method,
    path: fn(&Fixture, &People) -> String,
    body: Option<fn(&People) -> Value>,
    /// Expected status per caller, in the order of CALLERS.
    expect: [u16; 8],
}

// Columns:              anon other viewer editor owner link revoked expired
fn session_endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/sessions/{}", f.session),
            body: None,
            expect: [401, 404, 200, 200, 200, 200, 401, 401],
        },
        Endpoint {
            method: Method::PATCH,
            path: |f, _| format!("/sessions/{}", f.session),
            body: Some(|_| json!({"title": "Renamed"})),
            expect: [401, 404, 403, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::DELETE,
            path: |f, _| format!("/sessions/{}", f.session),
            body: None,
            expect: [401, 404, 403, 403, 204, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/sessions/{}/members", f.session),
            body: None,
            expect: [401, 404, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::POST,
            path: |f, _| format!("/sessions/{}/members", f.session),
            body: Some(|p| json!({"email": p.other.email, "role": "viewer"})),
            expect: [401, 404, 403, 403, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::DELETE,
            path: |f, p| format!("/sessions/{}/members/{}", f.session, p.viewer.id),
            body: None,
            expect: [401, 404, 403, 403, 204, 403, 401, 401],
        },
        Endpoint {
            method: Method::POST,
            path: |f, _| format!("/sessions/{}/share-links", f.session),
            body: Some(|_| json!({"role": "viewer"})),
            expect: [401, 404, 403, 201, 201, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/sessions/{}/share-links", f.session),
            body: None,
            expect: [401, 404, 403, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::DELETE,
            path: |f, _| format!("/sessions/{}/share-links/{}", f.session, f.spare_link_id),
            body: None,
            expect: [401, 404, 403, 204, 204, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/media/{}", f.media),
            body: None,
            expect: [401, 404, 200, 200, 200, 200, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/media/{}", f.private_media),
            body: None,
            expect: [401, 404, 404, 404, 200, 404, 401, 401],
        },
        Endpoint {
            method: Method::DELETE,
            path: |f, _| format!("/media/{}", f.media),
            body: None,
            expect: [401, 404, 403, 403, 204, 403, 401, 401],
        },
        // Pro runtime: everyone who sees the session sees its lease; owners and editors start
        // and stop it (paid from their own credits — none here, hence 402 once authorized;
        // nothing to stop, hence 404).
        Endpoint {
            method: Method::GET,
            path: |f, _| format!("/sessions/{}/runtime", f.session),
            body: None,
            expect: [401, 404, 200, 200, 200, 200, 401, 401],
        },
        Endpoint {
            method: Method::POST,
            path: |f, _| format!("/sessions/{}/runtime", f.session),
            body: Some(|_| json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
            expect: [401, 404, 403, 402, 402, 403, 401, 401],
        },
        Endpoint {
            method: Method::DELETE,
            path: |f, _| format!("/sessions/{}/runtime", f.session),
            body: None,
            expect: [401, 404, 403, 404, 404, 403, 401, 401],
        },
        // Extending: owners and editors may ask (the payer only succeeds); nothing runs here.
        Endpoint {
            method: Method::PATCH,
            path: |f, _| format!("/sessions/{}/runtime", f.session),
            body: Some(|_| json!({"add_minutes": 1})),
            expect: [401, 404, 403, 404, 404, 403, 401, 401],
        },
    ]
}

const NO_ID: &str = "00000000-0000-0000-0000-000000000000";

// The admin API: every non-admin account is refused (403), anonymous callers 401; no caller in
// this matrix is an admin (admins are checked separately below).
fn admin_endpoints() -> Vec<Endpoint> {
    const REFUSED: [u16; 8] = [401, 403, 403, 403, 403, 403, 401, 401];
    let reason = Some((|_| json!({"reason": "matrix"})) as fn(&People) -> Value);
    vec![
        Endpoint {
            method: Method::GET,
            path: |_, _| "/admin/accounts".into(),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::GET,
            path: |_, p| format!("/admin/accounts/{}", p.other.id),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, p| format!("/admin/accounts/{}/credits", p.other.id),
            body: Some(
                |_| json!({"amount": 1000, "reason": "matrix", "idempotency_key": "matrix-grant"}),
            ),
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, p| format!("/admin/accounts/{}/suspend", p.other.id),
            body: reason,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, p| format!("/admin/accounts/{}/unsuspend", p.other.id),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::PUT,
            path: |_, p| format!("/admin/accounts/{}/role", p.other.id),
            body: Some(|_| json!({"role": "admin"})),
            expect: REFUSED,
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/admin/workers".into(),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| format!("/admin/workers/{NO_ID}/drain"),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| "/admin/worker-tokens".into(),
            body: Some(|_| json!({"name": "matrix"})),
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| format!("/admin/worker-tokens/{NO_ID}/revoke"),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/admin/leases".into(),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| format!("/admin/leases/{NO_ID}/stop"),
            body: reason,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/admin/jobs".into(),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| format!("/admin/jobs/{NO_ID}/cancel"),
            body: None,
            expect: REFUSED,
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/admin/audit".into(),
            body: None,
            expect: REFUSED,
        },
    ]
}

// Account-level endpoints: every account may use them for itself; a share link may not.
fn account_endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: |_, _| "/sessions".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| "/sessions".into(),
            body: Some(|_| json!({"title": "Mine"})),
            expect: [401, 201, 201, 201, 201, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/me".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/me/usage".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/me/export".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/media".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        // Billing is per account: a share link has no credits.
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/balance".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/ledger".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/usage".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/statement".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/ledger.csv".into(),
            body: None,
            expect: [401, 200, 200, 200, 200, 403, 401, 401],
        },
        // Buying needs an account; this server has no payments set up (409).
        Endpoint {
            method: Method::POST,
            path: |_, _| "/billing/checkout".into(),
            body: Some(|_| json!({"pack": "starter"})),
            expect: [401, 409, 409, 409, 409, 403, 401, 401],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/packs".into(),
            body: None,
            expect: [200, 200, 200, 200, 200, 200, 200, 200],
        },
        // Changing a password needs the current one (wrong here: 403 for every account).
        Endpoint {
            method: Method::POST,
            path: |_, _| "/me/password".into(),
            body: Some(
                |_| json!({"current_password": "not it at all", "new_password": "a brand new passphrase"}),
            ),
            expect: [401, 403, 403, 403, 403, 403, 401, 401],
        },
        // Prices are public; the webhook authenticates by signature only (none here: 400).
        Endpoint {
            method: Method::GET,
            path: |_, _| "/billing/prices".into(),
            body: None,
            expect: [200, 200, 200, 200, 200, 200, 200, 200],
        },
        Endpoint {
            method: Method::POST,
            path: |_, _| "/billing/webhook".into(),
            body: Some(|_| json!({"id": "evt_x", "type": "checkout.session.completed"})),
            expect: [400, 400, 400, 400, 400, 400, 400, 400],
        },
        // Public endpoints answer everyone, whatever token they carry.
        Endpoint {
            method: Method::GET,
            path: |_, _| "/healthz".into(),
            body: None,
            expect: [200, 200, 200, 200, 200, 200, 200, 200],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/readyz".into(),
            body: None,
            expect: [200, 200, 200, 200, 200, 200, 200, 200],
        },
        Endpoint {
            method: Method::GET,
            path: |_, _| "/openapi.json".into(),
            body: None,
            expect: [200, 200, 200, 200, 200, 200, 200, 200],
        },
    ]
}

async fn check(
    server: &TestServer,
    ep: &Endpoint,
    caller: Caller,
    p: &People,
    f: &Fixture,
    want: u16,
    failures: &mut Vec<String>,
) {
    let path = (ep.path)(f, p);
    let body = ep.body.map(|b| b(p));
    let (status, res) = server
        .call(ep.method.clone(), &path, token(caller, p, f), body)
        .await;
    if status.as_u16() != want {
        failures.push(format!(
            "{} {path} as {caller:?}: want {want}, got {status} {res}",
            ep.method
        ));
    } else if want >= 400 && res["error"]["code"].as_str().is_none() {
        failures.push(format!(
            "{} {path} as {caller:?}: error without the error body: {res}",
            ep.method
        ));
    }
}

async fn matrix(backend: Backend) {
    // No starter credits: starting a runtime is 402 once authorized.
    let server = TestServer::start_with(backend, &["--signup-credits", "0"]).await;
    let people = People {
        owner: server.signup("Owner").await,
        editor: server.signup("Editor").await,
        viewer: server.signup("Viewer").await,
        other: server.signup("Other").await,
    };
    let endpoints = session_endpoints();
    let mut fixtures = Vec::new();
    for _ in 0..endpoints.len() * CALLERS.len() {
        fixtures.push(fixture(&server, &people).await);
    }
    let shared = fixture(&server, &people).await;
    // Let every one-second link expire.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let mut failures = Vec::new();
    let mut cells = 0;
    let mut next = fixtures.iter();
    for ep in &endpoints {
        for (i, caller) in CALLERS.iter().enumerate() {
            let f = next.next().unwrap();
            check(
                &server,
                ep,
                *caller,
                &people,
                f,
                ep.expect[i],
                &mut failures,
            )
            .await;
            cells += 1;
        }
    }
    for ep in account_endpoints().iter().chain(admin_endpoints().iter()) {
        for (i, caller) in CALLERS.iter().enumerate() {
            check(
                &server,
                ep,
                *caller,
                &people,
                &shared,
                ep.expect[i],
                &mut failures,
            )
            .await;
            cells += 1;
        }
    }

    // Last, the endpoints that end an account's token or the account itself, with tokens minted
    // for the purpose so the rows above were unaffected.
    let logout = Endpoint {
        method: Method::POST,
        path: |_, _| "/auth/logout".into(),
        body: None,
        expect: [401, 204, 204, 204, 204, 204, 401, 401],
    };
    let delete_me = Endpoint {
        method: Method::DELETE,
        path: |_, _| "/me".into(),
        body: None,
        expect: [401, 204, 204, 204, 204, 403, 401, 401],
    };
    for ep in [&logout, &delete_me] {
        for (i, caller) in CALLERS.iter().enumerate() {
            let fresh = People {
                owner: User {
                    token: server.login(&people.owner.email).await,
                    ..people.owner.clone()
                },
                editor: User {
                    token: server.login(&people.editor.email).await,
                    ..people.editor.clone()
                },
                viewer: User {
                    token: server.login(&people.viewer.email).await,
                    ..people.viewer.clone()
                },
                other: User {
                    token: server.login(&people.other.email).await,
                    ..people.other.clone()
                },
            };
            if ep.method == Method::DELETE && i > 0 && ep.expect[i] == 204 {
                // Deleting an account is for good: give each account cell its own account.
                let victim = server.signup("Victim").await;
                let (status, res) = server
                    .call(Method::DELETE, "/me", Some(&victim.token), None)
                    .await;
                if status.as_u16() != 204 {
                    failures.push(format!("DELETE /me as {caller:?}: got {status} {res}"));
                }
                let (status, _) = server
                    .call(Method::GET, "/me", Some(&victim.token), None)
                    .await;
                if status != StatusCode::UNAUTHORIZED {
                    failures.push(format!("deleted account's token still works: {status}"));
                }
                cells += 1;
                continue;
            }
            check(
                &server,
                ep,
                *caller,
                &fresh,
                &shared,
                ep.expect[i],
                &mut failures,
            )
            .await;
            cells += 1;
        }
    }
    assert_eq!(
        cells,
        (endpoints.len() + account_endpoints().len() + admin_endpoints().len() + 2) * CALLERS.len()
    );
    // An admin passes each admin endpoint's authorization (what follows is each endpoint's own
    // answer: found, not found, created…), and none of the refusals above changed anything.
    let admin = server.admin("Admin").await;
    for ep in &admin_endpoints() {
        let path = (ep.path)(&shared, &people);
        let body = ep.body.map(|b| b(&people));
        let (status, res) = server
            .call(ep.method.clone(), &path, Some(&admin.token), body)
            .await;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            failures.push(format!("{} {path} as an admin: {status} {res}", ep.method));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

on_both_backends!(matrix);
