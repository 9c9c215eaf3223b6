//! [`WorkerSocket`]: a remote worker host's connection — an actix-web-actors `WebsocketContext`
//! actor served on a socket taken over after the upgrade ([`crate::socket::serve`]), like the
//! live-session [`crate::ConnectionActor`]. JSON text frames both ways
//! (`atelier_protocol::worker`): the worker says hello first, then heartbeats, progress and
//! results; its previews and node outputs come as binary frames, and an `assign`'s inputs go to
//! it as binary frames right after the `assign` (`atelier_protocol::worker_frame`). What the
//! worker's messages mean is the job system's business, reached through the [`WorkerHub`] port (the server implements it over its job
//! service and worker tokens). The socket's end is the worker's end: [`WorkerHub::gone`].
//!
//! Media is bounded: each frame handed on holds permits of a per-connection [`MediaBudget`]
//! (one per byte) until the job system has handled it. A worker that sends faster than previews
//! are relayed and outputs stored runs out: its previews are skipped, and an output it sends
//! then closes it with 1008 — memory stays under the budget plus one frame. A message the
//! worker sends about a job whose assignment is behind (its bounded inbox is full) pauses the
//! reading of this socket until the assignment took it: backpressure, not loss.
//!
//! What goes to the worker comes through its bounded [`WorkerLink`] and is written one frame at
//! a time: the next frame is encoded only when the socket took the previous one. A frame the
//! socket has not taken within the heartbeat timeout (the worker stopped reading), or a full link,
//! closes the worker with 1008 "too slow…"; its jobs are then handled as a lost worker's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::{Device, ServerMessage, ToWorker, WorkerMessage};
use atelier_protocol::worker_frame::{self, InputFrame, InputKey, MediaFrame, MediaKind};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::socket::{self, CloseCode, DirectBinary, Message, ProtocolError, WebsocketContext};
use crate::store::BoxFuture;
use crate::worker_link::{worker_link, LinkEnd, LinkInbox, WorkerLink, WORKER_LINK_CAPACITY};

/// How often the server pings a worker and re-checks its token.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Largest message a worker may send (an output image plus its tensors).
pub const MAX_WORKER_FRAME_BYTES: usize = 48 * 1024 * 1024;
/// Bytes of one worker's media that may wait to be handled (relayed, stored) at once.
pub const MEDIA_IN_FLIGHT_BYTES: usize = 96 * 1024 * 1024;

/// Bytes of a worker's media handed on and not yet handled: one permit per byte, held by the
/// frame's [`MediaPermit`] until the job system drops it.
#[derive(Clone)]
pub struct MediaBudget(Arc<Semaphore>);

/// A frame's share of its worker's [`MediaBudget`], given back when dropped.
pub type MediaPermit = OwnedSemaphorePermit;

impl MediaBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// Permits for a frame of `len` bytes (a frame larger than the whole budget takes all of it).
    fn permits(len: usize) -> u32 {
        u32::try_from(len.min(MEDIA_IN_FLIGHT_BYTES))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The frame's share now, or `None` when the budget is spent.
    pub fn try_take(&self, frame: &MediaFrame) -> Option<MediaPermit> {
        let n = Self::permits(frame.payload_len());
        self.0.clone().try_acquire_many_owned(n).ok()
    }

    /// The frame's share, waiting for it (the in-process worker: its host waits in turn).
    pub async fn take(&self, frame: &MediaFrame) -> Option<MediaPermit> {
        let n = Self::permits(frame.payload_len());
        self.0.clone().acquire_many_owned(n).await.ok()
    }
}

/// What a worker announces in its hello.
#[derive(Debug, Clone)]
pub struct WorkerHello {
    pub name: String,
    pub devices: Vec<Device>,
    pub models: Vec<String>,
    pub gpu_class: Option<String>,
    /// Runtime leases it can hold at once; absent: one per device.
    pub slots: Option<u32>,
    /// A reconnecting worker: what it had under its previous connection (see the protocol's
    /// `hello`); empty for a worker that connects for the first time.
    pub resume: WorkerResume,
}

