//! `GET /ws/{session_id}`: the live session WebSocket. Authenticates, decides the role, and hands
//! the socket to a `ConnectionActor` (atelier-actors) joined to the session's `SessionActor`.
//!
//! Refusals happen at the upgrade, as HTTP: no or bad token 401, no access 403, no such session
//! 404 — never a silent read-only fallback.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use atelier_actors::{start_connection, Identity, Participant};
use atelier_protocol::ids::SessionId;
use serde::Deserialize;

use crate::auth::principal::{resolve_token, SESSION_COOKIE};
use crate::auth::Principal;
use crate::authz;
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// An account token or a share-link token (browsers cannot set headers on WebSockets).
    token: Option<String>,
    /// `1` asks for studio events (types 100/101); stock Yjs clients leave it out.
    events: Option<String>,
}

/// Browsers send cookies on cross-site WebSocket upgrades; with cookie auth, insist that the page
/// that opened the socket is ours.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true; // not a browser
    };
    let host = req.connection_info().host().to_string();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

async fn principal(req: &HttpRequest, state: &AppState, query: &WsQuery) -> Result<Principal> {
    if let Some(token) = query.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(resolve_token(state, token).await?.0);
    }
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let token = value.strip_prefix("Bearer ").ok_or_else(|| {
            Error::InvalidCredentials("the Authorization header must be `Bearer <token>`".into())
        })?;
        return Ok(resolve_token(state, token.trim()).await?.0);
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        if !same_origin(req) {
            return Err(Error::forbidden(
                "cross-origin WebSocket with a session cookie",
            ));
        }
        return Ok(resolve_token(state, cookie.value()).await?.0);
    }
    Err(Error::Unauthenticated)
}

#[get("/ws/{session_id}")]
pub async fn live_session(
    req: HttpRequest,
    stream: web::Payload,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let session_id: SessionId = path.parse().map_err(|_| Error::NotFound("session"))?;
    let principal = principal(&req, &state, &query).await?;
    let session = state
        .db
        .session(session_id)
        .await?
        .ok_or(Error::NotFound("session"))?;
    let access = authz::access(&state, &principal, session.id)
        .await?
        .ok_or_else(|| Error::forbidden("you have no access to this session"))?;
    let (identity, name) = match &principal {
        Principal::Account(account) => (Identity::Account(account.id), account.name.clone()),
        Principal::ShareLink(link) => (Identity::ShareLink(link.id), "Guest viewer".to_string()),
    };
    let participant = Participant {
        identity,
        name,
        role: access.role,
        wants_events: query.events.as_deref() == Some("1"),
    };
    start_connection(
        &req,
        stream,
        state.live.clone(),
        session.id,
        participant,
        state.config.live.connection_limits(),
    )
    .map_err(|e| Error::invalid(format!("WebSocket upgrade failed: {e}")))
}
