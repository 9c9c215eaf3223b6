//! A reconnecting worker's leases and jobs: adopted by the node it reconnects to.
//!
//! `atelier worker` keeps running its jobs when its connection drops, and reconnects (to the
//! same node, or through the load balancer to another) with a hello that names its previous
//! connection's worker id, the jobs it still runs and the leases holding its slots
//! (`src/worker/link.rs`). Meanwhile the node it left keeps them for the reconnect grace (see
//! [`JobService::worker_gone`]); a node that died keeps nothing, and the other nodes wait the
//! same grace before they settle its running leases (`Billing::take_over_stale`).
//!
//! Here, before the worker is welcomed (it holds its jobs' reports until then):
//! 1. each announced lease takes one of the worker's slots on the board, and billing adopts it
//!    (`Billing::adopt_lease`: claimed at the next epoch, metered from now); a refused lease
//!    gives the slot back;
//! 2. each announced job whose row still says `running` on the previous connection, under an
//!    adopted lease, goes on: on this node it moves to the new connection (its assignment goes
//!    on, told [`AssignmentEvent::WorkerBack`]); otherwise it is loaded from its row and a new
//!    assignment takes its reports from here on. Any other job is cancelled on the worker;
//! 3. what the previous connection still held on this node and was not re-announced is lost
//!    (its leases stop `worker_lost` at its last heartbeat, its jobs fail or are re-queued).

use std::collections::{BTreeMap, BTreeSet};

use atelier_actors::WorkerResume;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{JobId, LeaseId, WorkerId};
use atelier_protocol::worker::{JobStep, ServerMessage, WorkerMessage};
use tokio::sync::mpsc;

use super::assignment::{self, AssignmentEvent, ASSIGNMENT_INBOX_CAPACITY};
use super::board::JobView;
use super::graph::Plan;
use super::service::JobService;
use crate::billing::WorkerAssignment;
use crate::db::jobs::JobStatus;

/// Metric names of reconnecting workers.
pub mod telemetry {
    /// Counter: reconnected workers whose leases or jobs this node adopted.
    pub const WORKER_RECONNECTS: &str = "atelier_worker_reconnects_total";

    pub fn describe() {
        metrics::describe_counter!(
            WORKER_RECONNECTS,
            "Reconnected workers whose runtime leases or running jobs this node adopted"
        );
    }
}

/// Why a job of a reconnected worker does not go on (it is cancelled on the worker).
const NOT_ADOPTED: &str = "its Pro runtime stopped while its worker was reconnecting";

