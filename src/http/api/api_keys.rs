//! The caller's API keys: `POST /me/api-keys` makes one (its secret shown once), `GET` lists them
//! with their recent use, `DELETE /me/api-keys/{id}` revokes one — at once, for HTTP and for the
//! live WebSockets opened with it (closed with 4401).
//!
//! Keys are managed with a login only: a key cannot make, list or revoke keys.

use actix_web::{delete, get, post, web, HttpResponse};
use atelier_actors::KickTarget;
use atelier_protocol::close_code;
use atelier_protocol::ids::ApiKeyId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::scopes::Scope;
use crate::auth::{tokens, AccountAuth};
use crate::db::api_keys::{ApiKey, NewApiKey};
use crate::db::now_ms;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Longest lifetime a key may be given: two years.
pub const MAX_EXPIRES_IN_S: i64 = 2 * 365 * 24 * 3600;
/// Keys an account may hold at once (revoked ones do not count).
pub const MAX_KEYS_PER_ACCOUNT: i64 = 50;
/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Characters of the secret kept for display (`atk_` and 8 hex digits).
const PREFIX_CHARS: usize = 12;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "terrain batch", "scopes": ["sessions:read", "sessions:write", "jobs:run"], "expires_in_s": 2592000}))]
pub struct CreateApiKey {
    /// What the key is for (1–100 characters).
    pub name: String,
    /// At least one.
    pub scopes: Vec<Scope>,
    /// Seconds until the key stops working (up to two years); none = until revoked.
    pub expires_in_s: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret (`atk_` + 64 hex digits): shown this once, only its hash is stored.
    pub secret: String,
}

/// Make an API key. Its secret is in this answer only.
#[utoipa::path(tag = "api keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 401),
              (status = 403, description = "an API key cannot make keys"),
              (status = 409, description = "the account holds the most keys it may")))]
#[post("/me/api-keys")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AccountAuth,
    body: web::Json<CreateApiKey>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let name = body.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    if body.scopes.is_empty() {
        return Err(Error::invalid("scopes must name at least one scope"));
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
    if state.db.live_api_key_count(auth.account.id).await? >= MAX_KEYS_PER_ACCOUNT {
        return Err(Error::Conflict(format!(
            "an account may hold {MAX_KEYS_PER_ACCOUNT} keys; revoke one first"
        )));
    }
    let secret = tokens::generate(tokens::API_KEY_PREFIX);
    let key = state
        .db
        .create_api_key(NewApiKey {
            account: auth.account.id,
            name,
            scopes: &body.scopes,
            token_hash: &tokens::hash(&secret),
            prefix: secret.get(..PREFIX_CHARS).unwrap_or(&secret),
            expires_at,
        })
        .await?;
    tracing::info!(account = %auth.account.id, key = %key.id, "API key created");
    Ok(HttpResponse::Created().json(CreatedApiKey { key, secret }))
}

/// The account's API keys (revoked and expired ones included), newest first (at most the 200
/// newest), each with when it was last used and how many requests it made in the last 24 hours.
#[utoipa::path(tag = "api keys", responses((status = 200, body = Vec<ApiKey>), (status = 401), (status = 403)))]
#[get("/me/api-keys")]
pub async fn list(state: web::Data<AppState>, auth: AccountAuth) -> Result<web::Json<Vec<ApiKey>>> {
    Ok(web::Json(state.db.api_keys(auth.account.id).await?))
}

/// Revoke an API key: refused from the next request on, and the live WebSockets opened with it
/// close (4401).
#[utoipa::path(tag = "api keys", params(("id" = ApiKeyId, Path,)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
#[delete("/me/api-keys/{id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: AccountAuth,
    id: web::Path<ApiKeyId>,
) -> Result<HttpResponse> {
    let hash = state
        .db
        .revoke_api_key(auth.account.id, *id)
        .await?
        .ok_or(Error::NotFound("API key"))?;
    state.live.kick(
        KickTarget::Credential(hash),
        close_code::CREDENTIAL_ENDED,
        "the API key was revoked",
    );
    tracing::info!(account = %auth.account.id, key = %id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
