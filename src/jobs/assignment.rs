//! One job on one worker — the job's worker lease. A task owns the assignment: it is the only
//! place that turns the worker's messages into studio events, media and document outputs, so
//! every participant sees them in one order. It ends the job exactly once: succeeded, failed
//! (including "worker lost" when heartbeats stop), or cancelled — except that a job whose worker
//! is lost before it sent anything of the job (no progress, preview or node output) goes back to
//! the head of the queue, once (`job.requeued`), and a new assignment takes it from there.

use std::collections::BTreeMap;
use std::time::Instant;

use atelier_actors::MediaPermit;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{JobId, MediaId, SessionId, WorkerId};
use atelier_protocol::worker::{ServerMessage, WorkerMessage};
use atelier_protocol::worker_frame::{MediaFrame, MediaKind};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::graph::{self, Plan};
use super::service::JobService;
use crate::db::jobs::JobStatus;
use crate::db::media::NewMedia;

/// Events that may wait for one assignment: a few steps' progress and previews while it stores a
/// node output (the slowest thing it does). Beyond it the worker's socket stops being read
/// (backpressure on the worker, not loss): previews are dropped then, nothing else.
pub const ASSIGNMENT_INBOX_CAPACITY: usize = 32;

pub enum AssignmentEvent {
    FromWorker(WorkerMessage),
    /// A preview or node output, with its share of the worker's media budget: held until it
    /// is relayed or stored, so a worker cannot queue more than its budget here.
    Media(MediaFrame, MediaPermit),
    Cancel(Option<String>),
    WorkerLost,
    /// The worker's connection dropped: the job waits for it to reconnect (the grace).
    WorkerAway,
    /// The worker reconnected (to this node) as this worker: the job goes on there.
    WorkerBack(WorkerId),
}

enum End {
    Succeeded,
    Failed(String),
    Cancelled(Option<String>),
}

pub(super) fn start(
    service: JobService,
    job: JobId,
    worker: WorkerId,
    session: SessionId,
    plan: Plan,
    cached: BTreeMap<String, MediaId>,
    rx: mpsc::Receiver<AssignmentEvent>,
) {
    actix_web::rt::spawn(async move {
        let mut run = Assignment {
            service,
            job,
            worker,
            session,
            plan,
            outputs: BTreeMap::new(),
            last_preview: None,
            cancel_reason: None,
            produced: false,
        };
        let end = match run.announce_cached(&cached).await {
            Ok(()) => None,
            Err(e) => {
                run.send_to_worker(ServerMessage::Cancel { job_id: job });
                Some((End::Failed(e), false))
            }
        };
        let (end, lost) = match end {
            Some(end) => end,
            None => run.drive(rx).await,
        };
        run.finish(end, lost).await;
    });
}

/// A job whose every node is cached: reported and finished here, with no worker and no runtime.
pub(super) async fn finish_cached(
    service: &JobService,
    job: JobId,
    session: SessionId,
    plan: &Plan,
    cached: &BTreeMap<String, MediaId>,
) {
    let mut run = Assignment {
        service: service.clone(),
        job,
        worker: WorkerId(uuid::Uuid::nil()),
        session,
        plan: plan.clone(),
        outputs: BTreeMap::new(),
        last_preview: None,
        cancel_reason: None,
        produced: false,
    };
    let end = match run.announce_cached(cached).await {
        Ok(()) => End::Succeeded,
        Err(e) => End::Failed(e),
    };
    run.record_end(end).await;
}

struct Assignment {
    service: JobService,
    job: JobId,
    worker: WorkerId,
    session: SessionId,
    plan: Plan,
    outputs: BTreeMap<String, Vec<MediaId>>,
    last_preview: Option<Instant>,
    cancel_reason: Option<Option<String>>,
    /// The worker reported progress, a preview or a node output of this job: it cannot be
    /// re-queued any more (participants saw it run; its previews and outputs are not sent twice).
    produced: bool,
}

impl Assignment {
    /// Every cached node, in plan order: its PNG back into `outputs[node]` of the document and
    /// `job.node_cached` to every participant.
    async fn announce_cached(&mut self, cached: &BTreeMap<String, MediaId>) -> Result<(), String> {
        let nodes: Vec<String> = self
            .plan
            .steps
            .iter()
            .filter(|s| s.cached)
            .map(|s| s.node_id.clone())
            .collect();
        for node_id in nodes {
            let Some(media) = cached.get(&node_id).copied() else {
                continue;
            };
            self.record_output(&node_id, media).await?;
            self.service.live.broadcast_event(
                self.session,
                StudioEvent::JobNodeCached {
                    job_id: self.job,
                    node_id,
                    outputs: vec![media],
                },
            );
        }
        Ok(())
    }

