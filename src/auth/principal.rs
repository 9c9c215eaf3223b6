//! The request principal: an account (by login token, API key or session cookie) or a share link.
//!
//! A request made with an API key is the key's account, limited to the key's scopes: the route's
//! declared scope is checked here, for every endpoint that authenticates, by
//! [`crate::authz::permit_api_key`], and the key's rate limit is counted.
//!
//! A token that is unknown, revoked or expired is refused with 401; it never falls back to
//! anonymous access.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use atelier_protocol::ids::{AccountId, ApiKeyId};
use atelier_protocol::Role;

use super::scopes::Scope;
use super::tokens;
use crate::db::accounts::{Account, TokenOwner};
use crate::db::now_ms;
use crate::db::share_links::ShareLink;
use crate::error::{Error, Result};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "atelier_session";
pub const CSRF_COOKIE: &str = "atelier_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub enum Principal {
    Account(Account),
    ShareLink(ShareLink),
}

impl Principal {
    pub fn account_id(&self) -> Option<AccountId> {
        match self {
            Principal::Account(a) => Some(a.id),
            Principal::ShareLink(_) => None,
        }
    }
}

/// Marks the request with its account (and the API key it used) for the usage log.
#[derive(Clone, Copy)]
pub struct UsageAccount {
    pub account: AccountId,
    pub api_key: Option<ApiKeyId>,
}

/// The API key a request was made with: which one, and what it may do.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub id: ApiKeyId,
    pub scopes: Vec<Scope>,
    /// When the key stops working (epoch ms), if it was given an expiry.
    pub expires_at: Option<i64>,
}

