//! Versions of session documents: each a row pointing at a stored document state, states kept
//! once per session (by their SHA-256) however many versions show them.

use atelier_protocol::ids::{AccountId, JobId, SessionId, VersionId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::columns::{JsonText, OptUuidText, UuidText};
use super::{now_ms, with_retrying_tx, Db};
use crate::error::{Error, Result};

/// Why a version was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// A burst of editing settled (or went on for the longest a burst may).
    Auto,
    /// An editor named the state.
    Named,
    /// The graph a job ran.
    Job,
    /// The document right after a restore.
    Restore,
}

impl VersionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::Auto => "auto",
            VersionKind::Named => "named",
            VersionKind::Job => "job",
            VersionKind::Restore => "restore",
        }
    }
}

impl TryFrom<String> for VersionKind {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        Ok(match stored.as_str() {
            "auto" => VersionKind::Auto,
            "named" => VersionKind::Named,
            "job" => VersionKind::Job,
            "restore" => VersionKind::Restore,
            other => return Err(format!("unknown version kind {other:?}")),
        })
    }
}

/// Who made a version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionAuthor {
    pub account_id: AccountId,
    pub name: String,
}

/// A version as listed (without its state).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionRecord {
    pub id: VersionId,
    pub session_id: SessionId,
    pub kind: VersionKind,
    pub name: Option<String>,
    /// Who named it, ran the job or restored; for an automatic version, the latest editor.
    pub created_by: Option<VersionAuthor>,
    /// For an automatic version: every account whose edits it holds.
    #[schema(value_type = Vec<String>)]
    pub authors: Vec<AccountId>,
    /// For a restore: the version restored.
    pub restored_from: Option<VersionId>,
    /// The jobs that ran this version.
    #[schema(value_type = Vec<String>)]
    pub jobs: Vec<JobId>,
    /// Size of its document state (shared with other versions showing the same state).
    pub size_bytes: i64,
    pub created_at: i64,
}

/// A version to keep.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub session: SessionId,
    pub kind: VersionKind,
    pub name: Option<String>,
    pub created_by: Option<AccountId>,
    pub authors: Vec<AccountId>,
    pub restored_from: Option<VersionId>,
    /// The full document state (v1).
    pub state: Vec<u8>,
}

/// What retention looks at: one row per version, oldest first.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionEntry {
    #[sqlx(try_from = "UuidText")]
    pub id: VersionId,
    #[sqlx(try_from = "String")]
    pub kind: VersionKind,
    pub state_hash: String,
    pub created_at: i64,
}

/// The hash a state is stored under.
pub fn state_hash(state: &[u8]) -> String {
    hex::encode(Sha256::digest(state))
}

const COLUMNS: &str = "v.id, v.session_id, v.kind, v.name, v.created_by, a.name AS author_name, \
     v.authors, v.restored_from, v.created_at, s.size_bytes";

const FROM: &str = "session_versions v \
     JOIN version_states s ON s.session_id = v.session_id AND s.state_hash = v.state_hash \
     LEFT JOIN accounts a ON a.id = v.created_by";

/// A version's row as [`COLUMNS`] reads it (the author joined in).
#[derive(sqlx::FromRow)]
struct VersionRow {
    #[sqlx(try_from = "UuidText")]
    id: VersionId,
    #[sqlx(try_from = "UuidText")]
    session_id: SessionId,
    #[sqlx(try_from = "String")]
    kind: VersionKind,
    name: Option<String>,
    #[sqlx(try_from = "OptUuidText")]
    created_by: Option<AccountId>,
    author_name: Option<String>,
    #[sqlx(try_from = "JsonText<Vec<AccountId>>")]
    authors: Vec<AccountId>,
    #[sqlx(try_from = "OptUuidText")]
    restored_from: Option<VersionId>,
    size_bytes: i64,
    created_at: i64,
}

/// A version's row with its document state.
#[derive(sqlx::FromRow)]
struct VersionWithState {
    #[sqlx(flatten)]
    version: VersionRow,
    state: Vec<u8>,
}

impl From<VersionRow> for VersionRecord {
    fn from(row: VersionRow) -> VersionRecord {
        VersionRecord {
            id: row.id,
            session_id: row.session_id,
            kind: row.kind,
            name: row.name,
            created_by: row.created_by.map(|account_id| VersionAuthor {
                account_id,
                name: row.author_name.unwrap_or_default(),
            }),
            authors: row.authors,
            restored_from: row.restored_from,
            jobs: Vec::new(),
            size_bytes: row.size_bytes,
            created_at: row.created_at,
        }
    }
}

