//! Studio sessions and their members.

use atelier_protocol::ids::{AccountId, SessionId};
use atelier_protocol::Role;
use serde::Serialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::columns::{RoleText, UuidText};
use super::with_retrying_tx;
use super::{now_ms, Db};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct StudioSession {
    #[sqlx(try_from = "UuidText")]
    pub id: SessionId,
    pub title: String,
    #[sqlx(try_from = "UuidText")]
    pub owner_id: AccountId,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    #[sqlx(rename = "id", try_from = "UuidText")]
    pub account_id: AccountId,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "RoleText")]
    pub role: Role,
    pub added_at: i64,
}

impl Db {
    /// Creates a session and makes its creator the owner member, in one transaction.
    pub async fn create_session(&self, owner: AccountId, title: &str) -> Result<StudioSession> {
        let now = now_ms();
        let session = StudioSession {
            id: SessionId::new_random(),
            title: title.to_string(),
            owner_id: owner,
            created_at: now,
            updated_at: now,
        };
        with_retrying_tx!(self, "create session", |tx| {
            sqlx::query(
                "INSERT INTO studio_sessions (id, owner_id, title, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(session.id.to_string())
            .bind(owner.to_string())
            .bind(title)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO session_members (session_id, account_id, role, added_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(session.id.to_string())
            .bind(owner.to_string())
            .bind(Role::Owner.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok::<(), Error>(())
        })?;
        Ok(session)
    }

    pub async fn session(&self, id: SessionId) -> Result<Option<StudioSession>> {
        let row: Option<StudioSession> = sqlx::query_as(
            "SELECT id, owner_id, title, created_at, updated_at FROM studio_sessions WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Sessions the account is a member of, newest first, with the account's role in each.
    pub async fn sessions_of(&self, account: AccountId) -> Result<Vec<(StudioSession, Role)>> {
        #[derive(sqlx::FromRow)]
        struct SessionWithRole {
            #[sqlx(flatten)]
            session: StudioSession,
            #[sqlx(try_from = "RoleText")]
            role: Role,
        }
        let rows: Vec<SessionWithRole> = sqlx::query_as(
            "SELECT s.id, s.owner_id, s.title, s.created_at, s.updated_at, m.role \
             FROM studio_sessions s JOIN session_members m ON m.session_id = s.id \
             WHERE m.account_id = $1 ORDER BY s.created_at DESC, s.id",
        )
        .bind(account.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.session, row.role))
            .collect())
    }

    pub async fn rename_session(&self, id: SessionId, title: &str) -> Result<()> {
        sqlx::query("UPDATE studio_sessions SET title = $1, updated_at = $2 WHERE id = $3")
            .bind(title)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, id: SessionId) -> Result<()> {
        sqlx::query("DELETE FROM studio_sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn member_role(
        &self,
        session: SessionId,
        account: AccountId,
    ) -> Result<Option<Role>> {
        let mut conn = self.pool().acquire().await?;
        member_role_in(&mut conn, session, account).await
    }

    /// Adds a member or changes an existing member's role.
    pub async fn upsert_member(
        &self,
        session: SessionId,
        account: AccountId,
        role: Role,
    ) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        upsert_member_in(&mut conn, session, account, role, now_ms()).await
    }

    /// Removes a member; true when there was one.
    pub async fn remove_member(&self, session: SessionId, account: AccountId) -> Result<bool> {
        let res =
            sqlx::query("DELETE FROM session_members WHERE session_id = $1 AND account_id = $2")
                .bind(session.to_string())
                .bind(account.to_string())
                .execute(self.pool())
                .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn members(&self, session: SessionId) -> Result<Vec<Member>> {
        let rows: Vec<Member> = sqlx::query_as(
            "SELECT a.id, a.email, a.name, m.role, m.added_at \
             FROM session_members m JOIN accounts a ON a.id = m.account_id \
             WHERE m.session_id = $1 ORDER BY m.added_at, a.email",
        )
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

/// The account's role in the session, if it is a member — on `conn` (e.g. inside a caller's
/// transaction).
pub(super) async fn member_role_in(
    conn: &mut AnyConnection,
    session: SessionId,
    account: AccountId,
) -> Result<Option<Role>> {
    let role: Option<RoleText> = sqlx::query_scalar(
        "SELECT role FROM session_members WHERE session_id = $1 AND account_id = $2",
    )
    .bind(session.to_string())
    .bind(account.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(role.map(Role::from))
}

/// Adds a member or changes an existing member's role — on `conn` (e.g. inside a caller's
/// transaction).
pub(super) async fn upsert_member_in(
    conn: &mut AnyConnection,
    session: SessionId,
    account: AccountId,
    role: Role,
    added_at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_members (session_id, account_id, role, added_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (session_id, account_id) DO UPDATE SET role = excluded.role",
    )
    .bind(session.to_string())
    .bind(account.to_string())
    .bind(role.to_string())
    .bind(added_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
