//! The authorization matrix: every endpoint × every kind of caller, on SQLite and PostgreSQL.
//!
//! Every cell states the status the policy gives (README "Accounts and access", DESIGN.md), not
//! what the server happens to answer. Three kinds of rows:
//! - session rows: each (endpoint, caller) cell runs against its own fresh session fixture, so a
//!   destructive call in one cell (delete, revoke, remove member) cannot change another's outcome;
//! - account rows: the caller's own things, or public endpoints; one shared fixture;
//! - the rows that end a login or an account (logout, `DELETE /me`): a whole fresh cast per cell,
//!   and afterwards a check that the caller's credential works exactly when it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{png, Backend, TestServer, User, PASSWORD};
use reqwest::header::COOKIE;
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
    /// A live share link of another session (the owner's other one): a link opens its own
    /// session only.
    OtherSessionLink,
    /// A worker host's token (`atelier admin create-worker-token`) presented as a user's bearer
    /// token: it opens the worker socket and nothing else.
    WorkerToken,
    /// The owner's session and CSRF cookies without the `X-CSRF-Token` header — what a page on
    /// another site can make a browser send. Reads work; every change is refused with 403.
    CookieWithoutCsrf,
    /// The owner's API key with every scope: the owner, where keys may go at all (not account
    /// management, admin, buying credits, logout: 403 `insufficient_scope`).
    KeyAllScopes,
    /// The owner's API key with `sessions:read` only.
    KeyRead,
    /// The owner's API key with `billing:read` only.
    KeyBilling,
    /// The owner's revoked API key: 401 everywhere a credential is read.
    RevokedKey,
}

const CALLERS: [Caller; 15] = [
    Caller::Anonymous,
    Caller::OtherAccount,
    Caller::ViewerMember,
    Caller::Editor,
    Caller::Owner,
    Caller::ShareLink,
    Caller::RevokedLink,
    Caller::ExpiredLink,
    Caller::OtherSessionLink,
    Caller::WorkerToken,
    Caller::CookieWithoutCsrf,
    Caller::KeyAllScopes,
    Caller::KeyRead,
    Caller::KeyBilling,
    Caller::RevokedKey,
];

/// A row's cells for the eleven callers without API keys, then for the owner's four keys.
const fn with_keys(base: [u16; 11], keys: [u16; 4]) -> [u16; CALLERS.len()] {
    let mut all = [0; CALLERS.len()];
    let mut i = 0;
    while i < CALLERS.len() {
        all[i] = if i < 11 { base[i] } else { keys[i - 11] };
        i += 1;
    }
    all
}

impl Caller {
    /// The owner's API keys that still work.
    fn is_live_key(self) -> bool {
        matches!(
            self,
            Caller::KeyAllScopes | Caller::KeyRead | Caller::KeyBilling
        )
    }

    /// Callers that are an account (whose logout or deletion ends their credential).
    fn is_account(self) -> bool {
        matches!(
            self,
            Caller::OtherAccount
                | Caller::ViewerMember
                | Caller::Editor
                | Caller::Owner
                | Caller::CookieWithoutCsrf
        )
    }
}

/// A login kept in cookies, as a browser holds it.
struct CookieLogin {
    token: String,
    csrf: String,
}

/// Everyone who calls, and the credentials that do not belong to one fixture.
struct Cast {
    owner: User,
    editor: User,
    viewer: User,
    other: User,
    /// The owner, logged in once more, in cookies.
    owner_cookie: CookieLogin,
    /// Another session of the owner, and a live share link of it.
    other_session: String,
    other_session_link: String,
    worker_token: String,
    /// The owner's API keys: every scope, `sessions:read`, `billing:read`, and a revoked one.
    key_all: String,
    key_read: String,
    key_billing: String,
    key_revoked: String,
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
    /// A finished job of the session.
    job: String,
    /// A named version of the session's document.
    version: String,
    /// An open, any-number-of-uses editor invitation link of the session: its id and token.
    invitation: String,
    invitation_token: String,
    /// A pending email invitation (`POST …/members`) addressed to the other account.
    email_invitation: String,
}

/// The test's own connection to the server's database, for rows the API only makes at a cost:
/// a job needs a running Pro runtime and a worker.
struct Database {
    pool: sqlx::AnyPool,
}

