//! Invitations to a session: links (a random token, stored only as its hash) that signed-in
//! people accept to become members, and pending invitations by email that become memberships
//! when an account with that email signs up.

use atelier_protocol::ids::{AccountId, InvitationId, SessionId};
use atelier_protocol::Role;
use serde::Serialize;
use utoipa::ToSchema;

use super::columns::{OptUuidText, RoleText, UuidText};
use super::sessions::{member_role_in, upsert_member_in};
use super::{now_ms, with_retrying_tx, Db};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Invitation {
    pub id: InvitationId,
    pub session_id: SessionId,
    /// `editor` or `viewer`.
    pub role: Role,
    /// `link` (accepted with its token) or `email` (pending until that address signs up).
    pub kind: InvitationKind,
    /// The invited address (email invitations only).
    pub email: Option<String>,
    pub created_by: Option<AccountId>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// How many times a link may be accepted; none: any number.
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationKind {
    Link,
    Email,
}

/// Why an invitation can no longer be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    Revoked,
    Expired,
    UsedUp,
}

impl Spent {
    pub fn explain(self) -> &'static str {
        match self {
            Spent::Revoked => "this invitation was revoked; ask for a new one",
            Spent::Expired => "this invitation has expired; ask for a new one",
            Spent::UsedUp => "this invitation has been used as many times as it allows",
        }
    }
}

