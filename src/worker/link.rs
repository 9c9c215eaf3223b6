//! `atelier worker`'s connection to its server, kept up for as long as the worker runs.
//!
//! The host loop ([`super::host`]) runs independently of the connection: when the connection
//! ends, its jobs keep running and what they report waits in [`Pending`], a bounded buffer. The
//! link connects again — to the same URL (which may be a load balancer) or the next of several,
//! round robin — after a capped exponential backoff with jitter, and says `hello` again with the
//! id the server gave it last time, the jobs it still runs (or has not delivered the end of) and
//! the leases holding its slots. The server adopts them (`src/jobs/reattach.rs`) and answers
//! `welcome` only once that is done; the buffer is delivered after the `welcome`, so every
//! progress, preview, output and result reaches a server that knows the job.
//!
//! A server that refuses the worker for good (its token is unknown or revoked: 401 at the
//! upgrade, or a 1008 close saying so) ends the link with an error instead of a retry loop.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use atelier_protocol::ids::{JobId, LeaseId, WorkerId};
use atelier_protocol::worker::{ServerMessage, ToWorker, WorkerMessage};
use atelier_protocol::worker_frame::{self, MediaKind};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::assembly::Refused;
use super::host::HostOutput;
use super::receive::{Inbound, Received, MAX_SERVER_MESSAGE_BYTES};
use super::WorkerError;

/// Reports kept while disconnected (or while the socket is behind), at most.
pub const PENDING_MAX_ITEMS: usize = 1024;
/// Bytes of reports kept (images included), at most.
pub const PENDING_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The first wait before connecting again; it doubles up to the configured maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How long a connection may go without the server's `welcome` after the hello (adoption of a
/// reconnecting worker's leases and jobs included) before it is given up and tried again.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// What the host reported and the server has not been sent yet, oldest first, bounded by
/// [`PENDING_MAX_ITEMS`] and [`PENDING_MAX_BYTES`]. When it is full, previews go first (they are
/// ephemeral: the next step brings a newer one), then progress (superseded by later progress);
/// node outputs and results are never dropped: when only they fill it, the link stops taking
/// the host's reports and the host (behind its own bounded outbox) waits — its engine pauses.
#[derive(Default)]
pub struct Pending {
    items: VecDeque<HostOutput>,
    bytes: usize,
    /// Dropped since the last report of it in the log.
    dropped_previews: u64,
    dropped_progress: u64,
}

fn size_of(output: &HostOutput) -> usize {
    match output {
        HostOutput::Message(_) => 128,
        HostOutput::Media(frame) => frame.payload_len() + 64,
    }
}

fn is_preview(output: &HostOutput) -> bool {
    matches!(output, HostOutput::Media(f) if matches!(f.kind, MediaKind::Preview { .. }))
}

fn is_progress(output: &HostOutput) -> bool {
    matches!(
        output,
        HostOutput::Message(WorkerMessage::Progress { .. } | WorkerMessage::Heartbeat)
    )
}

impl Pending {
    /// Whether another report may be taken from the host.
    pub fn has_room(&self) -> bool {
        self.items.len() < PENDING_MAX_ITEMS && self.bytes < PENDING_MAX_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Keeps `output` behind the others; over the bounds, drops the oldest preview, else the
    /// oldest progress, as long as there is one.
    pub fn push(&mut self, output: HostOutput) {
        self.bytes += size_of(&output);
        self.items.push_back(output);
        while !self.has_room() {
            let victim = self
                .items
                .iter()
                .position(is_preview)
                .or_else(|| self.items.iter().position(is_progress));
            let Some(at) = victim else {
                break; // outputs and results only: the host waits instead
            };
            let Some(dropped) = self.items.remove(at) else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size_of(&dropped));
            let first = self.dropped_previews + self.dropped_progress == 0;
            if is_preview(&dropped) {
                self.dropped_previews += 1;
            } else {
                self.dropped_progress += 1;
            }
            if first {
                tracing::warn!(
                    items = self.items.len(),
                    bytes = self.bytes,
                    "outgoing buffer full while the server is unreachable: dropping previews \
                     first, then progress (node outputs and results are kept)"
                );
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<HostOutput> {
        let output = self.items.pop_front()?;
        self.bytes = self.bytes.saturating_sub(size_of(&output));
        Some(output)
    }

    /// Puts back a report whose sending failed (the connection ended under it).
    pub fn push_front(&mut self, output: HostOutput) {
        self.bytes += size_of(&output);
        self.items.push_front(output);
    }

    /// Logs (once) what was dropped since the last time.
    fn report_drops(&mut self) {
        if self.dropped_previews + self.dropped_progress > 0 {
            tracing::warn!(
                previews = self.dropped_previews,
                progress = self.dropped_progress,
                "reports dropped from the outgoing buffer while the server was unreachable"
            );
            self.dropped_previews = 0;
            self.dropped_progress = 0;
        }
    }
}

/// Capped exponential backoff with jitter: attempt `n` waits a random time between half of and
/// the full `min(max, BACKOFF_MIN · 2ⁿ)`, so workers cut off together do not come back together.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let full = BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max)
        .max(BACKOFF_MIN.min(max));
    let millis = u64::try_from(full.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

/// How one connection ended.
enum Ended {
    /// Try again (after the backoff).
    Retry(String),
    /// The server refuses this worker for good.
    Refused(String),
    /// The host loop ended: nothing more to do.
    HostDone,
}

/// What the link remembers across connections: the hello to say, what to re-announce in it.
pub struct Link {
    urls: Vec<String>,
    token: String,
    reconnect_max: Duration,
    hello: WorkerMessage,
    /// The id the server gave this worker at its last `welcome`.
    worker_id: Option<WorkerId>,
    /// Jobs assigned whose end (`succeeded`, `failed`, `cancelled`) was not sent yet.
    running: BTreeSet<JobId>,
    /// The leases holding this worker's slots, as the server last said.
    leases: Vec<LeaseId>,
    pending: Pending,
}

/// `http(s)://host` → the worker socket's `ws(s)://` URL.
pub fn socket_url(server: &str) -> Result<String, WorkerError> {
    let base = server.trim().trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}{}", crate::jobs::worker_socket::PATH))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}{}", crate::jobs::worker_socket::PATH))
    } else {
        Err(WorkerError::BadServer(server.to_string()))
    }
}

