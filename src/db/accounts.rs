//! Accounts and their API tokens.

use atelier_protocol::ids::AccountId;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use super::{is_unique_violation, now_ms, uuid_col, Db};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    pub id: AccountId,
    pub email: String,
    pub name: String,
    pub created_at: i64,
}

pub struct Credentials {
    pub account: Account,
    pub password_hash: String,
}

/// What a bearer token resolves to.
pub struct TokenOwner {
    pub account: Account,
    pub csrf_token: String,
}

fn account_from_row(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: AccountId(uuid_col(row, "id")?),
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
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
        let row = sqlx::query(
            "SELECT id, email, name, created_at, password_hash FROM accounts WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Credentials {
                account: account_from_row(&row)?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    pub async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT id, email, name, created_at FROM accounts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT id, email, name, created_at FROM accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(account_from_row).transpose()
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
        let row = sqlx::query(
            "SELECT a.id, a.email, a.name, a.created_at, t.csrf_token \
             FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(TokenOwner {
                account: account_from_row(&row)?,
                csrf_token: row.try_get("csrf_token")?,
            })
        })
        .transpose()
    }

    pub async fn delete_token(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
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
