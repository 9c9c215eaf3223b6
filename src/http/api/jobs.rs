//! Jobs: the node types workers can run, running a session's graph, following and cancelling.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use atelier_protocol::ids::{JobId, SessionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use std::collections::BTreeSet;

use atelier_protocol::ids::{AccountId, MediaId};
use atelier_protocol::worker::MediaBytes;

use crate::auth::Auth;
use crate::authz::{authorize, Action};
use crate::db::idempotency::{Claim, KeyOwner};
use crate::db::jobs::BatchPlace;
use crate::db::jobs::JobRecord;
use crate::db::versions::{NewVersion, VersionKind};
use crate::error::{Error, Result};
use crate::inference::catalog::ParamType;
use crate::jobs::cache;
use crate::jobs::graph::{self, Graph, Plan};
use crate::jobs::service::{JobInputs, JobOptions};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunJob {
    /// Run only these nodes (and what feeds them); absent = what feeds the graph's outputs.
    pub nodes: Option<Vec<String>>,
    /// Run from this node: it and every node that depends on it run again, whatever the cache
    /// holds (the rest may come from the cache).
    pub from: Option<String>,
    /// Run this many variations (1 to 16), one job each: variation `i` moves every random
    /// node's seed on by `i`. The answer is then `{"jobs": [...]}`.
    pub batch: Option<u32>,
    /// Deliver the job's events to this URL (signed; see `GET /me/webhook-secret`).
    pub webhook: Option<crate::webhooks::WebhookSpec>,
}

/// Most variations one run may ask for.
pub const MAX_BATCH: u32 = 16;
/// Largest uploaded image a node may read (it travels to the worker with the job).
pub const MAX_MEDIA_INPUT_BYTES: i64 = 8 * 1024 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResponse {
    pub job_id: JobId,
    pub cancelling: bool,
}

/// The node types the workers can run: every model of the catalog (test models only when the
/// operator enabled them) plus the built-in `output`, with their parameters and typed ports.
#[utoipa::path(security(()), tag = "jobs", responses((status = 200, description = "node types")))]
#[get("/node-types")]
pub async fn node_types(state: web::Data<AppState>) -> HttpResponse {
    let mut types: Vec<serde_json::Value> = state
        .catalog
        .palette(state.jobs.limits().test_models)
        .into_iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    types.push(serde_json::json!({
        "name": graph::OUTPUT_NODE,
        "title": "Output",
        "description": "Marks the images wired into it as the job's outputs.",
        "kind": "output",
        "params": [],
        "inputs": [{"name": graph::OUTPUT_PORT, "type": "any"}],
        "outputs": [],
        "stochastic": false,
    }));
    HttpResponse::Ok().json(types)
}

/// Run the session's graph (or part of it). The graph is validated first: any problem is a 400
/// naming the node or edge (404 for a media input that is not the session's), before any GPU
/// time is used. Nodes whose stored result still applies are cached; the rest needs a running
/// Pro runtime (402 otherwise). A job with every node cached finishes at once, free.
///
/// `Idempotency-Key` (optional, 1 to 255 printable ASCII characters): a retried request with
/// the same key, account, session and body makes no new job — it is answered `201` with the
/// jobs the first one made (as they are now) and `Idempotency-Replayed: true`; the same key with
/// another body is a 409, as is a retry while the first request is still running. Keys are kept
/// at least 24 hours; a request that failed frees its key.
#[utoipa::path(security(("api_key" = ["jobs:run"])), tag = "jobs", request_body = RunJob,
    params(("id" = SessionId, Path,),
           ("Idempotency-Key" = Option<String>, Header,
            description = "Makes a retried submit return the first one's jobs (1 to 255 printable ASCII characters, kept at least 24 h)")),
    responses((status = 201, body = JobRecord), (status = 400), (status = 402), (status = 403),
              (status = 404), (status = 409), (status = 429)))]
