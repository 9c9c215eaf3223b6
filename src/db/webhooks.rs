//! Job webhooks: each account's signing secret, the messages to deliver and their attempts.

use atelier_protocol::ids::{AccountId, JobId};
use serde::Serialize;
use utoipa::ToSchema;

use super::columns::{JsonTextOrNull, UuidText};
use super::{is_unique_violation, now_ms, Db};
use crate::error::Result;

/// Where a job's webhook goes and which events it wants.
#[derive(Debug, Clone)]
pub struct JobWebhook {
    pub account: AccountId,
    pub url: String,
    /// `started`, `progress`, `completed`, `failed`, `cancelled`.
    pub events: Vec<String>,
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub attempt: i64,
    pub at: i64,
    /// The receiver's HTTP status; absent when it did not answer.
    pub status_code: Option<i64>,
    /// Why the attempt failed without an answer (timeout, refused address…).
    pub error: Option<String>,
    pub latency_ms: i64,
}

/// One message of a job's webhook, with its attempts.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WebhookDelivery {
    /// The `webhook-id` every attempt carries (receivers dedupe on it).
    pub id: String,
    /// `started`, `progress`, `completed`, `failed` or `cancelled`.
    pub event: String,
    pub url: String,
    /// `pending` (more attempts to come), `delivered` (a 2xx answer) or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The message body as sent.
    #[schema(value_type = Object)]
    #[sqlx(try_from = "JsonTextOrNull")]
    pub payload: serde_json::Value,
    #[sqlx(skip)]
    pub attempt_log: Vec<DeliveryAttempt>,
}

/// A message due for an attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: String,
    #[sqlx(rename = "account_id", try_from = "UuidText")]
    pub account: AccountId,
    pub url: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// What an attempt ended in.
pub enum Outcome {
    Delivered,
    Retry { at: i64 },
    GiveUp,
}

impl Db {
    /// The account's signing secret, made (by `make`) on first use.
    pub async fn webhook_secret(
        &self,
        account: AccountId,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        let select = || {
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE account_id = $1")
                .bind(account.to_string())
        };
        if let Some(secret) = select().fetch_optional(self.pool()).await? {
            return Ok(secret);
        }
        let res = sqlx::query(
            "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES ($1, $2, $3)",
        )
        .bind(account.to_string())
        .bind(make())
        .bind(now_ms())
        .execute(self.pool())
        .await;
        match res {
            Ok(_) => {}
            // Made concurrently by another request: that one stands.
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(select().fetch_one(self.pool()).await?)
    }

    /// Replaces the account's signing secret.
    pub async fn rotate_webhook_secret(&self, account: AccountId, secret: &str) -> Result<()> {
        sqlx::query("DELETE FROM webhook_secrets WHERE account_id = $1")
            .bind(account.to_string())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES ($1, $2, $3)",
        )
        .bind(account.to_string())
        .bind(secret)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn job_webhook(&self, job: JobId) -> Result<Option<JobWebhook>> {
        #[derive(sqlx::FromRow)]
        struct JobWebhookRow {
            #[sqlx(try_from = "UuidText")]
            account_id: AccountId,
            webhook_url: String,
            webhook_events: Option<String>,
        }
        let row: Option<JobWebhookRow> = sqlx::query_as(
            "SELECT account_id, webhook_url, webhook_events FROM jobs \
             WHERE id = $1 AND webhook_url IS NOT NULL",
        )
        .bind(job.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| JobWebhook {
            account: row.account_id,
            url: row.webhook_url,
            events: row
                .webhook_events
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }))
    }

    /// Queues a message for delivery now.
    pub async fn insert_delivery(
        &self,
        id: &str,
        job: JobId,
        hook: &JobWebhook,
        event: &str,
        payload: &str,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO webhook_deliveries \
             (id, job_id, account_id, url, event, payload, status, attempts, created_at, \
              next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)",
        )
        .bind(id)
        .bind(job.to_string())
        .bind(hook.account.to_string())
        .bind(&hook.url)
        .bind(event)
        .bind(payload)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Messages whose next attempt is due, oldest first.
    pub async fn due_deliveries(&self, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows: Vec<DueDelivery> = sqlx::query_as(
            "SELECT id, account_id, url, payload, attempts, next_attempt_at \
             FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, created_at LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Takes a due message for one attempt: moves its next attempt to `until` unless another
    /// sender (another node) took it first. True when this caller has it.
    pub async fn claim_delivery(&self, due: &DueDelivery, until: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 \
             WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(until)
        .bind(&due.id)
        .bind(due.next_attempt_at)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records an attempt and what follows from it.
    pub async fn record_attempt(
        &self,
        delivery: &str,
        attempt: &DeliveryAttempt,
        outcome: Outcome,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, latency_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery)
        .bind(attempt.attempt)
        .bind(attempt.at)
        .bind(attempt.status_code)
        .bind(attempt.error.as_deref())
        .bind(attempt.latency_ms)
        .execute(self.pool())
        .await?;
        let now = now_ms();
        let (status, next, finished) = match outcome {
            Outcome::Delivered => ("delivered", None, Some(now)),
            Outcome::Retry { at } => ("pending", Some(at), None),
            Outcome::GiveUp => ("failed", None, Some(now)),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, \
             finished_at = $4 WHERE id = $5",
        )
        .bind(status)
        .bind(attempt.attempt)
        .bind(next)
        .bind(finished)
        .bind(delivery)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A job's messages, oldest first, each with its attempts.
    pub async fn deliveries_of_job(&self, job: JobId) -> Result<Vec<WebhookDelivery>> {
        let mut deliveries: Vec<WebhookDelivery> = sqlx::query_as(
            "SELECT id, event, url, status, attempts, created_at, next_attempt_at, finished_at, \
             payload FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id LIMIT 1000",
        )
        .bind(job.to_string())
        .fetch_all(self.pool())
        .await?;
        #[derive(sqlx::FromRow)]
        struct AttemptRow {
            delivery_id: String,
            #[sqlx(flatten)]
            attempt: DeliveryAttempt,
        }
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.error, a.latency_ms \
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE d.job_id = $1 ORDER BY a.attempt",
        )
        .bind(job.to_string())
        .fetch_all(self.pool())
        .await?;
        for row in attempts {
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == row.delivery_id) {
                d.attempt_log.push(row.attempt);
            }
        }
        Ok(deliveries)
    }
}
