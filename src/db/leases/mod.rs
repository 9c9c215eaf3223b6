//! Pro runtime leases: the SQL of the lease row, its hold, its checkpoints and its settlement
//! (the values are in `types.rs`).
//!
//! Every change that moves credits runs in one transaction under the payer's ledger lock (see
//! [`super::ledger`]) and re-reads the lease row inside it, so a checkpoint racing a settlement
//! cannot charge twice: whichever commits second sees the other's result.
//!
//! Ownership: every open lease has one owner node and an `epoch` (the fencing token). Creating
//! a lease makes its node the owner at epoch 1; [`Db::claim_lease`] makes another node (or the
//! same node after a restart) the owner at the next epoch — one conditional UPDATE, so of
//! nodes racing for a lease exactly one wins. Every write of a meter (segment, checkpoint,
//! extension, settlement) carries the epoch it holds and is an UPDATE `WHERE epoch = $n` in the
//! same transaction as its ledger postings: when the lease was claimed meanwhile it fails with
//! [`Error::LeaseFenced`] and the whole transaction — postings included — rolls back, so a stale
//! owner can never charge. The owner refreshes `owner_heartbeat_at` of its leases
//! ([`Db::heartbeat_owned_leases`]); leases whose owner went silent are [`Db::stale_leases`].
//!
//! Idempotency keys: `lease:{id}:hold`, `lease:{id}:charge:{seq}` for the checkpoint numbered
//! `seq`, `lease:{id}:charge:final` and `lease:{id}:release` for the settlement.

mod meter_ledger;
mod types;

use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};
use sqlx::AnyConnection;

pub use types::{Checkpoint, LeaseStatus, NewLease, RuntimeLease, Settlement, UsageRow};

use super::columns::UuidText;
use super::ledger::{
    charge_hold_in, extend_hold_in, hold_in, lock_account, place_hold_in, settle_hold_in, HoldId,
};
use super::with_retrying_tx;
use super::{now_ms, Db, Dialect};
use crate::error::{Error, Result};

const LEASE_COLUMNS: &str = "id, session_id, account_id, gpu_class, price_per_minute, \
     prepaid_ms, hold_id, hold_amount, status, worker_id, device, created_at, assigned_at, \
     segment_started_at, segment_base_ms, used_ms, charged, checkpoint_seq, checkpointed_at, \
     stopped_at, stop_reason, refunded, extensions, owner_node, epoch, owner_heartbeat_at";

/// The error of a write by a meter whose epoch is no longer the lease's.
fn fenced(id: LeaseId, epoch: i64) -> Error {
    Error::LeaseFenced(format!(
        "runtime lease {id}: epoch {epoch} is stale (another node owns the lease now)"
    ))
}

/// Refuses (before any posting) a write by a meter holding a stale epoch. The conditional
/// UPDATE at the end of each write is what guarantees it; this only fails early.
fn check_epoch(lease: &RuntimeLease, epoch: i64) -> Result<()> {
    if lease.epoch == epoch {
        Ok(())
    } else {
        Err(fenced(lease.id, epoch))
    }
}

