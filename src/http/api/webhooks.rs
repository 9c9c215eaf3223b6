//! Job webhooks in the API: the account's signing secret, and a job's deliveries.

use actix_web::{get, post, web, HttpResponse};
use atelier_protocol::ids::JobId;
use serde::Serialize;
use utoipa::ToSchema;

use super::jobs::job_for;
use crate::auth::{AccountAuth, Auth};
use crate::authz::Action;
use crate::db::webhooks::WebhookDelivery;
use crate::error::Result;
use crate::state::AppState;
use crate::webhooks::signing;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    /// `whsec_` + base64: the key of every webhook message's `webhook-signature` (Standard
    /// Webhooks; verify with any of its libraries).
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// The account's webhook signing secret (made on first use).
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "webhooks",
    responses((status = 200, body = WebhookSecret), (status = 401), (status = 403)))]
#[get("/me/webhook-secret")]
pub async fn get_secret(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let secret = state
        .db
        .webhook_secret(auth.account.id, signing::new_secret)
        .await?;
    Ok(HttpResponse::Ok().json(WebhookSecret { secret }))
}

/// Replace the signing secret: messages sent from now on are signed with the new one.
#[utoipa::path(tag = "webhooks",
    responses((status = 200, body = WebhookSecret), (status = 401), (status = 403)))]
#[post("/me/webhook-secret/rotate")]
pub async fn rotate(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let secret = signing::new_secret();
    state
        .db
        .rotate_webhook_secret(auth.account.id, &secret)
        .await?;
    tracing::info!(account = %auth.account.id, "webhook secret rotated");
    Ok(HttpResponse::Ok().json(WebhookSecret { secret }))
}

/// The job's webhook messages, oldest first, each with its attempts (status code or error,
/// latency). Owners and editors of the job's session (the URL may carry a secret).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "webhooks", params(("id" = JobId, Path,)),
    responses((status = 200, body = Vec<WebhookDelivery>), (status = 401), (status = 403), (status = 404)))]
#[get("/jobs/{id}/webhook-deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<JobId>,
) -> Result<web::Json<Vec<WebhookDelivery>>> {
    let job = job_for(&state, &auth, *id, Action::RunJobs).await?;
    Ok(web::Json(state.db.deliveries_of_job(job.id).await?))
}
