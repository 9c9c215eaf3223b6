//! Worker hosts: the loop that runs jobs ([`host`]), the in-process worker of `atelier serve`, and
//! `atelier worker`, which connects to a server over WebSocket.

pub mod assembly;
pub mod host;
pub mod receive;

use std::sync::Arc;
use std::time::Duration;

use atelier_actors::worker_socket::MEDIA_IN_FLIGHT_BYTES;
use atelier_actors::{worker_link, MediaBudget};
use atelier_protocol::worker_frame;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::config::WorkerConfig;
use crate::inference::Engine;
use crate::jobs::{JobService, WorkerJoin};

/// Starts the worker that lives inside the server: the same host loop as a remote worker,
/// connected by channels instead of a socket. It offers `slots` slots (runtime leases served at
/// once). Its media holds a budget like a remote worker's, but waits for it instead of being
/// closed: the host, behind its bounded outbox, waits in turn; so does a message for a job whose
/// assignment is behind. Its link is bounded like a remote worker's; should it ever fill (the
/// host stopped taking), the worker is taken off the board as lost.
pub fn start_in_process(engine: Arc<Engine>, jobs: JobService, slots: u32) {
    let (to_worker, inbox) = worker_link();
    let (inbox, overflow) = inbox.into_parts();
    let (outbox, mut from_worker) = host::outbox();
    let Some(join) = WorkerJoin::from_hello(host::hello(&engine, "in-process", None, slots)) else {
        return;
    };
    let slots = join.slots;
    let id = jobs.register_worker(join, None, to_worker);
    let heartbeat = jobs.limits().heartbeat_interval;
    actix_web::rt::spawn(host::run(engine, inbox, outbox, heartbeat, slots));
    actix_web::rt::spawn(async move {
        let budget = MediaBudget::new(MEDIA_IN_FLIGHT_BYTES);
        loop {
            let output = tokio::select! {
                output = from_worker.recv() => output,
                () = overflow.notified() => {
                    tracing::error!("the in-process worker stopped taking messages");
                    None
                }
            };
            let wait = match output {
                None => break,
                Some(host::HostOutput::Message(msg)) => jobs.worker_message(id, msg),
                Some(host::HostOutput::Media(frame)) => {
                    let Some(permit) = budget.take(&frame).await else {
                        break;
                    };
                    jobs.worker_media(id, frame, permit)
                }
            };
            if let Some(wait) = wait {
                wait.await;
            }
        }
        jobs.worker_gone(id);
    });
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the inference engine: {0}")]
    Engine(String),
    #[error("--server must be an http(s):// URL, got {0:?}")]
    BadServer(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
}

/// `atelier worker`: loads the engine, connects, and serves jobs until the connection ends.
pub async fn run_remote(config: WorkerConfig) -> Result<(), WorkerError> {
    let engine_config = config.engine.engine_config();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&engine_config))
        .await
        .map_err(|e| WorkerError::Engine(e.to_string()))?
        .map_err(|e| WorkerError::Engine(e.to_string()))?;
    let engine = Arc::new(engine);
    tracing::info!(device = %engine.device(), models = ?engine.catalog().names(), "engine ready");
    let base = config.server.trim_end_matches('/');
    let url = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}/api/v1/workers/ws")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}/api/v1/workers/ws")
    } else {
        return Err(WorkerError::BadServer(config.server.clone()));
    };
    let connect_err = |reason: String| WorkerError::Connect {
        url: url.clone(),
        reason,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| connect_err(e.to_string()))?;
    let auth = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| connect_err("the token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", auth);
    // An input frame of an assign may be larger than tungstenite's default frame limit.
    let ws_config = WebSocketConfig::default()
        .max_frame_size(Some(receive::MAX_SERVER_MESSAGE_BYTES))
        .max_message_size(Some(receive::MAX_SERVER_MESSAGE_BYTES));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), false)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    tracing::info!(%url, "connected");
    let (mut sink, stream) = socket.split();

    let (to_host, inbox) = mpsc::channel(host::INBOX_CAPACITY);
    let (outbox, mut from_host) = host::outbox();
    let failures = outbox.clone();
    let slots = config.slots;
    let hello = host::hello(&engine, &config.name, config.gpu_class.clone(), slots);
    let _ = outbox.send(host::HostOutput::Message(hello)).await;
    let host = tokio::spawn(host::run(
        engine,
        inbox,
        outbox,
        Duration::from_secs(2),
        slots,
    ));
    let writer = tokio::spawn(async move {
        while let Some(output) = from_host.recv().await {
            let frame = match output {
                host::HostOutput::Message(msg) => match serde_json::to_string(&msg) {
                    Ok(text) => Message::text(text),
                    Err(_) => continue,
                },
                host::HostOutput::Media(frame) => Message::binary(worker_frame::encode(&frame)),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    receive::run(stream, to_host, failures).await;
    host.abort();
    writer.abort();
    Ok(())
}
