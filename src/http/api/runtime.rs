//! A session's Pro runtime: start (hold prepaid credits, lease a worker), show, stop (settle).
//!
//! Owners and editors may start and stop it; the account that starts it pays. Every member and
//! share link may see it (the studio shows it to everyone).

use actix_web::{delete, get, patch, post, web, HttpResponse};
use atelier_protocol::ids::SessionId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::authz::{authorize, Action};
use crate::billing::{reason, LeaseView};
use crate::db::leases::Settlement;
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRuntime {
    /// A class from `GET /billing/prices`.
    pub gpu_class: String,
    /// Minutes of runtime to prepay (held from your credits, unused time refunded on stop).
    /// May be fractional; rounded to whole seconds, at least one second.
    pub prepaid_minutes: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRuntime {
    /// Minutes of prepaid time to add (a further hold; whole seconds, at least one).
    pub add_minutes: f64,
}

/// The session's lease: the active one, else the latest stopped one, else `null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeStatus {
    pub lease: Option<LeaseView>,
}

/// Prepaid minutes → whole milliseconds (rounded to the second).
fn prepaid_ms(minutes: f64) -> Result<i64> {
    minutes_to_ms(minutes, "prepaid_minutes")
}

fn minutes_to_ms(minutes: f64, field: &str) -> Result<i64> {
    if !minutes.is_finite() || minutes <= 0.0 {
        return Err(Error::invalid(format!("{field} must be a positive number")));
    }
    let seconds = (minutes * 60.0).round();
    if seconds < 1.0 {
        return Err(Error::invalid(format!(
            "{field} must be at least one second (1/60 minute)"
        )));
    }
    if seconds > 1e12 {
        return Err(Error::invalid(format!("{field} is too large")));
    }
    // In range: checked just above.
    Ok(seconds as i64 * 1000)
}

/// Start a Pro runtime lease (owners and editors; paid from the caller's credits).
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "billing", params(("id" = SessionId, Path,)), request_body = StartRuntime,
    responses((status = 201, body = LeaseView), (status = 400), (status = 402, description = "insufficient_credits"),
        (status = 403), (status = 404), (status = 409, description = "the session already has a runtime")))]
#[post("/sessions/{id}/runtime")]
pub async fn start(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<StartRuntime>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageRuntime).await?;
    let account = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("a share link cannot start a Pro runtime"))?;
    let ms = prepaid_ms(body.prepaid_minutes)?;
    let view = state
        .billing
        .start_lease(session.id, account, body.gpu_class.trim(), ms)
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// The session's Pro runtime (live numbers while it runs).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "billing", params(("id" = SessionId, Path,)),
    responses((status = 200, body = RuntimeStatus), (status = 401), (status = 404)))]
#[get("/sessions/{id}/runtime")]
pub async fn get_one(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<RuntimeStatus>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::View).await?;
    Ok(web::Json(RuntimeStatus {
        lease: state.billing.lease_view(session.id).await?,
    }))
}

/// Add prepaid time to the running Pro runtime without interrupting its job (the payer only):
/// a further hold. 402 `insufficient_credits` when the credits are not there.
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "billing", params(("id" = SessionId, Path,)), request_body = ExtendRuntime,
    responses((status = 200, body = LeaseView), (status = 400), (status = 402, description = "insufficient_credits"),
        (status = 403, description = "not the payer"), (status = 404, description = "no running runtime"),
        (status = 409, description = "the runtime is stopping")))]
#[patch("/sessions/{id}/runtime")]
pub async fn extend(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<ExtendRuntime>,
) -> Result<web::Json<LeaseView>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageRuntime).await?;
    let account = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("a share link cannot extend a Pro runtime"))?;
    let ms = minutes_to_ms(body.add_minutes, "add_minutes")?;
    Ok(web::Json(
        state.billing.extend_lease(session.id, account, ms).await?,
    ))
}

/// Stop the session's Pro runtime: interrupts its job, charges the used time, refunds the rest.
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "billing", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Settlement), (status = 403), (status = 404)))]
#[delete("/sessions/{id}/runtime")]
pub async fn stop(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Settlement>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageRuntime).await?;
    let settlement = state
        .billing
        .stop_lease(session.id, reason::STOPPED_BY_USER)
        .await?;
    Ok(web::Json(settlement))
}

#[cfg(test)]
mod tests {
    use super::prepaid_ms;

    #[test]
    fn prepaid_minutes_become_whole_seconds() {
        assert_eq!(prepaid_ms(1.0).unwrap(), 60_000);
        assert_eq!(prepaid_ms(0.1).unwrap(), 6_000);
        assert_eq!(prepaid_ms(2.5).unwrap(), 150_000);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001] {
            assert!(prepaid_ms(bad).is_err(), "{bad}");
        }
    }
}
