//! `GET /ws/{session_id}`: the live session WebSocket. Authenticates, decides the role, and hands
//! the socket to a `ConnectionActor` (atelier-actors) joined to the session's `SessionActor`.
//!
//! Upgrade requests do not go through actix-web: the HTTP service hands them over with their
//! socket to [`crate::http::upgrade`], which calls [`authorize`], answers `101` and then [`start`]s the
//! connection on the socket (the HTTP connection and its buffers end there). A plain GET without
//! the upgrade is answered by [`live_session`]: the same refusals, else 400.
//!
//! Refusals happen at the upgrade, as HTTP: no or bad token 401, no access 403, no such session
//! 404, a connection cap reached 429 — never a silent read-only fallback.

use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Uri;
use actix_web::{get, web, HttpRequest, HttpResponse};
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use atelier_actors::{start_connection, Grant, Identity, Participant};
use atelier_protocol::ids::SessionId;
use bytes::BytesMut;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::auth::principal::{resolve_cookie, resolve_token, Resolved, SESSION_COOKIE};
use crate::auth::scopes::Scope;
use crate::auth::Principal;
use crate::authz;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Live sessions are at `/ws/{session_id}`.
pub const PATH_PREFIX: &str = "/ws/";

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// An account token or a share-link token (browsers cannot set headers on WebSockets).
    token: Option<String>,
    /// `1` asks for studio events (types 100/101); stock Yjs clients leave it out.
    events: Option<String>,
}

/// What the refusal rules look at in an upgrade request (from actix-web's request or from the
/// raw request the HTTP service hands over).
pub struct UpgradeRequest<'a> {
    pub headers: &'a HeaderMap,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The host the request was addressed to (see [`request_host`]).
    pub host: &'a str,
    /// The client's address (the TCP peer, or the client a trusted proxy names).
    pub peer: Option<IpAddr>,
}

/// A live-session upgrade that passed every check: who joins which session.
pub struct Accepted {
    session_id: SessionId,
    participant: Participant,
}

/// The host a request was addressed to, as actix-web's `ConnectionInfo::host` resolves it: the
/// `Forwarded` header's `host`, then `X-Forwarded-Host`, `Host`, the request target, and finally
/// `fallback` (the server's own address).
pub fn request_host(headers: &HeaderMap, uri: &Uri, fallback: &str) -> String {
    let forwarded = headers
        .get_all(header::FORWARDED)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .flat_map(|value| value.split(','))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| unquote(value))
        });
    forwarded
        .or_else(|| {
            let value = headers.get("x-forwarded-host")?.to_str().ok()?;
            value.split(',').next().map(str::trim)
        })
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or(fallback)
        .to_owned()
}

fn unquote(value: &str) -> &str {
    value.trim().trim_start_matches('"').trim_end_matches('"')
}

/// A request cookie's (percent-decoded) value, as actix-web's `HttpRequest::cookie` finds it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        // Like actix-web: one header that is not text and no cookie is read at all.
        let text = std::str::from_utf8(value.as_bytes()).ok()?;
        for part in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            if found.is_none() {
                if let Ok(cookie) = Cookie::parse_encoded(part) {
                    if cookie.name() == name {
                        found = Some(cookie.value().to_owned());
                    }
                }
            }
        }
    }
    found
}

/// Browsers send cookies on cross-site WebSocket upgrades; with cookie auth, insist that the page
/// that opened the socket is ours.
fn same_origin(req: &UpgradeRequest<'_>) -> bool {
    let Some(origin) = req
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true; // not a browser
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == req.host)
}

/// Who is asking, the hash of the token they presented, and the API key if it is one.
async fn principal(
    req: &UpgradeRequest<'_>,
    state: &AppState,
    query: &WsQuery,
) -> Result<Resolved> {
    if let Some(token) = query.token.as_deref().filter(|t| !t.is_empty()) {
        return resolve_token(state, token).await;
    }
    if let Some(value) = req.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let token = value.strip_prefix("Bearer ").ok_or_else(|| {
            Error::InvalidCredentials("the Authorization header must be `Bearer <token>`".into())
        })?;
        return resolve_token(state, token.trim()).await;
    }
    if let Some(cookie) = cookie(req.headers, SESSION_COOKIE) {
        if !same_origin(req) {
            return Err(Error::forbidden(
                "cross-origin WebSocket with a session cookie",
            ));
        }
        // Cookies carry login tokens only, never a share link's.
        let (owner, hash) = resolve_cookie(state, &cookie).await?;
        return Ok(Resolved {
            principal: Principal::Account(owner.account),
            credential: hash,
            api_key: None,
        });
    }
    Err(Error::Unauthenticated)
}

fn identity(principal: &Principal) -> Identity {
    match principal {
        Principal::Account(account) => Identity::Account(account.id),
        Principal::ShareLink(link) => Identity::ShareLink(link.id),
    }
}