impl Invitation {
    /// Why it cannot be accepted now, if it cannot.
    pub fn spent(&self, now_ms: i64) -> Option<Spent> {
        if self.revoked_at.is_some() {
            Some(Spent::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now_ms) {
            Some(Spent::Expired)
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some(Spent::UsedUp)
        } else {
            None
        }
    }
}

/// An invitation's row as [`COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
struct InvitationRow {
    #[sqlx(try_from = "UuidText")]
    id: InvitationId,
    #[sqlx(try_from = "UuidText")]
    session_id: SessionId,
    #[sqlx(try_from = "RoleText")]
    role: Role,
    email: Option<String>,
    #[sqlx(try_from = "OptUuidText")]
    created_by: Option<AccountId>,
    created_at: i64,
    expires_at: Option<i64>,
    max_uses: Option<i64>,
    uses: i64,
    revoked_at: Option<i64>,
}

impl From<InvitationRow> for Invitation {
    fn from(row: InvitationRow) -> Invitation {
        Invitation {
            id: row.id,
            session_id: row.session_id,
            role: row.role,
            kind: if row.email.is_some() {
                InvitationKind::Email
            } else {
                InvitationKind::Link
            },
            email: row.email,
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            max_uses: row.max_uses,
            uses: row.uses,
            revoked_at: row.revoked_at,
        }
    }
}

/// A session and a role, as `RETURNING session_id, role` gives them.
#[derive(sqlx::FromRow)]
struct SessionRole {
    #[sqlx(try_from = "UuidText")]
    session_id: SessionId,
    #[sqlx(try_from = "RoleText")]
    role: Role,
}

const COLUMNS: &str = "id, session_id, role, email, created_by, created_at, expires_at, \
                       max_uses, uses, revoked_at";

/// What a new invitation is: a link (by the hash of its token) or an email address.
pub enum NewInvitation<'a> {
    Link {
        token_hash: &'a str,
        max_uses: Option<i64>,
    },
    Email(&'a str),
}

impl Db {
    pub async fn create_invitation(
        &self,
        session: SessionId,
        created_by: AccountId,
        role: Role,
        what: NewInvitation<'_>,
        expires_at: Option<i64>,
    ) -> Result<Invitation> {
        let (token_hash, email, max_uses) = match what {
            NewInvitation::Link {
                token_hash,
                max_uses,
            } => (Some(token_hash), None, max_uses),
            NewInvitation::Email(email) => (None, Some(email), Some(1)),
        };
        let invitation = Invitation {
            id: InvitationId::new_random(),
            session_id: session,
            role,
            kind: if email.is_some() {
                InvitationKind::Email
            } else {
                InvitationKind::Link
            },
            email: email.map(str::to_owned),
            created_by: Some(created_by),
            created_at: now_ms(),
            expires_at,
            max_uses,
            uses: 0,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO session_invitations \
             (id, session_id, role, token_hash, email, created_by, created_at, expires_at, max_uses) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(invitation.id.to_string())
        .bind(session.to_string())
        .bind(role.to_string())
        .bind(token_hash)
        .bind(email)
        .bind(created_by.to_string())
        .bind(invitation.created_at)
        .bind(expires_at)
        .bind(max_uses)
        .execute(self.pool())
        .await?;
        Ok(invitation)
    }

    /// The session's invitations, newest first, including revoked, expired and used ones.
    pub async fn invitations(&self, session: SessionId) -> Result<Vec<Invitation>> {
        let rows: Vec<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM session_invitations WHERE session_id = $1 \
             ORDER BY created_at DESC, id"
        )))
        .bind(session.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(Invitation::from).collect())
    }

    pub async fn invitation_by_token(&self, token_hash: &str) -> Result<Option<Invitation>> {
        let row: Option<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM session_invitations WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(Invitation::from))
    }

    /// One invitation of the session.
    pub async fn invitation(
        &self,
        session: SessionId,
        invitation: InvitationId,
    ) -> Result<Option<Invitation>> {
        let row: Option<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM session_invitations WHERE id = $1 AND session_id = $2"
        )))
        .bind(invitation.to_string())
        .bind(session.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(Invitation::from))
    }

    /// Revokes an invitation of the session; false when the session has no such invitation.
    pub async fn revoke_invitation(
        &self,
        session: SessionId,
        invitation: InvitationId,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE session_invitations SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND session_id = $3",
        )
        .bind(now_ms())
        .bind(invitation.to_string())
        .bind(session.to_string())
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Records (or re-affirms with a new role) a pending email invitation: one open invitation
    /// per session and address. `token_hash`: the hash of the secret the invitation email's
    /// link carries (accepted by the invited address only). Returns the new invitation's id.
    pub async fn invite_email(
        &self,
        session: SessionId,
        created_by: AccountId,
        email: &str,
        role: Role,
        token_hash: &str,
    ) -> Result<InvitationId> {
        let id = InvitationId::new_random();
        with_retrying_tx!(self, "invite by email", |tx| {
            sqlx::query(
                "UPDATE session_invitations SET revoked_at = $1 \
             WHERE session_id = $2 AND email = $3 AND revoked_at IS NULL AND uses = 0",
            )
            .bind(now_ms())
            .bind(session.to_string())
            .bind(email)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO session_invitations \
             (id, session_id, role, token_hash, email, created_by, created_at, max_uses) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
            )
            .bind(id.to_string())
            .bind(session.to_string())
            .bind(role.to_string())
            .bind(token_hash)
            .bind(email)
            .bind(created_by.to_string())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            Ok::<(), Error>(())
        })?;
        Ok(id)
    }

    /// Accepts a link invitation for `account`: counts one use (atomically, so a single-use link
    /// admits one person however many accept at once) and makes the account a member with the
    /// invitation's role — or keeps its role when that is already at least as strong (an owner
    /// following an editor link stays an owner, and no use is counted). Returns the role the
    /// account now has, or why the invitation cannot be accepted.
    pub async fn accept_invitation(
        &self,
        invitation: &Invitation,
        account: AccountId,
    ) -> Result<std::result::Result<Role, Spent>> {
        with_retrying_tx!(self, "accept invitation", |tx| {
            let current = member_role_in(tx, invitation.session_id, account).await?;
            if let Some(role) = current {
                if role_rank(role) >= role_rank(invitation.role) {
                    return Ok::<_, Error>(Ok(role));
                }
            }
            let now = now_ms();
            let counted = sqlx::query(
                "UPDATE session_invitations SET uses = uses + 1 \
             WHERE id = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2) \
             AND (max_uses IS NULL OR uses < max_uses)",
            )
            .bind(invitation.id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if counted.rows_affected() == 0 {
                // Spent between the caller's read and now: say why from a fresh read.
                let fresh: Option<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM session_invitations WHERE id = $1"
                )))
                .bind(invitation.id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let why = fresh
                    .map(Invitation::from)
                    .and_then(|inv| inv.spent(now))
                    .unwrap_or(Spent::Revoked);
                return Ok(Err(why));
            }
            upsert_member_in(tx, invitation.session_id, account, invitation.role, now).await?;
            Ok(Ok(invitation.role))
        })
    }

    /// Turns the open email invitations for `email` into memberships of `account` (at signup);
    /// returns the sessions joined.
    pub async fn accept_email_invitations(
        &self,
        email: &str,
        account: AccountId,
    ) -> Result<Vec<(SessionId, Role)>> {
        let now = now_ms();
        with_retrying_tx!(self, "accept email invitations at signup", |tx| {
            let rows: Vec<SessionRole> = sqlx::query_as(
                "UPDATE session_invitations SET uses = uses + 1 \
             WHERE email = $1 AND revoked_at IS NULL AND uses = 0 \
             AND (expires_at IS NULL OR expires_at > $2) \
             RETURNING session_id, role",
            )
            .bind(email)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let mut joined = Vec::with_capacity(rows.len());
            for SessionRole { session_id, role } in rows {
                upsert_member_in(tx, session_id, account, role, now).await?;
                joined.push((session_id, role));
            }
            Ok::<_, Error>(joined)
        })
    }
}

