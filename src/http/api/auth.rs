//! Signup, login and logout.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::principal::{CSRF_COOKIE, SESSION_COOKIE};
use crate::auth::{password, tokens, Auth, Principal};
use crate::db::accounts::Account;
use crate::error::{Error, Result};
use crate::state::AppState;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_EMAIL_CHARS: usize = 254;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for the API, WebSocket and scripts.
    pub token: String,
    /// Echo this in `X-CSRF-Token` on cookie-authenticated changes.
    pub csrf_token: String,
    pub account: Account,
}

/// Lower-cases and checks an email address: one `@`, a non-empty local part, a dotted domain.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(Error::invalid(format!(
            "{raw:?} is not a valid email address"
        )))
    }
}

fn check_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "name must be at most {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_string())
}

fn client_ip(state: &AppState, req: &HttpRequest) -> std::net::IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    state.config.trusted_proxies.client_ip(peer, req.headers())
}

/// Creates the token, and answers with it plus the session and CSRF cookies.
async fn start_login(
    state: &AppState,
    account: Account,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse> {
    let token = tokens::generate(tokens::ACCOUNT_PREFIX);
    let csrf = tokens::csrf();
    state
        .db
        .insert_token(account.id, &tokens::hash(&token), &csrf)
        .await?;
    let secure = state.config.secure_cookies;
    let session_cookie = Cookie::build(SESSION_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::days(30))
        .finish();
    // Readable by the page's script so it can echo it in X-CSRF-Token.
    let csrf_cookie = Cookie::build(CSRF_COOKIE, csrf.clone())
        .path("/")
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::days(30))
        .finish();
    Ok(HttpResponse::build(status)
        .cookie(session_cookie)
        .cookie(csrf_cookie)
        .json(LoginResponse {
            token,
            csrf_token: csrf,
            account,
        }))
}

/// Create an account; logs it in.
#[utoipa::path(security(()), tag = "accounts", request_body = SignupRequest,
    responses((status = 201, body = LoginResponse), (status = 400), (status = 409), (status = 429)))]
#[post("/auth/signup")]
pub async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SignupRequest>,
) -> Result<HttpResponse> {
    state.auth_rate_limit.check(client_ip(&state, &req)).await?;
    let body = body.into_inner();
    let email = normalize_email(&body.email)?;
    let name = check_name(&body.name)?;
    password::check_strength(&body.password)?;
    let hash = password::hash(body.password).await?;
    let account = state.db.create_account(&email, &name, &hash).await?;
    state.billing.signup_grant(account.id).await?;
    // Sessions this address was invited to by email become the account's.
    let joined = state
        .db
        .accept_email_invitations(&email, account.id)
        .await?;
    tracing::info!(account = %account.id, invitations = joined.len(), "account created");
    start_login(&state, account, actix_web::http::StatusCode::CREATED).await
}

/// Log in with email and password.
#[utoipa::path(security(()), tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401), (status = 429)))]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse> {
    state.auth_rate_limit.check(client_ip(&state, &req)).await?;
    let body = body.into_inner();
    let wrong = || Error::InvalidCredentials("wrong email or password".into());
    let Ok(email) = normalize_email(&body.email) else {
        return Err(wrong());
    };
    match state.db.credentials_by_email(&email).await? {
        Some(creds) => {
            if password::verify(body.password, creds.password_hash).await? {
                crate::auth::principal::refuse_suspended(&creds.account)?;
                start_login(&state, creds.account, actix_web::http::StatusCode::OK).await
            } else {
                Err(wrong())
            }
        }
        None => {
            // Spend the same time as a real check so response times do not reveal accounts.
            let dummy = password::dummy_hash().await?;
            let _ = password::verify(body.password, dummy).await?;
            Err(wrong())
        }
    }
}

/// End this token's session (the cookie or bearer token stops working).
#[utoipa::path(tag = "accounts", responses((status = 204), (status = 401)))]
#[post("/auth/logout")]
pub async fn logout(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse> {
    if let Principal::Account(_) = auth.principal {
        state.db.delete_token(&auth.token_hash).await?;
        // Sockets opened with this token close too (others of the account stay).
        crate::lifecycle::logged_out(&state, &auth.token_hash);
    }
    let mut expired = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    expired.make_removal();
    let mut csrf = Cookie::build(CSRF_COOKIE, "").path("/").finish();
    csrf.make_removal();
    Ok(HttpResponse::NoContent()
        .cookie(expired)
        .cookie(csrf)
        .finish())
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@@b.com",
            "a@b..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
