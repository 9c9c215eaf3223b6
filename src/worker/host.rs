//! The worker host loop: takes job assignments, runs their steps with the inference engine on a
//! blocking thread, and reports progress, previews, outputs and the result. Transport-agnostic:
//! the in-process worker feeds it from channels, `atelier worker` from a WebSocket.
//!
//! What it reports goes through a bounded [`Outbox`]: when the transport falls behind, the engine
//! waits before its next progress or output, and previews (ephemeral) are skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_protocol::ids::JobId;
use atelier_protocol::worker::{
    Assignment, JobStep, MediaBytes, ProvidedTensor, ServerMessage, ToWorker, WorkerMessage,
};
use atelier_protocol::worker_frame::{MediaFrame, MediaKind};
use tokio::sync::mpsc;

use crate::inference::{CancelToken, Engine, NodeRequest, Params, RunError, Tensor};

/// What a worker host reports: JSON messages, and previews and outputs as media frames (binary
/// frames on a socket).
#[derive(Debug)]
pub enum HostOutput {
    Message(WorkerMessage),
    Media(MediaFrame),
}

/// Where the worker's reports go (a channel into the server, or a socket's writer).
pub type Outbox = mpsc::Sender<HostOutput>;

/// Reports that may wait for the transport: a few previews' worth.
pub const OUTBOX_CAPACITY: usize = 8;

/// A bounded outbox and its other end.
pub fn outbox() -> (Outbox, mpsc::Receiver<HostOutput>) {
    mpsc::channel(OUTBOX_CAPACITY)
}

/// Messages from the server that may wait for the host loop (a remote worker's socket reader
/// waits for room, so the socket is read no faster than the host takes): the host takes them at
/// once, except while it waits to report a refused `assign`.
pub const INBOX_CAPACITY: usize = 16;

/// Runs until `inbox` closes. Heartbeats every `heartbeat` while connected. Runs up to `slots`
/// jobs at once (the server gives each of its slots at most one job at a time). Assignments
/// come with their inputs (a remote worker's receive side assembled them, [`super::receive`]).
pub async fn run(
    engine: Arc<Engine>,
    mut inbox: mpsc::Receiver<ToWorker>,
    outbox: Outbox,
    heartbeat: Duration,
    slots: u32,
) {
    let beat = outbox.clone();
    let heartbeats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tick.tick().await;
            if beat
                .send(HostOutput::Message(WorkerMessage::Heartbeat))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // The jobs running now, each with its cancel token.
    let mut current: HashMap<JobId, CancelToken> = HashMap::new();
    let slots = usize::try_from(slots.max(1)).unwrap_or(usize::MAX);
    // Each running job sends exactly one: `slots` never fill.
    let (done_tx, mut done_rx) = mpsc::channel::<JobId>(slots);
    loop {
        tokio::select! {
            // Finished jobs first: an `assign` that follows a result must see its slot free.
            biased;
            Some(job) = done_rx.recv() => {
                current.remove(&job);
            }
            msg = inbox.recv() => match msg {
                None => break,
                Some(ToWorker::Assign(assignment)) => {
                    let Assignment { job_id, steps, provided, media, .. } = *assignment;
                    if current.len() >= slots || current.contains_key(&job_id) {
                        let busy = WorkerMessage::Failed { job_id, error: "worker is busy".into() };
                        let _ = outbox.send(HostOutput::Message(busy)).await;
                        continue;
                    }
                    let cancel = CancelToken::new();
                    current.insert(job_id, cancel.clone());
                    let engine = engine.clone();
                    let out = outbox.clone();
                    let done = done_tx.clone();
                    // The engine blocks (a step is about a second): its own thread, never the executor.
                    tokio::task::spawn_blocking(move || {
                        let job = Job { id: job_id, steps: &steps, provided, media };
                        let result = run_job(&engine, job, &cancel, &out);
                        // The slot is free before the server can hear so: it assigns the slot's
                        // next job as soon as the result arrives, and that `assign` must not
                        // find this job still counted.
                        let _ = done.blocking_send(job_id);
                        let _ = out.blocking_send(HostOutput::Message(result));
                    });
                }
                Some(ToWorker::Message(ServerMessage::Cancel { job_id })) => {
                    if let Some(cancel) = current.get(&job_id) {
                        cancel.cancel();
                    }
                }
                // Only assembled assignments reach the host.
                Some(ToWorker::Message(ServerMessage::Assign { job_id, .. })) => {
                    let error = "the assign arrived without its inputs".to_string();
                    let _ = outbox.send(HostOutput::Message(WorkerMessage::Failed { job_id, error })).await;
                }
                Some(ToWorker::Message(ServerMessage::Welcome { .. } | ServerMessage::Leases { .. })) => {}
                Some(ToWorker::Message(ServerMessage::Refused { reason })) => {
                    tracing::error!(%reason, "the server refused this worker");
                    break;
                }
            },
        }
    }
    for cancel in current.values() {
        cancel.cancel();
    }
    heartbeats.abort();
}

