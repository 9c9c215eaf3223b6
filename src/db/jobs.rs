//! Jobs and worker tokens.

use atelier_protocol::ids::{AccountId, JobId, MediaId, SessionId, VersionId, WorkerId};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use super::{now_ms, opt_uuid_col, uuid_col, Db};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(Error::Internal(format!("unknown job status {other:?}"))),
        })
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRecord {
    pub id: JobId,
    pub session_id: SessionId,
    pub account_id: AccountId,
    pub status: JobStatus,
    /// The compiled steps: `[{node_id, model, params, seed}]`.
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    pub worker_id: Option<WorkerId>,
    pub device: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Vec<String>)]
    pub outputs: Vec<MediaId>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The version of the session's document this job ran (`GET …/versions/{id}`); absent for
    /// jobs from before versions, or when the version was evicted.
    #[schema(value_type = Option<String>)]
    pub version_id: Option<VersionId>,
    /// The batch this job is a variation of (`{"batch": N}` runs), if any.
    pub batch: Option<BatchPlace>,
}

/// A job's place in a batch: the batch's id (shared by its jobs) and the variation's index
/// (0-based; variation `i` moved every random node's seed on by `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchPlace {
    #[schema(value_type = String)]
    pub id: uuid::Uuid,
    pub index: u32,
}

const COLUMNS: &str =
    "id, session_id, account_id, status, plan, worker_id, device, error, outputs, \
                       created_at, started_at, finished_at, version_id, batch_id, batch_index";

fn job_from_row(row: &AnyRow) -> Result<JobRecord> {
    let plan: String = row.try_get("plan")?;
    let outputs: String = row.try_get("outputs")?;
    let status: String = row.try_get("status")?;
    Ok(JobRecord {
        id: JobId(uuid_col(row, "id")?),
        session_id: SessionId(uuid_col(row, "session_id")?),
        account_id: AccountId(uuid_col(row, "account_id")?),
        status: JobStatus::parse(&status)?,
        plan: serde_json::from_str(&plan).map_err(|e| Error::Internal(format!("job plan: {e}")))?,
        worker_id: opt_uuid_col(row, "worker_id")?.map(WorkerId),
        device: row.try_get("device")?,
        error: row.try_get("error")?,
        outputs: serde_json::from_str(&outputs)
            .map_err(|e| Error::Internal(format!("job outputs: {e}")))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        version_id: opt_uuid_col(row, "version_id")?.map(VersionId),
        batch: match (
            opt_uuid_col(row, "batch_id")?,
            row.try_get::<Option<i64>, _>("batch_index")?,
        ) {
            (Some(id), Some(index)) => Some(BatchPlace {
                id,
                index: u32::try_from(index)
                    .map_err(|_| Error::Internal(format!("job batch index {index}")))?,
            }),
            _ => None,
        },
    })
}

impl Db {
    pub async fn insert_job(
        &self,
        id: JobId,
        session: SessionId,
        account: AccountId,
        plan: &serde_json::Value,
        webhook: Option<&crate::webhooks::WebhookSpec>,
        batch: Option<BatchPlace>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO jobs \
             (id, session_id, account_id, status, plan, created_at, webhook_url, webhook_events, \
              batch_id, batch_index) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.to_string())
        .bind(session.to_string())
        .bind(account.to_string())
        .bind(plan.to_string())
        .bind(now_ms())
        .bind(webhook.map(|w| w.url.clone()))
        .bind(webhook.map(|w| w.events_text()))
        .bind(batch.map(|b| b.id.to_string()))
        .bind(batch.map(|b| i64::from(b.index)))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn jobs_of_session(&self, session: SessionId, limit: i64) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE session_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        )))
        .bind(session.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn mark_job_running(&self, id: JobId, worker: WorkerId, device: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'running', worker_id = $1, device = $2, started_at = $3 \
             WHERE id = $4 AND status = 'queued'",
        )
        .bind(worker.to_string())
        .bind(device)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records the end of a job once: a finished job keeps its first outcome.
    pub async fn finish_job(
        &self,
        id: JobId,
        status: JobStatus,
        error: Option<&str>,
        outputs: &[MediaId],
    ) -> Result<bool> {
        let outputs = serde_json::to_string(outputs)
            .map_err(|e| Error::Internal(format!("job outputs: {e}")))?;
        let res = sqlx::query(
            "UPDATE jobs SET status = $1, error = $2, outputs = $3, finished_at = $4 \
             WHERE id = $5 AND status IN ('queued', 'running')",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(outputs)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// At start-up: jobs that were queued or running when the server stopped cannot continue
    /// (the in-process queue is gone); end them with a reason.
    /// Marks every unfinished job failed; returns them (job, session), so that their webhooks
    /// still hear how they ended.
    pub async fn fail_unfinished_jobs(&self, reason: &str) -> Result<Vec<(JobId, SessionId)>> {
        let rows = sqlx::query(
            "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 \
             WHERE status IN ('queued', 'running') RETURNING id, session_id",
        )
        .bind(reason)
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    JobId(uuid_col(row, "id")?),
                    SessionId(uuid_col(row, "session_id")?),
                ))
            })
            .collect()
    }

    pub async fn insert_worker_token(&self, name: &str, token_hash: &str) -> Result<WorkerId> {
        let id = WorkerId::new_random();
        sqlx::query(
            "INSERT INTO worker_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(token_hash)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// The id and name of the worker token with this hash, if it exists and is not revoked.
    pub async fn worker_token(&self, token_hash: &str) -> Result<Option<(WorkerId, String)>> {
        let row = sqlx::query(
            "SELECT id, name FROM worker_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((WorkerId(super::uuid_col(&r, "id")?), r.try_get("name")?)))
            .transpose()
    }

    /// Whether the worker token with this id is still valid (not revoked, not deleted).
    pub async fn worker_token_valid(&self, id: WorkerId) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM worker_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}
