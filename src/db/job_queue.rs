//! The jobs table as the durable [`JobQueue`]: a queued job's row is its durable copy (the row is
//! made as the job's record; `enqueue` adds what queuing it again needs), its status follows the
//! board's transitions, and its final status is its acknowledgement.

use atelier_actors::store::{BoxError, BoxFuture};
use atelier_actors::{JobQueue, QueuedJob, RecoveredQueue};
use atelier_protocol::ids::{JobId, WorkerId};

use super::jobs::QueuedJobRow;
use super::Db;

/// Why a job whose row was made but never fully queued (the process died in between) ends.
const HALF_QUEUED: &str = "the server restarted while the job was being queued";

impl JobQueue for Db {
    fn enqueue(&self, job: QueuedJob) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let outputs = job.output_nodes.iter().cloned().collect();
            self.set_job_queue_fields(job.id, job.lease, &outputs, &job.media_ids)
                .await?;
            Ok(())
        })
    }

    fn claimed(
        &self,
        job: JobId,
        worker: WorkerId,
        device: String,
    ) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.mark_job_running(job, worker, &device).await?;
            Ok(())
        })
    }

    fn requeued(&self, job: JobId) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.requeue_job(job).await?;
            Ok(())
        })
    }

    fn recover(&self, reason: String) -> BoxFuture<'_, Result<RecoveredQueue, BoxError>> {
        Box::pin(async move {
            let mut recovered = RecoveredQueue::default();
            for (job, session) in self.fail_running_jobs(&reason).await? {
                recovered.ended.push((job, session, reason.clone()));
            }
            for row in self.queued_jobs().await? {
                match queued_job(&row) {
                    Ok(job) => recovered.queued.push(job),
                    Err(why) => {
                        tracing::warn!(job = %row.id, %why, "a stored queued job cannot be queued again");
                        let status = super::jobs::JobStatus::Failed;
                        self.finish_job(row.id, status, Some(HALF_QUEUED), &[])
                            .await?;
                        recovered
                            .ended
                            .push((row.id, row.session_id, HALF_QUEUED.into()));
                    }
                }
            }
            Ok(recovered)
        })
    }
}

/// A stored queued row as the queue's job; `Err` when it was never fully queued.
pub(crate) fn queued_job(row: &QueuedJobRow) -> Result<QueuedJob, String> {
    let output_nodes: Vec<String> = match &row.output_nodes {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("output nodes: {e}"))?,
        None => return Err("its queue fields were never written".into()),
    };
    let media_ids: Vec<String> = match &row.media_ids {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("media: {e}"))?,
        None => Vec::new(),
    };
    Ok(QueuedJob {
        id: row.id,
        session: row.session_id,
        account: row.account_id,
        lease: row.lease_id,
        steps: serde_json::from_str(&row.plan).map_err(|e| format!("plan: {e}"))?,
        output_nodes,
        media_ids,
        requeues: u32::try_from(row.requeues).unwrap_or(u32::MAX),
    })
}
