//! API keys: an account's named, scoped credentials for scripts and integrations.
//!
//! Only the SHA-256 of a key's secret is stored (as for login tokens); the secret is shown once,
//! when the key is made.

use atelier_protocol::ids::{AccountId, ApiKeyId};
use serde::Serialize;
use utoipa::ToSchema;

use super::accounts::{Account, AccountRole};
use super::columns::UuidText;
use super::{now_ms, Db};
use crate::auth::scopes::{self, Scope};
use crate::error::{Error, Result};

/// An API key as its owner sees it (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The secret's first characters (`atk_1a2b3c4d`), to tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    /// When the key last authenticated a request (to the minute).
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Requests made with the key in the last 24 hours (from the usage log).
    pub requests_24h: i64,
}

impl ApiKey {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// What a presented key resolves to.
pub struct KeyOwner {
    pub key: ApiKey,
    pub account: Account,
}

/// How often `last_used_at` is written: a busy script must not turn every read into a write.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

const KEY_COLUMNS: &str = "k.id, k.name, k.scopes, k.prefix, k.created_at, k.last_used_at, \
                           k.expires_at, k.revoked_at";

/// An [`ApiKey`] as stored ([`KEY_COLUMNS`]); its request count comes from the usage log.
#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    #[sqlx(try_from = "UuidText")]
    id: ApiKeyId,
    name: String,
    scopes: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl ApiKeyRow {
    fn into_key(self, requests_24h: i64) -> Result<ApiKey> {
        Ok(ApiKey {
            id: self.id,
            name: self.name,
            scopes: scopes::split(&self.scopes).map_err(Error::Internal)?,
            prefix: self.prefix,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            requests_24h,
        })
    }
}

pub struct NewApiKey<'a> {
    pub account: AccountId,
    pub name: &'a str,
    pub scopes: &'a [Scope],
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub expires_at: Option<i64>,
}

impl Db {
    pub async fn create_api_key(&self, new: NewApiKey<'_>) -> Result<ApiKey> {
        let key = ApiKey {
            id: ApiKeyId::new_random(),
            name: new.name.to_owned(),
            scopes: scopes::split(&scopes::join(new.scopes)).map_err(Error::Internal)?,
            prefix: new.prefix.to_owned(),
            created_at: now_ms(),
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
            requests_24h: 0,
        };
        sqlx::query(
            "INSERT INTO api_keys \
             (id, account_id, name, scopes, token_hash, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key.id.to_string())
        .bind(new.account.to_string())
        .bind(&key.name)
        .bind(scopes::join(new.scopes))
        .bind(new.token_hash)
        .bind(&key.prefix)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(self.pool())
        .await?;
        Ok(key)
    }

    /// How many keys the account holds that are not revoked.
    pub async fn live_api_key_count(&self, account: AccountId) -> Result<i64> {
        let count = sqlx::query_scalar(
            "SELECT COUNT(*) AS n FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
        )
        .bind(account.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(count)
    }

    /// The account's keys, newest first (the 200 newest: revoked keys stay listed, and an account
    /// may make many over the years), each with its request count of the last 24 hours.
    pub async fn api_keys(&self, account: AccountId) -> Result<Vec<ApiKey>> {
        let since = now_ms() - 24 * 3600 * 1000;
        #[derive(sqlx::FromRow)]
        struct ApiKeyWithCount {
            #[sqlx(flatten)]
            key: ApiKeyRow,
            recent: i64,
        }
        let rows: Vec<ApiKeyWithCount> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS}, \
             (SELECT COUNT(*) FROM api_usage u WHERE u.api_key_id = k.id AND u.at >= $2) AS recent \
             FROM api_keys k WHERE k.account_id = $1 ORDER BY k.created_at DESC, k.id LIMIT 200"
        )))
        .bind(account.to_string())
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| row.key.into_key(row.recent))
            .collect()
    }

    /// The key with this secret hash and its account (revoked and expired keys included: the
    /// caller says why a key is refused).
    pub async fn api_key_owner(&self, token_hash: &str) -> Result<Option<KeyOwner>> {
        let row: Option<KeyOwnerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS}, a.id AS account_id, a.email, a.name AS account_name, a.role, \
             a.suspended_at, a.created_at AS account_created_at \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let account = Account {
            id: row.account_id,
            email: row.email,
            name: row.account_name,
            role: row.role,
            suspended_at: row.suspended_at,
            created_at: row.account_created_at,
        };
        let key = row.key.into_key(0)?;
        Ok(Some(KeyOwner { key, account }))
    }

    /// Notes that the key was used now (at most once per [`LAST_USED_RESOLUTION_MS`]).
    pub async fn touch_api_key(&self, id: ApiKeyId) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(now - LAST_USED_RESOLUTION_MS)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Revokes one of the account's keys; returns its secret's hash (to close its sockets), or
    /// `None` when the account has no such key. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(&self, account: AccountId, id: ApiKeyId) -> Result<Option<String>> {
        let token_hash: Option<String> =
            sqlx::query_scalar("SELECT token_hash FROM api_keys WHERE id = $1 AND account_id = $2")
                .bind(id.to_string())
                .bind(account.to_string())
                .fetch_optional(self.pool())
                .await?;
        let Some(token_hash) = token_hash else {
            return Ok(None);
        };
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(Some(token_hash))
    }
}

/// A row of [`Db::api_key_owner`]'s join: the key, and its account's columns renamed where
/// they clash with the key's.
#[derive(sqlx::FromRow)]
struct KeyOwnerRow {
    #[sqlx(flatten)]
    key: ApiKeyRow,
    #[sqlx(try_from = "UuidText")]
    account_id: AccountId,
    email: String,
    account_name: String,
    #[sqlx(try_from = "String")]
    role: AccountRole,
    suspended_at: Option<i64>,
    account_created_at: i64,
}
