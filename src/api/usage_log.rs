//! Middleware: every API request is counted in metrics and recorded in the usage log.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use atelier_protocol::ids::AccountId;

use crate::auth::principal::UsageAccount;
use crate::state::AppState;

pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let elapsed = started.elapsed();
    // The route pattern (`/api/v1/sessions/{id}`), so ids and tokens never reach the log.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let account = res
        .request()
        .extensions()
        .get::<UsageAccount>()
        .map(|u| u.0);
    log(
        state.as_ref().map(|s| s.get_ref()),
        account,
        &method,
        &route,
        status,
        elapsed,
    )
    .await;
    Ok(res)
}

/// Counts and logs an API request that asked for a protocol upgrade (these never pass through
/// the middleware: see `crate::upgrade`).
pub async fn record_upgrade(
    state: &AppState,
    method: &str,
    route: &str,
    status: u16,
    elapsed: Duration,
) {
    log(Some(state), None, method, route, status, elapsed).await;
}

async fn log(
    state: Option<&AppState>,
    account: Option<AccountId>,
    method: &str,
    route: &str,
    status: u16,
    elapsed: Duration,
) {
    metrics::counter!("atelier_http_requests_total", "method" => method.to_owned(),
        "route" => route.to_owned(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("atelier_http_request_seconds", "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
    tracing::info!(%method, %route, status, ms = elapsed.as_millis() as u64, "request");
    if let Some(state) = state {
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = state
            .db
            .record_usage(account, method, route, status, ms)
            .await
        {
            tracing::warn!(error = %e, "could not record API usage");
        }
    }
}
