//! Share links: viewer access to one session for anyone holding the link.

use actix_web::{delete, get, post, web, HttpResponse};
use atelier_protocol::ids::{SessionId, ShareLinkId};
use atelier_protocol::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{tokens, Auth};
use crate::authz::{authorize, Action};
use crate::db::now_ms;
use crate::db::share_links::ShareLink;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Longest expiry a link may be given: one year.
pub const MAX_EXPIRES_IN_S: i64 = 365 * 24 * 3600;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShareLink {
    /// Only `viewer` links exist.
    pub role: Role,
    /// Seconds until the link stops working; none = until revoked.
    pub expires_in_s: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedShareLink {
    pub id: ShareLinkId,
    /// Shown once; only its hash is stored.
    pub token: String,
    /// The viewer page for this link.
    pub url: String,
    pub expires_at: Option<i64>,
}

/// Create a viewer link (owners and editors).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "share links", params(("id" = SessionId, Path,)), request_body = CreateShareLink,
    responses((status = 201, body = CreatedShareLink), (status = 400), (status = 403), (status = 404)))]
#[post("/sessions/{id}/share-links")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<CreateShareLink>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageShareLinks).await?;
    let creator = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("share links cannot create share links"))?;
    if body.role != Role::Viewer {
        return Err(Error::invalid("share links can only have the viewer role"));
    }
    let expires_at = match body.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => Some(now_ms() + s * 1000),
        Some(_) => {
            return Err(Error::invalid(format!(
                "expires_in_s must be between 1 and {MAX_EXPIRES_IN_S}"
            )))
        }
    };
    let token = tokens::generate(tokens::SHARE_LINK_PREFIX);
    let link = state
        .db
        .create_share_link(session.id, creator, &tokens::hash(&token), expires_at)
        .await?;
    let url = format!(
        "{}/#/share/{}?token={token}",
        state.config.public_url(),
        session.id
    );
    Ok(HttpResponse::Created().json(CreatedShareLink {
        id: link.id,
        token,
        url,
        expires_at,
    }))
}

/// The session's share links, including revoked and expired ones (owners and editors).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "share links", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Vec<ShareLink>), (status = 403), (status = 404)))]
#[get("/sessions/{id}/share-links")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Vec<ShareLink>>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageShareLinks).await?;
    Ok(web::Json(state.db.share_links(session.id).await?))
}

/// Revoke a link: it stops working at once (owners and editors).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "share links", params(("id" = SessionId, Path,), ("link_id" = ShareLinkId, Path,)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/sessions/{id}/share-links/{link_id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, ShareLinkId)>,
) -> Result<HttpResponse> {
    let (session_id, link_id) = path.into_inner();
    let (session, _) = authorize(
        &state,
        &auth.principal,
        session_id,
        Action::ManageShareLinks,
    )
    .await?;
    if !state.db.revoke_share_link(session.id, link_id).await? {
        return Err(Error::NotFound("share link"));
    }
    // Open sockets of this link close now, not at their next reconnect.
    state.live.revoke_share_link(session.id, link_id).await;
    Ok(HttpResponse::NoContent().finish())
}