impl JobService {
    /// Adopts what reconnected worker `worker` re-announced, then welcomes it (see the module's
    /// doc).
    pub(super) async fn adopt(&self, worker: WorkerId, resume: WorkerResume) {
        let WorkerResume {
            previous_worker_id,
            running_jobs,
            leases,
        } = resume;
        let Some(previous) = previous_worker_id.filter(|p| *p != worker) else {
            self.adoption_done(worker, 0, 0);
            return;
        };
        // A previous connection on this node must be the same worker's: the same token.
        let other_token = {
            let state = self.board.lock();
            let token_of = |w: WorkerId| state.workers.get(&w).map(|e| e.token_id);
            matches!((token_of(previous), token_of(worker)), (Some(a), Some(b)) if a != b)
        };
        if other_token {
            tracing::warn!(%worker, %previous, "a reconnecting worker named a connection of another worker token: nothing adopted");
            self.adoption_done(worker, 0, 0);
            return;
        }
        // Its previous connection, if it was on this node, waits for this adoption instead of
        // its grace. (Its drop may not be noticed yet: the worker saw it first.)
        let newly_away = self.board.lock().hold_for_adoption(previous);
        for tx in newly_away.into_iter().flatten() {
            // Waits for room in a busy job's inbox: the event must not be lost (a dropped
            // future would send nothing).
            let _ = tx.send(AssignmentEvent::WorkerAway).await;
        }
        let (slots, class) = {
            let state = self.board.lock();
            match state.workers.get(&worker) {
                Some(w) => (w.slots as usize, w.gpu_class.clone()),
                None => return, // gone again already
            }
        };
        // Hostile input is bounded: at most one lease per slot, one job per lease.
        let leases: BTreeSet<LeaseId> = leases.into_iter().take(slots).collect();
        let jobs: BTreeSet<JobId> = running_jobs.into_iter().take(slots).collect();
        let mut adopted_leases = 0;
        for lease in leases {
            match self.adopt_lease(worker, previous, lease, &class).await {
                Ok(epoch) => {
                    adopted_leases += 1;
                    tracing::info!(%worker, %previous, %lease, epoch, "lease adopted with its reconnected worker");
                }
                Err(why) => {
                    tracing::warn!(%worker, %previous, %lease, %why, "a reconnected worker's lease was not adopted")
                }
            }
        }
        let mut adopted_jobs = 0;
        for job in jobs {
            match self.reattach_job(worker, previous, job).await {
                Ok(()) => {
                    adopted_jobs += 1;
                    tracing::info!(%worker, %previous, %job, "running job re-attached to its reconnected worker");
                }
                Err(why) => {
                    tracing::warn!(%worker, %previous, %job, %why, "a reconnected worker's job does not go on: cancelled on the worker");
                    if let Some(link) = self.board.lock().workers_link(worker) {
                        let _ = link.message(ServerMessage::Cancel { job_id: job });
                    }
                    self.hold_slot_until_ended(worker, job);
                }
            }
        }
        // What the previous connection still holds here was not re-announced: lost now.
        self.worker_lost(previous);
        self.adoption_done(worker, adopted_leases, adopted_jobs);
    }

    /// A job cancelled on a reconnected worker still runs there until the cancel lands (within
    /// a step): its slot stays taken until the worker says the job ended (or is lost), so the
    /// next assignment never finds the worker busy.
    fn hold_slot_until_ended(&self, worker: WorkerId, job: JobId) {
        let (tx, mut inbox) = mpsc::channel(ASSIGNMENT_INBOX_CAPACITY);
        if !self.board.lock().hold_job_slot(worker, job, tx) {
            return;
        }
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let timeout = this.limits.heartbeat_timeout;
            loop {
                match tokio::time::timeout(timeout, inbox.recv()).await {
                    Ok(Some(AssignmentEvent::FromWorker(
                        WorkerMessage::Succeeded { .. }
                        | WorkerMessage::Failed { .. }
                        | WorkerMessage::Cancelled { .. },
                    )))
                    | Ok(Some(AssignmentEvent::WorkerLost) | None)
                    | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
            this.board.lock().release_job_slot(job, worker, false);
            this.dispatch().await;
        });
    }

    /// The worker may take new leases and jobs, and is welcomed.
    fn adoption_done(&self, worker: WorkerId, leases: usize, jobs: usize) {
        if leases + jobs > 0 {
            metrics::counter!(telemetry::WORKER_RECONNECTS).increment(1);
        }
        tracing::info!(%worker, leases, jobs, "reconnected worker welcomed");
        let (moves, assigned) = self.board.lock().adopted(worker);
        self.board.tell(moves, assigned);
        if let Some(link) = self.board.lock().workers_link(worker) {
            let _ = link.message(self.welcome(worker));
        }
        let this = self.clone();
        actix_web::rt::spawn(async move { this.dispatch().await });
    }

    /// One lease: a slot of the worker on the board, then billing's adoption; the new epoch.
    async fn adopt_lease(
        &self,
        worker: WorkerId,
        previous: WorkerId,
        lease: LeaseId,
        class: &str,
    ) -> Result<i64, String> {
        let stored = self
            .db
            .lease(lease)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such lease")?;
        if stored.gpu_class != class {
            return Err(format!(
                "the lease is of class {}, the worker of {class}",
                stored.gpu_class
            ));
        }
        let assignment = {
            let mut state = self.board.lock();
            if !state.bind_lease(lease, worker, class) {
                return Err("the worker has no slot left".into());
            }
            let entry = state.workers.get(&worker).ok_or("the worker left")?;
            WorkerAssignment {
                worker_id: worker,
                device: entry.device.clone(),
                heartbeat: entry.heartbeat.subscribe(),
            }
        };
        match self.billing.adopt_lease(lease, previous, assignment).await {
            Ok(epoch) => Ok(epoch),
            Err(why) => {
                let (moves, assigned) = self.board.lock().release_lease(lease, worker);
                self.board.tell(moves, assigned);
                Err(why)
            }
        }
    }

