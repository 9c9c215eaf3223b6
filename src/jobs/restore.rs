//! At start-up, the durable queue goes back on the board: every job that was queued when the
//! server stopped (its database row says `queued`) is queued again, in its submission order,
//! under its runtime lease (which billing resumed, or settled — then the job cannot run).
//! Jobs that were running cannot continue (their worker's connection is gone): they fail, as
//! before the queue was durable.
//!
//! What a queued job carries besides its plan is read again: the cached tensors its steps
//! consume (the node cache is asked again, so a node evicted meanwhile simply runs) and the
//! bytes of the uploaded images its nodes read.

use std::collections::BTreeSet;

use atelier_protocol::events::StudioEvent;
use atelier_protocol::worker::{JobStep, MediaBytes};

use atelier_actors::QueuedJob;

use super::board::JobView;
use super::graph::Plan;
use super::service::JobService;
use crate::db::jobs::JobStatus;
use crate::error::{Error, Result};

/// Why a running job ended at a restart.
pub const RESTARTED_WHILE_RUNNING: &str = "the server restarted while the job was running";

/// What [`requeue_after_restart`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub requeued: usize,
    pub failed: usize,
}

/// Fails the jobs that were running, queues again the ones that were queued. Call once, after
/// billing recovered its leases and before workers connect.
pub async fn requeue_after_restart(service: &JobService) -> Result<Restored> {
    let mut restored = Restored::default();
    let recovered = service
        .queue
        .recover(RESTARTED_WHILE_RUNNING.into())
        .await
        .map_err(|e| Error::Internal(format!("reading the durable queue: {e}")))?;
    for (job_id, session, error) in recovered.ended {
        restored.failed += 1;
        service.announce(session, StudioEvent::JobFailed { job_id, error });
    }
    for queued in recovered.queued {
        let (job, session) = (queued.id, queued.session);
        let lease = queued
            .lease
            .filter(|lease| service.billing.session_of_lease(*lease) == Some(session));
        let rebuilt = match lease {
            Some(lease) => rebuild(service, queued, lease).await,
            None => Err("the server restarted and the job's Pro runtime had ended".into()),
        };
        match rebuilt {
            Ok(view) => {
                service.restore_queued(job, view);
                restored.requeued += 1;
            }
            Err(reason) => {
                restored.failed += 1;
                tracing::warn!(%job, %reason, "a queued job could not be queued again");
                if let Err(e) = service
                    .db
                    .finish_job(job, JobStatus::Failed, Some(&reason), &[])
                    .await
                {
                    tracing::error!(%job, error = %e, "could not record the job's end");
                }
                let event = StudioEvent::JobFailed {
                    job_id: job,
                    error: reason,
                };
                service.announce(session, event);
            }
        }
    }
    service.announce_positions();
    Ok(restored)
}

/// Cluster mode: a job routed to this node through its job stream (submitted on another node,
/// or taken over from a dead node's stream, or this node's own after a restart) joins the
/// board as a local submit does (`JobService::put_on_board`). `Err` with the reason when it
/// cannot run here: its lease is not metered on this node (the caller checked it is).
pub async fn take_routed(service: &JobService, job: QueuedJob) -> std::result::Result<(), String> {
    let id = job.id;
    let lease = job
        .lease
        .filter(|lease| service.billing.session_of_lease(*lease) == Some(job.session))
        .ok_or("the job's Pro runtime is not metered on this node")?;
    let view = rebuild(service, job, lease).await?;
    service
        .put_on_board(id, view)
        .await
        .map_err(|e| e.to_string())
}

/// The board's view of a stored queued job, or why it cannot run any more.
async fn rebuild(
    service: &JobService,
    job: QueuedJob,
    lease: atelier_protocol::ids::LeaseId,
) -> std::result::Result<JobView, String> {
    let mut steps: Vec<JobStep> =
        serde_json::from_value(job.steps).map_err(|e| format!("stored plan: {e}"))?;
    // The cache is asked again below: what was cached at submit time may be gone.
    for step in &mut steps {
        step.cached = false;
    }
    let mut plan = Plan {
        steps,
        output_nodes: job.output_nodes.into_iter().collect(),
    };
    let resolution = super::cache::resolve(
        &service.db,
        &service.blobs,
        job.session,
        &mut plan,
        &BTreeSet::new(),
        service.limits.node_cache_max_bytes > 0,
    )
    .await
    .map_err(|e| format!("reading the node cache: {e}"))?;
    let media = media_bytes(service, &job.media_ids)
        .await
        .map_err(|e| e.to_string())?;
    let mut view = JobView::queued(
        job.session,
        job.account,
        Some(lease),
        plan,
        resolution,
        media,
    );
    view.requeues = job.requeues;
    Ok(view)
}

/// The bytes of the uploaded images a job reads (checked when it was submitted).
async fn media_bytes(service: &JobService, ids: &[String]) -> Result<Vec<MediaBytes>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let media_id = id
            .parse()
            .map_err(|_| Error::Internal(format!("stored media id {id:?}")))?;
        let media = service
            .db
            .media(media_id)
            .await?
            .ok_or_else(|| Error::Missing(format!("media {id} was deleted")))?;
        let bytes = service.blobs.get(&media.object_key).await?;
        out.push(MediaBytes {
            media_id: id.clone(),
            data: bytes,
        });
    }
    Ok(out)
}