/// Whether the session exists, read inside a transaction. On PostgreSQL the row is locked
/// (`FOR SHARE`) until commit, so the session cannot be deleted under a lease being created
/// for it; on SQLite the transaction already holds the database's write lock.
async fn session_exists_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    session: SessionId,
) -> Result<bool> {
    let sql = match dialect {
        Dialect::Postgres => "SELECT id FROM studio_sessions WHERE id = $1 FOR SHARE",
        Dialect::Sqlite => "SELECT id FROM studio_sessions WHERE id = $1",
    };
    let row = sqlx::query(sql)
        .bind(session.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

async fn lease_in(conn: &mut AnyConnection, id: LeaseId) -> Result<Option<RuntimeLease>> {
    let sql = format!("SELECT {LEASE_COLUMNS} FROM runtime_leases WHERE id = $1");
    let row: Option<RuntimeLease> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row)
}

impl Db {
    /// Holds the prepaid credits and records a new lease (status `starting`), in one
    /// transaction. Fails with `insufficient_credits` (402) or `conflict` (409, the session has
    /// a lease that is not stopped).
    pub async fn create_lease(&self, new: &NewLease<'_>) -> Result<RuntimeLease> {
        let hold_id = HoldId::new_random();
        with_retrying_tx!(self, "create lease", |tx| {
            let mut bal = lock_account(tx, new.account_id).await?;
            // A lease only for a session that exists (and stays until this commits): a session
            // deleted meanwhile leaves no lease behind that nobody could stop.
            if !session_exists_in(tx, self.dialect(), new.session_id).await? {
                return Err(Error::NotFound("session"));
            }
            let active = sqlx::query(
                "SELECT id FROM runtime_leases WHERE session_id = $1 AND status <> 'stopped'",
            )
            .bind(new.session_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if active.is_some() {
                return Err(Error::Conflict(
                    "this session already has a Pro runtime; stop it before starting another"
                        .into(),
                ));
            }
            let key = format!("lease:{}:hold", new.id);
            place_hold_in(
                tx,
                &mut bal,
                new.account_id,
                hold_id,
                new.hold_amount,
                &key,
                Some(new.id),
            )
            .await?;
            let now = now_ms();
            sqlx::query(
                "INSERT INTO runtime_leases (id, session_id, account_id, gpu_class, \
                 price_per_minute, prepaid_ms, hold_id, hold_amount, status, created_at, \
                 owner_node, epoch, owner_heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'starting', $9, $10, 1, $9)",
            )
            .bind(new.id.to_string())
            .bind(new.session_id.to_string())
            .bind(new.account_id.to_string())
            .bind(new.gpu_class)
            .bind(new.price_per_minute)
            .bind(new.prepaid_ms)
            .bind(hold_id.to_string())
            .bind(new.hold_amount)
            .bind(now)
            .bind(new.owner_node)
            .execute(&mut *tx)
            .await?;
            let lease = lease_in(tx, new.id)
                .await?
                .ok_or_else(|| Error::Internal("a new lease vanished".into()))?;
            Ok(lease)
        })
    }

    /// A worker was assigned (or the lease resumed after a restart): metering starts a new
    /// segment at `at` on top of the time already checkpointed. `None` if the lease is stopped;
    /// [`Error::LeaseFenced`] if `epoch` is no longer the lease's.
    pub async fn lease_segment_started(
        &self,
        id: LeaseId,
        epoch: i64,
        worker: WorkerId,
        device: &str,
        at: i64,
    ) -> Result<Option<RuntimeLease>> {
        let res = sqlx::query(
            "UPDATE runtime_leases SET status = 'running', worker_id = $1, device = $2, \
             assigned_at = COALESCE(assigned_at, $3), segment_started_at = $3, \
             segment_base_ms = used_ms WHERE id = $4 AND epoch = $5 AND status <> 'stopped'",
        )
        .bind(worker.to_string())
        .bind(device)
        .bind(at)
        .bind(id.to_string())
        .bind(epoch)
        .execute(self.pool())
        .await?;
        if res.rows_affected() == 0 {
            return match self.lease(id).await? {
                Some(lease) if lease.status == LeaseStatus::Stopped => Ok(None),
                Some(_) => Err(fenced(id, epoch)),
                None => Err(Error::NotFound("lease")),
            };
        }
        self.lease(id).await
    }

    /// Records that the lease has used `used_ms` in total and owes `charged_total`: charges the
    /// difference from its hold under the key `lease:{id}:charge:{seq}`. A checkpoint whose
    /// `seq` was already applied, or on a stopped lease, changes nothing. Only the owner at
    /// `epoch` may charge: [`Error::LeaseFenced`] otherwise, with nothing posted.
    pub async fn lease_checkpoint(
        &self,
        id: LeaseId,
        epoch: i64,
        seq: i64,
        used_ms: i64,
        charged_total: i64,
    ) -> Result<Checkpoint> {
        let account = self
            .lease(id)
            .await?
            .ok_or(Error::NotFound("lease"))?
            .account_id;
        with_retrying_tx!(self, "lease checkpoint", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            let session_exists = session_exists_in(tx, self.dialect(), lease.session_id).await?;
            if lease.status != LeaseStatus::Stopped {
                check_epoch(&lease, epoch)?;
            }
            if lease.status == LeaseStatus::Stopped || lease.checkpoint_seq >= seq {
                return Ok(Checkpoint {
                    lease,
                    balance: bal,
                    applied: false,
                    session_exists,
                });
            }
            let used = used_ms.clamp(lease.used_ms, lease.prepaid_ms);
            let total = charged_total.clamp(lease.charged, lease.hold_amount);
            let delta = total - lease.charged;
            if delta > 0 {
                let mut hold = hold_in(tx, lease.hold_id)
                    .await?
                    .ok_or(Error::NotFound("hold"))?;
                let key = format!("lease:{id}:charge:{seq}");
                charge_hold_in(
                    tx,
                    &mut bal,
                    &mut hold,
                    delta,
                    &key,
                    Some(id),
                    Some(used - lease.used_ms),
                )
                .await?;
            }
            let now = now_ms();
            // Conditional on the epoch: a claim committed since the read above makes this
            // update nothing, and the error rolls the charge back with it.
            let res = sqlx::query(
                "UPDATE runtime_leases SET used_ms = $1, charged = $2, checkpoint_seq = $3, \
                 checkpointed_at = $4, owner_heartbeat_at = $4 \
                 WHERE id = $5 AND epoch = $6 AND status <> 'stopped'",
            )
            .bind(used)
            .bind(total)
            .bind(seq)
            .bind(now)
            .bind(id.to_string())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Err(fenced(id, epoch));
            }
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            Ok(Checkpoint {
                lease,
                balance: bal,
                applied: true,
                session_exists,
            })
        })
    }

    /// Stops a lease once: charges up to `charged_total` in all (never less than already
    /// charged, never more than the hold), releases the rest of the hold and records the final
    /// used time. Settling a stopped lease returns its recorded settlement. Only the owner at
    /// `epoch` may settle an open lease: [`Error::LeaseFenced`] otherwise, with nothing posted.
    pub async fn settle_lease(
        &self,
        id: LeaseId,
        epoch: i64,
        used_ms: i64,
        charged_total: i64,
        reason: &str,
    ) -> Result<Settlement> {
        let account = self
            .lease(id)
            .await?
            .ok_or(Error::NotFound("lease"))?
            .account_id;
        with_retrying_tx!(self, "settle lease", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            if lease.status == LeaseStatus::Stopped {
                return Ok(lease.settlement(bal.balance));
            }
            check_epoch(&lease, epoch)?;
            let used = used_ms.clamp(lease.used_ms, lease.prepaid_ms);
            let total = charged_total.clamp(lease.charged, lease.hold_amount);
            let mut hold = hold_in(tx, lease.hold_id)
                .await?
                .ok_or(Error::NotFound("hold"))?;
            let charge_key = format!("lease:{id}:charge:final");
            let release_key = format!("lease:{id}:release");
            let settled = settle_hold_in(
                tx,
                &mut bal,
                &mut hold,
                total - lease.charged,
                &charge_key,
                &release_key,
                Some(id),
                Some(used - lease.used_ms),
            )
            .await?;
            let now = now_ms();
            let res = sqlx::query(
                "UPDATE runtime_leases SET status = 'stopped', used_ms = $1, charged = $2, \
                 refunded = $3, stopped_at = $4, stop_reason = $5 \
                 WHERE id = $6 AND epoch = $7 AND status <> 'stopped'",
            )
            .bind(used)
            .bind(settled.hold.charged)
            .bind(settled.hold.released)
            .bind(now)
            .bind(reason)
            .bind(id.to_string())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Err(fenced(id, epoch));
            }
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            Ok(lease.settlement(bal.balance))
        })
    }

    /// Adds `add_ms` of prepaid time to a lease that is not stopped: a further hold of
    /// `hold_for(price, prepaid + add) − hold` on the lease's hold (key
    /// `lease:{id}:extend:{n}`), in one transaction with the lease row. 402
    /// `insufficient_credits` when the payer's available credits do not cover it, 409 when the
    /// lease has stopped. Returns the lease as extended.
    pub async fn extend_lease(
        &self,
        id: LeaseId,
        epoch: i64,
        add_ms: i64,
        max_prepaid_ms: i64,
    ) -> Result<RuntimeLease> {
        let account = self
            .lease(id)
            .await?
            .ok_or(Error::NotFound("lease"))?
            .account_id;
        with_retrying_tx!(self, "extend lease", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            if lease.status == LeaseStatus::Stopped {
                return Err(Error::Conflict(
                    "the Pro runtime has already stopped".into(),
                ));
            }
            check_epoch(&lease, epoch)?;
            let prepaid_ms = lease.prepaid_ms.saturating_add(add_ms);
            if prepaid_ms > max_prepaid_ms {
                return Err(Error::invalid(format!(
                    "a runtime may hold at most {} minutes of prepaid time",
                    max_prepaid_ms / crate::billing::prices::MINUTE_MS
                )));
            }
            let hold_amount = crate::billing::prices::hold_for(lease.price_per_minute, prepaid_ms);
            let extra = hold_amount - lease.hold_amount;
            let seq = lease.extensions + 1;
            if extra > 0 {
                let mut hold = hold_in(tx, lease.hold_id)
                    .await?
                    .ok_or(Error::NotFound("hold"))?;
                let key = format!("lease:{id}:extend:{seq}");
                extend_hold_in(tx, &mut bal, &mut hold, extra, &key, Some(id)).await?;
            }
            let res = sqlx::query(
                "UPDATE runtime_leases SET prepaid_ms = $1, hold_amount = $2, extensions = $3 \
                 WHERE id = $4 AND epoch = $5 AND status <> 'stopped'",
            )
            .bind(prepaid_ms)
            .bind(hold_amount)
            .bind(seq)
            .bind(id.to_string())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Err(fenced(id, epoch));
            }
            let lease = lease_in(tx, id).await?.ok_or(Error::NotFound("lease"))?;
            Ok(lease)
        })
    }

    /// Makes `node` the owner of an open lease at the next epoch, if its epoch is still
    /// `expected_epoch` and its owner is `node` itself or has been silent since before
    /// `stale_before` (epoch ms; `i64::MAX` claims it whoever owns it). Of nodes racing for a
    /// lease exactly one gets it back; the others get `None`.
    pub async fn claim_lease(
        &self,
        id: LeaseId,
        node: &str,
        expected_epoch: i64,
        stale_before: i64,
    ) -> Result<Option<RuntimeLease>> {
        let res = sqlx::query(
            "UPDATE runtime_leases SET owner_node = $1, epoch = epoch + 1, \
             owner_heartbeat_at = $2 \
             WHERE id = $3 AND epoch = $4 AND status <> 'stopped' \
             AND (owner_node = $1 OR owner_node IS NULL OR owner_heartbeat_at IS NULL \
                  OR owner_heartbeat_at < $5)",
        )
        .bind(node)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(expected_epoch)
        .bind(stale_before)
        .execute(self.pool())
        .await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        self.lease(id).await
    }

    /// Cluster mode: a node that took a waiting lease from its class's line (holding a free
    /// slot for it) becomes its owner at the next epoch — only while the lease still waits
    /// (`starting`: not stopped, not running under another node). `None` when it does not.
    pub async fn claim_waiting_lease(
        &self,
        id: LeaseId,
        node: &str,
    ) -> Result<Option<RuntimeLease>> {
        let res = sqlx::query(
            "UPDATE runtime_leases SET owner_node = $1, epoch = epoch + 1, \
             owner_heartbeat_at = $2 WHERE id = $3 AND status = 'starting'",
        )
        .bind(node)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        self.lease(id).await
    }

    /// A reconnected worker's node adopts the RUNNING lease on its slot: owner at the next
    /// epoch, whoever owned it and however fresh its heartbeat (the worker is with this node
    /// now; the old owner is fenced). `None` when the lease is stopped or no longer at
    /// `expected_epoch` (another node claimed it first).
    pub async fn adopt_lease(
        &self,
        id: LeaseId,
        node: &str,
        expected_epoch: i64,
    ) -> Result<Option<RuntimeLease>> {
        let res = sqlx::query(
            "UPDATE runtime_leases SET owner_node = $1, epoch = epoch + 1, \
             owner_heartbeat_at = $2 WHERE id = $3 AND epoch = $4 AND status = 'running'",
        )
        .bind(node)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(expected_epoch)
        .execute(self.pool())
        .await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        self.lease(id).await
    }

    /// `node` still meters its open leases: refreshes their ownership heartbeat. Leases it lost
    /// to another node are not touched (their owner changed). How many were refreshed.
    pub async fn heartbeat_owned_leases(&self, node: &str) -> Result<u64> {
        let res = sqlx::query(
            "UPDATE runtime_leases SET owner_heartbeat_at = $1 \
             WHERE owner_node = $2 AND status <> 'stopped'",
        )
        .bind(now_ms())
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected())
    }

    /// Open leases that `node` may claim: its own (left by a previous run of the same node id)
    /// and those whose owner has been silent since before `stale_before` (epoch ms).
    pub async fn stale_leases(&self, node: &str, stale_before: i64) -> Result<Vec<RuntimeLease>> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM runtime_leases WHERE status <> 'stopped' \
             AND (owner_node = $1 OR owner_node IS NULL OR owner_heartbeat_at IS NULL \
                  OR owner_heartbeat_at < $2) \
             ORDER BY created_at"
        );
        let rows: Vec<RuntimeLease> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(stale_before)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Every lease the account paid for, with its session's title, for the statement.
    pub async fn lease_contexts(
        &self,
        account: AccountId,
    ) -> Result<std::collections::HashMap<LeaseId, crate::billing::statement::LeaseContext>> {
        #[derive(sqlx::FromRow)]
        struct LeaseContextRow {
            #[sqlx(try_from = "UuidText")]
            id: LeaseId,
            #[sqlx(try_from = "UuidText")]
            session_id: SessionId,
            gpu_class: String,
            used_ms: i64,
            status: String,
            title: Option<String>,
        }
        let rows: Vec<LeaseContextRow> = sqlx::query_as(
            "SELECT l.id, l.session_id, l.gpu_class, l.used_ms, l.status, s.title \
             FROM runtime_leases l LEFT JOIN studio_sessions s ON s.id = l.session_id \
             WHERE l.account_id = $1",
        )
        .bind(account.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    row.id,
                    crate::billing::statement::LeaseContext {
                        session_id: row.session_id,
                        session_title: row.title,
                        gpu_class: row.gpu_class,
                        used_ms: row.used_ms,
                        stopped: row.status == "stopped",
                    },
                )
            })
            .collect())
    }

    pub async fn lease(&self, id: LeaseId) -> Result<Option<RuntimeLease>> {
        let mut conn = self.pool().acquire().await?;
        lease_in(&mut conn, id).await
    }

    /// The session's newest lease (active or not).
    pub async fn latest_lease(&self, session: SessionId) -> Result<Option<RuntimeLease>> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM runtime_leases WHERE session_id = $1 \
             ORDER BY (CASE WHEN status = 'stopped' THEN 0 ELSE 1 END) DESC, created_at DESC \
             LIMIT 1"
        );
        let row: Option<RuntimeLease> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    /// Every lease that is not stopped (recovered at start-up).
    pub async fn open_leases(&self) -> Result<Vec<RuntimeLease>> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM runtime_leases WHERE status <> 'stopped' \
             ORDER BY created_at"
        );
        let rows: Vec<RuntimeLease> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// The account's leases that are not stopped.
    pub async fn open_leases_of(&self, account: AccountId) -> Result<Vec<RuntimeLease>> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM runtime_leases WHERE account_id = $1 \
             AND status <> 'stopped' ORDER BY created_at"
        );
        let rows: Vec<RuntimeLease> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account.to_string())
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// GPU time the account paid for since `since_ms`, per session, GPU class and UTC day (the
    /// day its charge was recorded; charges are checkpointed every few seconds).
    pub async fn runtime_usage(&self, account: AccountId, since_ms: i64) -> Result<Vec<UsageRow>> {
        let rows: Vec<UsageRow> = sqlx::query_as(
            "SELECT l.session_id AS session_id, s.title AS session_title, \
             l.gpu_class AS gpu_class, (e.created_at / 86400000) AS epoch_day, \
             CAST(SUM(COALESCE(e.usage_ms, 0)) AS BIGINT) AS used_ms, \
             CAST(SUM(-e.amount) AS BIGINT) AS charged \
             FROM ledger_entries e \
             JOIN runtime_leases l ON l.id = e.lease_id \
             LEFT JOIN studio_sessions s ON s.id = l.session_id \
             WHERE e.account_id = $1 AND e.kind = 'charge' AND e.created_at >= $2 \
             GROUP BY l.session_id, s.title, l.gpu_class, (e.created_at / 86400000) \
             ORDER BY epoch_day DESC, l.session_id, l.gpu_class",
        )
        .bind(account.to_string())
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
