//! Share links: viewer access to one session by a random token (stored only as its hash).

use atelier_protocol::ids::{AccountId, SessionId, ShareLinkId};
use atelier_protocol::Role;
use serde::Serialize;
use utoipa::ToSchema;

use super::columns::{RoleText, UuidText};
use super::{now_ms, Db};
use crate::error::Result;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ShareLink {
    #[sqlx(try_from = "UuidText")]
    pub id: ShareLinkId,
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    #[sqlx(try_from = "RoleText")]
    pub role: Role,
    #[sqlx(try_from = "UuidText")]
    pub created_by: AccountId,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ShareLink {
    /// Usable now: not revoked and not expired.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now_ms)
    }
}

const COLUMNS: &str = "id, session_id, role, created_by, created_at, expires_at, revoked_at";

impl Db {
    pub async fn create_share_link(
        &self,
        session: SessionId,
        created_by: AccountId,
        token_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<ShareLink> {
        let link = ShareLink {
            id: ShareLinkId::new_random(),
            session_id: session,
            role: Role::Viewer,
            created_by,
            created_at: now_ms(),
            expires_at,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO share_links \
             (id, session_id, token_hash, role, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(link.id.to_string())
        .bind(session.to_string())
        .bind(token_hash)
        .bind(link.role.to_string())
        .bind(created_by.to_string())
        .bind(link.created_at)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(link)
    }

    pub async fn share_links(&self, session: SessionId) -> Result<Vec<ShareLink>> {
        let rows: Vec<ShareLink> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM share_links WHERE session_id = $1 ORDER BY created_at, id"
        )))
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    pub async fn share_link_by_token(&self, token_hash: &str) -> Result<Option<ShareLink>> {
        let row: Option<ShareLink> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM share_links WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Revokes the open links `creator` made for `session` (they lost the right to share it);
    /// returns their ids.
    pub async fn revoke_share_links_created_by(
        &self,
        session: SessionId,
        creator: AccountId,
    ) -> Result<Vec<ShareLinkId>> {
        let rows: Vec<UuidText> = sqlx::query_scalar(
            "UPDATE share_links SET revoked_at = $1 \
             WHERE session_id = $2 AND created_by = $3 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now_ms())
        .bind(session.to_string())
        .bind(creator.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(ShareLinkId::from).collect())
    }

    /// Every link `creator` made (in any session) that is not revoked.
    pub async fn share_links_created_by(&self, creator: AccountId) -> Result<Vec<ShareLinkId>> {
        let rows: Vec<UuidText> = sqlx::query_scalar(
            "SELECT id FROM share_links WHERE created_by = $1 AND revoked_at IS NULL",
        )
        .bind(creator.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(ShareLinkId::from).collect())
    }

    /// Revokes a link of the session; false when the session has no such link.
    pub async fn revoke_share_link(&self, session: SessionId, link: ShareLinkId) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE share_links SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND session_id = $3",
        )
        .bind(now_ms())
        .bind(link.to_string())
        .bind(session.to_string())
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }
}