impl KeyGrant {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A presented credential, resolved.
pub struct Resolved {
    pub principal: Principal,
    /// The credential's hash: what logout deletes and what kicks find its sockets by.
    pub credential: String,
    /// Set when the credential is an API key.
    pub api_key: Option<KeyGrant>,
}

/// Any authenticated caller.
pub struct Auth {
    pub principal: Principal,
    /// The token the caller presented (hashed), so logout can delete exactly it.
    pub token_hash: String,
    pub api_key: Option<KeyGrant>,
}

/// An authenticated account; share links are refused.
pub struct AccountAuth {
    pub account: Account,
    pub token_hash: String,
    pub api_key: Option<KeyGrant>,
}

/// An admin account (role `admin`); everyone else is refused with 403, anonymous with 401.
pub struct AdminAuth {
    pub admin: Account,
}

/// A suspended account's tokens are refused (403 `account_suspended`).
pub fn refuse_suspended(account: &Account) -> Result<()> {
    if account.suspended_at.is_some() {
        return Err(Error::AccountSuspended(
            "this account is suspended; contact the operator of this server".into(),
        ));
    }
    Ok(())
}

/// Resolves a raw token (from a header or query) to a principal.
pub async fn resolve_token(state: &AppState, token: &str) -> Result<Resolved> {
    let hash = tokens::hash(token);
    if token.starts_with(tokens::ACCOUNT_PREFIX) {
        let owner = state.db.token_owner(&hash).await?.ok_or_else(|| {
            Error::InvalidCredentials("the token is unknown or has been logged out".into())
        })?;
        refuse_suspended(&owner.account)?;
        return Ok(Resolved {
            principal: Principal::Account(owner.account),
            credential: hash,
            api_key: None,
        });
    }
    if token.starts_with(tokens::API_KEY_PREFIX) {
        let owner = state
            .db
            .api_key_owner(&hash)
            .await?
            .ok_or_else(|| Error::InvalidCredentials("the API key is unknown".into()))?;
        if owner.key.revoked_at.is_some() {
            return Err(Error::InvalidCredentials(
                "the API key has been revoked".into(),
            ));
        }
        if !owner.key.is_active(now_ms()) {
            return Err(Error::InvalidCredentials("the API key has expired".into()));
        }
        refuse_suspended(&owner.account)?;
        return Ok(Resolved {
            principal: Principal::Account(owner.account),
            credential: hash,
            api_key: Some(KeyGrant {
                id: owner.key.id,
                scopes: owner.key.scopes,
                expires_at: owner.key.expires_at,
            }),
        });
    }
    if token.starts_with(tokens::SHARE_LINK_PREFIX) {
        let link = state
            .db
            .share_link_by_token(&hash)
            .await?
            .ok_or_else(|| Error::InvalidCredentials("the share link is unknown".into()))?;
        if link.revoked_at.is_some() {
            return Err(Error::InvalidCredentials(
                "the share link has been revoked".into(),
            ));
        }
        if !link.is_active(now_ms()) {
            return Err(Error::InvalidCredentials(
                "the share link has expired".into(),
            ));
        }
        // A link lives only while its creator may still share the session: removing a member,
        // or making them a viewer, ends the links they handed out (and revokes them).
        let creator = state
            .db
            .member_role(link.session_id, link.created_by)
            .await?;
        if !matches!(creator, Some(Role::Owner | Role::Editor)) {
            return Err(Error::InvalidCredentials(
                "the share link's creator can no longer share this session".into(),
            ));
        }
        return Ok(Resolved {
            principal: Principal::ShareLink(link),
            credential: hash,
            api_key: None,
        });
    }
    Err(Error::InvalidCredentials(
        "the token is not an Atelier token".into(),
    ))
}

/// Resolves the session cookie's value: only an account's login token, never a share link's
/// (links travel in URLs; a cookie is what a browser sends on its own).
pub async fn resolve_cookie(state: &AppState, token: &str) -> Result<(TokenOwner, String)> {
    if !token.starts_with(tokens::ACCOUNT_PREFIX) {
        return Err(Error::InvalidCredentials(
            "the session cookie is invalid".into(),
        ));
    }
    let hash = tokens::hash(token);
    let owner =
        state.db.token_owner(&hash).await?.ok_or_else(|| {
            Error::InvalidCredentials("the session has ended; log in again".into())
        })?;
    Ok((owner, hash))
}

fn bearer(req: &HttpRequest) -> Result<Option<String>> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::InvalidCredentials("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim().to_string()))
        }
        _ => Err(Error::InvalidCredentials(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn authenticate(req: HttpRequest) -> Result<Auth> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| Error::Internal("application state missing".into()))?
        .clone();
    let resolved = if let Some(token) = bearer(&req)? {
        resolve_token(&state, &token).await?
    } else if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        let token = cookie.value();
        let (owner, hash) = resolve_cookie(&state, token).await?;
        refuse_suspended(&owner.account)?;
        // Cookies ride along on cross-site requests; a mutation must also prove it came from our
        // page by echoing the CSRF token, which another site cannot read.
        if !is_safe(req.method()) {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !tokens::same_secret(sent, &owner.csrf_token) {
                return Err(Error::CsrfRejected(
                    "cookie-authenticated changes need the X-CSRF-Token header from login".into(),
                ));
            }
        }
        Resolved {
            principal: Principal::Account(owner.account),
            credential: hash,
            api_key: None,
        }
    } else {
        return Err(Error::Unauthenticated);
    };
    if let Some(account) = resolved.principal.account_id() {
        req.extensions_mut().insert(UsageAccount {
            account,
            api_key: resolved.api_key.as_ref().map(|k| k.id),
        });
    }
    if let Some(key) = &resolved.api_key {
        crate::authz::permit_api_key(key, req.method(), req.match_pattern().as_deref())?;
        let (budget, allowed) = state.key_rate_limit.check(key.id).await;
        req.extensions_mut().insert(budget);
        allowed?;
        state.db.touch_api_key(key.id).await?;
    }
    Ok(Auth {
        principal: resolved.principal,
        token_hash: resolved.credential,
        api_key: resolved.api_key,
    })
}

impl FromRequest for Auth {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        Box::pin(authenticate(req.clone()))
    }
}

impl FromRequest for AccountAuth {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = authenticate(req).await?;
            match auth.principal {
                Principal::Account(account) => Ok(AccountAuth {
                    account,
                    token_hash: auth.token_hash,
                    api_key: auth.api_key,
                }),
                Principal::ShareLink(_) => Err(Error::forbidden(
                    "a share link only gives access to its session; log in for this",
                )),
            }
        })
    }
}

impl FromRequest for AdminAuth {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let account = AccountAuth::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let auth = account.await?;
            if !auth.account.is_admin() {
                return Err(Error::forbidden("this needs an admin account"));
            }
            // So that a call failing after this point is still audited.
            req.extensions_mut()
                .insert(crate::http::api::admin_audit::AdminCaller(
                    crate::db::admin::AuditActor::admin(&auth.account),
                ));
            Ok(AdminAuth {
                admin: auth.account,
            })
        })
    }
}