/// What a reconnecting worker re-announces: the id it had, the jobs it still runs and the
/// leases holding its slots.
#[derive(Debug, Clone, Default)]
pub struct WorkerResume {
    pub previous_worker_id: Option<WorkerId>,
    pub running_jobs: Vec<atelier_protocol::ids::JobId>,
    pub leases: Vec<atelier_protocol::ids::LeaseId>,
}

/// The job system, as a worker's socket sees it.
pub trait WorkerHub: Send + Sync + 'static {
    /// A worker silent for longer is closed (1008 `heartbeat timeout`).
    fn heartbeat_timeout(&self) -> Duration;
    /// A worker said hello with the token `token`: it joins the pool; what the server sends it
    /// comes through `link`. Returns its id for this connection.
    fn register(&self, hello: WorkerHello, token: WorkerId, link: WorkerLink) -> WorkerId;
    /// Any message of a registered worker after its hello. `Some`: the job it is about cannot
    /// take it now; the socket reads nothing more from the worker until the future is done.
    fn message(&self, worker: WorkerId, msg: WorkerMessage) -> Option<BoxFuture<'static, ()>>;
    /// A preview or node output of a registered worker; `permit` is its share of the worker's
    /// media budget, to hold until the frame is handled. `Some`: as for [`WorkerHub::message`].
    fn media(
        &self,
        worker: WorkerId,
        frame: MediaFrame,
        permit: MediaPermit,
    ) -> Option<BoxFuture<'static, ()>>;
    /// The worker's connection ended: its running job fails with "worker lost".
    fn gone(&self, worker: WorkerId);
    /// Whether the token it connected with is still valid: re-checked on every ping, so a
    /// token revoked by another process (the command line) disconnects it too.
    fn token_valid(&self, token: WorkerId) -> BoxFuture<'static, Result<bool, String>>;
}

/// One remote worker's connection.
pub struct WorkerSocket {
    hub: Arc<dyn WorkerHub>,
    /// The worker token it connected with.
    token_id: WorkerId,
    checking_token: bool,
    worker: Option<WorkerId>,
    media: MediaBudget,
    /// Where what the server sends the worker is written, each frame signalled once written.
    direct: DirectBinary<Written>,
    last_heard: Instant,
    /// A close frame was sent: nothing more is.
    closing: bool,
}

/// Serves an accepted worker WebSocket on `io` (after the `101`); `leftover` is what the worker
/// sent after its request. The connection runs on the current arbiter.
pub fn start_worker_socket(
    io: TcpStream,
    leftover: BytesMut,
    token_id: WorkerId,
    hub: Arc<dyn WorkerHub>,
) {
    let direct = DirectBinary::new();
    let actor = WorkerSocket {
        hub,
        token_id,
        checking_token: false,
        worker: None,
        media: MediaBudget::new(MEDIA_IN_FLIGHT_BYTES),
        direct: direct.clone(),
        last_heard: Instant::now(),
        closing: false,
    };
    socket::serve(io, leftover, MAX_WORKER_FRAME_BYTES, actor, direct);
}

/// Held with a frame handed to the writer; dropped (which its receiver sees) once the frame is
/// written, or the connection is gone.
type Written = oneshot::Sender<()>;

/// Why the forwarding of a worker's link stopped.
enum ForwardEnd {
    /// The worker is off the board (its link dropped).
    Closed,
    /// The server refused the worker (the refusal was written): close with 1008 and this reason.
    Refused(String),
    /// The worker does not read: close with 1008 and this reason.
    TooSlow(String),
}

/// One WebSocket message to the worker.
enum Outgoing {
    Text(String),
    /// Encoded only when the message before it was written.
    Input(InputFrame),
}

