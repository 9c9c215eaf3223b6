//! Background chores that keep what clients leave behind bounded: usage-log entries past their
//! retention, upload reservations whose upload died with a crashed process, and job
//! `Idempotency-Key`s older than a day. Each runs at
//! start-up and then periodically, until the server stops.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::db::{now_ms, Db};

/// How often the chores run after the first time.
const EVERY: Duration = Duration::from_secs(3600);

/// An upload reservation not touched for this long belongs to an upload that is gone.
pub const STALE_RESERVATION: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 86_400_000;

/// Starts the chores; abort the handle to stop them.
pub fn spawn(db: Db, usage_retention_days: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            run_once(&db, usage_retention_days).await;
        }
    })
}

async fn run_once(db: &Db, usage_retention_days: u32) {
    let cutoff = now_ms().saturating_sub(i64::from(usage_retention_days).saturating_mul(DAY_MS));
    match db.purge_usage_before(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "usage log entries past their retention purged"),
        Err(error) => tracing::warn!(%error, "could not purge the usage log; will retry"),
    }
    let stale = i64::try_from(STALE_RESERVATION.as_millis()).unwrap_or(i64::MAX);
    match db
        .purge_storage_reservations_before(now_ms().saturating_sub(stale))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(reservations = n, "stale upload reservations released"),
        Err(error) => tracing::warn!(%error, "could not release stale upload reservations"),
    }
    let keys_cutoff = now_ms().saturating_sub(crate::db::idempotency::KEEP_MS);
    match db.purge_keys_before(keys_cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(keys = n, "job idempotency keys older than a day forgotten"),
        Err(error) => tracing::warn!(%error, "could not purge job idempotency keys"),
    }
}