impl Database {
    async fn connect(server: &TestServer) -> Database {
        sqlx::any::install_default_drivers();
        Database {
            pool: sqlx::AnyPool::connect(&server.database_url).await.unwrap(),
        }
    }

    /// A job that has already succeeded: those allowed to cancel it get 409 "already ended".
    async fn finished_job(&self, session: &str, account: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO jobs (id, session_id, account_id, status, plan, created_at, finished_at) \
             VALUES ($1, $2, $3, 'succeeded', '[]', 1, 2)",
        )
        .bind(id.clone())
        .bind(session.to_string())
        .bind(account.to_string())
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }
}

/// A worker token, made the way an operator makes one.
async fn create_worker_token(server: &TestServer) -> String {
    let database_url = server.database_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["admin", "create-worker-token", "--name", "matrix"])
            .args(["--database-url", &database_url])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "create-worker-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("atw_"), "not a worker token: {token:?}");
    token
}

async fn cookie_login(server: &TestServer, email: &str) -> CookieLogin {
    let (status, body) = server
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login: {body}");
    CookieLogin {
        token: body["token"].as_str().unwrap().to_string(),
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    }
}

async fn cast(server: &TestServer, worker_token: &str) -> Cast {
    let owner = server.signup("Owner").await;
    let owner_cookie = cookie_login(server, &owner.email).await;
    let other_session = server.create_session(&owner.token, "Elsewhere").await;
    let (_, other_session_link) = server.share_link(&owner.token, &other_session, None).await;
    let all = [
        "sessions:read",
        "sessions:write",
        "jobs:run",
        "billing:read",
    ];
    let (_, key_all) = server.api_key(&owner.token, &all).await;
    let (_, key_read) = server.api_key(&owner.token, &["sessions:read"]).await;
    let (_, key_billing) = server.api_key(&owner.token, &["billing:read"]).await;
    let (revoked_id, key_revoked) = server.api_key(&owner.token, &all).await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/me/api-keys/{revoked_id}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    Cast {
        key_all,
        key_read,
        key_billing,
        key_revoked,
        editor: server.signup("Editor").await,
        viewer: server.signup("Viewer").await,
        other: server.signup("Other").await,
        owner,
        owner_cookie,
        other_session,
        other_session_link,
        worker_token: worker_token.to_string(),
    }
}

