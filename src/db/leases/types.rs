//! A runtime lease's values: its status, the stored row, what starting one needs, and what a
//! checkpoint or a settlement returns (the settlement as the API shows it).

use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::columns::{OptUuidText, UuidText};
use crate::db::ledger::{Balance, HoldId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseStatus {
    /// Credits held; waiting for a worker.
    Starting,
    /// A worker is assigned and the meter runs.
    Running,
    /// Being settled (in memory only; stored leases are starting, running or stopped).
    Stopping,
    /// Settled: used part charged, the rest released.
    Stopped,
}

impl TryFrom<String> for LeaseStatus {
    type Error = String;

    /// A stored status (stored leases are never `stopping`).
    fn try_from(stored: String) -> Result<Self, String> {
        match stored.as_str() {
            "starting" => Ok(LeaseStatus::Starting),
            "running" => Ok(LeaseStatus::Running),
            "stopped" => Ok(LeaseStatus::Stopped),
            other => Err(format!("unknown lease status {other:?}")),
        }
    }
}

impl LeaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseStatus::Starting => "starting",
            LeaseStatus::Running => "running",
            LeaseStatus::Stopping => "stopping",
            LeaseStatus::Stopped => "stopped",
        }
    }
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RuntimeLease {
    #[sqlx(try_from = "UuidText")]
    pub id: LeaseId,
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    /// Who pays: the account that started the lease.
    #[sqlx(try_from = "UuidText")]
    pub account_id: AccountId,
    pub gpu_class: String,
    /// Millicredits per minute, as priced when the lease started.
    pub price_per_minute: i64,
    pub prepaid_ms: i64,
    #[sqlx(try_from = "UuidText")]
    pub hold_id: HoldId,
    pub hold_amount: i64,
    #[sqlx(try_from = "String")]
    pub status: LeaseStatus,
    #[sqlx(try_from = "OptUuidText")]
    pub worker_id: Option<WorkerId>,
    pub device: Option<String>,
    pub created_at: i64,
    pub assigned_at: Option<i64>,
    /// When the current metering segment began (assignment, or a resume after a restart).
    pub segment_started_at: Option<i64>,
    /// Used time before the current segment.
    pub segment_base_ms: i64,
    /// Used time as of the last checkpoint (final once stopped).
    pub used_ms: i64,
    /// Charged as of the last checkpoint (final once stopped).
    pub charged: i64,
    pub checkpoint_seq: i64,
    pub checkpointed_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub stop_reason: Option<String>,
    pub refunded: Option<i64>,
    /// How many times the payer added prepaid time.
    pub extensions: i64,
    /// The node metering the lease (see `mod.rs`: ownership and epochs).
    pub owner_node: Option<String>,
    /// The fencing token: bumped by every claim of the lease; every write of its meter is
    /// conditional on it.
    pub epoch: i64,
    /// When the owner last said it still meters the lease (epoch ms).
    pub owner_heartbeat_at: Option<i64>,
}

/// What starting a lease needs.
pub struct NewLease<'a> {
    pub id: LeaseId,
    pub session_id: SessionId,
    pub account_id: AccountId,
    pub gpu_class: &'a str,
    pub price_per_minute: i64,
    pub prepaid_ms: i64,
    pub hold_amount: i64,
    /// The node starting it: its first owner (epoch 1).
    pub owner_node: &'a str,
}

/// The result of a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The lease after the checkpoint (or as it was, when nothing was applied).
    pub lease: RuntimeLease,
    /// The payer's totals after the checkpoint.
    pub balance: Balance,
    /// False when the checkpoint had been applied before (a retry) or the lease is stopped.
    pub applied: bool,
    /// False when the lease's session no longer exists: the lease must stop.
    pub session_exists: bool,
}

/// A settled lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Settlement {
    pub lease_id: LeaseId,
    #[serde(skip)]
    pub session_id: SessionId,
    #[serde(skip)]
    pub account_id: AccountId,
    /// Metered lease time, in milliseconds.
    pub used_ms: i64,
    /// Millicredits charged for it.
    pub charged: i64,
    /// Millicredits of the hold given back (`charged + refunded` = the hold).
    pub refunded: i64,
    pub reason: String,
    /// The payer's balance after settling.
    pub balance: i64,
}

/// GPU time of one session, class and UTC day.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    #[sqlx(try_from = "UuidText")]
    pub session_id: SessionId,
    pub session_title: Option<String>,
    pub gpu_class: String,
    /// Days since 1970-01-01 (UTC).
    pub epoch_day: i64,
    pub used_ms: i64,
    pub charged: i64,
}

impl RuntimeLease {
    pub(super) fn settlement(&self, balance: i64) -> Settlement {
        Settlement {
            lease_id: self.id,
            session_id: self.session_id,
            account_id: self.account_id,
            used_ms: self.used_ms,
            charged: self.charged,
            refunded: self.refunded.unwrap_or(0),
            reason: self.stop_reason.clone().unwrap_or_default(),
            balance,
        }
    }
}
