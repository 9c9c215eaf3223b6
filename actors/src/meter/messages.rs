//! What a [`BillingMeterActor`](super::BillingMeterActor) is asked (stop, extend, job activity)
//! and why it may refuse ([`MeterError`]). What it publishes is in [`super::state`].

use actix::prelude::*;
use tokio::sync::oneshot;

use super::ledger::{LedgerError, MeteredLease, Settlement};

/// Why a meter could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// An extension asked of a lease that is stopping.
    #[error("the Pro runtime is stopping; start a new one")]
    Stopping,
    /// Another node took the lease over: this node no longer meters it (nothing was charged
    /// here); ask again, the new owner answers.
    #[error("the Pro runtime is now metered by another node; try again")]
    TakenOver,
    /// Settling failed; the meter tries again by itself.
    #[error("the lease could not be settled yet ({0}); it will be retried")]
    NotSettledYet(String),
    /// What the ledger said.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Stops the lease; the reply carries the settlement.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopLease {
    pub reason: String,
    pub reply: oneshot::Sender<Result<Settlement, MeterError>>,
}

/// The payer adds prepaid time: a further hold; the lease and its job go on. The reply is the
/// lease as extended (402 when the credits are not there, 409 once it is stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExtendLease {
    pub add_ms: i64,
    pub max_prepaid_ms: i64,
    pub reply: oneshot::Sender<Result<MeteredLease, MeterError>>,
}

/// A job started, progressed or finished: the lease is not idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobActivity;

/// The lease's worker reconnected and the lease is being adopted at a new epoch (on this node
/// or another): the meter records what was used up to the worker's last heartbeat (a final
/// checkpoint at its epoch), gives its slot back and stops — without settling, and without
/// interrupting the session's jobs, which go on on the reconnected worker. Refused
/// ([`MeterError::Stopping`]) when the lease is stopping already.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver {
    pub reply: oneshot::Sender<Result<(), MeterError>>,
}
