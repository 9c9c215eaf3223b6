//! The [`Ledger`] port: what a lease's meter records in the database — a new metering segment
//! when its worker is assigned, checkpoints of the time used so far, the extension of its
//! prepaid time and its settlement — and the values that go back and forth ([`MeteredLease`],
//! [`Checkpointed`], [`Settlement`]). `src/` implements it on the ledger's SQL.

use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};

use crate::store::{BoxError, BoxFuture};

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A lease as stored, with what the meter and the views of it need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredLease {
    pub id: LeaseId,
    pub session_id: SessionId,
    /// Who pays: the account that started the lease.
    pub account_id: AccountId,
    pub gpu_class: String,
    /// Millicredits per minute, as priced when the lease started.
    pub price_per_minute: i64,
    pub prepaid_ms: i64,
    pub hold_amount: i64,
    pub status: LeaseStatus,
    pub worker_id: Option<WorkerId>,
    pub device: Option<String>,
    pub created_at: i64,
    pub assigned_at: Option<i64>,
    /// Used time before the current segment.
    pub segment_base_ms: i64,
    /// Used time as of the last checkpoint (final once stopped).
    pub used_ms: i64,
    /// Charged as of the last checkpoint (final once stopped).
    pub charged: i64,
    pub checkpoint_seq: i64,
    pub stopped_at: Option<i64>,
    pub stop_reason: Option<String>,
    pub refunded: Option<i64>,
    /// How many times the payer added prepaid time.
    pub extensions: i64,
    /// The node metering the lease.
    pub owner_node: Option<String>,
    /// The fencing token this meter holds: every write below is refused
    /// ([`LedgerError::Fenced`]) once another node has claimed the lease at a later epoch.
    pub epoch: i64,
}

/// The result of a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The lease after the checkpoint (or as it was, when nothing was applied).
    pub lease: MeteredLease,
    /// The payer's balance after the checkpoint.
    pub balance: i64,
    /// False when the lease's session no longer exists: the lease must stop.
    pub session_exists: bool,
}

/// A settled lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub lease_id: LeaseId,
    pub session_id: SessionId,
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

/// Why the ledger did not do what was asked. The adapter's own error travels inside, so the
/// server gets back exactly what its database said (a 402 stays a 402).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The lease (or its payer's account) no longer exists.
    #[error("{0}")]
    Gone(BoxError),
    /// The lease's epoch is no longer the one the meter holds: another node owns it now. The
    /// write changed nothing; the meter must stop metering without charging.
    #[error("{0}")]
    Fenced(BoxError),
    /// Refused (not enough credits, too long, already stopped) or failed (the database).
    #[error("{0}")]
    Failed(BoxError),
}

impl LedgerError {
    /// The adapter's error, whichever kind.
    pub fn into_inner(self) -> BoxError {
        match self {
            LedgerError::Gone(error) | LedgerError::Fenced(error) | LedgerError::Failed(error) => {
                error
            }
        }
    }
}

/// What the meter records. Every call is one transaction of the adapter's; all are idempotent
/// (a retried checkpoint or settlement changes nothing the first one did), and all carry the
/// `epoch` the meter holds: a write at a stale epoch is [`LedgerError::Fenced`] and changes
/// nothing.
pub trait Ledger: Send + Sync + 'static {
    /// A worker was assigned (or the lease resumed after a restart): metering starts a new
    /// segment at `at` (epoch ms) on top of the time already checkpointed. `None` if the lease
    /// is stopped.
    fn segment_started(
        &self,
        lease: LeaseId,
        epoch: i64,
        worker: WorkerId,
        device: &str,
        at: i64,
    ) -> BoxFuture<'static, Result<Option<MeteredLease>, LedgerError>>;

    /// The lease has used `used_ms` in total and owes `charged_total`: charges the difference
    /// from its hold (checkpoint number `seq`; one already applied changes nothing).
    fn checkpoint(
        &self,
        lease: LeaseId,
        epoch: i64,
        seq: i64,
        used_ms: i64,
        charged_total: i64,
    ) -> BoxFuture<'static, Result<Checkpointed, LedgerError>>;

    /// Stops the lease once: charges up to `charged_total` in all, releases the rest of the
    /// hold. Settling a stopped lease returns its recorded settlement.
    fn settle(
        &self,
        lease: LeaseId,
        epoch: i64,
        used_ms: i64,
        charged_total: i64,
        reason: &str,
    ) -> BoxFuture<'static, Result<Settlement, LedgerError>>;

    /// Adds `add_ms` of prepaid time (a further hold), up to `max_prepaid_ms` in all; the lease
    /// as extended.
    fn extend(
        &self,
        lease: LeaseId,
        epoch: i64,
        add_ms: i64,
        max_prepaid_ms: i64,
    ) -> BoxFuture<'static, Result<MeteredLease, LedgerError>>;
}
