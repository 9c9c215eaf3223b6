//! Cluster mode: jobs follow their lease. A job runs on the board of the node that meters its
//! session's lease (the node its worker is connected to), whichever node it was submitted on.
//!
//! [`JobRouting`] is the cluster's durable job queue (the `JobQueue` port): the jobs table keeps
//! each job's record, and each node's job stream (`{prefix}:jobs:node:{node}`, see
//! [`super::job_stream`]) holds the jobs queued for it.
//! - `enqueue` (a submit on any node): `XADD` to the stream of the lease's owner (read from
//!   PostgreSQL).
//! - [`JobRouting::run`], on every node: reads its own stream (blocking, on a connection of its
//!   own), and puts each job on its board under its lease — the same path as a local submit
//!   once the row exists (`JobService::put_on_board`); the entry stays pending under the node
//!   (kept alive every second) until the job ends, then `ended` acknowledges it.
//! - Entries a dead node read and never acknowledged (`XAUTOCLAIM` after the takeover delay),
//!   and entries still undelivered in a dead node's stream, are taken by a live node and sent
//!   on to the stream of the lease's CURRENT owner (the lease moves when its worker reconnects
//!   elsewhere), retried while that owner is itself dead, or failed with a reason when the
//!   lease is settled. The job's status in the database decides whether it still needs to run,
//!   so it runs once.
//! - `recover` after a restart concerns this node's own jobs only: its leases' running jobs
//!   fail (their worker connections are gone); its queued jobs are still in its stream.
//! - Cancelling a job another node runs goes over the control channel
//!   (`RelayMessage::CancelJob`): the node whose board has it cancels it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use atelier_actors::{BoxError, BoxFuture, JobQueue, JobsSnapshot, QueuedJob, RecoveredQueue};
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{JobId, SessionId, WorkerId};
use atelier_protocol::relay::RelayMessage;
use tokio::sync::mpsc;

use super::job_stream::{Item, JobStream, Line, StreamClaim};
use super::{telemetry, Cluster};
use crate::db::jobs::JobStatus;
use crate::db::leases::LeaseStatus;
use crate::db::Db;
use crate::jobs::{JobBoard, JobService};

/// How long one blocking read of this node's stream waits (under the connection's 500 ms
/// response timeout).
const READ_BLOCK: Duration = Duration::from_millis(200);
/// Entries read at once.
const READ_COUNT: usize = 16;
/// How often claims are kept alive, parked entries retried and dead nodes' entries taken.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Relayed cancellations waiting to be applied before more are dropped.
const CANCEL_QUEUE: usize = 1_024;

/// Cancellations of jobs no node had yet (in transit: pushed to a stream, not read yet), kept
/// for the node that reads them next; the oldest beyond this many are forgotten.
const CANCELS_REMEMBERED: usize = 1_024;

/// How long such a cancellation is kept: a pushed job is read within one blocking read (200 ms)
/// of a live node, or taken over within the takeover delay; a minute covers both with margin.
const CANCEL_REMEMBERED_FOR: Duration = Duration::from_secs(60);

/// Why a routed job cannot run: its lease ended before it reached a worker.
const LEASE_ENDED: &str = "the Pro runtime this job was queued under has stopped; run it again";

/// This node's side of the job streams (cheap to clone).
#[derive(Clone)]
pub struct JobRouting {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cluster: Cluster,
    /// Commands (pushes, acks, keep-alives, takeovers).
    streams: JobStream,
    /// Blocking reads of this node's own stream, on a connection of their own.
    reader: JobStream,
    own_line: Line,
    takeover_after: Duration,
    /// The jobs on this node's board (or being put there), each with the stream entry that
    /// holds it once read: acknowledged when the job ends.
    held: Mutex<HashMap<JobId, Option<StreamClaim>>>,
    /// Entries read whose job cannot be placed yet (its lease's owner is silent, or its meter
    /// here has not started): retried every second, kept alive meanwhile.
    parked: Mutex<Vec<StreamClaim>>,
    /// Cancellations that found the job nowhere (oldest first, bounded by
    /// [`CANCELS_REMEMBERED`]): the node that reads the job's entry later ends it instead of
    /// running it, so a cancel answered 202 is never lost in the window between push and read.
    unseen_cancels: Mutex<VecDeque<(JobId, Option<String>, Instant)>>,
    service: OnceLock<JobService>,
}

