//! What a meter publishes about its lease: [`LeaseState`], over a `tokio::sync::watch` whose
//! sender only the meter holds. Billing (may a job run on this lease, on which worker?), the
//! HTTP views and the admin page read the latest value; nobody keeps a copy of it.

use super::ledger::{LeaseStatus, MeteredLease};

/// A lease as its meter last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease as stored at the meter's last write (its worker, device, owner node and
    /// epoch included), with the prepaid time of any extension.
    pub lease: MeteredLease,
    pub status: LeaseStatus,
    /// Metered time as of `at` (final once stopped).
    pub used_ms: i64,
    /// Charged as of `at`: stored at the last checkpoint plus what is owed since.
    pub charged: i64,
    /// When the current metering segment began (epoch ms), while running.
    pub segment_started_at: Option<i64>,
    /// When the meter last checkpointed (epoch ms).
    pub checkpointed_at: Option<i64>,
    /// When this state was published (epoch ms).
    pub at: i64,
}

impl LeaseState {
    /// A worker is assigned and the lease is neither stopping nor stopped: jobs may run on it.
    pub fn worker(&self) -> Option<(atelier_protocol::ids::WorkerId, &str)> {
        if self.status != LeaseStatus::Running {
            return None;
        }
        Some((self.lease.worker_id?, self.lease.device.as_deref()?))
    }

    /// The lease is starting or running (not stopping, not stopped).
    pub fn is_open(&self) -> bool {
        matches!(self.status, LeaseStatus::Starting | LeaseStatus::Running)
    }
}
