//! Worker hosts: the loop that runs jobs ([`host`]), the in-process worker of `atelier serve`, and
//! `atelier worker`, which connects to a server over WebSocket.

pub mod assembly;
pub mod host;
pub mod link;
pub mod receive;

use std::sync::Arc;
use std::time::Duration;

use atelier_actors::worker_socket::MEDIA_IN_FLIGHT_BYTES;
use atelier_actors::{worker_link, MediaBudget};
use tokio::sync::mpsc;

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
    #[error("{url} refuses this worker: {reason}")]
    Refused { url: String, reason: String },
}

/// `atelier worker`: loads the engine and serves jobs, connected to one of its servers; when the
/// connection ends it connects again (see [`link`]) while its jobs keep running. It stops when a
/// server refuses it for good (its token is unknown or revoked).
pub async fn run_remote(config: WorkerConfig) -> Result<(), WorkerError> {
    let urls = config
        .server
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| link::socket_url(s))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(WorkerError::BadServer(String::new()));
    }
    let engine_config = config.engine.engine_config();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&engine_config))
        .await
        .map_err(|e| WorkerError::Engine(e.to_string()))?
        .map_err(|e| WorkerError::Engine(e.to_string()))?;
    let engine = Arc::new(engine);
    tracing::info!(device = %engine.device(), models = ?engine.catalog().names(), "engine ready");

    let (to_host, inbox) = mpsc::channel(host::INBOX_CAPACITY);
    let (outbox, from_host) = host::outbox();
    let slots = config.slots;
    let hello = host::hello(&engine, &config.name, config.gpu_class.clone(), slots);
    // The host outlives any one connection: its jobs run on while the link reconnects.
    let host = tokio::spawn(host::run(
        engine,
        inbox,
        outbox,
        Duration::from_secs(2),
        slots,
    ));
    let link = link::Link::new(
        urls,
        config.token.clone(),
        Duration::from_millis(config.reconnect_max_ms),
        hello,
    );
    let result = link.run(from_host, to_host).await;
    host.abort();
    result
}
