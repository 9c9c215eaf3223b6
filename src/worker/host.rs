//! The worker host loop: takes job assignments, runs their steps with the inference engine on a
//! blocking thread, and reports progress, previews, outputs and the result. Transport-agnostic:
//! the in-process worker feeds it from channels, `atelier worker` from a WebSocket.

use std::sync::Arc;
use std::time::Duration;

use atelier_protocol::ids::JobId;
use atelier_protocol::worker::{JobStep, ServerMessage, WorkerMessage};
use base64::Engine as _;
use tokio::sync::mpsc;

use crate::inference::{CancelToken, Engine, Params, RunError};

/// Where the worker's messages go (a channel into the server, or a socket).
pub type Outbox = mpsc::UnboundedSender<WorkerMessage>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs until `inbox` closes. Heartbeats every `heartbeat` while connected.
pub async fn run(
    engine: Arc<Engine>,
    mut inbox: mpsc::UnboundedReceiver<ServerMessage>,
    outbox: Outbox,
    heartbeat: Duration,
) {
    let beat = outbox.clone();
    let heartbeats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tick.tick().await;
            if beat.send(WorkerMessage::Heartbeat).is_err() {
                break;
            }
        }
    });
    // One job at a time: the current job's cancel token.
    let mut current: Option<(JobId, CancelToken)> = None;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<JobId>();
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                None => break,
                Some(ServerMessage::Assign { job_id, steps, .. }) => {
                    if current.is_some() {
                        let _ = outbox.send(WorkerMessage::Failed { job_id, error: "worker is busy".into() });
                        continue;
                    }
                    let cancel = CancelToken::new();
                    current = Some((job_id, cancel.clone()));
                    let engine = engine.clone();
                    let out = outbox.clone();
                    let done = done_tx.clone();
                    // The engine blocks (a step is about a second): its own thread, never the executor.
                    tokio::task::spawn_blocking(move || {
                        let result = run_job(&engine, job_id, &steps, &cancel, &out);
                        let _ = out.send(result);
                        let _ = done.send(job_id);
                    });
                }
                Some(ServerMessage::Cancel { job_id }) => {
                    if let Some((id, cancel)) = &current {
                        if *id == job_id {
                            cancel.cancel();
                        }
                    }
                }
                Some(ServerMessage::Welcome { .. }) => {}
                Some(ServerMessage::Refused { reason }) => {
                    tracing::error!(%reason, "the server refused this worker");
                    break;
                }
            },
            Some(job) = done_rx.recv() => {
                if current.as_ref().is_some_and(|(id, _)| *id == job) {
                    current = None;
                }
            }
        }
    }
    if let Some((_, cancel)) = current {
        cancel.cancel();
    }
    heartbeats.abort();
}

/// Runs every step of a job; returns the final message (succeeded, failed or cancelled).
fn run_job(
    engine: &Engine,
    job_id: JobId,
    steps: &[JobStep],
    cancel: &CancelToken,
    out: &Outbox,
) -> WorkerMessage {
    for step in steps {
        let params: Params = step
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let node_id = step.node_id.clone();
        let result = engine.run(
            &step.model,
            &params,
            step.seed,
            |p| {
                let _ = out.send(WorkerMessage::Progress {
                    job_id,
                    node_id: node_id.clone(),
                    step: p.step,
                    total: p.total,
                });
                let _ = out.send(WorkerMessage::Preview {
                    job_id,
                    node_id: node_id.clone(),
                    step: p.step,
                    mime: "image/png".into(),
                    data: b64(&p.preview_png),
                });
            },
            cancel,
        );
        match result {
            Ok(output) => {
                let _ = out.send(WorkerMessage::NodeOutput {
                    job_id,
                    node_id: node_id.clone(),
                    mime: "image/png".into(),
                    data: b64(&output.png),
                });
            }
            Err(RunError::Cancelled) => return WorkerMessage::Cancelled { job_id },
            Err(e) => {
                return WorkerMessage::Failed {
                    job_id,
                    error: format!("node {node_id}: {e}"),
                }
            }
        }
    }
    WorkerMessage::Succeeded { job_id }
}

/// What this worker offers, for its hello.
pub fn hello(engine: &Engine, name: &str, gpu_class: Option<String>) -> WorkerMessage {
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
    }
}
