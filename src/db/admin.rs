//! What operators read and change: accounts with their credits, the admin audit log, and
//! worker tokens.

use atelier_protocol::ids::{AccountId, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;

use super::accounts::Account;
use super::columns::{OptJsonText, OptUuidText, UuidText};
use super::{now_ms, Db};
use crate::error::{Error, Result};

/// An account as the admin page lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountSummary {
    #[serde(flatten)]
    pub account: Account,
    /// Millicredits owned, held by running leases, and available.
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    /// Studio sessions the account owns.
    pub sessions: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_reason: Option<String>,
}

/// One admin action.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    /// The admin's account; absent for the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(try_from = "OptUuidText")]
    pub admin_id: Option<AccountId>,
    /// Who acted: the admin's email, or `cli:<os user>`.
    pub actor: String,
    /// What was done, e.g. `grant_credits`, `suspend_account`, `list_accounts`.
    pub action: String,
    /// What it was done to (an account, worker, lease or job id; a search).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The details (amounts, outcomes), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    #[sqlx(try_from = "OptJsonText")]
    pub detail: Option<serde_json::Value>,
    pub at: i64,
}

/// Who performs an admin action.
#[derive(Debug, Clone)]
pub struct AuditActor {
    pub admin_id: Option<AccountId>,
    pub name: String,
}

impl AuditActor {
    pub fn admin(account: &Account) -> Self {
        AuditActor {
            admin_id: Some(account.id),
            name: account.email.clone(),
        }
    }

    /// The command line, named by the operating-system user running it (`$USER`, `$LOGNAME`,
    /// else what `id -un` says).
    pub fn cli() -> Self {
        let from_id = || {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(from_id)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "unknown".into());
        AuditActor {
            admin_id: None,
            name: format!("cli:{user}"),
        }
    }
}

/// A worker token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WorkerToken {
    #[sqlx(try_from = "UuidText")]
    pub id: WorkerId,
    pub name: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A row of [`SUMMARY_SELECT`].
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    account: Account,
    balance: i64,
    held: i64,
    sessions: i64,
    suspended_reason: Option<String>,
}

impl From<SummaryRow> for AccountSummary {
    fn from(row: SummaryRow) -> Self {
        AccountSummary {
            account: row.account,
            balance: row.balance,
            held: row.held,
            available: row.balance.saturating_sub(row.held),
            sessions: row.sessions,
            suspended_reason: row.suspended_reason,
        }
    }
}

const SUMMARY_SELECT: &str = "SELECT a.id, a.email, a.name, a.role, a.suspended_at, \
     a.suspended_reason, a.created_at, \
     CAST(COALESCE(b.balance, 0) AS BIGINT) AS balance, \
     CAST(COALESCE(b.held, 0) AS BIGINT) AS held, \
     CAST((SELECT COUNT(*) FROM studio_sessions s WHERE s.owner_id = a.id) AS BIGINT) AS sessions \
     FROM accounts a LEFT JOIN account_balances b ON b.account_id = a.id";

/// Escapes `%`, `_` and `\` for a LIKE pattern (with `ESCAPE '\'`).
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Db {
    /// Accounts whose email contains `search` (all when empty), newest first.
    pub async fn search_accounts(&self, search: &str, limit: u32) -> Result<Vec<AccountSummary>> {
        let sql = format!(
            "{SUMMARY_SELECT} WHERE a.email LIKE $1 ESCAPE '\\' ORDER BY a.created_at DESC, a.id \
             LIMIT $2"
        );
        let pattern = format!("%{}%", like_escape(&search.trim().to_lowercase()));
        let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(pattern)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(AccountSummary::from).collect())
    }

    pub async fn account_summary(&self, id: AccountId) -> Result<Option<AccountSummary>> {
        let sql = format!("{SUMMARY_SELECT} WHERE a.id = $1");
        let row: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(AccountSummary::from))
    }

    /// Appends to the admin audit log.
    pub async fn record_audit(
        &self,
        actor: &AuditActor,
        action: &str,
        target: Option<&str>,
        reason: Option<&str>,
        detail: Option<&serde_json::Value>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_audit (admin_id, actor, action, target, reason, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(actor.admin_id.map(|a| a.to_string()))
        .bind(&actor.name)
        .bind(action)
        .bind(target)
        .bind(reason)
        .bind(detail.map(serde_json::Value::to_string))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The audit log, newest first, older than `before` (an entry id).
    pub async fn audit_entries(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditEntry> = sqlx::query_as(
            "SELECT id, admin_id, actor, action, target, reason, detail, at FROM admin_audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    pub async fn worker_tokens(&self) -> Result<Vec<WorkerToken>> {
        let rows: Vec<WorkerToken> = sqlx::query_as(
            "SELECT id, name, created_at, revoked_at FROM worker_tokens ORDER BY created_at DESC",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Revokes the worker token with this id, or every unrevoked token with this name.
    /// Returns the ids revoked now; `NotFound` when nothing matches (409 when it already was).
    pub async fn revoke_worker_token(&self, id_or_name: &str) -> Result<Vec<WorkerId>> {
        let by_id = uuid::Uuid::parse_str(id_or_name).ok();
        let ids: Vec<UuidText> = match by_id {
            Some(id) => {
                sqlx::query_scalar("SELECT id FROM worker_tokens WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT id FROM worker_tokens WHERE name = $1")
                    .bind(id_or_name)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        if ids.is_empty() {
            return Err(Error::NotFound("worker token"));
        }
        let mut revoked = Vec::new();
        for id in ids {
            let id = WorkerId::from(id);
            let res = sqlx::query(
                "UPDATE worker_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now_ms())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
            if res.rows_affected() > 0 {
                revoked.push(id);
            }
        }
        if revoked.is_empty() {
            return Err(Error::Conflict(
                "the worker token is already revoked".into(),
            ));
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
    }
}
