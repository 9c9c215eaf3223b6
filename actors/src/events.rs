//! The event bus port: where studio events for a session's participants go. The live sessions
//! ([`SessionRegistryHandle`]) are the bus; tests record what is sent.

use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::SessionId;

use crate::SessionRegistryHandle;

/// Where studio events go (the live sessions; a recorder in tests).
pub trait EventSink: Send + Sync + 'static {
    fn send(&self, session: SessionId, event: StudioEvent);
}

impl EventSink for SessionRegistryHandle {
    fn send(&self, session: SessionId, event: StudioEvent) {
        self.broadcast_event(session, event);
    }
}