impl JobRouting {
    pub async fn connect(
        cluster: Cluster,
        db: Db,
        prefix: &str,
        takeover_after: Duration,
    ) -> Result<Self, String> {
        let node = cluster.node_id().to_owned();
        let max_len = super::job_stream::DEFAULT_MAX_LEN;
        let client = cluster.client();
        let streams = JobStream::connect(client, prefix, &node, max_len)
            .await
            .map_err(|e| e.to_string())?;
        let reader = JobStream::connect(client, prefix, &node, max_len)
            .await
            .map_err(|e| e.to_string())?;
        let own_line = Line::node_jobs(&node).map_err(|e| e.to_string())?;
        Ok(JobRouting {
            inner: Arc::new(Inner {
                db,
                cluster,
                streams,
                reader,
                own_line,
                takeover_after,
                held: Mutex::new(HashMap::new()),
                parked: Mutex::new(Vec::new()),
                unseen_cancels: Mutex::new(VecDeque::new()),
                service: OnceLock::new(),
            }),
        })
    }

    pub fn streams(&self) -> &JobStream {
        &self.inner.streams
    }

    fn held(&self) -> MutexGuard<'_, HashMap<JobId, Option<StreamClaim>>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn parked(&self) -> MutexGuard<'_, Vec<StreamClaim>> {
        self.inner
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn me(&self) -> &str {
        self.inner.cluster.node_id()
    }

    /// Starts reading this node's stream, the housekeeping, and relayed cancellations (on the
    /// server's local task set, where the job service spawns its assignments).
    pub fn start(&self, service: JobService) {
        let _ = self.inner.service.set(service.clone());
        let (cancels, mut inbox) = mpsc::channel(CANCEL_QUEUE);
        self.inner.cluster.attach_job_cancels(cancels);
        let this = self.clone();
        actix_web::rt::spawn(async move {
            while let Some((job, reason)) = inbox.recv().await {
                this.cancel_here(&service, job, reason).await;
            }
        });
        actix_web::rt::spawn(self.clone().read_own_stream());
        actix_web::rt::spawn(self.clone().housekeeping());
    }

    /// Asks the node running `job` to cancel it (this node does not have it on its board).
    pub fn cancel_elsewhere(&self, job: JobId, reason: Option<String>) {
        self.inner
            .cluster
            .send(RelayMessage::CancelJob { job, reason });
    }

    async fn cancel_here(&self, service: &JobService, job: JobId, reason: Option<String>) {
        if service.cancel(job, reason.clone()).await {
            return;
        }
        // Parked here (its lease's node is silent): it ends now.
        let parked = {
            let mut parked = self.parked();
            let at = parked.iter().position(|c| c.job() == Some(job));
            at.map(|i| parked.remove(i))
        };
        if let Some(claim) = parked {
            let reason = reason.unwrap_or_else(|| "cancelled".into());
            self.end_unrun(&claim, JobStatus::Cancelled, &reason).await;
            return;
        }
        // Nowhere here: in transit to this node's stream, or another node's job. Kept, so that
        // whichever node reads it next ends it.
        let mut unseen = self.unseen_cancels();
        let now = Instant::now();
        unseen.retain(|(_, _, at)| now.duration_since(*at) < CANCEL_REMEMBERED_FOR);
        if unseen.len() >= CANCELS_REMEMBERED {
            unseen.pop_front();
        }
        unseen.push_back((job, reason, now));
    }

    fn unseen_cancels(&self) -> MutexGuard<'_, VecDeque<(JobId, Option<String>, Instant)>> {
        self.inner
            .unseen_cancels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A cancellation of `job` that arrived before its entry: taken (the reason).
    fn take_unseen_cancel(&self, job: JobId) -> Option<String> {
        let mut unseen = self.unseen_cancels();
        let at = unseen
            .iter()
            .position(|(j, _, at)| *j == job && at.elapsed() < CANCEL_REMEMBERED_FOR)?;
        let (_, reason, _) = unseen.remove(at)?;
        Some(reason.unwrap_or_else(|| "cancelled".into()))
    }

    async fn read_own_stream(self) {
        // After a restart under the same node id: what the previous run read and never
        // finished first.
        match self
            .inner
            .streams
            .own_pending(&self.inner.own_line, 1_000)
            .await
        {
            Ok(claims) => {
                for claim in claims {
                    self.handle(claim).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not re-read this node's pending jobs"),
        }
        loop {
            let read = self
                .inner
                .reader
                .claim_blocking(&self.inner.own_line, READ_COUNT, READ_BLOCK)
                .await;
            match read {
                Ok(claims) => {
                    for claim in claims {
                        metrics::counter!(telemetry::STREAM_CLAIMED, "line" => "jobs").increment(1);
                        self.handle(claim).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read this node's job stream");
                    tokio::time::sleep(HOUSEKEEPING).await;
                }
            }
        }
    }

    /// An entry this node now holds: a job it already has on its board keeps the entry until
    /// it ends; any other is routed.
    async fn handle(&self, claim: StreamClaim) {
        let Some(job) = claim.job() else {
            self.ack(&claim).await;
            return;
        };
        {
            let mut held = self.held();
            if let Some(slot) = held.get_mut(&job) {
                match slot {
                    None => *slot = Some(claim),
                    Some(kept) if kept.entry == claim.entry => {}
                    // A second entry for a job held already (re-routed twice): not needed.
                    Some(_) => {
                        drop(held);
                        self.spawn_ack(claim);
                    }
                }
                return;
            }
        }
        if let Some(claim) = self.route(claim).await {
            self.parked().push(claim);
        }
    }

    /// Puts a queued job on this node's board, or sends it on to the node running its lease,
    /// or ends it when its lease is gone. Returns the claim when it must wait (parked).
    async fn route(&self, claim: StreamClaim) -> Option<StreamClaim> {
        let Some(job) = claim.job() else {
            self.ack(&claim).await;
            return None;
        };
        if let Some(reason) = self.take_unseen_cancel(job) {
            self.end_unrun(&claim, JobStatus::Cancelled, &reason).await;
            return None;
        }
        let row = match self.inner.db.queued_job(job).await {
            Ok(Some(row)) => row,
            // Ended, or running (a worker has it): nothing to route.
            Ok(None) => {
                self.ack(&claim).await;
                return None;
            }
            Err(error) => {
                tracing::warn!(%job, %error, "could not read a routed job; retried");
                return Some(claim);
            }
        };
        let queued = match crate::db::job_queue::queued_job(&row) {
            Ok(queued) => queued,
            Err(why) => {
                self.end_unrun(&claim, JobStatus::Failed, &why).await;
                return None;
            }
        };
        let lease = match queued.lease {
            Some(lease) => self.inner.db.lease(lease).await,
            None => Ok(None),
        };
        let lease = match lease {
            Ok(Some(lease)) if lease.status != LeaseStatus::Stopped => lease,
            Ok(_) => {
                self.end_unrun(&claim, JobStatus::Failed, LEASE_ENDED).await;
                return None;
            }
            Err(error) => {
                tracing::warn!(%job, %error, "could not read a routed job's lease; retried");
                return Some(claim);
            }
        };
        let owner = lease.owner_node.clone().unwrap_or_default();
        if owner == self.me() {
            let service = self.inner.service.get()?;
            if service.session_of_lease(lease.id) != Some(queued.session) {
                // Ours in the database, its meter not (yet) here: wait.
                return Some(claim);
            }
            let session = queued.session;
            self.held().insert(job, Some(claim.clone()));
            if let Err(reason) = crate::jobs::restore::take_routed(service, queued).await {
                tracing::warn!(%job, %reason, "a routed job cannot run");
                let still_held = self.held().remove(&job).flatten();
                if let Err(e) = self
                    .inner
                    .db
                    .finish_job(job, JobStatus::Failed, Some(&reason), &[])
                    .await
                {
                    tracing::error!(%job, error = %e, "could not record the job's end");
                }
                service.announce(
                    session,
                    StudioEvent::JobFailed {
                        job_id: job,
                        error: reason,
                    },
                );
                if let Some(claim) = still_held {
                    self.ack(&claim).await;
                }
            } else if let Some(reason) = self.take_unseen_cancel(job) {
                // Cancelled while it was being put on the board.
                service.cancel(job, Some(reason)).await;
            }
            return None;
        }
        if self.inner.cluster.is_alive(&owner) {
            let pushed = match Line::node_jobs(&owner) {
                Ok(line) => self.inner.streams.push(&line, Item::Job(job)).await.is_ok(),
                Err(_) => false,
            };
            if !pushed {
                return Some(claim);
            }
            metrics::counter!(telemetry::STREAM_PUSHED, "line" => "jobs").increment(1);
            metrics::counter!(telemetry::STREAM_REROUTED).increment(1);
            tracing::info!(%job, to = %owner, from = %claim.line, "queued job sent on to its lease's node");
            self.ack(&claim).await;
            return None;
        }
        // The lease's node is silent: its lease moves (or is settled) soon; try again then.
        Some(claim)
    }

    /// A job that never reached a worker ends (its record, the session, its entry).
    async fn end_unrun(&self, claim: &StreamClaim, status: JobStatus, reason: &str) {
        if let Some(job) = claim.job() {
            let session = self.inner.db.job(job).await.ok().flatten();
            let finished = self
                .inner
                .db
                .finish_job(job, status, Some(reason), &[])
                .await;
            if let Err(e) = finished {
                tracing::error!(%job, error = %e, "could not record the job's end");
            } else if let (Some(record), Some(service)) = (session, self.inner.service.get()) {
                if !record.status.is_finished() {
                    let event = match status {
                        JobStatus::Cancelled => StudioEvent::JobCancelled {
                            job_id: job,
                            reason: Some(reason.to_owned()),
                        },
                        _ => StudioEvent::JobFailed {
                            job_id: job,
                            error: reason.to_owned(),
                        },
                    };
                    service.announce(record.session_id, event);
                }
            }
        }
        self.ack(claim).await;
    }

    async fn ack(&self, claim: &StreamClaim) {
        match self.inner.streams.ack(claim).await {
            Ok(()) => metrics::counter!(telemetry::STREAM_ACKED).increment(1),
            Err(error) => {
                // Left pending: after the takeover delay a node finds the job done and acks it.
                tracing::warn!(%error, entry = %claim.entry, "could not acknowledge a job entry");
            }
        }
    }

    fn spawn_ack(&self, claim: StreamClaim) {
        let this = self.clone();
        actix_web::rt::spawn(async move { this.ack(&claim).await });
    }

    async fn housekeeping(self) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.keep_alive().await;
            let parked: Vec<StreamClaim> = std::mem::take(&mut *self.parked());
            for claim in parked {
                if let Some(claim) = self.route(claim).await {
                    self.parked().push(claim);
                }
            }
            if let Err(error) = self.take_over_dead().await {
                tracing::warn!(%error, "could not take over the job streams of silent nodes");
            }
        }
    }

    /// Refreshes the idle time of every entry this node holds (so no live node takes them).
    async fn keep_alive(&self) {
        let mut by_line: BTreeMap<Line, Vec<StreamClaim>> = BTreeMap::new();
        for claim in self.held().values().flatten() {
            by_line
                .entry(claim.line.clone())
                .or_default()
                .push(claim.clone());
        }
        for claim in self.parked().iter() {
            by_line
                .entry(claim.line.clone())
                .or_default()
                .push(claim.clone());
        }
        for (line, claims) in by_line {
            match self.inner.streams.keep_alive(&line, &claims).await {
                Ok(lost) => {
                    for claim in lost {
                        // Another node took it (this node was taken for dead): it routes it.
                        tracing::warn!(entry = %claim.entry, %line, "a job entry was taken over by another node");
                        if let Some(job) = claim.job() {
                            if let Some(slot) = self.held().get_mut(&job) {
                                if slot.as_ref() == Some(&claim) {
                                    *slot = None;
                                }
                            }
                        }
                        self.parked().retain(|c| c != &claim);
                    }
                }
                Err(error) => tracing::warn!(%error, %line, "could not keep job entries alive"),
            }
        }
    }

    /// Takes the entries silent nodes hold or never read, and routes them.
    async fn take_over_dead(&self) -> Result<(), String> {
        let lines = self
            .inner
            .streams
            .node_lines()
            .await
            .map_err(|e| e.to_string())?;
        for line in lines {
            if line == self.inner.own_line {
                continue;
            }
            let mut claims = self
                .inner
                .streams
                .take_over(&line, self.inner.takeover_after, READ_COUNT)
                .await
                .map_err(|e| e.to_string())?;
            let dead = line
                .node()
                .is_some_and(|node| !self.inner.cluster.is_alive(node));
            if dead {
                claims.extend(
                    self.inner
                        .streams
                        .claim(&line, READ_COUNT)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            for claim in claims {
                metrics::counter!(telemetry::STREAM_TAKEN_OVER, "line" => "jobs").increment(1);
                tracing::warn!(entry = %claim.entry, %line, "took over a job entry of a silent node");
                self.handle(claim).await;
            }
        }
        Ok(())
    }
}

impl JobQueue for JobRouting {
    fn enqueue(&self, job: QueuedJob) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let id = job.id;
            let lease = job.lease;
            JobQueue::enqueue(&self.inner.db, job).await?;
            let owner = match lease {
                Some(lease) => self.inner.db.lease(lease).await?.and_then(|l| l.owner_node),
                None => None,
            };
            let owner = owner.unwrap_or_else(|| self.me().to_owned());
            if owner == self.me() {
                // On this node's board from now on: its entry, when read, is only kept.
                self.held().insert(id, None);
            }
            let line = Line::node_jobs(&owner)?;
            if let Err(error) = self.inner.streams.push(&line, Item::Job(id)).await {
                self.held().remove(&id);
                return Err(error.into());
            }
            metrics::counter!(telemetry::STREAM_PUSHED, "line" => "jobs").increment(1);
            Ok(())
        })
    }

    fn claimed(
        &self,
        job: JobId,
        worker: WorkerId,
        device: String,
    ) -> BoxFuture<'_, Result<(), BoxError>> {
        JobQueue::claimed(&self.inner.db, job, worker, device)
    }

