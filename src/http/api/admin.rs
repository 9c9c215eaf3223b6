//! The admin API under `/api/v1/admin/…`: accounts (search, credits, suspension, role),
//! workers (drain, revoke their token), running leases (stop), unfinished jobs (cancel), and
//! the audit log. Admins only ([`AdminAuth`]: 403 for other accounts, 401 anonymous); every
//! call, reads included, is recorded in the audit log with the admin's name.

use actix_web::{get, post, put, web, HttpResponse};
use atelier_protocol::close_code;
use atelier_protocol::ids::{AccountId, JobId, LeaseId, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{tokens, AdminAuth};
use crate::billing::{reason as stop_reason, LeaseView};
use crate::db::accounts::AccountRole;
use crate::db::admin::{AccountSummary, AuditActor, AuditEntry, WorkerToken};
use crate::db::ledger::{EntryKind, LedgerEntry};
use crate::error::{Error, Result};
use crate::jobs::fleet::{JobInfo, WorkerInfo};
use crate::jobs::worker_socket::WORKER_TOKEN_PREFIX;
use crate::state::AppState;

/// Longest reason an admin may give.
pub const MAX_REASON_CHARS: usize = 500;
/// Largest page of accounts or audit entries.
pub const MAX_PAGE: u32 = 500;
/// Ledger entries shown with one account.
const ACCOUNT_LEDGER_ENTRIES: u32 = 50;

/// Records an admin API call in the audit log. A call whose record cannot be written fails.
async fn audit(
    state: &AppState,
    admin: &AdminAuth,
    action: &str,
    target: Option<&str>,
    reason: Option<&str>,
    detail: Option<serde_json::Value>,
) -> Result<()> {
    state
        .db
        .record_audit(
            &AuditActor::admin(&admin.admin),
            action,
            target,
            reason,
            detail.as_ref(),
        )
        .await
}

/// A required reason: trimmed, 1–500 printable characters.
pub fn check_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid("a reason is required"));
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "the reason must be at most {MAX_REASON_CHARS} printable characters"
        )));
    }
    Ok(reason.to_string())
}

fn page_limit(limit: Option<u32>, default: u32) -> Result<u32> {
    let limit = limit.unwrap_or(default);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AccountSearch {
    /// Part of an email address (case-insensitive); empty lists every account.
    pub search: Option<String>,
    /// 1–500 (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountSummary>,
}

/// Accounts, newest first, optionally searched by email.
#[utoipa::path(tag = "admin", params(AccountSearch),
    responses((status = 200, body = AccountList), (status = 401), (status = 403)))]