/// A job as assigned: its steps in order, the cached tensors and media bytes they consume.
struct Job<'a> {
    id: JobId,
    steps: &'a [JobStep],
    provided: Vec<ProvidedTensor>,
    media: Vec<MediaBytes>,
}

/// Runs every step of a job, each node's output tensors feeding the next steps in memory;
/// returns the final message (succeeded, failed or cancelled).
fn run_job(engine: &Engine, job: Job<'_>, cancel: &CancelToken, out: &Outbox) -> WorkerMessage {
    let job_id = job.id;
    let fail = |error: String| WorkerMessage::Failed { job_id, error };
    // (node, port) → tensor. A tensor is dropped after its last consumer ran.
    let mut values: BTreeMap<(String, String), Arc<Tensor>> = BTreeMap::new();
    for p in job.provided {
        match Tensor::from_bytes(&p.data) {
            Ok(t) => {
                values.insert((p.node_id, p.port), Arc::new(t));
            }
            Err(e) => {
                return fail(format!(
                    "node {}: cached output '{}': {e}",
                    p.node_id, p.port
                ))
            }
        }
    }
    let media: BTreeMap<String, Vec<u8>> = job
        .media
        .into_iter()
        .map(|m| (m.media_id, m.data.to_vec()))
        .collect();
    let mut uses: BTreeMap<(String, String), usize> = BTreeMap::new();
    for step in job.steps {
        for r in step.inputs.values() {
            *uses.entry((r.node_id.clone(), r.port.clone())).or_default() += 1;
        }
    }
    for step in job.steps {
        let node_id = step.node_id.clone();
        let mut inputs = BTreeMap::new();
        for (port, source) in &step.inputs {
            let key = (source.node_id.clone(), source.port.clone());
            let Some(t) = values.get(&key) else {
                return fail(format!(
                    "node {node_id}: input '{port}' from {}:{} is missing",
                    source.node_id, source.port
                ));
            };
            inputs.insert(port.clone(), Arc::clone(t));
            if let Some(n) = uses.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    values.remove(&key);
                }
            }
        }
        let params: Params = step
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let started = Instant::now();
        let result = engine.run_node(
            NodeRequest {
                model: &step.model,
                params: &params,
                seed: step.seed,
                inputs: &inputs,
                media: &media,
            },
            |p| {
                let _ = out.blocking_send(HostOutput::Message(WorkerMessage::Progress {
                    job_id,
                    node_id: node_id.clone(),
                    step: p.step,
                    total: p.total,
                }));
                // Skipped when the transport is behind: the next step brings a newer one.
                let _ = out.try_send(HostOutput::Media(MediaFrame {
                    job_id,
                    node_id: node_id.clone(),
                    mime: "image/png".into(),
                    kind: MediaKind::Preview { step: p.step },
                    image: p.preview_png.clone(),
                }));
            },
            cancel,
        );
        drop(inputs);
        match result {
            Ok(output) => {
                let tensors = output
                    .ports
                    .iter()
                    .map(|(port, t)| (port.clone(), t.to_bytes()))
                    .collect();
                for (port, t) in output.ports {
                    let key = (node_id.clone(), port);
                    if uses.get(&key).is_some_and(|n| *n > 0) {
                        values.insert(key, Arc::new(t));
                    }
                }
                let _ = out.blocking_send(HostOutput::Media(MediaFrame {
                    job_id,
                    node_id: node_id.clone(),
                    mime: "image/png".into(),
                    kind: MediaKind::NodeOutput {
                        tensors,
                        run_us: started.elapsed().as_micros() as u64,
                        inference_us: output.inference.as_micros() as u64,
                    },
                    image: output.png,
                }));
            }
            Err(RunError::Cancelled) => return WorkerMessage::Cancelled { job_id },
            Err(e) => return fail(format!("node {node_id}: {e}")),
        }
    }
    WorkerMessage::Succeeded { job_id }
}

/// What this worker offers, for its hello: its device, models, class and slots.
pub fn hello(engine: &Engine, name: &str, gpu_class: Option<String>, slots: u32) -> WorkerMessage {
    let device = engine.device();
    WorkerMessage::Hello {
        name: name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        devices: vec![atelier_protocol::worker::Device {
            name: device.name(),
            description: match device {
                crate::inference::Device::Cpu => "CPU".to_string(),
                crate::inference::Device::Cuda { device_id } => format!("CUDA device {device_id}"),
            },
            memory_mb: None,
            execution_provider: match device {
                crate::inference::Device::Cpu => "cpu".into(),
                crate::inference::Device::Cuda { .. } => "cuda".into(),
            },
        }],
        models: engine.catalog().names(),
        gpu_class,
        slots: Some(slots.max(1)),
        previous_worker_id: None,
        running_jobs: Vec::new(),
        leases: Vec::new(),
    }
}
