//! The job service: the cheap-to-clone handle the API, the worker sockets and billing use. It
//! does the I/O around the job board ([`super::board`], which owns the state and every change
//! to it): the database row of each job, studio events, messages to workers, billing's idle
//! timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atelier_actors::{
    BoxError, BoxFuture, JobQueue, JobsSnapshot, MediaPermit, QueuedJob, SessionRegistryHandle,
    WorkerLink,
};
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, JobId, LeaseId, SessionId, WorkerId};
use atelier_protocol::worker::{
    Assignment, Device, MediaBytes, ServerMessage, ToWorker, WorkerMessage,
};
use atelier_protocol::worker_frame::{MediaFrame, MediaKind};
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::assignment::{self, AssignmentEvent};
use super::board::{JobBoard, JobView, LineMove, LineNews, Started, WorkerEntry};
use super::graph::Plan;
use crate::billing::{Billing, JobLease, WorkerHeartbeat};
use crate::db::jobs::JobStatus;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::storage::Blobs;

#[derive(Debug, Clone)]
pub struct JobLimits {
    pub max_queued_per_account: usize,
    pub max_running_per_account: usize,
    pub heartbeat_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub preview_min_interval: Duration,
    /// Per-session byte cap of the node cache (0: no caching).
    pub node_cache_max_bytes: u64,
    /// Test models are listed in the palette.
    pub test_models: bool,
}

/// Where events about a job go besides the session, and the batch it belongs to.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobOptions<'a> {
    pub webhook: Option<&'a crate::webhooks::WebhookSpec>,
    pub batch: Option<crate::db::jobs::BatchPlace>,
}

/// What a job brings besides its plan: what the cache found, the media its nodes read.
#[derive(Debug, Clone, Default)]
pub struct JobInputs {
    pub resolution: super::cache::Resolution,
    pub media: Vec<MediaBytes>,
}

fn view_json(id: JobId, v: &JobView) -> serde_json::Value {
    json!({
        "job_id": id,
        "status": v.status.as_str(),
        "position": (v.status == JobStatus::Queued).then_some(v.position),
        "worker_id": v.worker,
        "device": v.device,
        "node_id": v.node_id,
        "step": v.step,
        "total": v.total,
        "nodes": v.plan.steps.iter().map(|s| s.node_id.clone()).collect::<Vec<_>>(),
        "cached": v.cached.keys().collect::<Vec<_>>(),
    })
}

impl JobsSnapshot for JobBoard {
    fn unfinished_jobs(
        &self,
        session: SessionId,
    ) -> BoxFuture<'_, std::result::Result<Vec<serde_json::Value>, BoxError>> {
        let jobs: Vec<serde_json::Value> = self
            .lock()
            .jobs
            .iter()
            .filter(|(_, v)| v.session == session)
            .map(|(id, v)| view_json(*id, v))
            .collect();
        Box::pin(async move { Ok(jobs) })
    }
}

#[derive(Clone)]
pub struct JobService {
    pub(super) board: JobBoard,
    pub(super) db: Db,
    /// The durable copy of the queue (the jobs table on one node).
    pub(super) queue: Arc<dyn JobQueue>,
    pub(super) blobs: Blobs,
    pub(super) live: SessionRegistryHandle,
    pub(super) billing: Billing,
    pub(super) limits: Arc<JobLimits>,
    pub(super) webhooks: crate::webhooks::Webhooks,
}