    /// One job: on this node's board under the previous connection → moved; else loaded from
    /// its row → a new assignment. Its lease must hold one of the worker's slots here now.
    async fn reattach_job(
        &self,
        worker: WorkerId,
        previous: WorkerId,
        job: JobId,
    ) -> Result<(), String> {
        let device = {
            let state = self.board.lock();
            state
                .workers
                .get(&worker)
                .map(|w| w.device.clone())
                .ok_or("the worker left")?
        };
        let row = self
            .db
            .running_job_on(job, previous)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the job is not running on this worker any more")?;
        let lease = row.lease_id.ok_or("the job has no Pro runtime")?;
        let adopted = self.board.lock().holds(lease, worker);
        if !adopted {
            self.end_unadopted(job, row.session_id).await;
            return Err(NOT_ADOPTED.into());
        }
        if !self
            .db
            .reattach_job(job, previous, worker, &device)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err("another node re-attached the job first".into());
        }
        // Still on this board: the same assignment goes on with the new connection.
        let moved = self.board.lock().move_job(job, previous, worker);
        if let Some(tx) = moved {
            // Must arrive: the assignment answers to its new connection from now on.
            let _ = tx.send(AssignmentEvent::WorkerBack(worker)).await;
            return Ok(());
        }
        if self.board.lock().jobs.contains_key(&job) {
            return Err("the job is on this node under another worker".into());
        }
        let steps: Vec<JobStep> =
            serde_json::from_str(&row.plan).map_err(|e| format!("stored plan: {e}"))?;
        let output_nodes: BTreeSet<String> = match &row.output_nodes {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("stored outputs: {e}"))?,
            None => steps.iter().map(|s| s.node_id.clone()).collect(),
        };
        let plan = Plan {
            steps,
            output_nodes,
        };
        let mut view = JobView::queued(
            row.session_id,
            row.account_id,
            Some(lease),
            plan.clone(),
            super::cache::Resolution::default(),
            Vec::new(),
        );
        // Its inputs went with its first assignment: it cannot be re-queued from here.
        view.requeues = view.requeues.max(1);
        let inbox = self
            .board
            .lock()
            .attach_job(job, view, worker)
            .ok_or("the worker left")?;
        assignment::start(
            self.clone(),
            job,
            worker,
            row.session_id,
            plan,
            BTreeMap::new(),
            inbox,
        );
        self.billing.note_job_activity(lease);
        Ok(())
    }

    /// Whether a job this node lost the worker of runs on elsewhere: its row says it is still
    /// running, on another worker connection (its worker reconnected to another node, which
    /// re-attached it). Such a job is not ended or re-queued here.
    pub(super) async fn reattached_elsewhere(&self, job: JobId, worker: WorkerId) -> bool {
        match self.db.job(job).await {
            Ok(Some(row)) => {
                row.status == JobStatus::Running && row.worker_id.is_some_and(|w| w != worker)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%job, error = %e, "could not read the job's row");
                false
            }
        }
    }

    /// A job whose lease was not adopted, left running in the database by a node that is gone:
    /// it ends, cancelled. (On this node the board ends it with its previous connection.)
    async fn end_unadopted(&self, job: JobId, session: atelier_protocol::ids::SessionId) {
        if self.board.lock().jobs.contains_key(&job) {
            return;
        }
        match self
            .db
            .finish_job(job, JobStatus::Cancelled, Some(NOT_ADOPTED), &[])
            .await
        {
            Ok(true) => self.announce(
                session,
                StudioEvent::JobCancelled {
                    job_id: job,
                    reason: Some(NOT_ADOPTED.into()),
                },
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(%job, error = %e, "could not record the job's end"),
        }
    }
}
