//! The port billing needs from the job system: interrupt a stopping lease's jobs. The event bus
//! (`EventSink`) and the worker pool (`WorkerPool`) are ports of `atelier-actors`.

use atelier_protocol::ids::SessionId;

/// What the job system does when a lease stops: interrupt the session's running job(s), with
/// `job.cancelled {reason}` to the session. Called from the meter actor: must not block.
pub trait RuntimeHooks: Send + Sync + 'static {
    fn interrupt_session_jobs(&self, session: SessionId, reason: &str);
}

/// No job system attached.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoJobs;

impl RuntimeHooks for NoJobs {
    fn interrupt_session_jobs(&self, _session: SessionId, _reason: &str) {}
}