impl JobService {
    /// Every collaborator the service talks to, each a port or a handle (built once, in `main`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        board: JobBoard,
        db: Db,
        queue: Arc<dyn JobQueue>,
        blobs: Blobs,
        live: SessionRegistryHandle,
        billing: Billing,
        limits: JobLimits,
        webhooks: crate::webhooks::Webhooks,
    ) -> Self {
        let service = JobService {
            board,
            db,
            queue,
            blobs,
            live,
            billing,
            limits: Arc::new(limits),
            webhooks,
        };
        // The board tells the service when leases move in line or get their slot. (The board
        // and the service live as long as the server: the cycle is never collected, by design.)
        service.board.attach_news(Arc::new(service.clone()));
        service
    }

    /// Tells the session's participants about a job event, and the job's webhook.
    pub(crate) fn announce(&self, session: SessionId, event: StudioEvent) {
        self.webhooks.job_event(session, &event);
        self.live.broadcast_event(session, event);
    }

    /// The session whose lease is metered on this node with this id.
    pub(crate) fn session_of_lease(&self, lease: LeaseId) -> Option<SessionId> {
        self.billing.session_of_lease(lease)
    }

    pub fn limits(&self) -> &JobLimits {
        &self.limits
    }

    /// Queues a compiled plan. 429 when the account has too many jobs waiting. A plan whose
    /// every node is cached finishes at once, on the server: no worker, no runtime. In a
    /// cluster, a job whose lease is metered by another node goes to that node's job stream
    /// (it runs on that node's board, see `crate::cluster::job_routing`).
    pub async fn submit(
        &self,
        session: SessionId,
        account: AccountId,
        lease: Option<JobLease>,
        plan: Plan,
        inputs: JobInputs,
        options: JobOptions<'_>,
    ) -> Result<JobId> {
        let JobOptions { webhook, batch } = options;
        let job = JobId::new_random();
        let plan_json =
            serde_json::to_value(&plan.steps).map_err(|e| Error::Internal(format!("plan: {e}")))?;
        if plan.steps.iter().all(|s| s.cached) {
            self.db
                .insert_job(job, session, account, &plan_json, webhook, batch)
                .await?;
            assignment::finish_cached(self, job, session, &plan, &inputs.resolution.cached).await;
            return Ok(job);
        }
        let here = !matches!(lease, Some(JobLease::Elsewhere { .. }));
        let queued = if here {
            self.board.lock().queued_for(account)
        } else {
            // Queued on another node's board: counted from the database.
            usize::try_from(self.db.queued_count_of_account(account).await?).unwrap_or(usize::MAX)
        };
        if queued >= self.limits.max_queued_per_account {
            return Err(Error::TooManyJobs(format!(
                "you already have {} jobs waiting (the limit); wait for one to start or cancel one",
                self.limits.max_queued_per_account
            )));
        }
        let lease = lease.as_ref().map(JobLease::lease_id);
        // The row is the durable copy of the queued job: written before the job is on the board,
        // so a restart finds every job anyone was told about (see `requeue_after_restart`).
        self.db
            .insert_job(job, session, account, &plan_json, webhook, batch)
            .await?;
        let queued = self
            .queue
            .enqueue(QueuedJob {
                id: job,
                session,
                account,
                lease,
                steps: plan_json,
                output_nodes: plan.output_nodes.iter().cloned().collect(),
                media_ids: inputs.media.iter().map(|m| m.media_id.clone()).collect(),
                requeues: 0,
            })
            .await;
        if let Err(e) = queued {
            let reason = format!("the job could not be queued: {e}");
            self.record_end(job, JobStatus::Failed, &reason).await;
            return Err(Error::Internal(reason));
        }
        if !here {
            // Queued in the stream of the node that runs the lease: it takes it from there.
            return Ok(job);
        }
        let view = JobView::queued(
            session,
            account,
            lease,
            plan,
            inputs.resolution,
            inputs.media,
        );
        self.put_on_board(job, view).await?;
        Ok(job)
    }

    /// A job whose row is written and durably queued joins this node's board (a local submit,
    /// or a job another node routed here), then whatever can start starts. Refused (and ended
    /// `cancelled`) when its lease stopped meanwhile; a job already on the board stays as it is.
    pub(super) async fn put_on_board(&self, job: JobId, view: JobView) -> Result<()> {
        {
            let mut state = self.board.lock();
            // The lease may have stopped while the job row was written. Checked under the board
            // lock: a stopping lease marks itself stopping before it sweeps the board for the
            // session's jobs, so either this sees it stopping or its sweep sees this job.
            if let Some(lease) = view.lease {
                if let Err(refused) = self.may_queue_under(view.session, lease) {
                    drop(state);
                    self.record_end(job, JobStatus::Cancelled, &refused.to_string())
                        .await;
                    return Err(refused);
                }
            }
            if state.jobs.contains_key(&job) {
                return Ok(());
            }
            state.enqueue(job, view);
        }
        self.announce_positions();
        self.dispatch().await;
        Ok(())
    }

    /// Records the end of a job that never reached a worker, and lets the durable queue go.
    async fn record_end(&self, job: JobId, status: JobStatus, reason: &str) {
        if let Err(e) = self.db.finish_job(job, status, Some(reason), &[]).await {
            tracing::error!(%job, error = %e, "could not record the job's end");
        }
        self.queue_ended(job).await;
    }

    /// The job left this node's board for good: the durable queue lets it go.
    pub(super) async fn queue_ended(&self, job: JobId) {
        if let Err(e) = self.queue.ended(job).await {
            tracing::warn!(%job, error = %e, "could not release the job's queue entry");
        }
    }

    /// Puts a job found queued in the database at start-up back on the board, behind the ones
    /// put back before it (call in their submission order).
    pub(super) fn restore_queued(&self, job: JobId, view: JobView) {
        self.board.lock().enqueue(job, view);
    }

    /// Ok while `lease` is still open as the session's lease here, even when its slot is not
    /// (yet) assigned: a job may wait on the board for it (a job routed to a node whose lease
    /// resumes after a restart).
    fn may_queue_under(&self, session: SessionId, lease: LeaseId) -> Result<()> {
        match self.still_leased(session, lease) {
            Err(Error::Conflict(_)) if self.billing.session_of_lease(lease) == Some(session) => {
                Ok(())
            }
            other => other,
        }
    }

    /// Ok while `lease` is still the session's running lease.
    fn still_leased(&self, session: SessionId, lease: LeaseId) -> Result<()> {
        match self.billing.require_active_lease(session) {
            Ok(active) if active.lease_id == lease => Ok(()),
            Ok(_) => Err(Error::PaymentRequired(
                "the Pro runtime this job was started under has stopped; run it again".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Tells every queued job's session its current place in line.
    pub(super) fn announce_positions(&self) {
        let updates = self.board.lock().moved_positions();
        for (session, job_id, position) in updates {
            self.live
                .broadcast_event(session, StudioEvent::JobQueued { job_id, position });
        }
    }

    /// Starts every queued job that can start now (see [`super::board::State::next_assignment`]).
    pub async fn dispatch(&self) {
        loop {
            let started = self
                .board
                .lock()
                .next_assignment(self.limits.max_running_per_account);
            let Some(Started {
                job,
                worker,
                device,
                link,
                inbox,
                view,
            }) = started
            else {
                break;
            };
            if let Err(e) = self.queue.claimed(job, worker, device.clone()).await {
                tracing::error!(%job, error = %e, "could not record the job start");
            }
            if let Some(lease) = view.lease {
                self.billing.note_job_activity(lease);
            }
            self.announce(
                view.session,
                StudioEvent::JobStarted {
                    job_id: job,
                    worker_id: worker,
                    device: device.clone(),
                },
            );
            let assign = Assignment {
                job_id: job,
                session_id: view.session,
                steps: view.plan.to_run(),
                provided: view.provided,
                media: view.media,
            };
            // A failed send: the worker is being closed (too slow: a full link raises its
            // overflow) or is gone, and its end fails or re-queues the job as a lost worker's.
            if let Err(e) = link.send(ToWorker::Assign(Box::new(assign))) {
                tracing::warn!(%job, %worker, error = %e, "the assign did not go out");
            }
            assignment::start(
                self.clone(),
                job,
                worker,
                view.session,
                view.plan,
                view.cached,
                inbox,
            );
            self.announce_positions();
        }
    }

    /// Cancels a job: a queued one at once, a running one within one step (its worker
    /// terminates the running model step). False when the job is not unfinished.
    pub async fn cancel(&self, job: JobId, reason: Option<String>) -> bool {
        let (queued, running) = {
            let mut state = self.board.lock();
            match state.remove_queued(job) {
                Some(session) => (Some(session), None),
                None => (None, state.running_inbox(job)),
            }
        };
        if let Some(session) = queued {
            if let Err(e) = self
                .db
                .finish_job(job, JobStatus::Cancelled, reason.as_deref(), &[])
                .await
            {
                tracing::error!(%job, error = %e, "could not record the cancellation");
            }
            self.queue_ended(job).await;
            self.announce(
                session,
                StudioEvent::JobCancelled {
                    job_id: job,
                    reason,
                },
            );
            self.announce_positions();
            return true;
        }
        match running {
            // Waits while the assignment is behind: a cancel is never dropped.
            Some(tx) => tx.send(AssignmentEvent::Cancel(reason)).await.is_ok(),
            None => false,
        }
    }

    /// Cancels every unfinished job of a session (its runtime stopped).
    /// A lease that moved to another node (`lease_taken_over`) hands its queued jobs over to
    /// that node instead (a cluster's durable queue re-routes them).
    pub async fn cancel_session_jobs(&self, session: SessionId, reason: &str) {
        let jobs: Vec<JobId> = self
            .board
            .lock()
            .jobs
            .iter()
            .filter(|(_, v)| v.session == session)
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            if reason == crate::billing::reason::TAKEN_OVER && self.hand_over(job).await {
                continue;
            }
            self.cancel(job, Some(reason.to_string())).await;
        }
    }

    /// Takes a queued job off the board and hands it to the durable queue to run on the node
    /// its lease moved to. False (and the job stays) when it is not queued here or the queue
    /// cannot hand it over.
    async fn hand_over(&self, job: JobId) -> bool {
        let view = {
            let mut state = self.board.lock();
            let queued = state
                .jobs
                .get(&job)
                .is_some_and(|v| v.status == JobStatus::Queued);
            if !queued {
                return false;
            }
            let view = state.jobs.get(&job).cloned();
            state.remove_queued(job);
            view
        };
        match self.queue.hand_over(job).await {
            Ok(true) => {
                tracing::info!(%job, "queued job handed over with its lease");
                self.announce_positions();
                true
            }
            result => {
                if let Err(e) = result {
                    tracing::warn!(%job, error = %e, "could not hand a queued job over");
                }
                // Back on the board, to be cancelled as usual.
                if let Some(view) = view {
                    self.board.lock().enqueue(job, view);
                }
                false
            }
        }
    }

    /// A worker said hello. Returns its id; `link` carries messages to it. `token_id`: the
    /// worker token it connected with (`None`: the in-process worker). `slots`: how many leases
    /// it holds at once (at least 1).
    pub fn register_worker(
        &self,
        hello: WorkerJoin,
        token_id: Option<WorkerId>,
        link: WorkerLink,
    ) -> WorkerId {
        let WorkerJoin {
            name,
            devices,
            models,
            gpu_class,
            slots,
            resume,
        } = hello;
        let in_process = token_id.is_none();
        let id = WorkerId::new_random();
        let device = devices
            .first()
            .map_or_else(|| "cpu".to_string(), |d| d.name.clone());
        let gpu_class = gpu_class.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            devices
                .first()
                .map_or_else(|| "cpu".to_string(), |d| d.execution_provider.clone())
        });
        let slots = slots.clamp(1, MAX_WORKER_SLOTS);
        let reconnecting = resume.previous_worker_id.is_some() && !in_process;
        tracing::info!(worker = %id, %name, %device, %gpu_class, slots, ?models,
            previous = ?resume.previous_worker_id, jobs = resume.running_jobs.len(),
            leases = resume.leases.len(), "worker joined");
        // A reconnecting worker is welcomed once its leases and jobs are adopted: it holds back
        // what its jobs reported meanwhile until then, so none of it reaches a job not yet
        // re-attached.
        if !reconnecting {
            let _ = link.message(self.welcome(id));
        }
        let heartbeat = if in_process {
            WorkerHeartbeat::InProcess
        } else {
            WorkerHeartbeat::At(crate::db::now_ms())
        };
        let entry = WorkerEntry {
            name,
            device,
            models,
            link,
            running: HashMap::new(),
            slots,
            token_id,
            draining: false,
            connected_at: crate::db::now_ms(),
            gpu_class,
            heartbeat: watch::Sender::new(heartbeat),
            leases: 0,
            away: false,
            adopting: reconnecting,
        };
        let moves = self.board.lock().add_worker(id, entry);
        self.board.tell(moves, false);
        let this = self.clone();
        if reconnecting {
            actix_web::rt::spawn(async move { this.adopt(id, resume).await });
        } else {
            actix_web::rt::spawn(async move { this.dispatch().await });
        }
        id
    }

    /// What a worker is told once it may send its jobs' reports.
    pub(super) fn welcome(&self, id: WorkerId) -> ServerMessage {
        ServerMessage::Welcome {
            worker_id: id,
            heartbeat_interval_ms: u64::try_from(self.limits.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// A message from a worker: routed to the assignment of the job it is about; a heartbeat
    /// to every job the worker runs (it proves them alive). `Some` when an assignment's inbox is
    /// full: the future delivers the message once there is room, and the worker's socket reads
    /// nothing more until then (backpressure). A heartbeat is dropped instead (what fills the
    /// inbox proves the worker alive just as well).
    pub fn worker_message(
        &self,
        worker: WorkerId,
        msg: WorkerMessage,
    ) -> Option<BoxFuture<'static, ()>> {
        let targets: Vec<(JobId, mpsc::Sender<AssignmentEvent>)> = {
            let state = self.board.lock();
            let entry = state.workers.get(&worker)?;
            // Any message proves the worker alive: its leases bill up to now.
            entry.heartbeat.send_if_modified(|h| match h {
                WorkerHeartbeat::At(t) => {
                    *t = crate::db::now_ms();
                    true
                }
                _ => false,
            });
            match msg.job_id() {
                Some(job) => match entry.running.get(&job) {
                    Some(tx) => vec![(job, tx.clone())],
                    None => {
                        tracing::warn!(%worker, %job, "message about a job this worker does not run");
                        Vec::new()
                    }
                },
                None => entry
                    .running
                    .iter()
                    .map(|(job, tx)| (*job, tx.clone()))
                    .collect(),
            }
        };
        let heartbeat = msg.job_id().is_none();
        let mut behind = Vec::new();
        for (_, tx) in targets {
            match tx.try_send(AssignmentEvent::FromWorker(msg.clone())) {
                Err(TrySendError::Full(event)) if !heartbeat => behind.push((tx, event)),
                // Sent; a heartbeat to an assignment that is behind; or the job just ended.
                _ => {}
            }
        }
        if behind.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for (tx, event) in behind {
                let _ = tx.send(event).await;
            }
        }))
    }

    /// A worker's preview or node output: to the assignment of its job, holding its share of
    /// the worker's media budget until handled. A frame about a job the worker no longer runs
    /// (it was cancelled a moment ago) is dropped. When the assignment is behind, a preview is
    /// dropped (the next one replaces it) and a node output waits, as in
    /// [`JobService::worker_message`].
    pub fn worker_media(
        &self,
        worker: WorkerId,
        frame: MediaFrame,
        permit: MediaPermit,
    ) -> Option<BoxFuture<'static, ()>> {
        let target = {
            let state = self.board.lock();
            let entry = state.workers.get(&worker)?;
            entry.heartbeat.send_if_modified(|h| match h {
                WorkerHeartbeat::At(t) => {
                    *t = crate::db::now_ms();
                    true
                }
                _ => false,
            });
            entry.running.get(&frame.job_id).cloned()
        };
        let Some(tx) = target else {
            tracing::warn!(%worker, job = %frame.job_id, "media about a job this worker does not run");
            return None;
        };
        let preview = matches!(frame.kind, MediaKind::Preview { .. });
        match tx.try_send(AssignmentEvent::Media(frame, permit)) {
            Err(TrySendError::Full(event)) if !preview => Some(Box::pin(async move {
                let _ = tx.send(event).await;
            })),
            _ => None,
        }
    }

    /// A worker disconnected. A remote worker may come back (to this node or another) within
    /// the reconnect grace — the heartbeat timeout — and take its leases and running jobs with
    /// it (see [`super::reattach`]); until then they wait, billed only up to its last
    /// heartbeat. After the grace each job it ran learns its worker is lost, and each lease on
    /// it stops `worker_lost` at its last heartbeat. The in-process worker is lost at once.
    pub fn worker_gone(&self, worker: WorkerId) {
        let remote = {
            let state = self.board.lock();
            state.workers.get(&worker).map(|w| w.token_id.is_some())
        };
        match remote {
            None => {}
            Some(false) => self.worker_lost(worker),
            Some(true) => {
                let Some(running) = self.board.lock().mark_away(worker) else {
                    return;
                };
                let grace = self.limits.heartbeat_timeout;
                tracing::warn!(%worker, jobs = running.len(), grace_s = grace.as_secs(),
                    "worker disconnected; its leases and jobs wait for it to reconnect");
                for tx in &running {
                    // Only a log line and a restart of the job's heartbeat clock: a job whose
                    // inbox is full is busy with its worker's last messages and does not need it.
                    let _ = tx.try_send(AssignmentEvent::WorkerAway);
                }
                let this = self.clone();
                actix_web::rt::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let entry = this.board.lock().remove_if_away(worker);
                    if entry.is_some() {
                        tracing::warn!(%worker, "worker did not reconnect within the grace: lost");
                    }
                    this.lose(entry);
                });
            }
        }
    }

    /// A worker is gone for good: each job it ran learns its worker is lost, each lease on it
    /// that it is lost as of its last heartbeat.
    pub(super) fn worker_lost(&self, worker: WorkerId) {
        let entry = self.board.lock().remove_worker(worker);
        self.lose(entry);
    }

    /// A worker just taken off the board: its jobs learn it is lost.
    fn lose(&self, entry: Option<WorkerEntry>) {
        if let Some(entry) = entry {
            tracing::warn!(name = %entry.name, "worker left");
            // An assignment whose inbox is full learns it when the inbox runs dry: its
            // sender is dropped with the entry.
            for tx in entry.running.values() {
                let _ = tx.try_send(AssignmentEvent::WorkerLost);
            }
        }
    }

    /// Called by an assignment when its job has ended: frees the worker's slot (unless the
    /// worker is gone) and starts the next job.
    pub(super) async fn finished(&self, job: JobId, worker: WorkerId, worker_lost: bool) {
        let lease = self.board.lock().finish(job, worker, worker_lost);
        if let Some(lease) = lease {
            self.billing.note_job_activity(lease);
        }
        self.queue_ended(job).await;
        self.dispatch().await;
    }

    /// A running job whose worker was lost before it produced anything goes back to the head of
    /// the queue (`job.requeued {reason}`), once: false when it was re-queued before (it then
    /// fails as usual).
    pub(super) async fn requeue(&self, job: JobId, worker: WorkerId, reason: String) -> bool {
        // Recorded and announced before the job is back on the board, where a dispatch may
        // start it at once: `job.requeued` always comes before its next `job.started`.
        let Some((session, lease)) = self.board.lock().requeue_allowed(job) else {
            return false;
        };
        // Only under the lease it ran under: a lease that stopped meanwhile interrupted the
        // session's jobs (this one, still running, was not on its list).
        if self.still_leased(session, lease).is_err() {
            return false;
        }
        tracing::warn!(%job, %worker, %reason, "worker lost before the job produced anything: re-queued");
        if let Err(e) = self.queue.requeued(job).await {
            tracing::error!(%job, error = %e, "could not record the re-queue");
        }
        self.announce(
            session,
            StudioEvent::JobRequeued {
                job_id: job,
                reason,
            },
        );
        let requeued = {
            let mut state = self.board.lock();
            // Checked again under the board lock, as `submit` does: either this sees the lease
            // stopping, or the stopping lease's sweep sees the job queued and cancels it.
            let leased = self.still_leased(session, lease).is_ok();
            state.release_job_slot(job, worker, true);
            leased && state.requeue(job)
        };
        if !requeued {
            return false;
        }
        self.announce_positions();
        self.dispatch().await;
        true
    }

    /// Records progress for `session.hello`.
    pub(super) fn note_progress(&self, job: JobId, node_id: &str, step: u32, total: u32) {
        let lease = {
            let mut state = self.board.lock();
            state.jobs.get_mut(&job).and_then(|v| {
                v.node_id = Some(node_id.to_string());
                v.step = step;
                v.total = total;
                v.lease
            })
        };
        if let Some(lease) = lease {
            self.billing.note_job_activity(lease);
        }
    }

    pub(super) fn job_account(&self, job: JobId) -> Option<AccountId> {
        self.board.lock().jobs.get(&job).map(|v| v.account)
    }

    /// Whether a job is still unfinished (queued or running).
    pub fn is_active(&self, job: JobId) -> bool {
        self.board.lock().jobs.contains_key(&job)
    }
}

