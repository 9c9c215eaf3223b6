//! [`InProcessWorkerPool`]: a fixed pool for running billing without worker hosts (its tests,
//! and the actors' own), as [`crate::MemoryDocStore`] is for documents.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use atelier_protocol::ids::{LeaseId, WorkerId};
use tokio::sync::watch;

use super::{PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool};
use crate::store::BoxFuture;

/// The server's own worker: one per configured class, always free, assigned at once.
pub struct InProcessWorkerPool {
    workers: HashMap<String, WorkerId>,
    device: String,
    /// Heartbeat senders of the current assignments (kept so the receivers stay quiet).
    assigned: Mutex<HashMap<LeaseId, watch::Sender<WorkerHeartbeat>>>,
}

impl InProcessWorkerPool {
    pub fn new(classes: impl IntoIterator<Item = String>, device: impl Into<String>) -> Self {
        let classes: BTreeSet<String> = classes.into_iter().collect();
        InProcessWorkerPool {
            workers: classes
                .into_iter()
                .map(|c| (c, WorkerId::new_random()))
                .collect(),
            device: device.into(),
            assigned: Mutex::new(HashMap::new()),
        }
    }

    /// How many leases hold a worker right now.
    pub fn assigned(&self) -> usize {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl WorkerPool for InProcessWorkerPool {
    fn acquire(
        &self,
        lease: LeaseId,
        gpu_class: &str,
    ) -> BoxFuture<'static, Result<WorkerAssignment, PoolError>> {
        let result = match self.workers.get(gpu_class) {
            Some(worker_id) => {
                let (tx, rx) = watch::channel(WorkerHeartbeat::InProcess);
                self.assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(lease, tx);
                Ok(WorkerAssignment {
                    worker_id: *worker_id,
                    device: self.device.clone(),
                    heartbeat: rx,
                })
            }
            None => Err(PoolError::UnknownClass(gpu_class.to_string())),
        };
        Box::pin(async move { result })
    }

    fn release(&self, lease: LeaseId, _worker: WorkerId) {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease);
    }
}
