//! Billing as its meters' [`MeterHost`]: a meter's news updates the session's entry in the map
//! of active leases, and a stopping lease interrupts the session's jobs through the
//! [`RuntimeHooks`](super::RuntimeHooks).

use std::sync::PoisonError;

use atelier_actors::meter::MeterHost;
use atelier_protocol::ids::{LeaseId, SessionId, WorkerId};

use super::Billing;

impl MeterHost for Billing {
    fn assigned(&self, session: SessionId, lease: LeaseId, worker: WorkerId, device: String) {
        if let Some(active) = self.leases().get_mut(&session) {
            if active.lease_id == lease {
                active.worker = Some((worker, device));
            }
        }
    }

    fn stopping(&self, session: SessionId, lease: LeaseId) {
        if let Some(active) = self.leases().get_mut(&session) {
            if active.lease_id == lease {
                active.stopping = true;
            }
        }
    }

    fn forget(&self, session: SessionId, lease: LeaseId) {
        let mut leases = self.leases();
        if leases.get(&session).is_some_and(|a| a.lease_id == lease) {
            leases.remove(&session);
        }
    }

    fn interrupt_jobs(&self, session: SessionId, reason: &str) {
        let hooks = self
            .shared
            .hooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        hooks.interrupt_session_jobs(session, reason);
    }
}
