//! The [`MeterHost`] port: what a meter tells the billing service that started it (which keeps
//! the meter of each session's lease) and the job system behind it. The lease's state itself is
//! not told: the meter publishes it ([`super::state::LeaseState`]).

use atelier_protocol::ids::{LeaseId, SessionId};

/// The billing service, as a lease's meter sees it. Called from the meter actor: must not block.
pub trait MeterHost: Send + Sync + 'static {
    /// The lease is settled (or taken over by another node) and its meter gone.
    fn forget(&self, session: SessionId, lease: LeaseId);

    /// Interrupts the session's running job(s), with `job.cancelled {reason}` to the session.
    fn interrupt_jobs(&self, session: SessionId, reason: &str);

    /// Counts a lease this node stopped metering because another node claimed it (metrics).
    fn fenced(&self, _lease: LeaseId) {}
}