#[post("/sessions/{id}/jobs")]
pub async fn run(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::RunJobs).await?;
    let account = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("share links cannot run jobs"))?;
    let key = idempotency_key(&req)?;
    let raw = super::body::read_limited(&state, payload).await?;
    let body = run_body(&raw)?;
    let batch = body.batch.is_some();
    let Some(key) = key else {
        let jobs = make_jobs(&state, session.id, account, body).await?;
        return respond(jobs, batch, false);
    };
    // A retried submit (same account, session, key and body) gets the jobs the first one made.
    let owner = KeyOwner {
        account,
        session: session.id,
        key: &key,
    };
    let request_hash = hex::encode(Sha256::digest(&raw));
    match state.db.claim_key(owner, &request_hash, batch).await? {
        Claim::New => {}
        Claim::Done { jobs, batch } => {
            let mut records = Vec::with_capacity(jobs.len());
            for job in jobs {
                records.push(state.db.job(job).await?.ok_or(Error::NotFound("job"))?);
            }
            return respond(records, batch, true);
        }
        Claim::InProgress => {
            return Err(Error::Conflict(
                "a request with this Idempotency-Key is still being processed; retry in a moment"
                    .into(),
            ))
        }
        Claim::OtherRequest => {
            return Err(Error::Conflict(
                "this Idempotency-Key was already used with a different request body; use a new \
                 key for a new request"
                    .into(),
            ))
        }
    }
    match make_jobs(&state, session.id, account, body).await {
        Ok(jobs) => {
            let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
            state.db.complete_key(owner, &ids).await?;
            respond(jobs, batch, false)
        }
        Err(e) => {
            // Nothing to replay: the key is free for the retry.
            if let Err(release) = state.db.release_key(owner).await {
                tracing::error!(error = %release, "could not release an idempotency key");
            }
            Err(e)
        }
    }
}