/// One message to the worker as WebSocket messages: its JSON text, then (an `assign`'s) input
/// frames.
fn outgoing(msg: &ToWorker) -> Vec<Outgoing> {
    let (message, inputs) = match msg {
        ToWorker::Message(message) => (message.clone(), Vec::new()),
        ToWorker::Assign(a) => {
            // In the order `Assignment::input_refs` names them: media, then tensors.
            let media = a.media.iter().map(|m| InputFrame {
                job_id: a.job_id,
                key: InputKey::Media {
                    media_id: m.media_id.clone(),
                },
                data: m.data.clone(),
            });
            let tensors = a.provided.iter().map(|t| InputFrame {
                job_id: a.job_id,
                key: InputKey::Tensor {
                    node_id: t.node_id.clone(),
                    port: t.port.clone(),
                },
                data: t.data.clone(),
            });
            (a.message(), media.chain(tensors).collect())
        }
    };
    match serde_json::to_string(&message) {
        Ok(text) => std::iter::once(Outgoing::Text(text))
            .chain(inputs.into_iter().map(Outgoing::Input))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a worker message");
            Vec::new()
        }
    }
}

/// Writes what comes through the worker's link, a frame at a time, until the link ends, the
/// worker is refused, or a frame is not taken within `stall`.
async fn forward(
    mut inbox: LinkInbox,
    direct: DirectBinary<Written>,
    stall: Duration,
) -> ForwardEnd {
    let too_slow = || {
        format!(
            "too slow: a message waited {} s for the worker to read it",
            stall.as_secs()
        )
    };
    loop {
        let msg = match inbox.recv().await {
            Ok(msg) => msg,
            Err(LinkEnd::Closed) => return ForwardEnd::Closed,
            Err(LinkEnd::Overflow) => {
                return ForwardEnd::TooSlow(format!(
                    "too slow: more than {WORKER_LINK_CAPACITY} messages waiting for the worker"
                ))
            }
        };
        for frame in outgoing(&msg) {
            let (written, taken) = oneshot::channel();
            match frame {
                Outgoing::Text(text) => direct.send_text(text, written),
                Outgoing::Input(input) => {
                    direct.send(Bytes::from(worker_frame::encode_input(&input)), written)
                }
            }
            // Resolves (with the sender dropped) once the writer wrote the frame.
            if tokio::time::timeout(stall, taken).await.is_err() {
                return ForwardEnd::TooSlow(too_slow());
            }
        }
        if let ToWorker::Message(ServerMessage::Refused { reason }) = msg {
            return ForwardEnd::Refused(reason);
        }
    }
}

impl Actor for WorkerSocket {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let timeout = self.hub.heartbeat_timeout();
        ctx.run_interval(PING_EVERY, move |act, ctx| {
            if act.closing {
                return;
            }
            if act.last_heard.elapsed() > timeout {
                Self::refuse(ctx, act, CloseCode::Policy, "heartbeat timeout".into());
                return;
            }
            ctx.ping(b"");
            act.check_token(ctx);
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(worker) = self.worker {
            self.hub.gone(worker);
        }
    }
}

impl WorkerSocket {
    /// Starts writing what the server sends through the worker's link (see [`forward`]).
    fn start_forwarding(&mut self, inbox: LinkInbox, ctx: &mut WebsocketContext<Self>) {
        let stall = self.hub.heartbeat_timeout();
        let forwarding = forward(inbox, self.direct.clone(), stall);
        ctx.spawn(forwarding.into_actor(self).map(|end, act, ctx| match end {
            ForwardEnd::Closed => {}
            ForwardEnd::Refused(reason) => Self::refuse(ctx, act, CloseCode::Policy, reason),
            ForwardEnd::TooSlow(reason) => {
                tracing::warn!(worker = ?act.worker, %reason, "closing a worker");
                Self::refuse(ctx, act, CloseCode::Policy, reason);
            }
        }));
    }

    /// Pauses reading the worker until `wait` is done (its job's assignment is behind). The
    /// worker's silence meanwhile is ours: its heartbeat clock restarts after.
    fn wait_for(&mut self, wait: Option<BoxFuture<'static, ()>>, ctx: &mut WebsocketContext<Self>) {
        if let Some(wait) = wait {
            ctx.wait(
                wait.into_actor(self)
                    .map(|(), act, _| act.last_heard = Instant::now()),
            );
        }
    }

