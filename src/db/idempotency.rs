//! `Idempotency-Key`s of job submits: one row per (account, session, key), claimed before the
//! request makes its jobs and completed with their ids, so a retried submit returns the same
//! jobs instead of making new ones. Rows older than [`KEEP_MS`] are purged by housekeeping.

use atelier_protocol::ids::{AccountId, JobId, SessionId};

use super::{now_ms, Db};
use crate::error::{Error, Result};

/// How long a key is remembered (at least 24 h).
pub const KEEP_MS: i64 = 24 * 3_600_000;

/// A claim whose request never completed (its process died) is taken over after this long.
pub const ABANDONED_MS: i64 = 60_000;

/// Which request a key stands for.
#[derive(Debug, Clone, Copy)]
pub struct KeyOwner<'a> {
    pub account: AccountId,
    pub session: SessionId,
    pub key: &'a str,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use (or an abandoned claim taken over): make the jobs, then [`Db::complete_key`].
    New,
    /// Used before with the same body: these jobs (`batch`: answered as `{"jobs": [...]}`).
    Done { jobs: Vec<JobId>, batch: bool },
    /// A request with this key is still making its jobs.
    InProgress,
    /// Used before with another body.
    OtherRequest,
}

impl Db {
    /// Claims `key` for a request whose body hashes to `request_hash`.
    pub async fn claim_key(
        &self,
        owner: KeyOwner<'_>,
        request_hash: &str,
        batch: bool,
    ) -> Result<Claim> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO job_idempotency_keys \
             (account_id, session_id, key, request_hash, jobs, batch, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(owner.account.to_string())
        .bind(owner.session.to_string())
        .bind(owner.key)
        .bind(request_hash)
        .bind(i64::from(batch))
        .bind(now)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::New);
        }
        let row: Option<(String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT request_hash, jobs, batch, created_at FROM job_idempotency_keys \
             WHERE account_id = $1 AND session_id = $2 AND key = $3",
        )
        .bind(owner.account.to_string())
        .bind(owner.session.to_string())
        .bind(owner.key)
        .fetch_optional(self.pool())
        .await?;
        let Some((hash, jobs, was_batch, created_at)) = row else {
            // Purged between the two statements: claim it again.
            return Box::pin(self.claim_key(owner, request_hash, batch)).await;
        };
        if hash != request_hash {
            return Ok(Claim::OtherRequest);
        }
        match jobs {
            Some(jobs) => Ok(Claim::Done {
                jobs: serde_json::from_str(&jobs)
                    .map_err(|e| Error::Internal(format!("stored idempotent jobs: {e}")))?,
                batch: was_batch != 0,
            }),
            None if created_at < now - ABANDONED_MS => {
                let taken = sqlx::query(
                    "UPDATE job_idempotency_keys SET created_at = $1 \
                     WHERE account_id = $2 AND session_id = $3 AND key = $4 \
                     AND jobs IS NULL AND created_at = $5",
                )
                .bind(now)
                .bind(owner.account.to_string())
                .bind(owner.session.to_string())
                .bind(owner.key)
                .bind(created_at)
                .execute(self.pool())
                .await?;
                Ok(if taken.rows_affected() == 1 {
                    Claim::New
                } else {
                    Claim::InProgress
                })
            }
            None => Ok(Claim::InProgress),
        }
    }

    /// The request made these jobs: a retry gets them.
    pub async fn complete_key(&self, owner: KeyOwner<'_>, jobs: &[JobId]) -> Result<()> {
        let jobs = serde_json::to_string(jobs)
            .map_err(|e| Error::Internal(format!("idempotent jobs: {e}")))?;
        sqlx::query(
            "UPDATE job_idempotency_keys SET jobs = $1 \
             WHERE account_id = $2 AND session_id = $3 AND key = $4",
        )
        .bind(jobs)
        .bind(owner.account.to_string())
        .bind(owner.session.to_string())
        .bind(owner.key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The request failed before it made a job: the key is free again (a retry may succeed).
    pub async fn release_key(&self, owner: KeyOwner<'_>) -> Result<()> {
        sqlx::query(
            "DELETE FROM job_idempotency_keys \
             WHERE account_id = $1 AND session_id = $2 AND key = $3 AND jobs IS NULL",
        )
        .bind(owner.account.to_string())
        .bind(owner.session.to_string())
        .bind(owner.key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets keys made before `cutoff` (epoch ms); returns how many.
    pub async fn purge_keys_before(&self, cutoff: i64) -> Result<u64> {
        let res = sqlx::query("DELETE FROM job_idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(res.rows_affected())
    }
}