async fn fixture(server: &TestServer, db: &Database, c: &Cast) -> Fixture {
    let session = server.create_session(&c.owner.token, "Matrix").await;
    server
        .add_member(&c.owner.token, &session, &c.editor, "editor")
        .await;
    server
        .add_member(&c.owner.token, &session, &c.viewer, "viewer")
        .await;
    let (_, link) = server.share_link(&c.owner.token, &session, None).await;
    let (spare_link_id, _) = server.share_link(&c.owner.token, &session, None).await;
    let (revoked_id, revoked) = server.share_link(&c.owner.token, &session, None).await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/share-links/{revoked_id}"),
            Some(&c.owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, expired) = server.share_link(&c.owner.token, &session, Some(1)).await;
    let (status, media) = server
        .upload(&c.owner.token, png(4, 4), "m.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let (status, private_media) = server
        .upload(&c.owner.token, png(2, 2), "p.png", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{private_media}");
    let job = db.finished_job(&session, &c.owner.id).await;
    let (status, version) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/versions"),
            Some(&c.owner.token),
            Some(json!({"name": "fixture"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let (status, invitation) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/invitations"),
            Some(&c.owner.token),
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let (status, added) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/members"),
            Some(&c.owner.token),
            Some(json!({"email": c.other.email, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let (status, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&c.owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{invitations}");
    let email_invitation = invitations
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == c.other.email.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        email_invitation,
        session,
        link,
        spare_link_id,
        revoked,
        expired,
        media: media["id"].as_str().unwrap().to_string(),
        private_media: private_media["id"].as_str().unwrap().to_string(),
        job,
        version: version["id"].as_str().unwrap().to_string(),
        invitation: invitation["id"].as_str().unwrap().to_string(),
        invitation_token: invitation["token"].as_str().unwrap().to_string(),
    }
}

enum Credential<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a CookieLogin),
}

fn credential<'a>(caller: Caller, c: &'a Cast, f: &'a Fixture) -> Credential<'a> {
    match caller {
        Caller::Anonymous => Credential::None,
        Caller::OtherAccount => Credential::Bearer(&c.other.token),
        Caller::ViewerMember => Credential::Bearer(&c.viewer.token),
        Caller::Editor => Credential::Bearer(&c.editor.token),
        Caller::Owner => Credential::Bearer(&c.owner.token),
        Caller::ShareLink => Credential::Bearer(&f.link),
        Caller::RevokedLink => Credential::Bearer(&f.revoked),
        Caller::ExpiredLink => Credential::Bearer(&f.expired),
        Caller::OtherSessionLink => Credential::Bearer(&c.other_session_link),
        Caller::WorkerToken => Credential::Bearer(&c.worker_token),
        Caller::CookieWithoutCsrf => Credential::Cookie(&c.owner_cookie),
        Caller::KeyAllScopes => Credential::Bearer(&c.key_all),
        Caller::KeyRead => Credential::Bearer(&c.key_read),
        Caller::KeyBilling => Credential::Bearer(&c.key_billing),
        Caller::RevokedKey => Credential::Bearer(&c.key_revoked),
    }
}

enum Body {
    None,
    Json(fn(&Cast) -> Value),
    /// A multipart upload of a small PNG, with the fixture's session as `session_id` or not.
    Upload {
        into_session: bool,
    },
}

struct Endpoint {
    method: Method,
    path: fn(&Fixture, &Cast) -> String,
    body: Body,
    /// Expected status per caller, in the order of CALLERS.
    expect: [u16; CALLERS.len()],
}

fn row(
    method: Method,
    path: fn(&Fixture, &Cast) -> String,
    body: Body,
    expect: [u16; CALLERS.len()],
) -> Endpoint {
    Endpoint {
        method,
        path,
        body,
        expect,
    }
}

// Columns: anon other viewer editor owner | link revoked expired other-session-link |
//          worker-token cookie-without-csrf | the owner's API keys: all scopes, sessions:read,
//          billing:read, revoked
//
// A key is its owner within its scopes: every endpoint declares the scope it needs, and a key
// without it gets 403 insufficient_scope before anything else is looked at.
// An account without access does not see the session (404); a member whose role does not allow
// the action gets 403; a share link is a viewer of its own session and nobody elsewhere (404); a
// dead credential is 401; the cookie caller is the owner, who may read everything here, and
// whose every change is refused for want of the CSRF header (403 csrf_rejected).
fn session_endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        row(
            M::GET,
            |f, _| format!("/sessions/{}", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::PATCH,
            |f, _| format!("/sessions/{}", f.session),
            Body::Json(|_| json!({"title": "Renamed"})),
            [
                401, 404, 403, 200, 200, 403, 401, 401, 404, 401, 403, 200, 403, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/sessions/{}", f.session),
            Body::None,
            [
                401, 404, 403, 403, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/sessions/{}/members", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 403, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/sessions/{}/members", f.session),
            Body::Json(|c| json!({"email": c.other.email, "role": "viewer"})),
            [
                401, 404, 403, 403, 200, 403, 401, 401, 404, 401, 403, 200, 403, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, c| format!("/sessions/{}/members/{}", f.session, c.viewer.id),
            Body::None,
            [
                401, 404, 403, 403, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        row(
            M::PATCH,
            |f, c| format!("/sessions/{}/members/{}", f.session, c.viewer.id),
            Body::Json(|_| json!({"role": "editor"})),
            [
                401, 404, 403, 403, 200, 403, 401, 401, 404, 401, 403, 200, 403, 403, 401,
            ],
        ),
        // Invitation links make members: owners only, like adding a member.
        row(
            M::POST,
            |f, _| format!("/sessions/{}/invitations", f.session),
            Body::Json(|_| json!({"role": "editor", "expires_in_s": 3600, "max_uses": 1})),
            [
                401, 404, 403, 403, 201, 403, 401, 401, 404, 401, 403, 201, 403, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/sessions/{}/invitations", f.session),
            Body::None,
            [
                401, 404, 403, 403, 200, 403, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/sessions/{}/invitations/{}", f.session, f.invitation),
            Body::None,
            [
                401, 404, 403, 403, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        // Looking at and accepting an invitation link: any signed-in account holding it (the
        // token is the authority); not a share link, not an API key.
        row(
            M::GET,
            |f, _| format!("/invitations/{}", f.invitation_token),
            Body::None,
            [
                401, 200, 200, 200, 200, 403, 401, 401, 403, 401, 200, 403, 403, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/invitations/{}/accept", f.invitation_token),
            Body::None,
            [
                401, 200, 200, 200, 200, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        // A pending email invitation is accepted or declined by the account with that address
        // (here the other account) and nobody else: everyone else gets 404, as if it did not
        // exist. With a login only, like accepting an invitation link.
        row(
            M::POST,
            |f, _| format!("/me/invitations/{}/accept", f.email_invitation),
            Body::None,
            [
                401, 200, 404, 404, 404, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/me/invitations/{}/decline", f.email_invitation),
            Body::None,
            [
                401, 204, 404, 404, 404, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/sessions/{}/share-links", f.session),
            Body::Json(|_| json!({"role": "viewer"})),
            [
                401, 404, 403, 201, 201, 403, 401, 401, 404, 401, 403, 201, 403, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/sessions/{}/share-links", f.session),
            Body::None,
            [
                401, 404, 403, 200, 200, 403, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/sessions/{}/share-links/{}", f.session, f.spare_link_id),
            Body::None,
            [
                401, 404, 403, 204, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        // Media of the session: readable by whoever sees the session, deleted by its owner only.
        row(
            M::GET,
            |f, _| format!("/media/{}", f.media),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/media/{}", f.private_media),
            Body::None,
            [
                401, 404, 404, 404, 200, 404, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/media/{}", f.media),
            Body::None,
            [
                401, 404, 403, 403, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        // Uploading into a session is editing it: owners and editors; a share link uploads
        // nothing (403, it is not an account).
        row(
            M::POST,
            |_, _| "/media".into(),
            Body::Upload { into_session: true },
            [
                401, 404, 403, 201, 201, 403, 401, 401, 403, 401, 403, 201, 403, 403, 401,
            ],
        ),
        // Pro runtime: everyone who sees the session sees its lease; owners and editors start
        // and stop it (paid from their own credits — none here, hence 402 once authorized;
        // nothing to stop, hence 404).
        row(
            M::GET,
            |f, _| format!("/sessions/{}/runtime", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/sessions/{}/runtime", f.session),
            Body::Json(|_| json!({"gpu_class": "cpu", "prepaid_minutes": 1})),
            [
                401, 404, 403, 402, 402, 403, 401, 401, 404, 401, 403, 402, 403, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/sessions/{}/runtime", f.session),
            Body::None,
            [
                401, 404, 403, 404, 404, 403, 401, 401, 404, 401, 403, 404, 403, 403, 401,
            ],
        ),
        // Extending: owners and editors may ask (only the payer succeeds); nothing runs here.
        row(
            M::PATCH,
            |f, _| format!("/sessions/{}/runtime", f.session),
            Body::Json(|_| json!({"add_minutes": 1})),
            [
                401, 404, 403, 404, 404, 403, 401, 401, 404, 401, 403, 404, 403, 403, 401,
            ],
        ),
        // Jobs are as private as their session. Owners and editors run them (no runtime here,
        // hence 402 once authorized) and cancel them (this one has ended, hence 409).
        row(
            M::POST,
            |f, _| format!("/sessions/{}/jobs", f.session),
            Body::Json(|_| json!({})),
            [
                401, 404, 403, 402, 402, 403, 401, 401, 404, 401, 403, 402, 403, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/sessions/{}/jobs", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        // The session's images (what an image input can pick): as visible as the session.
        row(
            M::GET,
            |f, _| format!("/sessions/{}/media", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/jobs/{}", f.job),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/jobs/{}/cancel", f.job),
            Body::None,
            [
                401, 404, 403, 409, 409, 403, 401, 401, 404, 401, 403, 409, 403, 403, 401,
            ],
        ),
        // The graph over REST: read as the session is seen, written as it is edited.
        row(
            M::GET,
            |f, _| format!("/sessions/{}/graph", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::PUT,
            |f, _| format!("/sessions/{}/graph", f.session),
            Body::Json(|_| json!({"nodes": {}, "edges": {}})),
            [
                401, 404, 403, 200, 200, 403, 401, 401, 404, 401, 403, 200, 403, 403, 401,
            ],
        ),
        row(
            M::PATCH,
            |f, _| format!("/sessions/{}/graph", f.session),
            Body::Json(|_| json!({"nodes": {}})),
            [
                401, 404, 403, 200, 200, 403, 401, 401, 404, 401, 403, 200, 403, 403, 401,
            ],
        ),
        // Versions: read as the session is seen; named, restored and deleted by those who edit.
        row(
            M::GET,
            |f, _| format!("/sessions/{}/versions", f.session),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| format!("/sessions/{}/versions/{}", f.session, f.version),
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::GET,
            |f, _| {
                format!(
                    "/sessions/{}/versions/{v}/diff/{v}",
                    f.session,
                    v = f.version
                )
            },
            Body::None,
            [
                401, 404, 200, 200, 200, 200, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/sessions/{}/versions", f.session),
            Body::Json(|_| json!({"name": "mine"})),
            [
                401, 404, 403, 201, 201, 403, 401, 401, 404, 401, 403, 201, 403, 403, 401,
            ],
        ),
        row(
            M::POST,
            |f, _| format!("/sessions/{}/versions/{}/restore", f.session, f.version),
            Body::None,
            [
                401, 404, 403, 201, 201, 403, 401, 401, 404, 401, 403, 201, 403, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |f, _| format!("/sessions/{}/versions/{}", f.session, f.version),
            Body::None,
            [
                401, 404, 403, 204, 204, 403, 401, 401, 404, 401, 403, 204, 403, 403, 401,
            ],
        ),
        // A job's webhook deliveries name its URL: for those who may run jobs there.
        row(
            M::GET,
            |f, _| format!("/jobs/{}/webhook-deliveries", f.job),
            Body::None,
            [
                401, 404, 403, 200, 200, 403, 401, 401, 404, 401, 200, 200, 200, 403, 401,
            ],
        ),
    ]
}

// Account-level endpoints: every account may use them for itself; a share link may not (403);
// public endpoints answer everyone, whatever credential comes along.
fn account_endpoints() -> Vec<Endpoint> {
    use Method as M;
    const ACCOUNTS_ONLY: [u16; 11] = [401, 200, 200, 200, 200, 403, 401, 401, 403, 401, 200];
    const PUBLIC: [u16; CALLERS.len()] = [200; CALLERS.len()];
    let get = |path: fn(&Fixture, &Cast) -> String, expect| row(M::GET, path, Body::None, expect);
    vec![
        get(
            |_, _| "/sessions".into(),
            with_keys(ACCOUNTS_ONLY, [200, 200, 403, 401]),
        ),
        row(
            M::POST,
            |_, _| "/sessions".into(),
            Body::Json(|_| json!({"title": "Mine"})),
            [
                401, 201, 201, 201, 201, 403, 401, 401, 403, 401, 403, 201, 403, 403, 401,
            ],
        ),
        get(
            |_, _| "/me".into(),
            with_keys(ACCOUNTS_ONLY, [200, 200, 200, 401]),
        ),
        get(
            |_, _| "/me/invitations".into(),
            with_keys(ACCOUNTS_ONLY, [403, 403, 403, 401]),
        ),
        get(
            |_, _| "/me/usage".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        get(
            |_, _| "/me/export".into(),
            with_keys(ACCOUNTS_ONLY, [403, 403, 403, 401]),
        ),
        get(
            |_, _| "/media".into(),
            with_keys(ACCOUNTS_ONLY, [200, 200, 403, 401]),
        ),
        // An upload of one's own, into no session.
        row(
            M::POST,
            |_, _| "/media".into(),
            Body::Upload {
                into_session: false,
            },
            [
                401, 201, 201, 201, 201, 403, 401, 401, 403, 401, 403, 201, 403, 403, 401,
            ],
        ),
        // Billing is per account: a share link has no credits.
        get(
            |_, _| "/billing/balance".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        get(
            |_, _| "/billing/ledger".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        get(
            |_, _| "/billing/usage".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        get(
            |_, _| "/billing/statement".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        get(
            |_, _| "/billing/ledger.csv".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 200, 401]),
        ),
        // Buying needs an account; this server has no payments set up (409).
        row(
            M::POST,
            |_, _| "/billing/checkout".into(),
            Body::Json(|_| json!({"pack": "starter"})),
            [
                401, 409, 409, 409, 409, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        // Changing a password needs the current one (wrong here: 403 for every account).
        row(
            M::POST,
            |_, _| "/me/password".into(),
            Body::Json(
                |_| json!({"current_password": "not it at all", "new_password": "a brand new passphrase"}),
            ),
            [
                401, 403, 403, 403, 403, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        // API keys are managed with a login, never with a key.
        get(
            |_, _| "/me/api-keys".into(),
            with_keys(ACCOUNTS_ONLY, [403, 403, 403, 401]),
        ),
        row(
            M::POST,
            |_, _| "/me/api-keys".into(),
            Body::Json(|_| json!({"name": "matrix", "scopes": ["sessions:read"]})),
            [
                401, 201, 201, 201, 201, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        row(
            M::DELETE,
            |_, _| format!("/me/api-keys/{NO_ID}"),
            Body::None,
            [
                401, 404, 404, 404, 404, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        // The webhook signing secret: for whoever may run jobs (a script verifying its own
        // deliveries); rotating it needs a login.
        get(
            |_, _| "/me/webhook-secret".into(),
            with_keys(ACCOUNTS_ONLY, [200, 403, 403, 401]),
        ),
        row(
            M::POST,
            |_, _| "/me/webhook-secret/rotate".into(),
            Body::None,
            [
                401, 200, 200, 200, 200, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
        // Prices and the node types the workers run are the operator's catalogue, public.
        get(|_, _| "/billing/prices".into(), PUBLIC),
        get(|_, _| "/billing/packs".into(), PUBLIC),
        get(|_, _| "/node-types".into(), PUBLIC),
        // The webhook authenticates by signature only (none here: 400), never by a user's
        // credential — so the cookie's missing CSRF header is beside the point.
        row(
            M::POST,
            |_, _| "/billing/webhook".into(),
            Body::Json(|_| json!({"id": "evt_x", "type": "checkout.session.completed"})),
            [400; CALLERS.len()],
        ),
        // Signing up and logging in need no credential and ignore one.
        row(
            M::POST,
            |_, _| "/auth/signup".into(),
            Body::Json(|_| {
                let email = format!("new-{}@example.com", uuid::Uuid::new_v4().simple());
                json!({"email": email, "password": PASSWORD, "name": "New"})
            }),
            [201; CALLERS.len()],
        ),
        row(
            M::POST,
            |_, _| "/auth/login".into(),
            Body::Json(|c| json!({"email": c.other.email, "password": PASSWORD})),
            [200; CALLERS.len()],
        ),
        // The worker socket takes a worker token as bearer and nothing else; a plain GET with
        // one is authorized, then refused for not being an upgrade (400).
        get(
            |_, _| "/workers/ws".into(),
            [
                401, 401, 401, 401, 401, 401, 401, 401, 401, 400, 401, 401, 401, 401, 401,
            ],
        ),
        get(|_, _| "/healthz".into(), PUBLIC),
        get(|_, _| "/readyz".into(), PUBLIC),
        get(|_, _| "/openapi.json".into(), PUBLIC),
    ]
}

const NO_ID: &str = "00000000-0000-0000-0000-000000000000";

// The admin API: anonymous and dead credentials 401, every account and link that is not an admin
// 403 (the matrix's callers include no admin; one is checked separately in `matrix`).
fn admin_endpoints() -> Vec<Endpoint> {
    use Method as M;
    const REFUSED: [u16; CALLERS.len()] = [
        401, 403, 403, 403, 403, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
    ];
    let get = |path: fn(&Fixture, &Cast) -> String| row(M::GET, path, Body::None, REFUSED);
    let post = |path: fn(&Fixture, &Cast) -> String, body: Body| row(M::POST, path, body, REFUSED);
    vec![
        get(|_, _| "/admin/accounts".into()),
        get(|_, c| format!("/admin/accounts/{}", c.other.id)),
        post(
            |_, c| format!("/admin/accounts/{}/credits", c.other.id),
            Body::Json(
                |_| json!({"amount": 1000, "reason": "matrix", "idempotency_key": "matrix-grant"}),
            ),
        ),
        post(
            |_, c| format!("/admin/accounts/{}/suspend", c.other.id),
            Body::Json(|_| json!({"reason": "matrix"})),
        ),
        post(
            |_, c| format!("/admin/accounts/{}/unsuspend", c.other.id),
            Body::None,
        ),
        row(
            M::PUT,
            |_, c| format!("/admin/accounts/{}/role", c.other.id),
            Body::Json(|_| json!({"role": "admin"})),
            REFUSED,
        ),
        get(|_, _| "/admin/workers".into()),
        post(|_, _| format!("/admin/workers/{NO_ID}/drain"), Body::None),
        post(
            |_, _| "/admin/worker-tokens".into(),
            Body::Json(|_| json!({"name": "matrix"})),
        ),
        post(
            |_, _| format!("/admin/worker-tokens/{NO_ID}/revoke"),
            Body::None,
        ),
        get(|_, _| "/admin/leases".into()),
        post(
            |_, _| format!("/admin/leases/{NO_ID}/stop"),
            Body::Json(|_| json!({"reason": "matrix"})),
        ),
        get(|_, _| "/admin/jobs".into()),
        post(|_, _| format!("/admin/jobs/{NO_ID}/cancel"), Body::None),
        get(|_, _| "/admin/audit".into()),
    ]
}

// The endpoints that end the caller's login or account, each cell with a fresh cast. A link
// holder's logout ends nothing: the link is shared, and only an editor or owner revokes it.
fn ending_endpoints() -> Vec<Endpoint> {
    vec![
        row(
            Method::POST,
            |_, _| "/auth/logout".into(),
            Body::None,
            [
                401, 204, 204, 204, 204, 204, 401, 401, 204, 401, 403, 403, 403, 403, 401,
            ],
        ),
        row(
            Method::DELETE,
            |_, _| "/me".into(),
            Body::None,
            [
                401, 204, 204, 204, 204, 403, 401, 401, 403, 401, 403, 403, 403, 403, 401,
            ],
        ),
    ]
}

/// One request as `caller`; returns the status and the JSON body (or Null).
async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    body: &Body,
    caller: Caller,
    c: &Cast,
    f: &Fixture,
) -> (StatusCode, Value) {
    let mut req = server.client.request(method, server.api(path));
    req = match credential(caller, c, f) {
        Credential::None => req,
        Credential::Bearer(token) => req.bearer_auth(token),
        Credential::Cookie(login) => req.header(
            COOKIE,
            format!(
                "atelier_session={}; atelier_csrf={}",
                login.token, login.csrf
            ),
        ),
    };
    req = match body {
        Body::None => req,
        Body::Json(body) => req.json(&body(c)),
        Body::Upload { into_session } => {
            let mut form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(png(3, 3)).file_name("u.png"),
            );
            if *into_session {
                form = form.text("session_id", f.session.clone());
            }
            req.multipart(form)
        }
    };
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let bytes = res.bytes().await.expect("body read");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

/// Runs one cell; a wrong status, an error without the error body, or a cookie change refused
/// for another reason than CSRF is a failure.
async fn check(
    server: &TestServer,
    ep: &Endpoint,
    caller: Caller,
    c: &Cast,
    f: &Fixture,
    want: u16,
    failures: &mut Vec<String>,
) {
    let path = (ep.path)(f, c);
    let (status, res) = send(server, ep.method.clone(), &path, &ep.body, caller, c, f).await;
    let cell = format!("{} {path} as {caller:?}", ep.method);
    let code = res["error"]["code"].as_str();
    // A read by the cookie caller is the owner's read; only a change must fail for the header.
    let csrf_refusal =
        caller == Caller::CookieWithoutCsrf && want == 403 && ep.method != Method::GET;
    if status.as_u16() != want {
        failures.push(format!("{cell}: want {want}, got {status} {res}"));
    } else if want >= 400 && code.is_none() {
        failures.push(format!("{cell}: error without the error body: {res}"));
    } else if caller.is_live_key() && want == 403 && code != Some("insufficient_scope") {
        // The keys are the owner's: a refusal can only be the key's scope.
        failures.push(format!(
            "{cell}: refused, but not for the key's scope: {res}"
        ));
    } else if csrf_refusal && code != Some("csrf_rejected") {
        failures.push(format!(
            "{cell}: refused, but not for the CSRF header: {res}"
        ));
    }
}

/// After a logout or account deletion: whether the caller's credential still opens what it
/// opened before (None for callers that had nothing to lose).
async fn still_works(server: &TestServer, caller: Caller, c: &Cast, f: &Fixture) -> Option<bool> {
    let path = match caller {
        _ if caller.is_account() => "/me".to_string(),
        Caller::ShareLink => format!("/sessions/{}", f.session),
        Caller::OtherSessionLink => format!("/sessions/{}", c.other_session),
        _ => return None,
    };
    let (status, res) = send(server, Method::GET, &path, &Body::None, caller, c, f).await;
    match status {
        StatusCode::OK => Some(true),
        StatusCode::UNAUTHORIZED => Some(false),
        other => panic!("probe as {caller:?}: {other} {res}"),
    }
}

async fn matrix(backend: Backend) {
    // No starter credits: starting a runtime is 402 once authorized.
    let server = TestServer::start_with(backend, &["--signup-credits", "0"]).await;
    let db = Database::connect(&server).await;
    let worker_token = create_worker_token(&server).await;
    let cast0 = cast(&server, &worker_token).await;
    let sessions = session_endpoints();
    let accounts: Vec<Endpoint> = account_endpoints()
        .into_iter()
        .chain(admin_endpoints())
        .collect();
    let ending = ending_endpoints();
    let mut fixtures = Vec::new();
    for _ in 0..sessions.len() * CALLERS.len() {
        fixtures.push(fixture(&server, &db, &cast0).await);
    }
    let shared = fixture(&server, &db, &cast0).await;
    let mut worlds = Vec::new();
    for _ in 0..ending.len() * CALLERS.len() {
        let c = cast(&server, &worker_token).await;
        let f = fixture(&server, &db, &c).await;
        worlds.push((c, f));
    }
    // Let every one-second link expire.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let mut failures = Vec::new();
    let mut cells = 0;
    let mut next = fixtures.iter();
    for ep in &sessions {
        for (caller, want) in CALLERS.iter().zip(ep.expect) {
            let f = next.next().unwrap();
            check(&server, ep, *caller, &cast0, f, want, &mut failures).await;
            cells += 1;
        }
    }
    for ep in &accounts {
        for (caller, want) in CALLERS.iter().zip(ep.expect) {
            check(&server, ep, *caller, &cast0, &shared, want, &mut failures).await;
            cells += 1;
        }
    }
    let mut next = worlds.iter();
    for ep in &ending {
        for (caller, want) in CALLERS.iter().zip(ep.expect) {
            let (c, f) = next.next().unwrap();
            check(&server, ep, *caller, c, f, want, &mut failures).await;
            // Only an account that logged out or was deleted loses its credential.
            let should_work = !(caller.is_account() && want == 204);
            if let Some(works) = still_works(&server, *caller, c, f).await {
                if works != should_work {
                    failures.push(format!(
                        "after {} as {caller:?}: the credential {} work",
                        ep.method,
                        if works { "still does" } else { "does not" }
                    ));
                }
            }
            cells += 1;
        }
    }
    assert_eq!(
        cells,
        (sessions.len() + accounts.len() + ending.len()) * CALLERS.len()
    );
    // An admin passes each admin endpoint's authorization (what follows is each endpoint's own
    // answer: found, not found, created…).
    let admin = server.admin("Admin").await;
    for ep in &admin_endpoints() {
        let path = (ep.path)(&shared, &cast0);
        let mut req = server
            .client
            .request(ep.method.clone(), server.api(&path))
            .bearer_auth(&admin.token);
        if let Body::Json(body) = &ep.body {
            req = req.json(&body(&cast0));
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let text = res.text().await.unwrap_or_default();
            failures.push(format!("{} {path} as an admin: {status} {text}", ep.method));
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
