//! The operator's view of the job system: connected workers and unfinished jobs, draining a
//! worker and disconnecting the workers of a revoked token.

use atelier_protocol::ids::{AccountId, JobId, SessionId, WorkerId};
use atelier_protocol::worker::ServerMessage;
use serde::Serialize;
use utoipa::ToSchema;

use super::JobService;

/// A connected worker.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerInfo {
    pub worker_id: WorkerId,
    pub name: String,
    pub device: String,
    pub gpu_class: String,
    pub models: Vec<String>,
    /// The worker inside `atelier serve` (no token).
    pub in_process: bool,
    /// The worker token it connected with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<WorkerId>,
    /// Runtime leases it can hold at once, each exclusively (one per device by default).
    pub slots: u32,
    /// One of the jobs it runs now (the first, when it runs several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_job: Option<JobId>,
    /// Every job it runs now (at most one per lease).
    pub running_jobs: Vec<JobId>,
    /// Runtime leases holding one of its slots.
    pub leases: u32,
    /// Drained: no new runtime leases go to it.
    pub draining: bool,
    pub connected_at: i64,
}

/// An unfinished job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobInfo {
    pub job_id: JobId,
    pub session_id: SessionId,
    pub account_id: AccountId,
    /// `queued` or `running`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub step: u32,
    pub total: u32,
}

impl JobService {
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let state = self.board.lock();
        let mut workers: Vec<WorkerInfo> = state
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                worker_id: *id,
                name: w.name.clone(),
                device: w.device.clone(),
                gpu_class: w.gpu_class.clone(),
                models: w.models.clone(),
                in_process: w.token_id.is_none(),
                token_id: w.token_id,
                slots: w.slots,
                current_job: w.running.keys().min().copied(),
                running_jobs: {
                    let mut jobs: Vec<JobId> = w.running.keys().copied().collect();
                    jobs.sort();
                    jobs
                },
                leases: w.leases,
                draining: w.draining,
                connected_at: w.connected_at,
            })
            .collect();
        workers.sort_by_key(|w| w.connected_at);
        workers
    }

    pub fn unfinished_jobs(&self) -> Vec<JobInfo> {
        let state = self.board.lock();
        let mut jobs: Vec<JobInfo> = state
            .jobs
            .iter()
            .map(|(id, v)| JobInfo {
                job_id: *id,
                session_id: v.session,
                account_id: v.account,
                status: v.status.as_str().to_string(),
                position: (v.status == crate::db::jobs::JobStatus::Queued).then_some(v.position),
                worker_id: v.worker,
                node_id: v.node_id.clone(),
                step: v.step,
                total: v.total,
            })
            .collect();
        jobs.sort_by_key(|j| (j.status.clone(), j.position));
        jobs
    }

    /// Drains (or undrains) a worker: leases already on it go on, no new ones come. False when
    /// no such worker is connected.
    pub fn set_draining(&self, worker: WorkerId, draining: bool) -> bool {
        let Some(moves) = self.board.lock().set_draining(worker, draining) else {
            return false;
        };
        self.board.tell(moves, true);
        true
    }

    /// Disconnects every worker connected with one of these tokens (just revoked): their jobs
    /// fail with "worker lost", their leases stop with `worker_lost`. Returns how many.
    pub fn disconnect_token_workers(&self, tokens: &[WorkerId]) -> usize {
        let links: Vec<_> = self
            .board
            .lock()
            .workers
            .iter()
            .filter(|(_, w)| w.token_id.is_some_and(|t| tokens.contains(&t)))
            .map(|(id, w)| (*id, w.link.clone()))
            .collect();
        for (id, link) in &links {
            let _ = link.message(ServerMessage::Refused {
                reason: "the worker token was revoked".into(),
            });
            // It cannot come back: lost now, without the reconnect grace.
            self.worker_lost(*id);
        }
        links.len()
    }
}
