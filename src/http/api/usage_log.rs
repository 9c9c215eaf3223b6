//! Middleware: every API request is counted in metrics, and an account's requests are recorded
//! in its usage log (with the API key that made them, if one did).
//!
//! Both are bounded by what the server chooses, never by what a client sends: the metrics'
//! labels come from closed sets (the known HTTP methods, else `other`; the route pattern, else
//! `unmatched`; the status code), and only requests made by an account are logged — anonymous
//! ones would let anyone grow the table without end — with old rows purged after the
//! retention period (`ATELIER_USAGE_LOG_RETENTION_DAYS`, [`crate::housekeeping`]).

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use crate::auth::principal::UsageAccount;
use crate::state::AppState;

pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    let elapsed = started.elapsed();
    // The route pattern (`/api/v1/sessions/{id}`), so ids and tokens never reach the log.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let caller = res.request().extensions().get::<UsageAccount>().copied();
    log(
        state.as_ref().map(|s| s.get_ref()),
        caller,
        method,
        &route,
        status,
        elapsed,
    )
    .await;
    Ok(res)
}

/// The metrics label of a request method: the standard methods by name, anything a client made
/// up as `other` (each distinct label is a time series the server keeps forever).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts an API request that asked for a protocol upgrade (these never pass through the
/// middleware: see `crate::http::upgrade`). Worker connections belong to no account: not logged.
pub async fn record_upgrade(
    state: &AppState,
    method: &Method,
    route: &str,
    status: u16,
    elapsed: Duration,
) {
    log(
        Some(state),
        None,
        method_label(method),
        route,
        status,
        elapsed,
    )
    .await;
}

async fn log(
    state: Option<&AppState>,
    caller: Option<UsageAccount>,
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
    if let (Some(state), Some(caller)) = (state, caller) {
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = state
            .db
            .record_usage(caller.account, caller.api_key, method, route, status, ms)
            .await
        {
            tracing::warn!(error = %e, "could not record API usage");
        }
    }
}