#[get("/admin/accounts")]
pub async fn accounts(
    state: web::Data<AppState>,
    admin: AdminAuth,
    query: web::Query<AccountSearch>,
) -> Result<web::Json<AccountList>> {
    let limit = page_limit(query.limit, 50)?;
    let search = query.search.as_deref().unwrap_or("");
    if search.chars().count() > 254 {
        return Err(Error::invalid("search must be at most 254 characters"));
    }
    audit(&state, &admin, "list_accounts", Some(search), None, None).await?;
    Ok(web::Json(AccountList {
        accounts: state.db.search_accounts(search, limit).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    pub account: AccountSummary,
    /// The newest ledger entries.
    pub ledger: Vec<LedgerEntry>,
    /// Runtime leases the account pays for that are running now.
    pub leases: Vec<LeaseView>,
}

async fn summary(state: &AppState, id: AccountId) -> Result<AccountSummary> {
    state
        .db
        .account_summary(id)
        .await?
        .ok_or(Error::NotFound("account"))
}

/// One account: balance, sessions, recent ledger, running leases.
#[utoipa::path(tag = "admin", params(("id" = AccountId, Path,)),
    responses((status = 200, body = AccountDetail), (status = 401), (status = 403), (status = 404)))]
#[get("/admin/accounts/{id}")]
pub async fn account(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<AccountId>,
) -> Result<web::Json<AccountDetail>> {
    let id = *id;
    audit(
        &state,
        &admin,
        "view_account",
        Some(&id.to_string()),
        None,
        None,
    )
    .await?;
    // (Not `account`/`leases`: the handlers' macros make unit structs of those names.)
    let found = summary(&state, id).await?;
    let ledger = state
        .db
        .ledger_entries(id, None, ACCOUNT_LEDGER_ENTRIES)
        .await?;
    let running = state
        .billing
        .running_leases()
        .await
        .into_iter()
        .filter(|(_, payer)| *payer == id)
        .map(|(view, _)| view)
        .collect();
    Ok(web::Json(AccountDetail {
        account: found,
        ledger,
        leases: running,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCredits {
    /// Millicredits: positive adds, negative deducts.
    pub amount: i64,
    /// `grant` (default for positive amounts) or `adjustment` (always for negative ones).
    pub kind: Option<String>,
    /// Shown in the account's ledger and the audit log.
    pub reason: String,
    /// Repeating a request with the same key changes nothing (8–200 characters).
    pub idempotency_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResult {
    pub entry: LedgerEntry,
    /// True when the key was used before: nothing changed.
    pub replayed: bool,
    pub account: AccountSummary,
}

/// Grants or deducts credits: a ledger entry of kind `grant` or `adjustment` naming the admin
/// and the reason. Idempotent on `idempotency_key`. A deduction may not take the available
/// credits below zero (402).
#[utoipa::path(tag = "admin", params(("id" = AccountId, Path,)), request_body = GrantCredits,
    responses((status = 200, body = GrantResult), (status = 400), (status = 401), (status = 402),
        (status = 403), (status = 404), (status = 409, description = "the key was used for something else")))]
#[post("/admin/accounts/{id}/credits")]
pub async fn grant_credits(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<AccountId>,
    body: web::Json<GrantCredits>,
) -> Result<web::Json<GrantResult>> {
    let id = *id;
    let reason = check_reason(&body.reason)?;
    let key = body.idempotency_key.trim();
    if !(8..=200).contains(&key.len()) {
        return Err(Error::invalid(
            "idempotency_key must be 8 to 200 characters",
        ));
    }
    let kind = match (body.kind.as_deref(), body.amount) {
        (_, 0) => return Err(Error::invalid("amount must not be 0")),
        (None | Some("grant"), a) if a > 0 => EntryKind::Grant,
        (Some("grant"), _) => {
            return Err(Error::invalid(
                "a grant adds credits; deduct with a negative adjustment",
            ))
        }
        (None | Some("adjustment"), _) => EntryKind::Adjustment,
        (Some(other), _) => {
            return Err(Error::invalid(format!(
                "kind must be grant or adjustment, not {other:?}"
            )))
        }
    };
    summary(&state, id).await?;
    let posted = state
        .db
        .admin_credit(
            id,
            kind,
            body.amount,
            &format!("admin:{key}"),
            Some(admin.admin.id),
            &reason,
        )
        .await?;
    audit(
        &state,
        &admin,
        if body.amount > 0 {
            "grant_credits"
        } else {
            "deduct_credits"
        },
        Some(&id.to_string()),
        Some(&reason),
        Some(
            json!({"amount": body.amount, "kind": kind.as_str(), "idempotency_key": key,
                    "replayed": posted.is_replay(), "entry_id": posted.entry().id}),
        ),
    )
    .await?;
    Ok(web::Json(GrantResult {
        replayed: posted.is_replay(),
        entry: posted.entry().clone(),
        account: summary(&state, id).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithReason {
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionalReason {
    pub reason: Option<String>,
}

fn optional_reason(body: Option<web::Json<OptionalReason>>) -> Result<Option<String>> {
    body.and_then(|b| b.into_inner().reason)
        .filter(|r| !r.trim().is_empty())
        .map(|r| check_reason(&r))
        .transpose()
}

/// Suspends an account: it cannot log in, its tokens are refused (403 `account_suspended`),
/// every socket it has open closes (4403), and the leases it pays for stop and settle.
#[utoipa::path(tag = "admin", params(("id" = AccountId, Path,)), request_body = WithReason,
    responses((status = 200, body = AccountSummary), (status = 400), (status = 401), (status = 403), (status = 404)))]
#[post("/admin/accounts/{id}/suspend")]
pub async fn suspend(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<AccountId>,
    body: web::Json<WithReason>,
) -> Result<web::Json<AccountSummary>> {
    let id = *id;
    let reason = check_reason(&body.reason)?;
    if id == admin.admin.id {
        return Err(Error::invalid("an admin cannot suspend their own account"));
    }
    state.db.set_suspended(id, Some(&reason)).await?;
    state
        .live
        .kick_account(id, close_code::ACCESS_REVOKED, "account suspended");
    state
        .billing
        .stop_account_leases(id, stop_reason::ACCOUNT_SUSPENDED)
        .await;
    tracing::warn!(account = %id, admin = %admin.admin.id, "account suspended");
    audit(
        &state,
        &admin,
        "suspend_account",
        Some(&id.to_string()),
        Some(&reason),
        None,
    )
    .await?;
    Ok(web::Json(summary(&state, id).await?))
}

/// Lifts a suspension.
#[utoipa::path(tag = "admin", params(("id" = AccountId, Path,)), request_body = OptionalReason,
    responses((status = 200, body = AccountSummary), (status = 401), (status = 403), (status = 404)))]
#[post("/admin/accounts/{id}/unsuspend")]
pub async fn unsuspend(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<AccountId>,
    body: Option<web::Json<OptionalReason>>,
) -> Result<web::Json<AccountSummary>> {
    let id = *id;
    let reason = optional_reason(body)?;
    state.db.set_suspended(id, None).await?;
    audit(
        &state,
        &admin,
        "unsuspend_account",
        Some(&id.to_string()),
        reason.as_deref(),
        None,
    )
    .await?;
    Ok(web::Json(summary(&state, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: AccountRole,
    pub reason: Option<String>,
}

/// Sets an account's role (`user` or `admin`). An admin cannot demote themselves.
#[utoipa::path(tag = "admin", params(("id" = AccountId, Path,)), request_body = SetRole,
    responses((status = 200, body = AccountSummary), (status = 400), (status = 401), (status = 403), (status = 404)))]
#[put("/admin/accounts/{id}/role")]
pub async fn set_role(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<AccountId>,
    body: web::Json<SetRole>,
) -> Result<web::Json<AccountSummary>> {
    let id = *id;
    let body = body.into_inner();
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .map(|r| check_reason(&r))
        .transpose()?;
    if id == admin.admin.id && body.role != AccountRole::Admin {
        return Err(Error::invalid(
            "an admin cannot remove their own admin role (another admin or the CLI can)",
        ));
    }
    state.db.set_role(id, body.role).await?;
    audit(
        &state,
        &admin,
        "set_role",
        Some(&id.to_string()),
        reason.as_deref(),
        Some(json!({"role": body.role})),
    )
    .await?;
    Ok(web::Json(summary(&state, id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    /// Connected workers (the in-process one included).
    pub workers: Vec<WorkerInfo>,
    /// Every worker token (never the token itself).
    pub tokens: Vec<WorkerToken>,
}

/// Connected workers and the worker tokens.
#[utoipa::path(tag = "admin", responses((status = 200, body = Fleet), (status = 401), (status = 403)))]
#[get("/admin/workers")]
pub async fn workers(state: web::Data<AppState>, admin: AdminAuth) -> Result<web::Json<Fleet>> {
    audit(&state, &admin, "list_workers", None, None, None).await?;
    Ok(web::Json(Fleet {
        workers: state.jobs.workers(),
        tokens: state.db.worker_tokens().await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// `false` puts a drained worker back in service (default `true`).
    pub draining: Option<bool>,
    pub reason: Option<String>,
}

/// Drains a worker: the leases on it go on, no new lease is placed on it.
#[utoipa::path(tag = "admin", params(("id" = WorkerId, Path,)), request_body = Drain,
    responses((status = 200, body = Vec<WorkerInfo>), (status = 401), (status = 403), (status = 404)))]
#[post("/admin/workers/{id}/drain")]
pub async fn drain(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<WorkerId>,
    body: Option<web::Json<Drain>>,
) -> Result<web::Json<Vec<WorkerInfo>>> {
    let body = body.map(web::Json::into_inner);
    let draining = body.as_ref().and_then(|b| b.draining).unwrap_or(true);
    let reason = body
        .and_then(|b| b.reason)
        .filter(|r| !r.trim().is_empty())
        .map(|r| check_reason(&r))
        .transpose()?;
    if !state.jobs.set_draining(*id, draining) {
        return Err(Error::NotFound("connected worker"));
    }
    audit(
        &state,
        &admin,
        if draining {
            "drain_worker"
        } else {
            "undrain_worker"
        },
        Some(&id.to_string()),
        reason.as_deref(),
        None,
    )
    .await?;
    Ok(web::Json(state.jobs.workers()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkerToken {
    /// Shown in logs and on the admin page (1–100 characters).
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWorkerToken {
    pub id: WorkerId,
    pub name: String,
    /// Shown once: `atelier worker --token …`.
    pub token: String,
}

/// Creates a worker token (shown once).
#[utoipa::path(tag = "admin", request_body = NewWorkerToken,
    responses((status = 201, body = CreatedWorkerToken), (status = 400), (status = 401), (status = 403)))]
#[post("/admin/worker-tokens")]
pub async fn create_worker_token(
    state: web::Data<AppState>,
    admin: AdminAuth,
    body: web::Json<NewWorkerToken>,
) -> Result<HttpResponse> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::invalid("name must be 1 to 100 printable characters"));
    }
    let token = tokens::generate(WORKER_TOKEN_PREFIX);
    let id = state
        .db
        .insert_worker_token(name, &tokens::hash(&token))
        .await?;
    audit(
        &state,
        &admin,
        "create_worker_token",
        Some(&id.to_string()),
        None,
        Some(json!({"name": name})),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedWorkerToken {
        id,
        name: name.to_string(),
        token,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedWorkerToken {
    pub revoked: Vec<WorkerId>,
    /// Workers connected with it, disconnected now.
    pub disconnected: usize,
}

/// Revokes a worker token: refused from now on, and workers connected with it are disconnected
/// at once (their jobs fail with "worker lost", their leases stop with `worker_lost`).
#[utoipa::path(tag = "admin", params(("id" = WorkerId, Path, description = "the token's id")), request_body = OptionalReason,
    responses((status = 200, body = RevokedWorkerToken), (status = 401), (status = 403), (status = 404), (status = 409)))]
#[post("/admin/worker-tokens/{id}/revoke")]
pub async fn revoke_worker_token(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<WorkerId>,
    body: Option<web::Json<OptionalReason>>,
) -> Result<web::Json<RevokedWorkerToken>> {
    let reason = optional_reason(body)?;
    let revoked = state.db.revoke_worker_token(&id.to_string()).await?;
    let disconnected = state.jobs.disconnect_token_workers(&revoked);
    audit(
        &state,
        &admin,
        "revoke_worker_token",
        Some(&id.to_string()),
        reason.as_deref(),
        Some(json!({"disconnected": disconnected})),
    )
    .await?;
    Ok(web::Json(RevokedWorkerToken {
        revoked,
        disconnected,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunningLease {
    #[serde(flatten)]
    pub lease: LeaseView,
    /// Who pays.
    pub account_id: AccountId,
}

/// Runtime leases with a live meter (starting or running).
#[utoipa::path(tag = "admin", responses((status = 200, body = Vec<RunningLease>), (status = 401), (status = 403)))]
#[get("/admin/leases")]
pub async fn leases(
    state: web::Data<AppState>,
    admin: AdminAuth,
) -> Result<web::Json<Vec<RunningLease>>> {
    audit(&state, &admin, "list_leases", None, None, None).await?;
    Ok(web::Json(
        state
            .billing
            .running_leases()
            .await
            .into_iter()
            .map(|(lease, account_id)| RunningLease { lease, account_id })
            .collect(),
    ))
}

/// Stops a running lease (`stopped_by_admin`): its job is interrupted, used time charged, the
/// rest refunded.
#[utoipa::path(tag = "admin", params(("id" = LeaseId, Path,)), request_body = WithReason,
    responses((status = 200, body = crate::db::leases::Settlement), (status = 400), (status = 401), (status = 403), (status = 404)))]
#[post("/admin/leases/{id}/stop")]
pub async fn stop_lease(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<LeaseId>,
    body: web::Json<WithReason>,
) -> Result<web::Json<crate::db::leases::Settlement>> {
    let reason = check_reason(&body.reason)?;
    let session = state
        .billing
        .session_of_lease(*id)
        .ok_or(Error::NotFound("running lease"))?;
    let settlement = state
        .billing
        .stop_lease(session, stop_reason::STOPPED_BY_ADMIN)
        .await?;
    audit(
        &state,
        &admin,
        "stop_lease",
        Some(&id.to_string()),
        Some(&reason),
        Some(
            json!({"charged": settlement.charged, "refunded": settlement.refunded,
                      "used_ms": settlement.used_ms}),
        ),
    )
    .await?;
    Ok(web::Json(settlement))
}

/// Queued and running jobs.
#[utoipa::path(tag = "admin", responses((status = 200, body = Vec<JobInfo>), (status = 401), (status = 403)))]
#[get("/admin/jobs")]
pub async fn jobs(state: web::Data<AppState>, admin: AdminAuth) -> Result<web::Json<Vec<JobInfo>>> {
    audit(&state, &admin, "list_jobs", None, None, None).await?;
    Ok(web::Json(state.jobs.unfinished_jobs()))
}

/// Cancels a queued or running job (its session is told `job.cancelled {reason}`).
#[utoipa::path(tag = "admin", params(("id" = JobId, Path,)), request_body = OptionalReason,
    responses((status = 202), (status = 401), (status = 403), (status = 404)))]
#[post("/admin/jobs/{id}/cancel")]
pub async fn cancel_job(
    state: web::Data<AppState>,
    admin: AdminAuth,
    id: web::Path<JobId>,
    body: Option<web::Json<OptionalReason>>,
) -> Result<HttpResponse> {
    let reason = optional_reason(body)?;
    let shown = reason
        .clone()
        .unwrap_or_else(|| "cancelled by the operator".into());
    if !state.jobs.cancel(*id, Some(shown)).await {
        return Err(Error::NotFound("unfinished job"));
    }
    audit(
        &state,
        &admin,
        "cancel_job",
        Some(&id.to_string()),
        reason.as_deref(),
        None,
    )
    .await?;
    Ok(HttpResponse::Accepted().json(json!({"job_id": *id, "cancelling": true})))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Entries older than this id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// 1–500 (default 100).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// The admin audit log (API calls and command-line actions), newest first.
#[utoipa::path(tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401), (status = 403)))]
#[get("/admin/audit")]
pub async fn audit_log(
    state: web::Data<AppState>,
    admin: AdminAuth,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<AuditPage>> {
    let limit = page_limit(query.limit, 100)?;
    audit(&state, &admin, "view_audit", None, None, None).await?;
    let entries = state.db.audit_entries(query.before, limit).await?;
    let full = entries.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next_before = entries.last().filter(|_| full).map(|e| e.id);
    Ok(web::Json(AuditPage {
        entries,
        next_before,
    }))
}
