//! The ports billing needs from the rest of the server: the job system (interrupt a stopping
//! lease's jobs) and the live sessions (studio events). The worker pool's port is in
//! [`super::lease`].

use atelier_actors::SessionRegistryHandle;
use atelier_protocol::events::StudioEvent;
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

/// Where studio events go (the live sessions; a recorder in tests).
pub trait EventSink: Send + Sync + 'static {
    fn send(&self, session: SessionId, event: StudioEvent);
}

impl EventSink for SessionRegistryHandle {
    fn send(&self, session: SessionId, event: StudioEvent) {
        self.broadcast_event(session, event);
    }
}
