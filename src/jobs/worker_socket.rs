//! `GET /api/v1/workers/ws`: a remote worker host's connection (worker token as bearer).
//! JSON text frames both ways (`atelier_protocol::worker`). The socket's end is the worker's end:
//! its running job fails with "worker lost".

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::{ServerMessage, WorkerMessage};
use tokio::sync::mpsc;

use super::JobService;
use crate::auth::tokens;
use crate::error::{Error, Result};
use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(5);
/// Largest message a worker may send (outputs travel base64 inside JSON).
const MAX_FRAME_BYTES: usize = 48 * 1024 * 1024;

pub const WORKER_TOKEN_PREFIX: &str = "atw_";

struct WorkerSocket {
    service: JobService,
    worker: Option<WorkerId>,
    last_heard: Instant,
}

#[derive(Message)]
#[rtype(result = "()")]
struct ToWorker(ServerMessage);

impl Actor for WorkerSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let timeout = self.service.limits().heartbeat_timeout;
        ctx.run_interval(PING_EVERY, move |act, ctx| {
            if act.last_heard.elapsed() > timeout {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
                return;
            }
            ctx.ping(b"");
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
            Ok(text) => ctx.text(text),
            Err(e) => tracing::error!(error = %e, "cannot encode a worker message"),
        }
        if let ServerMessage::Refused { reason } = msg.0 {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Policy,
                description: Some(reason),
            }));
            ctx.stop();
        }
    }
}

impl WorkerSocket {
    fn refuse(ctx: &mut ws::WebsocketContext<Self>, code: ws::CloseCode, reason: String) {
        ctx.close(Some(ws::CloseReason {
            code,
            description: Some(reason),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WorkerSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let text = match item {
            Ok(ws::Message::Text(text)) => text,
            Ok(ws::Message::Ping(p)) => return ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => return,
            Ok(ws::Message::Close(_)) => return ctx.stop(),
            Ok(_) => {
                return Self::refuse(
                    ctx,
                    ws::CloseCode::Unsupported,
                    "text JSON frames only".into(),
                )
            }
            Err(e) => return Self::refuse(ctx, ws::CloseCode::Protocol, e.to_string()),
        };
        let msg: WorkerMessage = match serde_json::from_str(&text) {
            Ok(msg) => msg,
            Err(e) => {
                return Self::refuse(
                    ctx,
                    ws::CloseCode::Invalid,
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
                self.worker = Some(self.service.register_worker(name, &devices, models, tx));
            }
            (None, _) => Self::refuse(ctx, ws::CloseCode::Policy, "say hello first".into()),
            (Some(_), WorkerMessage::Hello { .. }) => {
                Self::refuse(ctx, ws::CloseCode::Policy, "hello was already said".into())
            }
            (Some(worker), msg) => self.service.worker_message(worker, msg),
        }
    }
}

#[get("/workers/ws")]
pub async fn worker_ws(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::Unauthenticated)?;
    if !token.starts_with(WORKER_TOKEN_PREFIX) {
        return Err(Error::InvalidCredentials("not a worker token".into()));
    }
    state
        .db
        .worker_token(&tokens::hash(token))
        .await?
        .ok_or_else(|| Error::InvalidCredentials("unknown or revoked worker token".into()))?;
    let actor = WorkerSocket {
        service: state.jobs.clone(),
        worker: None,
        last_heard: Instant::now(),
    };
    ws::WsResponseBuilder::new(actor, &req, stream)
        .frame_size(MAX_FRAME_BYTES)
        .start()
        .map_err(|e| Error::invalid(format!("WebSocket upgrade failed: {e}")))
}
