//! Jobs: the node types workers can run, running a session's graph, following and cancelling.

use actix_web::{get, post, web, HttpResponse};
use atelier_protocol::ids::{JobId, SessionId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::authz::{authorize, Action};
use crate::db::jobs::JobRecord;
use crate::error::{Error, Result};
use crate::jobs::graph::{self, Graph};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunJob {
    /// Run only these nodes (and what feeds them); absent = the whole graph.
    pub nodes: Option<Vec<String>>,
    /// Deliver the job's events to this URL (signed; see `GET /me/webhook-secret`).
    pub webhook: Option<crate::webhooks::WebhookSpec>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResponse {
    pub job_id: JobId,
    pub cancelling: bool,
}

/// The node types the workers can run: every model of the catalog plus the built-in `output`.
#[utoipa::path(security(()), tag = "jobs", responses((status = 200, description = "node types")))]
#[get("/node-types")]
pub async fn node_types(state: web::Data<AppState>) -> HttpResponse {
    let mut types: Vec<serde_json::Value> = state
        .catalog
        .node_types()
        .into_iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    types.push(serde_json::json!({
        "name": graph::OUTPUT_NODE,
        "title": "Output",
        "description": "Marks the images wired into it as the job's outputs.",
        "kind": "output",
        "params": [],
        "inputs": [{"name": graph::OUTPUT_PORT, "type": "image/png"}],
        "outputs": [],
    }));
    HttpResponse::Ok().json(types)
}

/// Run the session's graph (or part of it). The graph is validated first: any problem is a 400
/// naming the node, before any GPU time is used. Needs a running Pro runtime (402 otherwise).
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "jobs", params(("id" = SessionId, Path,)), request_body = RunJob,
    responses((status = 201, body = JobRecord), (status = 400), (status = 402), (status = 403),
              (status = 404), (status = 429)))]
#[post("/sessions/{id}/jobs")]
pub async fn run(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::RunJobs).await?;
    let account = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("share links cannot run jobs"))?;
    let body = run_body(&super::body::read_limited(&state, payload).await?)?;
    if let Some(webhook) = &body.webhook {
        state.webhooks.validate(webhook).await?;
    }
    // The cheap refusal first: no document is read for a session without a running runtime.
    let lease = state.billing.require_active_lease(session.id)?;
    // The graph as the live session has it, every edit it accepted before this included: what
    // the editors see is what runs.
    let graph_json = state
        .live
        .graph_json(session.id)
        .await
        .map_err(|e| Error::Internal(format!("could not read the session's document: {e}")))?;
    let graph = Graph::from_json(&graph_json).map_err(Error::InvalidInput)?;
    let seed: u64 = rand::random::<u64>() & graph::MAX_SEED;
    let plan = graph
        .compile(&state.catalog, body.nodes.as_deref(), seed)
        .map_err(Error::InvalidInput)?;
    let job = state
        .jobs
        .submit(
            session.id,
            account,
            Some((lease.lease_id, lease.worker_id)),
            plan,
            body.webhook.as_ref(),
        )
        .await?;
    let record = state.db.job(job).await?.ok_or(Error::NotFound("job"))?;
    Ok(HttpResponse::Created().json(record))
}

/// The body of a run: none (or empty) runs the whole graph; anything else must be a valid
/// [`RunJob`] — a body that does not parse is refused, never run as if it were absent.
fn run_body(body: &[u8]) -> Result<RunJob> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RunJob::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

/// The session's jobs, newest first.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "jobs", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Vec<JobRecord>), (status = 404)))]
#[get("/sessions/{id}/jobs")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Vec<JobRecord>>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::View).await?;
    Ok(web::Json(state.db.jobs_of_session(session.id, 100).await?))
}

pub(super) async fn job_for(
    state: &AppState,
    auth: &Auth,
    id: JobId,
    action: Action,
) -> Result<JobRecord> {
    let job = state.db.job(id).await?.ok_or(Error::NotFound("job"))?;
    // A job is as private as its session.
    authorize(state, &auth.principal, job.session_id, action)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound("job"),
            other => other,
        })?;
    Ok(job)
}

#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "jobs", params(("id" = JobId, Path,)),
    responses((status = 200, body = JobRecord), (status = 404)))]
#[get("/jobs/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<JobId>,
) -> Result<web::Json<JobRecord>> {
    Ok(web::Json(job_for(&state, &auth, *id, Action::View).await?))
}

/// Cancel a job (editors and owners): a queued job at once, a running one within one step.
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "jobs", params(("id" = JobId, Path,)),
    responses((status = 202, body = CancelResponse), (status = 403), (status = 404), (status = 409)))]
#[post("/jobs/{id}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<JobId>,
) -> Result<HttpResponse> {
    let job = job_for(&state, &auth, *id, Action::CancelJobs).await?;
    if job.status.is_finished()
        || !state
            .jobs
            .cancel(job.id, Some("cancelled by a participant".into()))
            .await
    {
        return Err(Error::Conflict(format!(
            "the job has already ended ({})",
            job.status.as_str()
        )));
    }
    Ok(HttpResponse::Accepted().json(CancelResponse {
        job_id: job.id,
        cancelling: true,
    }))
}
