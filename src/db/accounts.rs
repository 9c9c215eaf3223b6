//! Accounts (their role and suspension) and their API tokens.

use std::fmt;

use atelier_protocol::ids::AccountId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::columns::UuidText;
use super::{is_unique_violation, now_ms, Db};
use crate::error::{Error, Result};

/// What an account may do beyond its own sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    #[default]
    User,
    /// Operates the server: the admin API and the admin section of the studio.
    Admin,
}

impl AccountRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::User => "user",
            AccountRole::Admin => "admin",
        }
    }
}

impl TryFrom<String> for AccountRole {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        AccountRole::parse(&stored)
    }
}

impl std::str::FromStr for AccountRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AccountRole::parse(s)
    }
}

impl fmt::Display for AccountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AccountRole {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(AccountRole::User),
            "admin" => Ok(AccountRole::Admin),
            other => Err(format!("unknown role {other:?}; roles are user and admin")),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Account {
    #[sqlx(try_from = "UuidText")]
    pub id: AccountId,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: AccountRole,
    /// Set while an admin has suspended the account (it cannot log in or use its tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<i64>,
    pub created_at: i64,
}

impl Account {
    pub fn is_admin(&self) -> bool {
        self.role == AccountRole::Admin
    }
}

/// The columns an [`Account`] row is read from.
pub(crate) const ACCOUNT_COLUMNS: &str = "id, email, name, role, suspended_at, created_at";

#[derive(sqlx::FromRow)]
pub struct Credentials {
    #[sqlx(flatten)]
    pub account: Account,
    pub password_hash: String,
}

/// What a bearer token resolves to.
#[derive(sqlx::FromRow)]
pub struct TokenOwner {
    #[sqlx(flatten)]
    pub account: Account,
    pub csrf_token: String,
}

impl Db {
    pub async fn create_account(
        &self,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<Account> {
        let account = Account {
            id: AccountId::new_random(),
            email: email.to_string(),
            name: name.to_string(),
            role: AccountRole::User,
            suspended_at: None,
            created_at: now_ms(),
        };
        let res = sqlx::query(
            "INSERT INTO accounts (id, email, name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(account.id.to_string())
        .bind(&account.email)
        .bind(&account.name)
        .bind(password_hash)
        .bind(account.created_at)
        .execute(self.pool())
        .await;
        match res {
            Ok(_) => Ok(account),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict(
                "an account with this email already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn credentials_by_email(&self, email: &str) -> Result<Option<Credentials>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE email = $1");
        let row: Option<Credentials> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    pub async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row: Option<Account> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1");
        let row: Option<Account> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    pub async fn insert_token(
        &self,
        account: AccountId,
        token_hash: &str,
        csrf_token: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, account_id, csrf_token, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(account.to_string())
        .bind(csrf_token)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        let row: Option<TokenOwner> = sqlx::query_as(
            "SELECT a.id, a.email, a.name, a.role, a.suspended_at, a.created_at, t.csrf_token \
             FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    pub async fn delete_token(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets an account's role. `NotFound` when there is no such account.
    pub async fn set_role(&self, id: AccountId, role: AccountRole) -> Result<()> {
        let res = sqlx::query("UPDATE accounts SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound("account"));
        }
        Ok(())
    }

    /// Suspends (`Some(reason)`) or reinstates (`None`) an account.
    pub async fn set_suspended(&self, id: AccountId, reason: Option<&str>) -> Result<()> {
        let res = sqlx::query(
            "UPDATE accounts SET suspended_at = $1, suspended_reason = $2 WHERE id = $3",
        )
        .bind(reason.map(|_| now_ms()))
        .bind(reason)
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound("account"));
        }
        Ok(())
    }

    /// Sets an account's password hash (the change-password form, `create-admin`).
    pub async fn set_password_hash(&self, id: AccountId, password_hash: &str) -> Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The password hash of an account (to check the current password before a change).
    pub async fn password_hash(&self, id: AccountId) -> Result<Option<String>> {
        let hash = sqlx::query_scalar("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(hash)
    }

    /// Ends every token of the account except `keep` (a password change logs out elsewhere).
    /// Ends every login of the account but `keep`; returns the hashes of the ended tokens.
    pub async fn delete_tokens_except(&self, id: AccountId, keep: &str) -> Result<Vec<String>> {
        let hashes = sqlx::query_scalar(
            "DELETE FROM api_tokens WHERE account_id = $1 AND token_hash <> $2 \
             RETURNING token_hash",
        )
        .bind(id.to_string())
        .bind(keep)
        .fetch_all(self.pool())
        .await?;
        Ok(hashes)
    }

    /// Deletes the account row; foreign keys cascade to its tokens, sessions (and their members,
    /// share links and documents), memberships, media rows and usage log.
    pub async fn delete_account(&self, id: AccountId) -> Result<()> {
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