    fn check_token(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.checking_token {
            return;
        }
        self.checking_token = true;
        let valid = self.hub.token_valid(self.token_id);
        ctx.spawn(valid.into_actor(self).map(|valid, act, ctx| {
            act.checking_token = false;
            match valid {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(token = %act.token_id, "worker token revoked: disconnecting");
                    Self::refuse(
                        ctx,
                        act,
                        CloseCode::Policy,
                        "the worker token was revoked".into(),
                    );
                }
                Err(error) => tracing::warn!(%error, "could not re-check a worker token"),
            }
        }));
    }

    /// A binary frame: a preview or node output, handed on within the media budget.
    fn on_media(&mut self, bytes: &[u8], ctx: &mut WebsocketContext<Self>) {
        let Some(worker) = self.worker else {
            return Self::refuse(ctx, self, CloseCode::Policy, "say hello first".into());
        };
        let frame = match worker_frame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                let code = CloseCode::from(e.close_code());
                return Self::refuse(ctx, self, code, format!("bad media frame: {e}"));
            }
        };
        match (self.media.try_take(&frame), &frame.kind) {
            (Some(permit), _) => {
                let wait = self.hub.media(worker, frame, permit);
                self.wait_for(wait, ctx);
            }
            // Previews are ephemeral: skipped while the worker is ahead of its viewers.
            (None, MediaKind::Preview { .. }) => {
                tracing::debug!(%worker, job = %frame.job_id, "media budget spent: preview skipped")
            }
            (None, MediaKind::NodeOutput { .. }) => Self::refuse(
                ctx,
                self,
                CloseCode::Policy,
                format!(
                    "more than {} MiB of media waiting to be stored: the worker sends faster \
                     than the server stores",
                    MEDIA_IN_FLIGHT_BYTES / (1024 * 1024)
                ),
            ),
        }
    }

    /// Sends a close frame (after everything queued) and stops.
    fn refuse(ctx: &mut WebsocketContext<Self>, act: &mut Self, code: CloseCode, reason: String) {
        if act.closing {
            return;
        }
        act.closing = true;
        ctx.close(Some(socket::close_reason(code, &reason)));
        ctx.stop();
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for WorkerSocket {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_heard = Instant::now();
        let text = match item {
            Ok(Message::Text(text)) => text,
            Ok(Message::Ping(p)) => return ctx.pong(&p),
            Ok(Message::Pong(_)) => return,
            Ok(Message::Close(reason)) => {
                self.closing = true;
                ctx.close(reason);
                return ctx.stop();
            }
            Ok(Message::Binary(bytes)) => return self.on_media(&bytes, ctx),
            Ok(_) => {
                return Self::refuse(
                    ctx,
                    self,
                    CloseCode::Unsupported,
                    "JSON text frames and binary media frames only".into(),
                )
            }
            Err(e) => return Self::refuse(ctx, self, CloseCode::Protocol, e.to_string()),
        };
        let msg: WorkerMessage = match serde_json::from_str(&text) {
            Ok(msg) => msg,
            Err(e) => {
                return Self::refuse(
                    ctx,
                    self,
                    CloseCode::Invalid,
                    format!("bad worker message: {e}"),
                )
            }
        };
        match (self.worker, msg) {
            (
                None,
                WorkerMessage::Hello {
                    name,
                    devices,
                    models,
                    gpu_class,
                    slots,
                    previous_worker_id,
                    running_jobs,
                    leases,
                    ..
                },
            ) => {
                let (link, inbox) = worker_link();
                self.start_forwarding(inbox, ctx);
                let hello = WorkerHello {
                    name,
                    devices,
                    models,
                    gpu_class,
                    slots,
                    resume: WorkerResume {
                        previous_worker_id,
                        running_jobs,
                        leases,
                    },
                };
                self.worker = Some(self.hub.register(hello, self.token_id, link));
            }
            (None, _) => Self::refuse(ctx, self, CloseCode::Policy, "say hello first".into()),
            (Some(_), WorkerMessage::Hello { .. }) => Self::refuse(
                ctx,
                self,
                CloseCode::Policy,
                "hello was already said".into(),
            ),
            (Some(worker), msg) => {
                let wait = self.hub.message(worker, msg);
                self.wait_for(wait, ctx);
            }
        }
    }
}
