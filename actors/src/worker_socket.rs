//! [`WorkerSocket`]: a remote worker host's connection — an actix-web-actors `WebsocketContext`
//! actor served on a socket taken over after the upgrade ([`crate::socket::serve`]), like the
//! live-session [`crate::ConnectionActor`]. JSON text frames both ways
//! (`atelier_protocol::worker`): the worker says hello first, then heartbeats, progress and
//! results; its previews and node outputs come as binary frames
//! (`atelier_protocol::worker_frame`). What the worker's messages mean is the job system's
//! business, reached through the [`WorkerHub`] port (the server implements it over its job
//! service and worker tokens). The socket's end is the worker's end: [`WorkerHub::gone`].
//!
//! Media is bounded: each frame handed on holds permits of a per-connection [`MediaBudget`]
//! (one per byte) until the job system has handled it. A worker that sends faster than previews
//! are relayed and outputs stored runs out: its previews are skipped, and an output it sends
//! then closes it with 1008 — memory stays under the budget plus one frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::{Device, ServerMessage, WorkerMessage};
use atelier_protocol::worker_frame::{self, MediaFrame, MediaKind};
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::socket::{self, CloseCode, DirectBinary, Message, ProtocolError, WebsocketContext};
use crate::store::BoxFuture;

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
    fn register(
        &self,
        hello: WorkerHello,
        token: WorkerId,
        link: mpsc::UnboundedSender<ServerMessage>,
    ) -> WorkerId;
    /// Any message of a registered worker after its hello.
    fn message(&self, worker: WorkerId, msg: WorkerMessage);
    /// A preview or node output of a registered worker; `permit` is its share of the worker's
    /// media budget, to hold until the frame is handled.
    fn media(&self, worker: WorkerId, frame: MediaFrame, permit: MediaPermit);
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
    let actor = WorkerSocket {
        hub,
        token_id,
        checking_token: false,
        worker: None,
        media: MediaBudget::new(MEDIA_IN_FLIGHT_BYTES),
        last_heard: Instant::now(),
        closing: false,
    };
    // Its messages are few and small: they go through the context.
    socket::serve(
        io,
        leftover,
        MAX_WORKER_FRAME_BYTES,
        actor,
        DirectBinary::<()>::new(),
    );
}

#[derive(Message)]
#[rtype(result = "()")]
struct ToWorker(ServerMessage);

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

impl Handler<ToWorker> for WorkerSocket {
    type Result = ();

    fn handle(&mut self, msg: ToWorker, ctx: &mut Self::Context) {
        match serde_json::to_string(&msg.0) {
            Ok(text) if !self.closing => ctx.text(text),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot encode a worker message"),
        }
        if let ServerMessage::Refused { reason } = msg.0 {
            Self::refuse(ctx, self, CloseCode::Policy, reason);
        }
    }
}

impl WorkerSocket {
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
            (Some(permit), _) => self.hub.media(worker, frame, permit),
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
                let (tx, mut rx) = mpsc::unbounded_channel::<ServerMessage>();
                let addr = ctx.address();
                ctx.spawn(
                    async move {
                        while let Some(msg) = rx.recv().await {
                            addr.do_send(ToWorker(msg));
                        }
                    }
                    .into_actor(self),
                );
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
                self.worker = Some(self.hub.register(hello, self.token_id, tx));
            }
            (None, _) => Self::refuse(ctx, self, CloseCode::Policy, "say hello first".into()),
            (Some(_), WorkerMessage::Hello { .. }) => Self::refuse(
                ctx,
                self,
                CloseCode::Policy,
                "hello was already said".into(),
            ),
            (Some(worker), msg) => self.hub.message(worker, msg),
        }
    }
}