/// The answer to a run: `201` with the job, or `{"jobs": [...]}` for a batch;
/// `Idempotency-Replayed: true` when these are the jobs of an earlier request with its key.
fn respond(mut jobs: Vec<JobRecord>, batch: bool, replayed: bool) -> Result<HttpResponse> {
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotency-Replayed", "true"));
    }
    if batch {
        return Ok(response.json(serde_json::json!({ "jobs": jobs })));
    }
    let record = jobs.pop().ok_or(Error::NotFound("job"))?;
    Ok(response.json(record))
}

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`: 1 to 255 printable ASCII characters, else 400.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| (0x20..0x7f).contains(&b))
        })
        .ok_or_else(|| {
            Error::invalid(format!(
                "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
            ))
        })?;
    Ok(Some(key.to_string()))
}

/// Validates a run and makes its job (or its batch's jobs).
async fn make_jobs(
    state: &AppState,
    session: SessionId,
    account: AccountId,
    body: RunJob,
) -> Result<Vec<JobRecord>> {
    if let Some(webhook) = &body.webhook {
        state.webhooks.validate(webhook).await?;
    }
    let batch = body.batch.unwrap_or(1);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(Error::invalid(format!(
            "batch: ask for 1 to {MAX_BATCH} variations, got {batch}"
        )));
    }
    let max_queued = state.jobs.limits().max_queued_per_account;
    if batch as usize > max_queued {
        return Err(Error::TooManyJobs(format!(
            "a batch of {batch} is more jobs than one account may have waiting ({max_queued})"
        )));
    }
    // The cheap refusal first: without a running runtime, only a run whose every node is cached
    // can go ahead, so a session with nothing cached is refused before its document is read.
    // (In a cluster the lease may be metered by another node: its jobs are sent there.)
    if let Err(refused) = state.billing.lease_for_jobs(session).await {
        if state.db.cache_bytes(session).await? == 0 {
            return Err(refused);
        }
    }
    // The graph as the live session has it, every edit it accepted before this included: what
    // the editors see is what runs.
    let view = state
        .live
        .graph_view(session)
        .await
        .map_err(|e| Error::Internal(format!("could not read the session's document: {e}")))?;
    let graph = Graph::from_json(&view.graph).map_err(Error::InvalidInput)?;
    let seed: u64 = rand::random::<u64>() & graph::MAX_SEED;
    let plan = graph
        .compile(&state.catalog, body.nodes.as_deref(), seed)
        .map_err(Error::InvalidInput)?;
    let forced = run_from(&plan, body.from.as_deref())?;
    let media = media_inputs(state, &plan, session, account).await?;
    // The document the job runs, kept as a version (one for all the jobs of a batch). A job
    // still runs when its version cannot be kept (the session's version storage is full of
    // named versions): it then has none.
    let version = match state
        .versions
        .record(NewVersion {
            session,
            kind: VersionKind::Job,
            name: None,
            created_by: Some(account),
            authors: Vec::new(),
            restored_from: None,
            state: view.state.to_vec(),
        })
        .await
    {
        Ok(version) => Some(version),
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "job runs without a version");
            None
        }
    };

    let batch_id = uuid::Uuid::new_v4();
    let mut jobs = Vec::new();
    for i in 0..batch {
        let mut plan = plan.variation(&state.catalog, u64::from(i));
        let resolution = cache::resolve(
            &state.db,
            &state.blobs,
            session,
            &mut plan,
            &forced,
            state.jobs.limits().node_cache_max_bytes > 0,
        )
        .await?;
        // Cached nodes use no worker time: a job that runs nothing needs no runtime.
        let lease = if plan.steps.iter().all(|s| s.cached) {
            None
        } else {
            Some(state.billing.lease_for_jobs(session).await?)
        };
        let inputs = JobInputs {
            resolution,
            media: media.clone(),
        };
        let job = state
            .jobs
            .submit(
                session,
                account,
                lease,
                plan,
                inputs,
                JobOptions {
                    webhook: body.webhook.as_ref(),
                    batch: body.batch.map(|_| BatchPlace {
                        id: batch_id,
                        index: i,
                    }),
                },
            )
            .await?;
        if let Some(version) = version {
            state.db.set_job_version(job, version).await?;
        }
        jobs.push(state.db.job(job).await?.ok_or(Error::NotFound("job"))?);
    }
    Ok(jobs)
}

/// The body of a run: none (or empty) runs the whole graph; anything else must be a valid
/// [`RunJob`] — a body that does not parse is refused, never run as if it were absent.
fn run_body(body: &[u8]) -> Result<RunJob> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RunJob::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

/// The nodes "run from `from`" forces to run: `from` and everything downstream of it.
fn run_from(plan: &Plan, from: Option<&str>) -> Result<BTreeSet<String>> {
    let mut forced = BTreeSet::new();
    let Some(from) = from else {
        return Ok(forced);
    };
    if !plan.steps.iter().any(|s| s.node_id == from) {
        return Err(Error::invalid(format!(
            "from: node '{from}' is not a node this run executes"
        )));
    }
    forced.insert(from.to_string());
    // Steps are in dependency order: one pass sees every upstream decision first.
    for step in &plan.steps {
        if step.inputs.values().any(|r| forced.contains(&r.node_id)) {
            forced.insert(step.node_id.clone());
        }
    }
    Ok(forced)
}

/// The uploaded images the plan's media parameters name, checked and read: each must be a PNG
/// of this session (or the runner's own upload outside any session). Anything else is refused
/// naming the node — 404 alike for a missing id and someone else's, so ids leak nothing.
async fn media_inputs(
    state: &AppState,
    plan: &Plan,
    session: SessionId,
    account: AccountId,
) -> Result<Vec<MediaBytes>> {
    let mut out: Vec<MediaBytes> = Vec::new();
    for step in &plan.steps {
        let Some(entry) = state.catalog.get(&step.model) else {
            continue;
        };
        for spec in entry
            .manifest
            .params
            .iter()
            .filter(|p| p.ty == ParamType::Media)
        {
            let id = step
                .params
                .get(&spec.name)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<MediaId>().ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "node {}: parameter {}: pick an image uploaded to this session",
                        step.node_id, spec.name
                    ))
                })?;
            if out.iter().any(|m| m.media_id == id.to_string()) {
                continue;
            }
            let not_found = || {
                Error::Missing(format!(
                    "node {}: media {id} not found in this session",
                    step.node_id
                ))
            };
            let media = state.db.media(id).await?.ok_or_else(not_found)?;
            let visible = media.session_id == Some(session)
                || (media.session_id.is_none() && media.owner_id == account);
            if !visible {
                return Err(not_found());
            }
            if media.content_type != "image/png" {
                return Err(Error::invalid(format!(
                    "node {}: media {id} is {}; {} reads PNG images",
                    step.node_id, media.content_type, step.model
                )));
            }
            if media.size_bytes > MAX_MEDIA_INPUT_BYTES {
                return Err(Error::invalid(format!(
                    "node {}: media {id} is larger than {MAX_MEDIA_INPUT_BYTES} bytes",
                    step.node_id
                )));
            }
            let bytes = state.blobs.get(&media.object_key).await?;
            out.push(MediaBytes {
                media_id: id.to_string(),
                data: bytes,
            });
        }
    }
    Ok(out)
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
    let reason = Some("cancelled by a participant".to_string());
    let ended = || {
        Error::Conflict(format!(
            "the job has already ended ({})",
            job.status.as_str()
        ))
    };
    if job.status.is_finished() {
        return Err(ended());
    }
    if !state.jobs.cancel(job.id, reason.clone()).await {
        // Not on this node's board: in a cluster, the node running it cancels it.
        match &state.job_routing {
            Some(routing) => routing.cancel_elsewhere(job.id, reason),
            None => return Err(ended()),
        }
    }
    Ok(HttpResponse::Accepted().json(CancelResponse {
        job_id: job.id,
        cancelling: true,
    }))
}
