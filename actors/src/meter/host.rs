//! The [`MeterHost`] port: what a meter tells the billing service that started it (which keeps
//! the active lease of each session) and the job system behind it.

use atelier_protocol::ids::{LeaseId, SessionId, WorkerId};

/// The billing service, as a lease's meter sees it. Called from the meter actor: must not block.
pub trait MeterHost: Send + Sync + 'static {
    /// The lease got its worker: jobs of the session may run on it.
    fn assigned(&self, session: SessionId, lease: LeaseId, worker: WorkerId, device: String);

    /// The lease is stopping: no new jobs, no extension.
    fn stopping(&self, session: SessionId, lease: LeaseId);

    /// The lease is settled and its meter gone.
    fn forget(&self, session: SessionId, lease: LeaseId);

    /// Interrupts the session's running job(s), with `job.cancelled {reason}` to the session.
    fn interrupt_jobs(&self, session: SessionId, reason: &str);
}