    async fn drive(&mut self, mut rx: mpsc::Receiver<AssignmentEvent>) -> (End, bool) {
        let timeout = self.service.limits().heartbeat_timeout;
        loop {
            // Any message from the worker (heartbeats included) proves it is alive.
            let event = match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(event)) => event,
                // Its worker left the board (a full inbox did not take `WorkerLost`).
                Ok(None) => {
                    return (
                        End::Failed("worker lost: its connection closed".into()),
                        true,
                    )
                }
                Err(_) => {
                    return (
                        End::Failed(format!(
                            "worker lost: no heartbeat for {} s",
                            timeout.as_secs()
                        )),
                        true,
                    )
                }
            };
            match event {
                AssignmentEvent::WorkerAway => {
                    tracing::info!(job = %self.job, worker = %self.worker, "the job's worker disconnected; waiting for it to reconnect");
                }
                AssignmentEvent::WorkerBack(worker) => {
                    tracing::info!(job = %self.job, from = %self.worker, to = %worker, "the job's worker reconnected; the job goes on");
                    self.worker = worker;
                    // A cancel asked while it was away never reached it.
                    if self.cancel_reason.is_some() {
                        self.send_to_worker(ServerMessage::Cancel { job_id: self.job });
                    }
                }
                AssignmentEvent::WorkerLost => {
                    return (
                        End::Failed("worker lost: its connection closed".into()),
                        true,
                    )
                }
                AssignmentEvent::Cancel(reason) => {
                    if self.cancel_reason.is_none() {
                        self.cancel_reason = Some(reason);
                        self.send_to_worker(ServerMessage::Cancel { job_id: self.job });
                    }
                }
                AssignmentEvent::FromWorker(msg) => {
                    if let Some(end) = self.on_worker(msg).await {
                        return (end, false);
                    }
                }
                AssignmentEvent::Media(frame, permit) => {
                    let end = self.on_media(frame).await;
                    drop(permit);
                    if let Some(end) = end {
                        return (end, false);
                    }
                }
            }
        }
    }

    fn send_to_worker(&self, msg: ServerMessage) {
        let link = self.service.board.lock().workers_link(self.worker);
        if let Some(link) = link {
            let _ = link.message(msg);
        }
    }

    async fn on_worker(&mut self, msg: WorkerMessage) -> Option<End> {
        if matches!(msg, WorkerMessage::Progress { .. }) {
            self.produced = true;
        }
        match msg {
            WorkerMessage::Hello { .. } | WorkerMessage::Heartbeat => None,
            WorkerMessage::Progress {
                node_id,
                step,
                total,
                ..
            } => {
                self.service.note_progress(self.job, &node_id, step, total);
                self.service.announce(
                    self.session,
                    StudioEvent::JobProgress {
                        job_id: self.job,
                        node_id,
                        step,
                        total,
                    },
                );
                None
            }
            WorkerMessage::Succeeded { .. } => Some(End::Succeeded),
            WorkerMessage::Failed { error, .. } => Some(End::Failed(error)),
            WorkerMessage::Cancelled { .. } => {
                Some(End::Cancelled(self.cancel_reason.clone().flatten()))
            }
        }
    }

    async fn on_media(&mut self, frame: MediaFrame) -> Option<End> {
        self.produced = true;
        let live = self.service.live.clone();
        let MediaFrame {
            node_id,
            mime,
            kind,
            image,
            ..
        } = frame;
        match kind {
            MediaKind::Preview { step } => {
                // Previews are ephemeral: beyond the configured rate they are skipped so that a
                // fast model cannot flood slow viewers. Progress events are never skipped.
                let min = self.service.limits().preview_min_interval;
                if self.last_preview.is_some_and(|t| t.elapsed() < min) {
                    return None;
                }
                self.last_preview = Some(Instant::now());
                live.broadcast_preview(self.session, self.job, step, mime, image);
                None
            }
            MediaKind::NodeOutput {
                tensors,
                run_us,
                inference_us,
            } => match self.store_output(&node_id, &mime, image).await {
                Ok(media) => {
                    self.keep_in_cache(&node_id, media, tensors).await;
                    live.broadcast_event(
                        self.session,
                        StudioEvent::JobNodeDone {
                            job_id: self.job,
                            node_id,
                            outputs: vec![media],
                            worker_ms: (run_us > 0).then(|| run_us as f64 / 1000.0),
                            inference_ms: (run_us > 0).then(|| inference_us as f64 / 1000.0),
                        },
                    );
                    None
                }
                Err(e) => {
                    self.send_to_worker(ServerMessage::Cancel { job_id: self.job });
                    Some(End::Failed(format!("node {node_id}: {e}")))
                }
            },
        }
    }

    /// PNG bytes → object storage → a media row of the session → `outputs[node_id]` in the
    /// session document.
    async fn store_output(
        &mut self,
        node_id: &str,
        mime: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaId, String> {
        if !self.plan.steps.iter().any(|s| s.node_id == node_id) {
            return Err("output for a node that is not part of the job".into());
        }
        if crate::http::api::media::sniff(&bytes) != Some("image/png") || mime != "image/png" {
            return Err("the worker's output is not a PNG".into());
        }
        let account = self
            .service
            .job_account(self.job)
            .ok_or("the job is no longer known")?;
        let id = MediaId::new_random();
        let key = format!("media/{account}/{id}");
        let size = i64::try_from(bytes.len()).map_err(|e| e.to_string())?;
        self.service
            .blobs
            .put(&key, Bytes::from(bytes))
            .await
            .map_err(|e| format!("storing the output failed: {e}"))?;
        let filename = format!("{node_id}.png");
        self.service
            .db
            .insert_media(NewMedia {
                id,
                owner: account,
                session: Some(self.session),
                content_type: "image/png",
                size_bytes: size,
                object_key: &key,
                filename: Some(&filename),
            })
            .await
            .map_err(|e| format!("recording the output failed: {e}"))?;
        self.record_output(node_id, id).await?;
        Ok(id)
    }

    /// The node's result into the cache (when the job's step has a key and the worker sent
    /// its tensors). Tensors that do not parse are not kept.
    async fn keep_in_cache(
        &self,
        node_id: &str,
        display: MediaId,
        tensors: BTreeMap<String, Vec<u8>>,
    ) {
        let Some(step) = self.plan.steps.iter().find(|s| s.node_id == node_id) else {
            return;
        };
        let Some(account) = self.service.job_account(self.job) else {
            return;
        };
        let mut decoded = Vec::with_capacity(tensors.len());
        for (port, bytes) in tensors {
            match crate::inference::Tensor::from_bytes(&bytes) {
                Ok(_) => decoded.push((port, bytes)),
                Err(_) => {
                    tracing::warn!(job = %self.job, node = node_id, "unreadable tensor from the worker");
                    return;
                }
            }
        }
        if decoded.is_empty() {
            return;
        }
        super::cache::store(
            &self.service.db,
            &self.service.blobs,
            super::cache::NewEntry {
                session: self.session,
                account,
                node_id,
                node_type: &step.model,
                key: &step.cache_key,
                display,
                tensors: decoded,
            },
            self.service.limits().node_cache_max_bytes,
        )
        .await;
    }

    /// `outputs[node_id]` of the document gets `media` (after the job's earlier images of it).
    async fn record_output(&mut self, node_id: &str, media: MediaId) -> Result<(), String> {
        let entry = self.outputs.entry(node_id.to_string()).or_default();
        entry.push(media);
        let ids: Vec<String> = entry.iter().map(ToString::to_string).collect();
        // Through the live session, the document's one writer: built on the document as it is
        // there, and answered once stored — so `job.succeeded` (after the last output) is only
        // ever sent for outputs that are in the document.
        let node = node_id.to_owned();
        self.service
            .live
            .apply_server_edit(
                self.session,
                std::sync::Arc::new(move |doc| Ok(graph::outputs_update(doc, &node, &ids))),
            )
            .await
            .map_err(|e| format!("writing the output into the document failed: {e}"))?;
        Ok(())
    }

    async fn finish(self, end: End, worker_lost: bool) {
        let (job, worker) = (self.job, self.worker);
        let service = self.service.clone();
        if worker_lost && service.reattached_elsewhere(job, worker).await {
            // Its worker reconnected to another node, which runs it on: it ends there.
            tracing::info!(%job, %worker, "the job's worker reconnected to another node; the job goes on there");
            service.finished(job, worker, worker_lost).await;
            return;
        }
        if worker_lost && !self.produced && self.cancel_reason.is_none() {
            let reason = match &end {
                End::Failed(reason) => reason.clone(),
                _ => "worker lost".into(),
            };
            if service.requeue(job, worker, reason).await {
                return;
            }
        }
        self.record_end(end).await;
        service.finished(job, worker, worker_lost).await;
    }

    /// The job's end into the database and to every participant.
    async fn record_end(self, end: End) {
        let outputs: Vec<MediaId> = self
            .outputs
            .iter()
            .filter(|(node, _)| self.plan.output_nodes.contains(*node))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let (status, error, event) = match end {
            End::Succeeded => (
                JobStatus::Succeeded,
                None,
                StudioEvent::JobSucceeded {
                    job_id: self.job,
                    outputs: outputs.clone(),
                },
            ),
            End::Failed(error) => (
                JobStatus::Failed,
                Some(error.clone()),
                StudioEvent::JobFailed {
                    job_id: self.job,
                    error,
                },
            ),
            End::Cancelled(reason) => (
                JobStatus::Cancelled,
                reason.clone(),
                StudioEvent::JobCancelled {
                    job_id: self.job,
                    reason,
                },
            ),
        };
        if let Err(e) = self
            .service
            .db
            .finish_job(self.job, status, error.as_deref(), &outputs)
            .await
        {
            tracing::error!(job = %self.job, error = %e, "could not record the job's end");
        }
        self.service.announce(self.session, event);
    }
}