    fn requeued(&self, job: JobId) -> BoxFuture<'_, Result<(), BoxError>> {
        JobQueue::requeued(&self.inner.db, job)
    }

    fn ended(&self, job: JobId) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let claim = self.held().remove(&job).flatten();
            if let Some(claim) = claim {
                self.inner.streams.ack(&claim).await?;
                metrics::counter!(telemetry::STREAM_ACKED).increment(1);
            }
            Ok(())
        })
    }

    fn hand_over(&self, job: JobId) -> BoxFuture<'_, Result<bool, BoxError>> {
        Box::pin(async move {
            // Not held any more: an entry read from now on is routed (to the lease's node).
            let claim = self.held().remove(&job).flatten();
            if let Some(claim) = claim {
                if let Some(claim) = self.route(claim).await {
                    self.parked().push(claim);
                }
            }
            Ok(true)
        })
    }

    fn recover(&self, reason: String) -> BoxFuture<'_, Result<RecoveredQueue, BoxError>> {
        Box::pin(async move {
            let mut recovered = RecoveredQueue::default();
            for (job, session) in self
                .inner
                .db
                .fail_running_jobs_of_node(self.me(), &reason)
                .await?
            {
                recovered.ended.push((job, session, reason.clone()));
            }
            // Queued jobs are in this node's stream (and the dead nodes' in theirs): read
            // there, not from the table, so no job is queued on two nodes.
            Ok(recovered)
        })
    }
}

