//! `GET /api/v1/workers/ws`: a remote worker host's connection (worker token as bearer).
//! JSON text frames both ways (`atelier_protocol::worker`). The socket's end is the worker's end:
//! its running job fails with "worker lost".
//!
//! Like the live-session socket, the upgrade is handled by [`crate::http::upgrade`] ([`authorize`],
//! `101`, [`start`]) and the socket served by an actix-web-actors `WebsocketContext` actor through
//! `atelier_actors::socket`; a plain GET is answered by [`worker_ws`].

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{get, web, HttpRequest, HttpResponse};
use atelier_actors::socket::{
    self, CloseCode, Message, ProtocolError, UntilWritten, WebsocketContext,
};
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::{ServerMessage, WorkerMessage};
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::JobService;
use crate::auth::tokens;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Where workers connect.
pub const PATH: &str = "/api/v1/workers/ws";

const PING_EVERY: Duration = Duration::from_secs(5);
/// Largest message a worker may send (outputs travel base64 inside JSON).
const MAX_FRAME_BYTES: usize = 48 * 1024 * 1024;

pub const WORKER_TOKEN_PREFIX: &str = "atw_";

struct WorkerSocket {
    service: JobService,
    db: crate::db::Db,
    /// The worker token it connected with; re-checked every [`PING_EVERY`] so a token revoked
    /// from the command line (another process) disconnects it too.
    token_id: WorkerId,
    checking_token: bool,
    worker: Option<WorkerId>,
    last_heard: Instant,
    /// A close frame was sent: nothing more is.
    closing: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ToWorker(ServerMessage);

impl Actor for WorkerSocket {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let timeout = self.service.limits().heartbeat_timeout;
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
            self.service.worker_gone(worker);
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
        let db = self.db.clone();
        let token = self.token_id;
        let fut = async move { db.worker_token_valid(token).await };
        ctx.spawn(fut.into_actor(self).map(|valid, act, ctx| {
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
            Ok(_) => {
                return Self::refuse(
                    ctx,
                    self,
                    CloseCode::Unsupported,
                    "text JSON frames only".into(),
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
                self.worker = Some(self.service.register_worker(
                    name,
                    &devices,
                    models,
                    gpu_class,
                    Some(self.token_id),
                    tx,
                ));
            }
            (None, _) => Self::refuse(ctx, self, CloseCode::Policy, "say hello first".into()),
            (Some(_), WorkerMessage::Hello { .. }) => Self::refuse(
                ctx,
                self,
                CloseCode::Policy,
                "hello was already said".into(),
            ),
            (Some(worker), msg) => self.service.worker_message(worker, msg),
        }
    }
}

/// Checks an upgrade to [`PATH`]: a valid worker token as bearer, else 401. Returns the
/// token's id.
pub async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<WorkerId> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::Unauthenticated)?;
    if !token.starts_with(WORKER_TOKEN_PREFIX) {
        return Err(Error::InvalidCredentials("not a worker token".into()));
    }
    let (id, _name) = state
        .db
        .worker_token(&tokens::hash(token))
        .await?
        .ok_or_else(|| Error::InvalidCredentials("unknown or revoked worker token".into()))?;
    Ok(id)
}

/// Serves an accepted worker WebSocket on `io` (after the `101`); `leftover` is what the worker
/// sent after its request. The connection runs on the current arbiter.
pub fn start(state: &AppState, token_id: WorkerId, io: TcpStream, leftover: BytesMut) {
    let actor = WorkerSocket {
        service: state.jobs.clone(),
        db: state.db.clone(),
        token_id,
        checking_token: false,
        worker: None,
        last_heard: Instant::now(),
        closing: false,
    };
    // Nothing of the worker's needs keeping until written.
    socket::serve(
        io,
        leftover,
        MAX_FRAME_BYTES,
        actor,
        UntilWritten::<()>::new(),
    );
}

/// A GET without the WebSocket upgrade: the refusals an upgrade would get, else 400.
#[get("/workers/ws")]
pub async fn worker_ws(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    authorize(&state, req.headers()).await?;
    Err(Error::invalid("expected a WebSocket upgrade"))
}
