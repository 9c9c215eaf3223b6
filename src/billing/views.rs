//! What billing hands its callers: the running lease a job may use, a lease as the API shows
//! it, what a payment webhook did and what start-up recovery did.

use atelier_protocol::ids::{AccountId, LeaseId, SessionId, WorkerId};
use serde::Serialize;
use utoipa::ToSchema;

use super::prices;
use crate::db::leases::{LeaseStatus, RuntimeLease};
use atelier_actors::meter::{LeaseState, MeteredLease};

/// The running lease a job may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease_id: LeaseId,
    pub session_id: SessionId,
    /// Who pays.
    pub account_id: AccountId,
    pub gpu_class: String,
    pub worker_id: WorkerId,
    pub device: String,
}

/// Where the session's running lease is, for a job about to be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLease {
    /// Metered on this node: its jobs run on this node's board.
    Here(LeaseInfo),
    /// Cluster mode: metered by another live node, whose job stream its jobs go to.
    Elsewhere {
        lease_id: LeaseId,
        owner_node: String,
    },
}

impl JobLease {
    pub fn lease_id(&self) -> LeaseId {
        match self {
            JobLease::Here(info) => info.lease_id,
            JobLease::Elsewhere { lease_id, .. } => *lease_id,
        }
    }
}

/// A lease as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaseView {
    pub lease_id: LeaseId,
    pub session_id: SessionId,
    pub gpu_class: String,
    pub status: LeaseStatus,
    /// Millicredits per minute.
    pub price_per_minute: i64,
    pub prepaid_minutes: f64,
    pub prepaid_ms: i64,
    /// Millicredits reserved when the lease started.
    pub hold: i64,
    /// Metered lease time so far (final once stopped).
    pub used_ms: i64,
    /// Millicredits charged so far (final once stopped).
    pub charged: i64,
    /// Prepaid time left.
    pub remaining_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// The node metering the lease (in a cluster, the one whose death would hand it over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_node: Option<String>,
    /// The lease's ownership epoch: 1 when started, one more at every takeover or restart.
    pub epoch: i64,
}

impl LeaseView {
    pub(super) fn new(
        lease: &MeteredLease,
        status: LeaseStatus,
        used_ms: i64,
        charged: i64,
    ) -> Self {
        LeaseView {
            lease_id: lease.id,
            session_id: lease.session_id,
            gpu_class: lease.gpu_class.clone(),
            status,
            price_per_minute: lease.price_per_minute,
            prepaid_minutes: lease.prepaid_ms as f64 / prices::MINUTE_MS as f64,
            prepaid_ms: lease.prepaid_ms,
            hold: lease.hold_amount,
            used_ms,
            charged,
            remaining_ms: (lease.prepaid_ms - used_ms).max(0),
            refunded: lease.refunded,
            reason: lease.stop_reason.clone(),
            worker_id: lease.worker_id,
            device: lease.device.clone(),
            created_at: lease.created_at,
            assigned_at: lease.assigned_at,
            stopped_at: lease.stopped_at,
            owner_node: lease.owner_node.clone(),
            epoch: lease.epoch,
        }
    }

    /// As the lease's meter last published it.
    pub(super) fn published(state: &LeaseState) -> Self {
        LeaseView::new(
            &state.lease,
            state.status.into(),
            state.used_ms,
            state.charged,
        )
    }

    pub(super) fn stored(lease: &RuntimeLease) -> Self {
        let metered = MeteredLease::from(lease.clone());
        LeaseView::new(&metered, lease.status, lease.used_ms, lease.charged)
    }
}

/// What a payment webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Credited,
    Reversed,
    /// Seen before: nothing changed.
    Duplicate,
    Ignored,
}

/// What start-up recovery did with the leases left open by the previous run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub resumed: usize,
    pub settled: usize,
    /// Leases of a dead node this node took over at start-up.
    pub taken_over: usize,
}