/// Decides an upgrade to `/ws/{session_id}` (`session` is the path segment): who joins, with
/// which role, or the refusal.
///
/// The connection is admitted (counted against the caps, and found by kicks) as soon as the
/// caller is identified, and only then is its access checked against the database — the token
/// resolved again, the membership read. So access that ends at any moment of the upgrade ends
/// this connection too: before the check, the check refuses it; after, the kick finds it.
pub async fn authorize(
    state: &AppState,
    session: &str,
    req: &UpgradeRequest<'_>,
) -> Result<Accepted> {
    let query = web::Query::<WsQuery>::from_query(req.query)
        .map_err(|e| Error::invalid(format!("invalid query string: {e}")))?
        .into_inner();
    let session_id: SessionId = session.parse().map_err(|_| Error::NotFound("session"))?;
    let Resolved {
        principal: caller,
        credential,
        api_key,
    } = principal(req, state, &query).await?;
    // An API key joins with `sessions:read`, and edits only with `sessions:write` too.
    let key_may_edit = match &api_key {
        Some(key) if !key.allows(Scope::SessionsRead) => {
            return Err(Error::InsufficientScope(
                "this API key lacks the sessions:read scope that live sessions need".into(),
            ))
        }
        Some(key) => key.allows(Scope::SessionsWrite),
        None => true,
    };
    // Opening a live session is a request of the key like any other.
    if let Some(key) = &api_key {
        state.key_rate_limit.check(key.id).await.1?;
    }
    // A credential that expires closes its sockets when it does.
    let expires_at = match &caller {
        Principal::ShareLink(link) => link.expires_at,
        Principal::Account(_) => api_key.as_ref().and_then(|key| key.expires_at),
    }
    .map(|ms| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    let admission = state
        .live
        .admit(Grant {
            session: session_id,
            identity: identity(&caller),
            credential: Some(credential),
            ip: req.peer,
            expires_at,
        })
        .map_err(|cap| {
            Error::TooManyConnections(format!("{cap}; close one before opening another"))
        })?;
    // The check proper, with the connection where kicks find it.
    let principal = principal(req, state, &query).await?.principal;
    if identity(&principal) != identity(&caller) {
        return Err(Error::InvalidCredentials(
            "the credentials changed during the upgrade".into(),
        ));
    }
    let session = state
        .db
        .session(session_id)
        .await?
        .ok_or(Error::NotFound("session"))?;
    let access = authz::access(state, &principal, session.id)
        .await?
        .ok_or_else(|| Error::forbidden("you have no access to this session"))?;
    let name = match &principal {
        Principal::Account(account) => account.name.clone(),
        Principal::ShareLink(_) => "Guest viewer".to_string(),
    };
    Ok(Accepted {
        session_id: session.id,
        participant: Participant {
            identity: identity(&principal),
            name,
            role: if key_may_edit {
                access.role
            } else {
                atelier_protocol::Role::Viewer
            },
            wants_events: query.events.as_deref() == Some("1"),
            admission,
        },
    })
}

/// Serves an accepted live-session WebSocket on `io` (after the `101`); `leftover` is what the
/// client sent after its request. The connection runs on the current arbiter.
pub fn start(state: &AppState, accepted: Accepted, io: TcpStream, leftover: BytesMut) {
    start_connection(
        io,
        leftover,
        state.live.clone(),
        accepted.session_id,
        accepted.participant,
        state.config.live.connection_limits(),
    );
}

/// A GET without the WebSocket upgrade: the refusals an upgrade would get, else 400.
#[get("/ws/{session_id}")]
pub async fn live_session(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let host = req.connection_info().host().to_owned();
    let upgrade = UpgradeRequest {
        headers: req.headers(),
        query: req.query_string(),
        host: &host,
        peer: req.peer_addr().map(|a| {
            state
                .config
                .trusted_proxies
                .client_ip(a.ip(), req.headers())
        }),
    };
    authorize(&state, &path, &upgrade).await?;
    Err(Error::invalid("expected a WebSocket upgrade"))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn host_follows_actix_web_order() {
        let uri: Uri = "/ws/x".parse().unwrap();
        let fallback = "127.0.0.1:8080";
        assert_eq!(request_host(&headers(&[]), &uri, fallback), fallback);
        let h = headers(&[("host", "studio.example")]);
        assert_eq!(request_host(&h, &uri, fallback), "studio.example");
        let h = headers(&[
            ("host", "studio.example"),
            ("x-forwarded-host", "proxy.example, other"),
        ]);
        assert_eq!(request_host(&h, &uri, fallback), "proxy.example");
        let h = headers(&[
            ("host", "studio.example"),
            ("x-forwarded-host", "proxy.example"),
            ("forwarded", "for=1.2.3.4; host=\"front.example\""),
        ]);
        assert_eq!(request_host(&h, &uri, fallback), "front.example");
    }

    #[test]
    fn cookies_are_found_and_decoded() {
        let h = headers(&[
            ("cookie", "a=1; atelier_session=atl_x%2By"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("atl_x+y"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn same_origin_compares_the_origin_with_the_host() {
        let h = headers(&[("origin", "https://studio.example")]);
        let ok = UpgradeRequest {
            headers: &h,
            query: "",
            host: "studio.example",
            peer: None,
        };
        assert!(same_origin(&ok));
        let other = UpgradeRequest {
            host: "evil.example",
            ..ok
        };
        assert!(!same_origin(&other));
    }
}