impl Link {
    pub fn new(
        urls: Vec<String>,
        token: String,
        reconnect_max: Duration,
        hello: WorkerMessage,
    ) -> Self {
        Link {
            urls,
            token,
            reconnect_max,
            hello,
            worker_id: None,
            running: BTreeSet::new(),
            leases: Vec::new(),
            pending: Pending::default(),
        }
    }

    /// Serves the host until it ends or a server refuses this worker for good.
    pub async fn run(
        mut self,
        mut from_host: mpsc::Receiver<HostOutput>,
        to_host: mpsc::Sender<ToWorker>,
    ) -> Result<(), WorkerError> {
        let mut attempt: u32 = 0;
        let mut next = 0usize;
        loop {
            let url = self.urls[next % self.urls.len()].clone();
            next = next.wrapping_add(1);
            let (ended, welcomed) = self.connection(&url, &mut from_host, &to_host).await;
            if welcomed {
                attempt = 0;
            }
            let reason = match ended {
                Ended::HostDone => return Ok(()),
                Ended::Refused(reason) => {
                    tracing::error!(%url, %reason, "the server refuses this worker; stopping");
                    return Err(WorkerError::Refused { url, reason });
                }
                Ended::Retry(reason) => reason,
            };
            let wait = backoff(attempt, self.reconnect_max);
            attempt = attempt.saturating_add(1);
            tracing::warn!(%url, %reason, retry_in = ?wait, running = self.running.len(),
                pending = self.pending.len(), "connection ended; reconnecting (jobs keep running)");
            // Jobs keep reporting while the link waits.
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    out = from_host.recv(), if self.pending.has_room() => match out {
                        Some(out) => self.take(out, false),
                        None => return Ok(()),
                    },
                }
            }
        }
    }

    /// A report of the host: kept for sending (heartbeats only while welcomed: a reconnect's
    /// hello proves the worker alive).
    fn take(&mut self, out: HostOutput, welcomed: bool) {
        if matches!(out, HostOutput::Message(WorkerMessage::Heartbeat)) && !welcomed {
            return;
        }
        self.pending.push(out);
    }

    /// The hello for this connection: the host's, with what a reconnect re-announces.
    fn hello(&self) -> WorkerMessage {
        let mut hello = self.hello.clone();
        if let WorkerMessage::Hello {
            previous_worker_id,
            running_jobs,
            leases,
            ..
        } = &mut hello
        {
            *previous_worker_id = self.worker_id;
            *running_jobs = self.running.iter().copied().collect();
            *leases = self.leases.clone();
        }
        hello
    }

    /// One connection, from the upgrade until it ends. Also says whether it was welcomed.
    async fn connection(
        &mut self,
        url: &str,
        from_host: &mut mpsc::Receiver<HostOutput>,
        to_host: &mpsc::Sender<ToWorker>,
    ) -> (Ended, bool) {
        let mut request = match url.into_client_request() {
            Ok(request) => request,
            Err(e) => return (Ended::Refused(format!("bad server URL: {e}")), false),
        };
        let Ok(auth) = format!("Bearer {}", self.token).parse() else {
            return (
                Ended::Refused("the token is not a valid header value".into()),
                false,
            );
        };
        request.headers_mut().insert("authorization", auth);
        // An input frame of an assign may be larger than tungstenite's default frame limit.
        let ws_config = WebSocketConfig::default()
            .max_frame_size(Some(MAX_SERVER_MESSAGE_BYTES))
            .max_message_size(Some(MAX_SERVER_MESSAGE_BYTES));
        let connecting =
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), false);
        let socket = match connecting.await {
            Ok((socket, _)) => socket,
            Err(tungstenite::Error::Http(response))
                if matches!(response.status().as_u16(), 401 | 403) =>
            {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return (
                    Ended::Refused(format!("{} {body}", response.status())),
                    false,
                );
            }
            Err(e) => return (Ended::Retry(format!("cannot connect: {e}")), false),
        };
        let (mut sink, mut stream) = socket.split();
        let hello = self.hello();
        let resuming = self.worker_id.is_some();
        match serde_json::to_string(&hello) {
            Ok(text) => {
                if let Err(e) = sink.send(Message::text(text)).await {
                    return (Ended::Retry(format!("sending the hello: {e}")), false);
                }
            }
            Err(e) => {
                return (
                    Ended::Refused(format!("cannot encode the hello: {e}")),
                    false,
                )
            }
        }
        tracing::info!(%url, resuming, running = self.running.len(), leases = self.leases.len(),
            pending = self.pending.len(), "connected; hello sent");
        let mut welcomed = false;
        let welcome_deadline = tokio::time::sleep(WELCOME_TIMEOUT);
        tokio::pin!(welcome_deadline);
        let mut inbound = Inbound::default();
        loop {
            let inputs_deadline = inbound.next_deadline();
            let inputs_overdue = async {
                match inputs_deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                frame = stream.next() => match frame {
                    Some(Ok(frame)) => match inbound.frame(frame) {
                        Received::Message(msg) => {
                            if let Some(ended) = self.on_server_message(msg, &mut welcomed, to_host).await {
                                return (ended, welcomed);
                            }
                        }
                        Received::Assignment(assignment) => {
                            self.running.insert(assignment.job_id);
                            if to_host.send(ToWorker::Assign(assignment)).await.is_err() {
                                return (Ended::HostDone, welcomed);
                            }
                        }
                        Received::Refused(refused) => self.refuse(refused),
                        Received::Closed(frame) => {
                            let (code, reason) = frame
                                .map(|f| (f.code, f.reason.to_string()))
                                .unwrap_or((CloseCode::Normal, String::new()));
                            // 1008 is also a heartbeat timeout: only a refused token is final.
                            let ended = if code == CloseCode::Policy && reason.contains("token") {
                                Ended::Refused(format!("closed 1008: {reason}"))
                            } else {
                                Ended::Retry(format!("closed by the server ({code}): {reason}"))
                            };
                            return (ended, welcomed);
                        }
                        Received::Nothing => {}
                    },
                    Some(Err(e)) => return (Ended::Retry(format!("connection lost: {e}")), welcomed),
                    None => return (Ended::Retry("connection closed".into()), welcomed),
                },
                () = inputs_overdue => {
                    for refused in inbound.expire() {
                        self.refuse(refused);
                    }
                }
                _ = &mut welcome_deadline, if !welcomed => {
                    return (Ended::Retry("no welcome from the server".into()), false);
                }
                out = from_host.recv(), if self.pending.has_room() => match out {
                    Some(out) => self.take(out, welcomed),
                    None => return (Ended::HostDone, welcomed),
                },
                _ = std::future::ready(()), if welcomed && !self.pending.is_empty() => {
                    let Some(out) = self.pending.pop_front() else { continue };
                    let frame = match &out {
                        HostOutput::Message(msg) => match serde_json::to_string(msg) {
                            Ok(text) => Message::text(text),
                            Err(_) => continue,
                        },
                        HostOutput::Media(frame) => Message::binary(worker_frame::encode(frame)),
                    };
                    if let Err(e) = sink.send(frame).await {
                        // Not delivered: sent again on the next connection.
                        self.pending.push_front(out);
                        return (Ended::Retry(format!("sending: {e}")), welcomed);
                    }
                    if let HostOutput::Message(
                        WorkerMessage::Succeeded { job_id }
                        | WorkerMessage::Failed { job_id, .. }
                        | WorkerMessage::Cancelled { job_id },
                    ) = out
                    {
                        self.running.remove(&job_id);
                    }
                }
            }
        }
    }

    /// An assignment that could not be put together: its job fails, told to the server like any
    /// other end of a job.
    fn refuse(&mut self, Refused { job_id, error }: Refused) {
        self.pending
            .push(HostOutput::Message(WorkerMessage::Failed { job_id, error }));
    }

    /// A message from the server; `Some` when it ends the connection.
    async fn on_server_message(
        &mut self,
        msg: ServerMessage,
        welcomed: &mut bool,
        to_host: &mpsc::Sender<ToWorker>,
    ) -> Option<Ended> {
        match msg {
            ServerMessage::Welcome { worker_id, .. } => {
                if let Some(previous) = self.worker_id.filter(|p| *p != worker_id) {
                    tracing::info!(%previous, %worker_id, running = self.running.len(),
                        pending = self.pending.len(), "welcomed back");
                }
                self.worker_id = Some(worker_id);
                *welcomed = true;
                self.pending.report_drops();
                None
            }
            ServerMessage::Leases { lease_ids } => {
                self.leases = lease_ids;
                None
            }
            ServerMessage::Refused { reason } => {
                // The close that follows says whether it is final.
                tracing::warn!(%reason, "the server refused this connection");
                None
            }
            ServerMessage::Assign { job_id, .. } => {
                // `Inbound` puts every assign together with its inputs before it gets here.
                tracing::warn!(%job_id, "an assign that skipped its inputs: ignored");
                None
            }
            msg @ ServerMessage::Cancel { .. } => to_host
                .send(ToWorker::Message(msg))
                .await
                .err()
                .map(|_| Ended::HostDone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_protocol::worker_frame::MediaFrame;

    fn preview(job_id: JobId, bytes: usize) -> HostOutput {
        HostOutput::Media(MediaFrame {
            job_id,
            node_id: "n".into(),
            mime: "image/png".into(),
            kind: MediaKind::Preview { step: 1 },
            image: vec![0; bytes],
        })
    }

    fn output(job_id: JobId, bytes: usize) -> HostOutput {
        HostOutput::Media(MediaFrame {
            job_id,
            node_id: "n".into(),
            mime: "image/png".into(),
            kind: MediaKind::NodeOutput {
                tensors: Default::default(),
                run_us: 0,
                inference_us: 0,
            },
            image: vec![0; bytes],
        })
    }

    #[test]
    fn a_full_buffer_drops_previews_first_and_never_a_result() {
        let job = JobId::new_random();
        let mut pending = Pending::default();
        let quarter = PENDING_MAX_BYTES / 4;
        let progress = || {
            HostOutput::Message(WorkerMessage::Progress {
                job_id: job,
                node_id: "n".into(),
                step: 1,
                total: 2,
            })
        };
        pending.push(preview(job, quarter));
        pending.push(output(job, quarter));
        pending.push(preview(job, quarter));
        pending.push(progress());
        // Over the bound: the oldest preview goes.
        pending.push(output(job, quarter));
        assert_eq!(pending.dropped_previews, 1);
        assert_eq!(pending.len(), 4);
        // Again: the other preview.
        pending.push(output(job, quarter));
        assert_eq!(pending.dropped_previews, 2);
        // No preview left: the progress goes, and outputs are kept even over the bound.
        pending.push(output(job, quarter));
        assert_eq!(pending.dropped_progress, 1);
        assert!(!pending.has_room(), "over the bound: the host must wait");
        pending.push(HostOutput::Message(WorkerMessage::Succeeded {
            job_id: job,
        }));
        let kept: Vec<HostOutput> = std::iter::from_fn(|| pending.pop_front()).collect();
        assert_eq!(kept.len(), 5);
        assert!(kept[..4].iter().all(
            |o| matches!(o, HostOutput::Media(f) if matches!(f.kind, MediaKind::NodeOutput { .. }))
        ));
        assert!(matches!(
            kept[4],
            HostOutput::Message(WorkerMessage::Succeeded { .. })
        ));
        assert_eq!(pending.bytes, 0);
    }

    #[test]
    fn outputs_alone_stop_the_intake_instead_of_being_dropped() {
        let job = JobId::new_random();
        let mut pending = Pending::default();
        while pending.has_room() {
            pending.push(output(job, PENDING_MAX_BYTES / 8));
        }
        let n = pending.len();
        pending.push(HostOutput::Message(WorkerMessage::Failed {
            job_id: job,
            error: "x".into(),
        }));
        assert_eq!(
            pending.len(),
            n + 1,
            "nothing droppable: everything is kept"
        );
        assert!(!pending.has_room());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let max = Duration::from_secs(5);
        for attempt in 0..30 {
            let full = BACKOFF_MIN
                .saturating_mul(2u32.saturating_pow(attempt.min(20)))
                .min(max);
            let wait = backoff(attempt, max);
            assert!(
                wait <= full && wait >= full / 2,
                "{attempt}: {wait:?} of {full:?}"
            );
        }
    }
}