/// Most slots one worker may announce.
pub const MAX_WORKER_SLOTS: u32 = atelier_protocol::worker::MAX_SLOTS;

/// What a worker announces when it joins.
#[derive(Debug, Clone)]
pub struct WorkerJoin {
    pub name: String,
    pub devices: Vec<Device>,
    pub models: Vec<String>,
    pub gpu_class: Option<String>,
    /// Leases it can hold at once (one per device unless configured).
    pub slots: u32,
    /// What a reconnecting worker re-announces (empty for a new one).
    pub resume: atelier_actors::WorkerResume,
}

impl WorkerJoin {
    /// From a worker's hello; `None` for any other message.
    pub fn from_hello(msg: WorkerMessage) -> Option<WorkerJoin> {
        let WorkerMessage::Hello {
            name,
            devices,
            models,
            gpu_class,
            slots,
            previous_worker_id,
            running_jobs,
            leases,
            ..
        } = msg
        else {
            return None;
        };
        let per_device = u32::try_from(devices.len()).unwrap_or(u32::MAX).max(1);
        Some(WorkerJoin {
            name,
            devices,
            models,
            gpu_class,
            slots: slots.unwrap_or(per_device),
            resume: atelier_actors::WorkerResume {
                previous_worker_id,
                running_jobs,
                leases,
            },
        })
    }
}

/// The lease lines' news: positions to the waiting leases' sessions, and a lease that got its
/// slot may start its session's queued jobs.
impl LineNews for JobService {
    fn moved(&self, moves: Vec<LineMove>) {
        for LineMove {
            lease,
            gpu_class,
            position,
        } in moves
        {
            if let Some(session) = self.billing.session_of_lease(lease) {
                self.live.broadcast_event(
                    session,
                    StudioEvent::RuntimeQueued {
                        lease_id: lease,
                        gpu_class,
                        position,
                    },
                );
            }
        }
    }

    fn slot_assigned(&self) {
        let this = self.clone();
        actix_web::rt::spawn(async move { this.dispatch().await });
    }
}

impl crate::billing::RuntimeHooks for JobService {
    fn interrupt_session_jobs(&self, session: SessionId, reason: &str) {
        let this = self.clone();
        let reason = reason.to_string();
        actix_web::rt::spawn(async move { this.cancel_session_jobs(session, &reason).await });
    }
}
