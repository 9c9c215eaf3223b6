//! The job service: one cheap-to-clone handle over the queue, the unfinished jobs and the
//! connected workers.
//!
//! The state sits behind a std `Mutex`: every operation is a short, synchronous update (no
//! `.await` while it is held); I/O (database, events, worker messages) happens after the lock is
//! released.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use atelier_actors::{BoxError, BoxFuture, JobsSnapshot, SessionRegistryHandle};
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, JobId, LeaseId, MediaId, SessionId, WorkerId};
use atelier_protocol::worker::{Device, MediaBytes, ProvidedTensor, ServerMessage, WorkerMessage};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::assignment::{self, AssignmentEvent};
use super::graph::Plan;
use super::queue::FairQueue;
use crate::billing::{Billing, WorkerHeartbeat};
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

/// What `session.hello` and `GET` report about an unfinished job.
#[derive(Debug, Clone)]
pub(super) struct JobView {
    pub(super) session: SessionId,
    pub(super) account: AccountId,
    lease: Option<LeaseId>,
    /// The worker of the job's lease: the only one that may run it.
    pinned: Option<WorkerId>,
    pub(super) status: JobStatus,
    pub(super) position: u32,
    pub(super) worker: Option<WorkerId>,
    device: Option<String>,
    pub(super) node_id: Option<String>,
    pub(super) step: u32,
    pub(super) total: u32,
    plan: Plan,
    /// Cached nodes → their PNG.
    cached: BTreeMap<String, MediaId>,
    /// Handed to the worker with the assignment (then dropped here).
    provided: Vec<ProvidedTensor>,
    media: Vec<MediaBytes>,
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

pub(super) struct WorkerEntry {
    pub(super) name: String,
    pub(super) device: String,
    pub(super) models: Vec<String>,
    pub(super) link: mpsc::UnboundedSender<ServerMessage>,
    pub(super) busy: Option<(JobId, mpsc::UnboundedSender<AssignmentEvent>)>,
    /// The worker token it connected with; `None` for the in-process worker.
    pub(super) token_id: Option<WorkerId>,
    /// An admin drained it: no new runtime leases are placed on it.
    pub(super) draining: bool,
    pub(super) connected_at: i64,
    /// The GPU class runtime leases take it as.
    pub(super) gpu_class: String,
    /// Its liveness for the leases on it (see [`super::leasing`]).
    pub(super) heartbeat: watch::Sender<WorkerHeartbeat>,
    /// Runtime leases on it now.
    pub(super) leases: usize,
}

#[cfg(test)]
impl WorkerEntry {
    /// An idle worker of `gpu_class` that runs nothing, for tests of the board.
    pub(super) fn idle_for_test(gpu_class: &str, heartbeat: WorkerHeartbeat) -> Self {
        let (link, _) = mpsc::unbounded_channel();
        WorkerEntry {
            name: "test".into(),
            device: "cpu".into(),
            models: Vec::new(),
            link,
            busy: None,
            token_id: None,
            draining: false,
            connected_at: 0,
            gpu_class: gpu_class.into(),
            heartbeat: watch::Sender::new(heartbeat),
            leases: 0,
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    queue: FairQueue,
    pub(super) jobs: HashMap<JobId, JobView>,
    pub(super) workers: HashMap<WorkerId, WorkerEntry>,
    /// Leases waiting for a worker of their class to connect.
    pub(super) lease_waiters: Vec<super::leasing::Waiter>,
    /// Which worker each lease is on.
    pub(super) lease_workers: HashMap<LeaseId, WorkerId>,
}

/// The shared table of unfinished jobs; the session actors read it for `session.hello`.
#[derive(Clone, Default)]
pub struct JobBoard(pub(super) Arc<Mutex<State>>);

impl State {
    pub(super) fn workers_link(
        &self,
        worker: WorkerId,
    ) -> Option<mpsc::UnboundedSender<ServerMessage>> {
        self.workers.get(&worker).map(|w| w.link.clone())
    }
}

impl JobBoard {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Each operation leaves the state consistent before it can panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    pub(super) blobs: Blobs,
    pub(super) live: SessionRegistryHandle,
    pub(super) billing: Billing,
    pub(super) limits: Arc<JobLimits>,
    pub(super) webhooks: crate::webhooks::Webhooks,
}

impl JobService {
    pub fn new(
        board: JobBoard,
        db: Db,
        blobs: Blobs,
        live: SessionRegistryHandle,
        billing: Billing,
        limits: JobLimits,
        webhooks: crate::webhooks::Webhooks,
    ) -> Self {
        JobService {
            board,
            db,
            blobs,
            live,
            billing,
            limits: Arc::new(limits),
            webhooks,
        }
    }

    /// Tells the session's participants about a job event, and the job's webhook.
    pub(super) fn announce(&self, session: SessionId, event: StudioEvent) {
        self.webhooks.job_event(session, &event);
        self.live.broadcast_event(session, event);
    }

    pub fn limits(&self) -> &JobLimits {
        &self.limits
    }

    /// Queues a compiled plan. 429 when the account has too many jobs waiting. A plan whose
    /// every node is cached finishes at once, on the server: no worker, no runtime.
    pub async fn submit(
        &self,
        session: SessionId,
        account: AccountId,
        lease: Option<(LeaseId, WorkerId)>,
        plan: Plan,
        inputs: JobInputs,
        options: JobOptions<'_>,
    ) -> Result<JobId> {
        let JobOptions { webhook, batch } = options;
        let job = JobId::new_random();
        if plan.steps.iter().all(|s| s.cached) {
            let plan_json = serde_json::to_value(&plan.steps)
                .map_err(|e| Error::Internal(format!("plan: {e}")))?;
            self.db
                .insert_job(job, session, account, &plan_json, webhook, batch)
                .await?;
            assignment::finish_cached(self, job, session, &plan, &inputs.resolution.cached).await;
            return Ok(job);
        }
        {
            let state = self.board.lock();
            if state.queue.queued_for(account) >= self.limits.max_queued_per_account {
                return Err(Error::TooManyJobs(format!(
                    "you already have {} jobs waiting (the limit); wait for one to start or cancel one",
                    self.limits.max_queued_per_account
                )));
            }
        }
        let plan_json =
            serde_json::to_value(&plan.steps).map_err(|e| Error::Internal(format!("plan: {e}")))?;
        self.db
            .insert_job(job, session, account, &plan_json, webhook, batch)
            .await?;
        {
            let mut state = self.board.lock();
            // The lease may have stopped while the job row was written. Checked under the board
            // lock: a stopping lease marks itself stopping before it sweeps the board for the
            // session's jobs, so either this sees it stopping or its sweep sees this job.
            if let Some((lease, _)) = lease {
                if let Err(refused) = self.still_leased(session, lease) {
                    drop(state);
                    let reason = refused.to_string();
                    if let Err(e) = self
                        .db
                        .finish_job(job, JobStatus::Cancelled, Some(&reason), &[])
                        .await
                    {
                        tracing::error!(%job, error = %e, "could not record the refused job");
                    }
                    return Err(refused);
                }
            }
            state.queue.push(account, job);
            state.jobs.insert(
                job,
                JobView {
                    session,
                    account,
                    lease: lease.map(|(id, _)| id),
                    pinned: lease.map(|(_, worker)| worker),
                    status: JobStatus::Queued,
                    position: 0,
                    worker: None,
                    device: None,
                    node_id: None,
                    step: 0,
                    total: 0,
                    plan,
                    cached: inputs.resolution.cached,
                    provided: inputs.resolution.provided,
                    media: inputs.media,
                },
            );
        }
        self.announce_positions();
        self.dispatch().await;
        Ok(job)
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
    fn announce_positions(&self) {
        let updates: Vec<(SessionId, JobId, u32)> = {
            let mut state = self.board.lock();
            let positions = state.queue.positions();
            positions
                .into_iter()
                .filter_map(|(job, pos)| {
                    let view = state.jobs.get_mut(&job)?;
                    (view.position != pos).then(|| {
                        view.position = pos;
                        (view.session, job, pos)
                    })
                })
                .collect()
        };
        for (session, job_id, position) in updates {
            self.live
                .broadcast_event(session, StudioEvent::JobQueued { job_id, position });
        }
    }

    /// Starts queued jobs on idle workers that have their models.
    pub async fn dispatch(&self) {
        loop {
            let started = {
                let mut state = self.board.lock();
                let state = &mut *state;
                let running: HashMap<AccountId, usize> = state
                    .jobs
                    .values()
                    .filter(|v| v.status == JobStatus::Running)
                    .fold(HashMap::new(), |mut m, v| {
                        *m.entry(v.account).or_default() += 1;
                        m
                    });
                let idle: Vec<WorkerId> = state
                    .workers
                    .iter()
                    .filter(|(_, w)| w.busy.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if idle.is_empty() {
                    None
                } else {
                    let max = self.limits.max_running_per_account;
                    let jobs = &state.jobs;
                    let workers = &state.workers;
                    // A job is eligible when its account is under its running limit and an idle
                    // worker has every model it needs.
                    let fits = |job: &JobView, id: WorkerId, worker: &WorkerEntry| {
                        job.pinned.is_none_or(|pinned| pinned == id)
                            && job
                                .plan
                                .steps
                                .iter()
                                .filter(|s| !s.cached)
                                .all(|s| worker.models.contains(&s.model))
                    };
                    let mut picked = None;
                    let candidate = state
                        .queue
                        .pop_next(|account| running.get(&account).copied().unwrap_or(0) < max);
                    if let Some((account, job)) = candidate {
                        match jobs.get(&job).and_then(|v| {
                            idle.iter()
                                .find(|w| workers.get(w).is_some_and(|we| fits(v, **w, we)))
                        }) {
                            Some(worker) => picked = Some((job, *worker)),
                            None => {
                                // No capable idle worker now: back to the head of its line.
                                state.queue.push_front(account, job);
                            }
                        }
                    }
                    picked.and_then(|(job, worker)| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let w = state.workers.get_mut(&worker)?;
                        w.busy = Some((job, tx));
                        let device = w.device.clone();
                        let link = w.link.clone();
                        let view = state.jobs.get_mut(&job)?;
                        view.status = JobStatus::Running;
                        view.worker = Some(worker);
                        view.device = Some(device.clone());
                        let payload = (
                            std::mem::take(&mut view.provided),
                            std::mem::take(&mut view.media),
                        );
                        Some((job, worker, device, link, rx, view.clone(), payload))
                    })
                }
            };
            let Some((job, worker, device, link, rx, view, (provided, media))) = started else {
                break;
            };
            if let Err(e) = self.db.mark_job_running(job, worker, &device).await {
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
            let _ = link.send(ServerMessage::Assign {
                job_id: job,
                session_id: view.session,
                steps: view.plan.to_run(),
                provided,
                media,
            });
            assignment::start(
                self.clone(),
                job,
                worker,
                view.session,
                view.plan,
                view.cached,
                rx,
            );
            self.announce_positions();
        }
    }

    /// Cancels a job: a queued one at once, a running one within one step (its worker
    /// terminates the running model step). False when the job is not unfinished.
    pub async fn cancel(&self, job: JobId, reason: Option<String>) -> bool {
        enum Was {
            Queued(SessionId),
            Running(mpsc::UnboundedSender<AssignmentEvent>),
            Gone,
        }
        let was = {
            let mut state = self.board.lock();
            match state
                .jobs
                .get(&job)
                .map(|v| (v.status, v.session, v.worker))
            {
                Some((JobStatus::Queued, session, _)) => {
                    state.queue.remove(job);
                    state.jobs.remove(&job);
                    Was::Queued(session)
                }
                Some((JobStatus::Running, _, Some(worker))) => {
                    match state.workers.get(&worker).and_then(|w| w.busy.clone()) {
                        Some((busy, tx)) if busy == job => Was::Running(tx),
                        _ => Was::Gone,
                    }
                }
                _ => Was::Gone,
            }
        };
        match was {
            Was::Queued(session) => {
                if let Err(e) = self
                    .db
                    .finish_job(job, JobStatus::Cancelled, reason.as_deref(), &[])
                    .await
                {
                    tracing::error!(%job, error = %e, "could not record the cancellation");
                }
                self.announce(
                    session,
                    StudioEvent::JobCancelled {
                        job_id: job,
                        reason,
                    },
                );
                self.announce_positions();
                true
            }
            Was::Running(tx) => tx.send(AssignmentEvent::Cancel(reason)).is_ok(),
            Was::Gone => false,
        }
    }

    /// Cancels every unfinished job of a session (its runtime stopped).
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
            self.cancel(job, Some(reason.to_string())).await;
        }
    }

    /// A worker said hello. Returns its id; `link` carries messages to it. `token_id`: the
    /// worker token it connected with (`None`: the in-process worker).
    pub fn register_worker(
        &self,
        name: String,
        devices: &[Device],
        models: Vec<String>,
        gpu_class: Option<String>,
        token_id: Option<WorkerId>,
        link: mpsc::UnboundedSender<ServerMessage>,
    ) -> WorkerId {
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
        tracing::info!(worker = %id, %name, %device, %gpu_class, ?models, "worker joined");
        let _ = link.send(ServerMessage::Welcome {
            worker_id: id,
            heartbeat_interval_ms: u64::try_from(self.limits.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        });
        let heartbeat = if in_process {
            WorkerHeartbeat::InProcess
        } else {
            WorkerHeartbeat::At(crate::db::now_ms())
        };
        {
            let mut state = self.board.lock();
            state.workers.insert(
                id,
                WorkerEntry {
                    name,
                    device,
                    models,
                    link,
                    busy: None,
                    token_id,
                    draining: false,
                    connected_at: crate::db::now_ms(),
                    gpu_class,
                    heartbeat: watch::Sender::new(heartbeat),
                    leases: 0,
                },
            );
            state.serve_lease_waiters();
        }
        let this = self.clone();
        actix_web::rt::spawn(async move { this.dispatch().await });
        id
    }

    /// A message from a worker: routed to the assignment of its current job.
    pub fn worker_message(&self, worker: WorkerId, msg: WorkerMessage) {
        let target = {
            let state = self.board.lock();
            let entry = state.workers.get(&worker);
            if let Some(entry) = entry {
                // Any message proves the worker alive: its leases bill up to now.
                entry.heartbeat.send_if_modified(|h| match h {
                    WorkerHeartbeat::At(t) => {
                        *t = crate::db::now_ms();
                        true
                    }
                    _ => false,
                });
            }
            entry.and_then(|w| w.busy.clone())
        };
        if let Some((job, tx)) = target {
            match msg.job_id() {
                Some(id) if id != job => {
                    tracing::warn!(%worker, %id, "message about a job this worker does not run")
                }
                _ => {
                    let _ = tx.send(AssignmentEvent::FromWorker(msg));
                }
            }
        }
    }

    /// A worker disconnected: its job (if any) fails with "worker lost".
    pub fn worker_gone(&self, worker: WorkerId) {
        let entry = self.board.lock().remove_worker(worker);
        if let Some(entry) = entry {
            tracing::warn!(%worker, name = %entry.name, "worker left");
            if let Some((_, tx)) = entry.busy {
                let _ = tx.send(AssignmentEvent::WorkerLost);
            }
        }
    }

    /// Called by an assignment when its job has ended: frees the worker (unless it is gone) and
    /// starts the next job.
    pub(super) async fn finished(&self, job: JobId, worker: WorkerId, worker_lost: bool) {
        let lease = {
            let mut state = self.board.lock();
            let lease = state.jobs.remove(&job).and_then(|v| v.lease);
            if worker_lost {
                // Do not hand a lost worker another job; it must reconnect.
                if let Some(w) = state.remove_worker(worker) {
                    let _ = w.link.send(ServerMessage::Refused {
                        reason: "heartbeat timeout".into(),
                    });
                }
            } else if let Some(w) = state.workers.get_mut(&worker) {
                w.busy = None;
            }
            lease
        };
        if let Some(lease) = lease {
            self.billing.note_job_activity(lease);
        }
        self.dispatch().await;
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

impl crate::billing::RuntimeHooks for JobService {
    fn interrupt_session_jobs(&self, session: SessionId, reason: &str) {
        let this = self.clone();
        let reason = reason.to_string();
        actix_web::rt::spawn(async move { this.cancel_session_jobs(session, &reason).await });
    }
}