/// `session.hello`'s unfinished jobs in a cluster: this node's board, plus the session's other
/// unfinished jobs from the database (queued or running on another node).
pub struct ClusterJobs {
    pub board: JobBoard,
    pub db: Db,
}

impl JobsSnapshot for ClusterJobs {
    fn unfinished_jobs(
        &self,
        session: SessionId,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, BoxError>> {
        Box::pin(async move {
            let mut jobs = self.board.unfinished_jobs(session).await?;
            let here: Vec<String> = jobs
                .iter()
                .filter_map(|j| {
                    j.get("job_id")
                        .and_then(|id| id.as_str())
                        .map(str::to_owned)
                })
                .collect();
            for record in self.db.unfinished_jobs_of_session(session).await? {
                if here.contains(&record.id.to_string()) {
                    continue;
                }
                let nodes: Vec<String> = record
                    .plan
                    .as_array()
                    .map(|steps| {
                        steps
                            .iter()
                            .filter_map(|s| s.get("node_id").and_then(|n| n.as_str()))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                jobs.push(serde_json::json!({
                    "job_id": record.id,
                    "status": record.status.as_str(),
                    "position": serde_json::Value::Null,
                    "worker_id": record.worker_id,
                    "device": record.device,
                    "node_id": serde_json::Value::Null,
                    "step": 0,
                    "total": 0,
                    "nodes": nodes,
                    "cached": Vec::<String>::new(),
                }));
            }
            Ok(jobs)
        })
    }
}
