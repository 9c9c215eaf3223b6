//! Cached node results (see `jobs::cache`): one row per (session, cache key).

use std::collections::BTreeMap;

use atelier_protocol::ids::{MediaId, SessionId};

use super::columns::{JsonText, UuidText};
use super::{now_ms, Db};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CacheEntry {
    #[sqlx(rename = "cache_key")]
    pub key: String,
    pub node_type: String,
    /// Output port → the media holding its tensor.
    #[sqlx(try_from = "JsonText<BTreeMap<String, MediaId>>")]
    pub tensors: BTreeMap<String, MediaId>,
    /// The PNG shown for the node.
    #[sqlx(rename = "display_media", try_from = "UuidText")]
    pub display: MediaId,
    pub size_bytes: i64,
}

const COLUMNS: &str = "cache_key, node_type, tensors, display_media, size_bytes";

impl Db {
    /// The entry for `key` in `session`, marked used now.
    pub async fn cache_hit(&self, session: SessionId, key: &str) -> Result<Option<CacheEntry>> {
        let entry: Option<CacheEntry> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM node_cache WHERE session_id = $1 AND cache_key = $2"
        )))
        .bind(session.to_string())
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let Some(entry) = entry else { return Ok(None) };
        sqlx::query(
            "UPDATE node_cache SET last_used_at = $1 WHERE session_id = $2 AND cache_key = $3",
        )
        .bind(now_ms())
        .bind(session.to_string())
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(Some(entry))
    }

    /// Records an entry; false when `key` was already there (the caller drops its copy).
    pub async fn cache_put(&self, session: SessionId, entry: &CacheEntry) -> Result<bool> {
        let tensors = serde_json::to_string(&entry.tensors)
            .map_err(|e| Error::Internal(format!("node cache tensors: {e}")))?;
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO node_cache (session_id, cache_key, node_type, tensors, display_media, \
             size_bytes, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (session_id, cache_key) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(&entry.key)
        .bind(&entry.node_type)
        .bind(tensors)
        .bind(entry.display.to_string())
        .bind(entry.size_bytes)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The session's cache size in bytes.
    pub async fn cache_bytes(&self, session: SessionId) -> Result<i64> {
        let total = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS total FROM node_cache \
             WHERE session_id = $1",
        )
        .bind(session.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(total)
    }

    /// The session's least recently used entry.
    pub async fn cache_lru(&self, session: SessionId) -> Result<Option<CacheEntry>> {
        let row: Option<CacheEntry> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM node_cache WHERE session_id = $1 \
             ORDER BY last_used_at ASC, created_at ASC LIMIT 1"
        )))
        .bind(session.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Every entry of the session (to delete their media with the session).
    pub async fn cache_entries(&self, session: SessionId) -> Result<Vec<CacheEntry>> {
        let rows: Vec<CacheEntry> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM node_cache WHERE session_id = $1"
        )))
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    pub async fn cache_remove(&self, session: SessionId, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM node_cache WHERE session_id = $1 AND cache_key = $2")
            .bind(session.to_string())
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
