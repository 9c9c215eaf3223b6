//! Version history of session documents: keeping versions (automatic, named, a job's, a
//! restore's), retention (thinning automatic versions with age) and the per-session storage
//! bound. Versions are self-contained document states, so compaction of the live update log
//! never touches them, and a restart keeps them (they are rows like any other).
//!
//! Storage: a version is a row pointing at a state; states are kept once per session, by their
//! SHA-256, so versions of an unchanged graph (say ten job runs) cost one state. The bound is on
//! the distinct states' bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use atelier_actors::store::{BoxError, BoxFuture};
use atelier_actors::versions::{EditBurst, VersionRecorder};
use atelier_protocol::ids::{SessionId, VersionId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::VersionsConfig;
use crate::db::versions::{state_hash, NewVersion, VersionEntry, VersionKind};
use crate::db::{now_ms, Db};
use crate::error::{Error, Result};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Retention and bounds (see [`VersionsConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub keep_all_ms: i64,
    pub hourly_until_ms: i64,
    /// `None`: one automatic version per day is kept forever.
    pub daily_until_ms: Option<i64>,
    pub max_bytes_per_session: i64,
}

impl Retention {
    pub fn from_config(config: &VersionsConfig) -> Self {
        let ms = |n: u64, unit: i64| i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(unit);
        Retention {
            keep_all_ms: ms(config.versions_keep_all_hours, HOUR_MS),
            hourly_until_ms: ms(config.versions_hourly_days, DAY_MS),
            daily_until_ms: (config.versions_daily_days > 0)
                .then(|| ms(config.versions_daily_days, DAY_MS)),
            max_bytes_per_session: i64::try_from(config.versions_max_bytes_per_session)
                .unwrap_or(i64::MAX),
        }
    }

    /// The automatic versions that thinning removes at `now`: within `keep_all` every one is
    /// kept; then the newest of each hour until `hourly_until`; then the newest of each day
    /// until `daily_until`; older ones go. Other kinds are never thinned.
    pub fn thinned(&self, entries: &[VersionEntry], now: i64) -> Vec<VersionId> {
        let mut newest_in_bucket: BTreeMap<(u8, i64), (i64, VersionId)> = BTreeMap::new();
        let mut gone = Vec::new();
        for entry in entries.iter().filter(|e| e.kind == VersionKind::Auto) {
            let age = now.saturating_sub(entry.created_at);
            let bucket = if age < self.keep_all_ms {
                continue;
            } else if age < self.hourly_until_ms {
                (0, entry.created_at.div_euclid(HOUR_MS))
            } else if self.daily_until_ms.is_none_or(|until| age < until) {
                (1, entry.created_at.div_euclid(DAY_MS))
            } else {
                gone.push(entry.id);
                continue;
            };
            let candidate = (entry.created_at, entry.id);
            match newest_in_bucket.get(&bucket) {
                Some(kept) if *kept >= candidate => gone.push(entry.id),
                Some(kept) => {
                    gone.push(kept.1);
                    newest_in_bucket.insert(bucket, candidate);
                }
                None => {
                    newest_in_bucket.insert(bucket, candidate);
                }
            }
        }
        gone
    }
}

/// A session's version storage, as reported with its versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionStorage {
    /// Versions kept.
    pub versions: usize,
    /// Bytes of the distinct document states they keep.
    pub bytes: i64,
    /// The bound (`ATELIER_VERSIONS_MAX_BYTES_PER_SESSION`).
    pub max_bytes: i64,
}

/// Locks that serialise version keeping per session (striped: a session always takes the
/// same one), so that two versions kept at once cannot both decide the bound is respected.
const LOCK_STRIPES: usize = 64;

/// The version history (a cheap-to-clone handle).
#[derive(Clone)]
pub struct Versions {
    db: Db,
    retention: std::sync::Arc<Retention>,
    locks: std::sync::Arc<[tokio::sync::Mutex<()>; LOCK_STRIPES]>,
}

impl Versions {
    pub fn new(db: Db, retention: Retention) -> Self {
        Versions {
            db,
            retention: std::sync::Arc::new(retention),
            locks: std::sync::Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        }
    }

    fn lock_of(&self, session: SessionId) -> &tokio::sync::Mutex<()> {
        let stripe = session.0.as_u128() % LOCK_STRIPES as u128;
        &self.locks[usize::try_from(stripe).unwrap_or(0)]
    }

    /// Keeps a version, then applies retention and the storage bound. An automatic version
    /// equal to the newest one is not kept again. A named version that does not fit even
    /// after every automatic, job and restore version was evicted is refused (413), as is a
    /// job or restore version then (the job runs without one). Returns the version's id (the
    /// newest one's, for an automatic version equal to it).
    pub async fn record(&self, new: NewVersion) -> Result<VersionId> {
        // (Within one node; nodes of a cluster may each keep one at the same moment, which can
        // take a session over its bound by one version until the next one is kept.)
        let _serialised = self.lock_of(new.session).lock().await;
        if new.kind == VersionKind::Auto {
            if let Some((latest, hash)) = self.db.latest_version(new.session).await? {
                if hash == state_hash(&new.state) {
                    return Ok(latest);
                }
            }
        }
        let size = i64::try_from(new.state.len()).unwrap_or(i64::MAX);
        if size > self.retention.max_bytes_per_session {
            return Err(Error::QuotaExceeded(format!(
                "the document ({size} bytes) is larger than a session's version storage ({} bytes)",
                self.retention.max_bytes_per_session
            )));
        }
        let id = self.db.insert_version(&new).await?;
        let fits = self.enforce(new.session, id).await?;
        if !fits {
            self.db.delete_versions(new.session, &[id]).await?;
            return Err(Error::QuotaExceeded(format!(
                "this session's version storage ({} bytes) is full of named versions; delete some",
                self.retention.max_bytes_per_session
            )));
        }
        Ok(id)
    }

    /// Thins automatic versions, then evicts (oldest automatic, then oldest job and restore
    /// versions, never `keep`) until the session's states fit the bound. Returns whether they
    /// do.
    async fn enforce(&self, session: SessionId, keep: VersionId) -> Result<bool> {
        let entries = self.db.version_entries(session).await?;
        let mut gone: BTreeSet<VersionId> = self
            .retention
            .thinned(&entries, now_ms())
            .into_iter()
            .filter(|id| *id != keep)
            .collect();
        let sizes: HashMap<String, i64> = self
            .db
            .version_state_sizes(session)
            .await?
            .into_iter()
            .collect();
        let used = |gone: &BTreeSet<VersionId>| -> i64 {
            let live: BTreeSet<&str> = entries
                .iter()
                .filter(|e| !gone.contains(&e.id))
                .map(|e| e.state_hash.as_str())
                .collect();
            live.iter().filter_map(|h| sizes.get(*h)).sum()
        };
        let evictable = |kinds: &[VersionKind]| -> Vec<VersionId> {
            entries
                .iter()
                .filter(|e| kinds.contains(&e.kind) && e.id != keep)
                .map(|e| e.id)
                .collect()
        };
        let order = [
            evictable(&[VersionKind::Auto]),
            evictable(&[VersionKind::Job, VersionKind::Restore]),
        ];
        let max = self.retention.max_bytes_per_session;
        'evict: for ids in order {
            for id in ids {
                if used(&gone) <= max {
                    break 'evict;
                }
                gone.insert(id);
            }
        }
        let fits = used(&gone) <= max;
        if !gone.is_empty() {
            let ids: Vec<VersionId> = gone.into_iter().collect();
            tracing::debug!(%session, evicted = ids.len(), "versions thinned or evicted");
            self.db.delete_versions(session, &ids).await?;
        }
        Ok(fits)
    }

    /// How much version storage the session uses.
    pub async fn storage(&self, session: SessionId) -> Result<VersionStorage> {
        // Under the session's lock: a version being kept is inserted before the bound is
        // enforced, so an unlocked read can see the session over its bound for a moment.
        let _serialised = self.lock_of(session).lock().await;
        let entries = self.db.version_entries(session).await?;
        let bytes = self
            .db
            .version_state_sizes(session)
            .await?
            .into_iter()
            .map(|(_, size)| size)
            .sum();
        Ok(VersionStorage {
            versions: entries.len(),
            bytes,
            max_bytes: self.retention.max_bytes_per_session,
        })
    }
}

impl VersionRecorder for Versions {
    fn edits_settled(&self, burst: EditBurst) -> BoxFuture<'_, std::result::Result<(), BoxError>> {
        Box::pin(async move {
            let new = NewVersion {
                session: burst.session,
                kind: VersionKind::Auto,
                name: None,
                created_by: burst.authors.last().copied(),
                authors: burst.authors,
                restored_from: None,
                state: burst.state,
            };
            match self.record(new).await {
                Ok(_) => Ok(()),
                // A session deleted meanwhile has no history to keep.
                Err(Error::Database(e)) if crate::db::is_fk_violation_of(&e) => Ok(()),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}

/// The session limits' version cadence from the configuration.
pub fn cadence(config: &VersionsConfig) -> (Duration, Duration) {
    (
        Duration::from_millis(config.version_settle_ms),
        Duration::from_secs(config.version_every_s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(created_at: i64) -> VersionEntry {
        VersionEntry {
            id: VersionId::new_random(),
            kind: VersionKind::Auto,
            state_hash: String::new(),
            created_at,
        }
    }

    #[test]
    fn thinning_keeps_recent_then_hourly_then_daily() {
        let retention = Retention {
            keep_all_ms: HOUR_MS,
            hourly_until_ms: DAY_MS,
            daily_until_ms: Some(10 * DAY_MS),
            max_bytes_per_session: i64::MAX,
        };
        let now = 100 * DAY_MS;
        // Three in the last hour: all kept.
        let recent: Vec<_> = (1..=3).map(|m| auto(now - m * 60_000)).collect();
        // Buckets are calendar hours and days (`now` is at midnight), so each pair sits inside
        // one. Two in one hour five hours ago: the newer is kept.
        let hour_old = auto(now - 5 * HOUR_MS + 30 * 60_000);
        let hour_older = auto(now - 5 * HOUR_MS + 10 * 60_000);
        // Two on one day three days ago: the newer is kept.
        let day_old = auto(now - 3 * DAY_MS + 12 * HOUR_MS);
        let day_older = auto(now - 3 * DAY_MS + 11 * HOUR_MS);
        // Beyond ten days: gone.
        let ancient = auto(now - 20 * DAY_MS);
        let named = VersionEntry {
            kind: VersionKind::Named,
            ..auto(now - 50 * DAY_MS)
        };
        let mut all = recent.clone();
        all.extend([
            hour_older.clone(),
            hour_old.clone(),
            day_older.clone(),
            day_old.clone(),
            ancient.clone(),
            named.clone(),
        ]);
        all.sort_by_key(|e| e.created_at);
        let gone: BTreeSet<VersionId> = retention.thinned(&all, now).into_iter().collect();
        let expected: BTreeSet<VersionId> = [hour_older.id, day_older.id, ancient.id].into();
        assert_eq!(gone, expected);
    }
}
