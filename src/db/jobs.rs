//! Jobs and worker tokens.

use atelier_protocol::ids::{AccountId, JobId, LeaseId, MediaId, SessionId, VersionId, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;

use super::columns::{JsonText, OptUuidText, UuidText};
use super::{now_ms, Db};
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
}

impl TryFrom<String> for JobStatus {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        Ok(match stored.as_str() {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct JobRecord {
    #[sqlx(try_from = "UuidText")]
    pub id: JobId,
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    #[sqlx(try_from = "UuidText")]
    pub account_id: AccountId,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// The compiled steps: `[{node_id, model, params, seed}]`.
    #[schema(value_type = Object)]
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub plan: serde_json::Value,
    #[sqlx(try_from = "OptUuidText")]
    pub worker_id: Option<WorkerId>,
    pub device: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Vec<String>)]
    #[sqlx(try_from = "JsonText<Vec<MediaId>>")]
    pub outputs: Vec<MediaId>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The version of the session's document this job ran (`GET …/versions/{id}`); absent for
    /// jobs from before versions, or when the version was evicted.
    #[schema(value_type = Option<String>)]
    #[sqlx(try_from = "OptUuidText")]
    pub version_id: Option<VersionId>,
    /// The batch this job is a variation of (`{"batch": N}` runs), if any.
    #[sqlx(flatten, try_from = "BatchColumns")]
    pub batch: Option<BatchPlace>,
}

/// A queued job as stored: what the board needs to queue it again after a restart.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedJobRow {
    #[sqlx(try_from = "UuidText")]
    pub id: JobId,
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    #[sqlx(try_from = "UuidText")]
    pub account_id: AccountId,
    #[sqlx(try_from = "OptUuidText")]
    pub lease_id: Option<LeaseId>,
    /// The compiled steps (JSON).
    pub plan: String,
    /// JSON array of node ids; NULL for rows from before the durable queue.
    pub output_nodes: Option<String>,
    /// JSON array of media ids.
    pub media_ids: Option<String>,
    pub requeues: i64,
}

/// The two columns a job's batch place is stored in: both set, or both NULL.
#[derive(sqlx::FromRow)]
struct BatchColumns {
    #[sqlx(try_from = "OptUuidText")]
    batch_id: Option<uuid::Uuid>,
    batch_index: Option<i64>,
}

impl TryFrom<BatchColumns> for Option<BatchPlace> {
    type Error = String;

