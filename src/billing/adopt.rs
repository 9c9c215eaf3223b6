//! A reconnected worker's leases: the node a worker reconnects to (after its connection, or
//! the node it was connected to, went away) adopts the runtime leases holding its slots, so
//! they go on metering instead of being settled `worker_lost`.
//!
//! For each lease: the stored lease must still be running on the worker's previous
//! connection; a meter of it on this node (the worker came back to the same node) hands over
//! — a final checkpoint up to the worker's last heartbeat, then it stops without settling;
//! the lease is claimed at the next epoch with this node as owner (fencing any other node
//! still metering it, which then stops without charging); and a new meter starts on the
//! worker's slot, with a new segment from now — the time the worker was unreachable is not
//! billed. The job system binds the slot on its board first and hands the assignment in
//! ([`PreAssigned`]).

use std::sync::{Arc, Mutex, PoisonError};

use atelier_actors::meter::{HandOver, MeterError};
use atelier_protocol::ids::{LeaseId, WorkerId};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{telemetry, Billing, PoolError, WorkerAssignment, WorkerPool};
use crate::db::leases::LeaseStatus;

/// The pool of an adopted lease's meter: its first request is answered with the slot the
/// reconnected worker already holds for it; later ones (its worker lost again) go to the
/// node's pool.
struct PreAssigned {
    held: Mutex<Option<WorkerAssignment>>,
    pool: Arc<dyn WorkerPool>,
}

impl WorkerPool for PreAssigned {
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match held {
            Some(assignment) => Box::pin(async move { Ok(assignment) }),
            None => self.pool.acquire(lease, gpu_class),
        }
    }

    fn release(&self, lease: LeaseId, worker: WorkerId) {
        self.pool.release(lease, worker);
    }
}

impl Billing {
    /// Adopts `lease` for the worker that reconnected here (see the module's doc). `previous`:
    /// the worker's id on its previous connection, which the stored lease must name. Why not,
    /// when it is refused (the lease stopped, runs elsewhere, or was claimed meanwhile); the
    /// caller then gives the slot back.
    pub async fn adopt_lease(
        &self,
        lease: LeaseId,
        previous: WorkerId,
        assignment: WorkerAssignment,
    ) -> Result<i64, String> {
        let stored = self
            .db()
            .lease(lease)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such lease")?;
        if stored.status != LeaseStatus::Running {
            return Err(format!("the lease is {}", stored.status.as_str()));
        }
        if stored.worker_id != Some(previous) {
            return Err("the lease runs on another worker".into());
        }
        let local = self
            .leases()
            .get(&stored.session_id)
            .filter(|a| a.lease_id == lease)
            .map(|a| a.meter.clone());
        if let Some(meter) = local {
            let (reply, answer) = oneshot::channel();
            // A meter that is gone meanwhile has nothing to hand over.
            if meter.send(HandOver { reply }).await.is_ok() {
                if let Ok(Err(error @ (MeterError::Stopping | MeterError::TakenOver))) =
                    answer.await
                {
                    return Err(error.to_string());
                }
            }
        }
        let Some(claimed) = self
            .db()
            .adopt_lease(lease, self.node_id(), stored.epoch)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("the lease stopped or was claimed by another node meanwhile".into());
        };
        metrics::counter!(telemetry::LEASE_ADOPTIONS).increment(1);
        tracing::warn!(%lease, session = %claimed.session_id, previous_owner = ?stored.owner_node,
            epoch = claimed.epoch, worker = %assignment.worker_id, used_ms = claimed.used_ms,
            "adopted a runtime lease with its reconnected worker; metering from now");
        let balance = self
            .db()
            .balance(claimed.account_id)
            .await
            .map_err(|e| e.to_string())?
            .balance;
        let payer_name = self
            .payer_name(claimed.account_id)
            .await
            .map_err(|e| e.to_string())?;
        let epoch = claimed.epoch;
        let pool = Arc::new(PreAssigned {
            held: Mutex::new(Some(assignment)),
            pool: self.worker_pool(),
        });
        self.start_meter_on(claimed, balance, payer_name, pool);
        Ok(epoch)
    }
}
