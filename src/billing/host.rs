//! Billing as its meters' [`MeterHost`]: a settled (or taken-over) lease's meter is forgotten,
//! and a stopping lease interrupts the session's jobs through the
//! [`RuntimeHooks`](super::RuntimeHooks). The lease's state is not mirrored here: its meter
//! publishes it.

use std::sync::PoisonError;

use atelier_actors::meter::MeterHost;
use atelier_protocol::ids::{LeaseId, SessionId};

use super::{telemetry, Billing};

impl MeterHost for Billing {
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

    fn fenced(&self, _lease: LeaseId) {
        metrics::counter!(telemetry::LEASES_FENCED).increment(1);
    }
}