    fn try_from(c: BatchColumns) -> Result<Self, String> {
        match (c.batch_id, c.batch_index) {
            (Some(id), Some(index)) => Ok(Some(BatchPlace {
                id,
                index: u32::try_from(index).map_err(|_| format!("job batch index {index}"))?,
            })),
            _ => Ok(None),
        }
    }
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
        let row: Option<JobRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    pub async fn jobs_of_session(&self, session: SessionId, limit: i64) -> Result<Vec<JobRecord>> {
        let rows: Vec<JobRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE session_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        )))
        .bind(session.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
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

    /// What a queued job needs to go back on the board after a restart, besides its plan:
    /// its lease, its output nodes and the uploaded images it reads.
    pub async fn set_job_queue_fields(
        &self,
        id: JobId,
        lease: Option<LeaseId>,
        output_nodes: &std::collections::BTreeSet<String>,
        media_ids: &[String],
    ) -> Result<()> {
        let outputs = serde_json::to_string(output_nodes)
            .map_err(|e| Error::Internal(format!("job output nodes: {e}")))?;
        let media = serde_json::to_string(media_ids)
            .map_err(|e| Error::Internal(format!("job media: {e}")))?;
        sqlx::query(
            "UPDATE jobs SET lease_id = $1, output_nodes = $2, media_ids = $3 WHERE id = $4",
        )
        .bind(lease.map(|l| l.to_string()))
        .bind(outputs)
        .bind(media)
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A job running on `worker` (as its row says), with what the board needs to re-attach it
    /// to that worker's new connection; `None` when it is not running there any more.
    pub async fn running_job_on(
        &self,
        id: JobId,
        worker: WorkerId,
    ) -> Result<Option<QueuedJobRow>> {
        let row: Option<QueuedJobRow> = sqlx::query_as(
            "SELECT id, session_id, account_id, lease_id, plan, output_nodes, media_ids, requeues \
             FROM jobs WHERE id = $1 AND status = 'running' AND worker_id = $2",
        )
        .bind(id.to_string())
        .bind(worker.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// A running job's worker reconnected as `to`: the row follows it, if it still says `from`
    /// (of two nodes adopting the same job, exactly one moves the row). Whether it moved.
    pub async fn reattach_job(
        &self,
        id: JobId,
        from: WorkerId,
        to: WorkerId,
        device: &str,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE jobs SET worker_id = $1, device = $2 \
             WHERE id = $3 AND status = 'running' AND worker_id = $4",
        )
        .bind(to.to_string())
        .bind(device)
        .bind(id.to_string())
        .bind(from.to_string())
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// A running job whose worker was lost before it produced anything goes back to the queue
    /// (counted; the board allows it once).
    pub async fn requeue_job(&self, id: JobId) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, device = NULL, \
             started_at = NULL, requeues = requeues + 1 WHERE id = $1 AND status = 'running'",
        )
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// At start-up: jobs that were running when the server stopped cannot continue (their
    /// worker's connection is gone); end them with a reason. Returns them (job, session), so that
    /// their webhooks still hear how they ended. Queued jobs are not touched: see
    /// [`Db::queued_jobs`].
    pub async fn fail_running_jobs(&self, reason: &str) -> Result<Vec<(JobId, SessionId)>> {
        let rows: Vec<(UuidText, UuidText)> = sqlx::query_as(
            "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 \
             WHERE status = 'running' RETURNING id, session_id",
        )
        .bind(reason)
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job, session)| (JobId::from(job), SessionId::from(session)))
            .collect())
    }

    /// Cluster mode, at start-up: fails the running jobs of the leases `node` owns (their
    /// workers' connections died with its previous run), not the other nodes' jobs.
    pub async fn fail_running_jobs_of_node(
        &self,
        node: &str,
        reason: &str,
    ) -> Result<Vec<(JobId, SessionId)>> {
        let rows: Vec<(UuidText, UuidText)> = sqlx::query_as(
            "UPDATE jobs SET status = 'failed', error = $1, finished_at = $2 \
             WHERE status = 'running' AND lease_id IN \
             (SELECT id FROM runtime_leases WHERE owner_node = $3) \
             RETURNING id, session_id",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job, session)| (JobId::from(job), SessionId::from(session)))
            .collect())
    }

    /// How many jobs of the account are queued, on every node (a cluster's submit to another
    /// node's board is bounded by the same per-account limit).
    pub async fn queued_count_of_account(&self, account: AccountId) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE account_id = $1 AND status = 'queued'",
        )
        .bind(account.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    /// One job as the durable queue keeps it, if it is still queued.
    pub async fn queued_job(&self, id: JobId) -> Result<Option<QueuedJobRow>> {
        let row: Option<QueuedJobRow> = sqlx::query_as(
            "SELECT id, session_id, account_id, lease_id, plan, output_nodes, media_ids, requeues \
             FROM jobs WHERE id = $1 AND status = 'queued'",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// The session's unfinished jobs (queued or running), oldest first (what `session.hello`
    /// reports on a node that does not run them).
    pub async fn unfinished_jobs_of_session(&self, session: SessionId) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE session_id = $1 \
             AND status IN ('queued', 'running') ORDER BY created_at, id LIMIT 100"
        );
        let rows: Vec<JobRecord> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session.to_string())
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Every queued job, in the order they were submitted (the durable queue, read at
    /// start-up).
    pub async fn queued_jobs(&self) -> Result<Vec<QueuedJobRow>> {
        let rows: Vec<QueuedJobRow> = sqlx::query_as(
            "SELECT id, session_id, account_id, lease_id, plan, output_nodes, media_ids, requeues \
             FROM jobs WHERE status = 'queued' ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
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
        let row: Option<(UuidText, String)> = sqlx::query_as(
            "SELECT id, name FROM worker_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(id, name)| (WorkerId::from(id), name)))
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