/// An open email invitation as the invited person sees it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvitationToMe {
    #[sqlx(try_from = "UuidText")]
    pub id: InvitationId,
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    pub session_title: String,
    /// The role accepting gives (a stronger role the account already has is kept).
    #[sqlx(try_from = "RoleText")]
    pub role: Role,
    /// The display name of the owner who invited (none when that account is gone).
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// The condition for open email invitations (not revoked, declined, accepted or expired) to
/// `email_param` at time `now_param`; `t` qualifies the columns. Placeholders are numbered in
/// the order they appear, as SQLite binds them.
fn open_email(t: &str, email_param: &str, now_param: &str) -> String {
    format!(
        "{t}email = {email_param} AND {t}revoked_at IS NULL AND {t}uses = 0 \
         AND ({t}expires_at IS NULL OR {t}expires_at > {now_param})"
    )
}

impl Db {
    /// The open email invitations addressed to `email`, newest first.
    pub async fn invitations_to(&self, email: &str) -> Result<Vec<InvitationToMe>> {
        let rows: Vec<InvitationToMe> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT i.id, i.session_id, i.role, i.created_at, i.expires_at, \
             s.title AS session_title, a.name AS invited_by \
             FROM session_invitations i \
             JOIN studio_sessions s ON s.id = i.session_id \
             LEFT JOIN accounts a ON a.id = i.created_by \
             WHERE {} ORDER BY i.created_at DESC, i.id",
            open_email("i.", "$1", "$2")
        )))
        .bind(email)
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Accepts the open email invitation `id` addressed to `email` for `account`: it is used up
    /// and the account becomes a member with its role, or keeps a stronger role it has. None
    /// when there is no such open invitation for this address.
    pub async fn accept_email_invitation(
        &self,
        id: InvitationId,
        email: &str,
        account: AccountId,
    ) -> Result<Option<(SessionId, Role)>> {
        let now = now_ms();
        with_retrying_tx!(self, "accept email invitation", |tx| {
            let row: Option<SessionRole> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE session_invitations SET uses = uses + 1 \
             WHERE id = $1 AND {} RETURNING session_id, role",
                open_email("", "$2", "$3")
            )))
            .bind(id.to_string())
            .bind(email)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(SessionRole {
                session_id: session,
                role: invited,
            }) = row
            else {
                return Ok::<_, Error>(None);
            };
            let role = match member_role_in(tx, session, account).await? {
                Some(current) if role_rank(current) >= role_rank(invited) => current,
                _ => {
                    upsert_member_in(tx, session, account, invited, now).await?;
                    invited
                }
            };
            Ok(Some((session, role)))
        })
    }

    /// Declines the open email invitation `id` addressed to `email` (the owner sees it
    /// revoked); returns its session, or none when there is no such open invitation for this
    /// address.
    pub async fn decline_email_invitation(
        &self,
        id: InvitationId,
        email: &str,
    ) -> Result<Option<SessionId>> {
        let now = now_ms();
        let row: Option<(UuidText,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE session_invitations SET revoked_at = $1 \
             WHERE id = $2 AND {} RETURNING session_id",
            open_email("", "$3", "$1")
        )))
        .bind(now)
        .bind(id.to_string())
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(session,)| SessionId::from(session)))
    }
}

/// Whether a member with role `current` already has everything an invitation with role
/// `invited` gives (so accepting it changes nothing).
pub fn role_covers(current: Role, invited: Role) -> bool {
    role_rank(current) >= role_rank(invited)
}

/// How much a role may do, for "keep the stronger role".
fn role_rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Editor => 1,
        Role::Owner => 2,
    }
}
