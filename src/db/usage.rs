//! The API usage log: one row per request of an account (route, status, duration), kept for
//! the retention period.

use atelier_protocol::ids::{AccountId, ApiKeyId};
use serde::Serialize;
use utoipa::ToSchema;

use super::{now_ms, Db};
use crate::error::Result;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct UsageEntry {
    pub method: String,
    /// The route pattern, e.g. `/api/v1/sessions/{id}` (ids are not logged).
    pub route: String,
    pub status: i64,
    pub duration_ms: i64,
    pub at: i64,
    /// The API key that made the request; absent for a login token or the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

impl Db {
    pub async fn record_usage(
        &self,
        account: AccountId,
        api_key: Option<ApiKeyId>,
        method: &str,
        route: &str,
        status: u16,
        duration_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_usage (account_id, method, route, status, duration_ms, at, api_key_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account.to_string())
        .bind(method)
        .bind(route)
        .bind(i64::from(status))
        .bind(duration_ms)
        .bind(now_ms())
        .bind(api_key.map(|k| k.to_string()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes the entries recorded before `cutoff_ms`; returns how many.
    pub async fn purge_usage_before(&self, cutoff_ms: i64) -> Result<u64> {
        let res = sqlx::query("DELETE FROM api_usage WHERE at < $1")
            .bind(cutoff_ms)
            .execute(self.pool())
            .await?;
        Ok(res.rows_affected())
    }

    /// The account's most recent requests, newest first.
    pub async fn usage_of(&self, account: AccountId, limit: i64) -> Result<Vec<UsageEntry>> {
        let rows: Vec<UsageEntry> = sqlx::query_as(
            "SELECT method, route, status, duration_ms, at, api_key_id FROM api_usage \
             WHERE account_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(account.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
