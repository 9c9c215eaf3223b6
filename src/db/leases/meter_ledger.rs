//! The meter's [`Ledger`] port on the database: each call is one of the lease queries of
//! `mod.rs`, its values converted to the meter's ([`MeteredLease`], [`meter::Settlement`]) and
//! back, and its errors carried inside [`LedgerError`] so the API gets them back unchanged.

use atelier_actors::meter::{self, Checkpointed, Ledger, LedgerError, MeteredLease};
use atelier_actors::BoxFuture;
use atelier_protocol::ids::{LeaseId, WorkerId};

use super::{LeaseStatus, RuntimeLease, Settlement};
use crate::db::Db;
use crate::error::Error;

impl From<LeaseStatus> for meter::LeaseStatus {
    fn from(status: LeaseStatus) -> Self {
        match status {
            LeaseStatus::Starting => meter::LeaseStatus::Starting,
            LeaseStatus::Running => meter::LeaseStatus::Running,
            LeaseStatus::Stopping => meter::LeaseStatus::Stopping,
            LeaseStatus::Stopped => meter::LeaseStatus::Stopped,
        }
    }
}

impl From<meter::LeaseStatus> for LeaseStatus {
    fn from(status: meter::LeaseStatus) -> Self {
        match status {
            meter::LeaseStatus::Starting => LeaseStatus::Starting,
            meter::LeaseStatus::Running => LeaseStatus::Running,
            meter::LeaseStatus::Stopping => LeaseStatus::Stopping,
            meter::LeaseStatus::Stopped => LeaseStatus::Stopped,
        }
    }
}

impl From<RuntimeLease> for MeteredLease {
    fn from(lease: RuntimeLease) -> Self {
        MeteredLease {
            id: lease.id,
            session_id: lease.session_id,
            account_id: lease.account_id,
            gpu_class: lease.gpu_class,
            price_per_minute: lease.price_per_minute,
            prepaid_ms: lease.prepaid_ms,
            hold_amount: lease.hold_amount,
            status: lease.status.into(),
            worker_id: lease.worker_id,
            device: lease.device,
            created_at: lease.created_at,
            assigned_at: lease.assigned_at,
            segment_base_ms: lease.segment_base_ms,
            used_ms: lease.used_ms,
            charged: lease.charged,
            checkpoint_seq: lease.checkpoint_seq,
            stopped_at: lease.stopped_at,
            stop_reason: lease.stop_reason,
            refunded: lease.refunded,
            extensions: lease.extensions,
            owner_node: lease.owner_node,
            epoch: lease.epoch,
        }
    }
}

impl From<Settlement> for meter::Settlement {
    fn from(s: Settlement) -> Self {
        meter::Settlement {
            lease_id: s.lease_id,
            session_id: s.session_id,
            account_id: s.account_id,
            used_ms: s.used_ms,
            charged: s.charged,
            refunded: s.refunded,
            reason: s.reason,
            balance: s.balance,
        }
    }
}

impl From<meter::Settlement> for Settlement {
    fn from(s: meter::Settlement) -> Self {
        Settlement {
            lease_id: s.lease_id,
            session_id: s.session_id,
            account_id: s.account_id,
            used_ms: s.used_ms,
            charged: s.charged,
            refunded: s.refunded,
            reason: s.reason,
            balance: s.balance,
        }
    }
}

/// A missing lease (or payer) is `Gone`: the meter stops; a stale epoch is `Fenced`: the meter
/// stops without charging; anything else is `Failed`.
fn ledger_error(error: Error) -> LedgerError {
    match error {
        Error::NotFound(_) => LedgerError::Gone(Box::new(error)),
        Error::LeaseFenced(_) => LedgerError::Fenced(Box::new(error)),
        other => LedgerError::Failed(Box::new(other)),
    }
}

impl Ledger for Db {
    fn segment_started(
        &self,
        lease: LeaseId,
        epoch: i64,
        worker: WorkerId,
        device: &str,
        at: i64,
    ) -> BoxFuture<'static, Result<Option<MeteredLease>, LedgerError>> {
        let db = self.clone();
        let device = device.to_string();
        Box::pin(async move {
            db.lease_segment_started(lease, epoch, worker, &device, at)
                .await
                .map(|lease| lease.map(MeteredLease::from))
                .map_err(ledger_error)
        })
    }

    fn checkpoint(
        &self,
        lease: LeaseId,
        epoch: i64,
        seq: i64,
        used_ms: i64,
        charged_total: i64,
    ) -> BoxFuture<'static, Result<Checkpointed, LedgerError>> {
        let db = self.clone();
        Box::pin(async move {
            let cp = db
                .lease_checkpoint(lease, epoch, seq, used_ms, charged_total)
                .await
                .map_err(ledger_error)?;
            Ok(Checkpointed {
                lease: cp.lease.into(),
                balance: cp.balance.balance,
                session_exists: cp.session_exists,
            })
        })
    }

    fn settle(
        &self,
        lease: LeaseId,
        epoch: i64,
        used_ms: i64,
        charged_total: i64,
        reason: &str,
    ) -> BoxFuture<'static, Result<meter::Settlement, LedgerError>> {
        let db = self.clone();
        let reason = reason.to_string();
        Box::pin(async move {
            db.settle_lease(lease, epoch, used_ms, charged_total, &reason)
                .await
                .map(meter::Settlement::from)
                .map_err(ledger_error)
        })
    }

    fn extend(
        &self,
        lease: LeaseId,
        epoch: i64,
        add_ms: i64,
        max_prepaid_ms: i64,
    ) -> BoxFuture<'static, Result<MeteredLease, LedgerError>> {
        let db = self.clone();
        Box::pin(async move {
            db.extend_lease(lease, epoch, add_ms, max_prepaid_ms)
                .await
                .map(MeteredLease::from)
                .map_err(ledger_error)
        })
    }
}

/// The error the ledger gave the meter, as it was (a 402 stays a 402).
impl From<LedgerError> for Error {
    fn from(error: LedgerError) -> Self {
        match error.into_inner().downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => Error::Internal(other.to_string()),
        }
    }
}
