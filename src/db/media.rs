//! Media metadata; the bytes live in object storage under `object_key`.

use atelier_protocol::ids::{AccountId, MediaId, SessionId};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{now_ms, opt_uuid_col, uuid_col, Db};
use crate::error::Result;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Media {
    pub id: MediaId,
    pub owner_id: AccountId,
    pub session_id: Option<SessionId>,
    pub content_type: String,
    pub size_bytes: i64,
    pub filename: Option<String>,
    pub created_at: i64,
    #[serde(skip)]
    pub object_key: String,
}

pub struct NewMedia<'a> {
    pub id: MediaId,
    pub owner: AccountId,
    pub session: Option<SessionId>,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub object_key: &'a str,
    pub filename: Option<&'a str>,
}

const COLUMNS: &str =
    "id, owner_id, session_id, content_type, size_bytes, object_key, filename, created_at";

fn media_from_row(row: &AnyRow) -> Result<Media> {
    Ok(Media {
        id: MediaId(uuid_col(row, "id")?),
        owner_id: AccountId(uuid_col(row, "owner_id")?),
        session_id: opt_uuid_col(row, "session_id")?.map(SessionId),
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        object_key: row.try_get("object_key")?,
        filename: row.try_get("filename")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Inserts a media row on `conn` (inside the caller's transaction, if any).
pub(crate) async fn insert_media_in(conn: &mut AnyConnection, new: &NewMedia<'_>) -> Result<Media> {
    let media = Media {
        id: new.id,
        owner_id: new.owner,
        session_id: new.session,
        content_type: new.content_type.to_string(),
        size_bytes: new.size_bytes,
        filename: new.filename.map(str::to_string),
        created_at: now_ms(),
        object_key: new.object_key.to_string(),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO media ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )))
    .bind(media.id.to_string())
    .bind(media.owner_id.to_string())
    .bind(media.session_id.map(|s| s.to_string()))
    .bind(&media.content_type)
    .bind(media.size_bytes)
    .bind(&media.object_key)
    .bind(media.filename.clone())
    .bind(media.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(media)
}

impl Db {
    pub async fn insert_media(&self, new: NewMedia<'_>) -> Result<Media> {
        let mut conn = self.pool().acquire().await?;
        insert_media_in(&mut conn, &new).await
    }

    pub async fn media(&self, id: MediaId) -> Result<Option<Media>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM media WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(media_from_row).transpose()
    }

    /// The images a session uses (every member's uploads for it, and its runs' outputs), newest
    /// first, at most `limit`.
    pub async fn images_of_session(&self, session: SessionId, limit: i64) -> Result<Vec<Media>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM media WHERE session_id = $1 AND content_type LIKE 'image/%' \
             ORDER BY created_at DESC, id LIMIT $2"
        )))
        .bind(session.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(media_from_row).collect()
    }

    pub async fn media_of(&self, owner: AccountId) -> Result<Vec<Media>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM media WHERE owner_id = $1 ORDER BY created_at, id"
        )))
        .bind(owner.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(media_from_row).collect()
    }

    /// Bytes of media the account owns (what its quota counts).
    pub async fn media_bytes_of(&self, owner: AccountId) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS total \
             FROM media WHERE owner_id = $1",
        )
        .bind(owner.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("total")?)
    }

    pub async fn delete_media(&self, id: MediaId) -> Result<()> {
        sqlx::query("DELETE FROM media WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
