//! The media quota, decided atomically: stored media plus the reservations of uploads in flight
//! never exceed it, however many uploads run at once.
//!
//! Every decision about an account's quota first upserts its `storage_locks` row (the pattern of
//! `account_balances`): on PostgreSQL that locks the row until commit, on SQLite that write
//! takes the database's write lock. So the check "stored + reserved + more ≤ quota" and the
//! reservation it allows happen as one step for each account.

use atelier_protocol::ids::{AccountId, MediaId};
use sqlx::AnyConnection;
use uuid::Uuid;

use super::media::{insert_media_in, Media, NewMedia};
use super::with_retrying_tx;
use super::{is_fk_violation_of, now_ms, Db};
use crate::error::{Error, Result};

/// An upload's claim on its account's quota (the id of its `storage_reservations` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationId(pub Uuid);

async fn lock_storage(conn: &mut AnyConnection, account: AccountId) -> Result<()> {
    let res = sqlx::query(
        "INSERT INTO storage_locks (account_id, locked_at) VALUES ($1, $2) \
         ON CONFLICT (account_id) DO UPDATE SET locked_at = $2",
    )
    .bind(account.to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_fk_violation_of(&e) => Err(Error::NotFound("account")),
        Err(e) => Err(e.into()),
    }
}

/// Stored media bytes plus every reservation of the account (inside the locked transaction).
async fn committed_bytes(conn: &mut AnyConnection, account: AccountId) -> Result<i64> {
    let total = sqlx::query_scalar(
        "SELECT CAST(COALESCE((SELECT SUM(size_bytes) FROM media WHERE owner_id = $1), 0) \
                + COALESCE((SELECT SUM(bytes) FROM storage_reservations WHERE account_id = $1), 0) \
                AS BIGINT) AS total",
    )
    .bind(account.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(total)
}

impl Db {
    /// Claims between `at_least` and `wanted` bytes of the account's quota for the upload
    /// `reservation` (creating the reservation on its first claim): as much as fits, and
    /// returns how much that is. 413 `quota_exceeded` when stored media, every upload in flight
    /// and `at_least` more would exceed `quota`.
    pub async fn reserve_storage(
        &self,
        account: AccountId,
        reservation: ReservationId,
        at_least: i64,
        wanted: i64,
        quota: i64,
    ) -> Result<i64> {
        with_retrying_tx!(self, "reserve storage", |tx| {
            lock_storage(tx, account).await?;
            let used = committed_bytes(tx, account).await?;
            let room = quota.saturating_sub(used);
            if room < at_least {
                return Err(Error::QuotaExceeded(format!(
                    "storage quota exceeded: {used} of {quota} bytes are used or being uploaded, \
                     and this file needs more; delete media to make room"
                )));
            }
            let granted = wanted.min(room).max(at_least);
            let now = now_ms();
            sqlx::query(
                "INSERT INTO storage_reservations (id, account_id, bytes, updated_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET bytes = storage_reservations.bytes + $3, \
                 updated_at = $4",
            )
            .bind(reservation.0.to_string())
            .bind(account.to_string())
            .bind(granted)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(granted)
        })
    }

    /// Turns a reservation into the media row of the finished upload, in one transaction (the
    /// row's size was reserved: the quota holds).
    pub async fn commit_upload(
        &self,
        reservation: ReservationId,
        new: NewMedia<'_>,
    ) -> Result<Media> {
        let new = &new;
        with_retrying_tx!(self, "commit upload", |tx| {
            lock_storage(tx, new.owner).await?;
            let media = insert_media_in(tx, new).await?;
            sqlx::query("DELETE FROM storage_reservations WHERE id = $1")
                .bind(reservation.0.to_string())
                .execute(&mut *tx)
                .await?;
            Ok(media)
        })
    }

    /// Gives a reservation's bytes back (the upload failed or was abandoned).
    pub async fn release_storage(&self, reservation: ReservationId) -> Result<()> {
        sqlx::query("DELETE FROM storage_reservations WHERE id = $1")
            .bind(reservation.0.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Releases reservations not touched since `cutoff_ms` (their upload died with its process).
    pub async fn purge_storage_reservations_before(&self, cutoff_ms: i64) -> Result<u64> {
        let res = sqlx::query("DELETE FROM storage_reservations WHERE updated_at < $1")
            .bind(cutoff_ms)
            .execute(self.pool())
            .await?;
        Ok(res.rows_affected())
    }
}

impl ReservationId {
    pub fn new_random() -> Self {
        ReservationId(Uuid::new_v4())
    }
}

/// Media ids double as object names; kept here so uploads name both from one place.
pub fn object_key(owner: AccountId, id: MediaId) -> String {
    format!("media/{owner}/{id}")
}