impl Db {
    /// Keeps a version; its state is stored unless the session already keeps the same one.
    pub async fn insert_version(&self, new: &NewVersion) -> Result<VersionId> {
        let id = VersionId::new_random();
        let sid = new.session.to_string();
        let hash = state_hash(&new.state);
        let size = i64::try_from(new.state.len()).unwrap_or(i64::MAX);
        let authors = serde_json::to_string(&new.authors)
            .map_err(|e| Error::Internal(format!("version authors: {e}")))?;
        // The transaction may run more than once: it borrows what it binds.
        let (sid, hash, authors) = (&sid, &hash, &authors);
        with_retrying_tx!(self, "insert version", |tx| {
            sqlx::query(
                "INSERT INTO version_states (session_id, state_hash, state, size_bytes) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, state_hash) DO NOTHING",
            )
            .bind(sid)
            .bind(hash)
            .bind(new.state.clone())
            .bind(size)
            .execute(&mut *tx)
            .await?;
            // Versions of a session are ordered by time: two made in one millisecond (a
            // restore's "before" and "after") still get distinct, ordered times.
            let newest: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(created_at) FROM session_versions WHERE session_id = $1",
            )
            .bind(sid)
            .fetch_one(&mut *tx)
            .await?;
            let created_at = now_ms().max(newest.map_or(0, |t| t.saturating_add(1)));
            sqlx::query(
                "INSERT INTO session_versions \
                 (id, session_id, kind, name, created_by, authors, restored_from, state_hash, \
                  created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id.to_string())
            .bind(sid)
            .bind(new.kind.as_str())
            .bind(new.name.clone())
            .bind(new.created_by.map(|a| a.to_string()))
            .bind(authors.clone())
            .bind(new.restored_from.map(|v| v.to_string()))
            .bind(hash)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
            Ok::<(), Error>(())
        })?;
        Ok(id)
    }

    /// The session's newest version and its state hash.
    pub async fn latest_version(&self, session: SessionId) -> Result<Option<(VersionId, String)>> {
        let row: Option<(UuidText, String)> = sqlx::query_as(
            "SELECT id, state_hash FROM session_versions WHERE session_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(session.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(id, hash)| (VersionId::from(id), hash)))
    }

    /// A page of the session's versions, newest first, with the jobs that ran each.
    pub async fn versions_page(
        &self,
        session: SessionId,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<VersionRecord>> {
        let rows: Vec<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE v.session_id = $1 \
             ORDER BY v.created_at DESC, v.id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(session.to_string())
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let mut versions: Vec<VersionRecord> = rows.into_iter().map(VersionRecord::from).collect();
        if versions.iter().any(|v| v.kind == VersionKind::Job) {
            let jobs: Vec<(UuidText, UuidText)> = sqlx::query_as(
                "SELECT id, version_id FROM jobs WHERE session_id = $1 AND version_id IS NOT NULL",
            )
            .bind(session.to_string())
            .fetch_all(self.pool())
            .await?;
            for (job, version) in jobs {
                let (job, version) = (JobId::from(job), VersionId::from(version));
                if let Some(v) = versions.iter_mut().find(|v| v.id == version) {
                    v.jobs.push(job);
                }
            }
        }
        Ok(versions)
    }

    /// One version of the session and its document state.
    pub async fn version(
        &self,
        session: SessionId,
        id: VersionId,
    ) -> Result<Option<(VersionRecord, Vec<u8>)>> {
        let row: Option<VersionWithState> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, s.state FROM {FROM} WHERE v.session_id = $1 AND v.id = $2"
        )))
        .bind(session.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut record = VersionRecord::from(row.version);
        let jobs: Vec<UuidText> = sqlx::query_scalar("SELECT id FROM jobs WHERE version_id = $1")
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?;
        record.jobs = jobs.into_iter().map(JobId::from).collect();
        Ok(Some((record, row.state)))
    }

    /// Every version of the session, oldest first: what retention decides on.
    pub async fn version_entries(&self, session: SessionId) -> Result<Vec<VersionEntry>> {
        let rows: Vec<VersionEntry> = sqlx::query_as(
            "SELECT id, kind, state_hash, created_at FROM session_versions \
             WHERE session_id = $1 ORDER BY created_at, id",
        )
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// `state_hash → size_bytes` of every state the session keeps.
    pub async fn version_state_sizes(&self, session: SessionId) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state_hash, size_bytes FROM version_states WHERE session_id = $1",
        )
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Deletes versions (jobs that ran them keep running and keep their record, without a
    /// version) and then every state no version shows any more.
    pub async fn delete_versions(&self, session: SessionId, ids: &[VersionId]) -> Result<()> {
        let sid = &session.to_string();
        with_retrying_tx!(self, "delete versions", |tx| {
            for id in ids {
                sqlx::query("UPDATE jobs SET version_id = NULL WHERE version_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM session_versions WHERE session_id = $1 AND id = $2")
                    .bind(sid)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "DELETE FROM version_states WHERE session_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM session_versions v WHERE v.session_id = version_states.session_id \
              AND v.state_hash = version_states.state_hash)",
            )
            .bind(sid)
            .execute(&mut *tx)
            .await?;
            Ok::<(), Error>(())
        })
    }

    /// Records the version a job ran.
    pub async fn set_job_version(&self, job: JobId, version: VersionId) -> Result<()> {
        sqlx::query("UPDATE jobs SET version_id = $1 WHERE id = $2")
            .bind(version.to_string())
            .bind(job.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
