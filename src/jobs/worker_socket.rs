//! `GET /api/v1/workers/ws`: a remote worker host's connection (worker token as bearer).
//!
//! Like the live-session socket, the upgrade is handled by [`crate::http::upgrade`] ([`authorize`],
//! `101`, [`start`]); the socket is served by the [`WorkerSocket`] actor of `atelier-actors`,
//! which hands the worker's messages to the [`WorkerHub`] port — implemented here over the job
//! service and the worker tokens ([`JobSystemHub`]). A plain GET is answered by [`worker_ws`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{get, web, HttpRequest, HttpResponse};
use atelier_actors::store::BoxFuture;
use atelier_actors::{start_worker_socket, MediaPermit, WorkerHello, WorkerHub, WorkerLink};
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::WorkerMessage;
use atelier_protocol::worker_frame::MediaFrame;
use bytes::BytesMut;
use tokio::net::TcpStream;

use super::JobService;
use crate::auth::tokens;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::state::AppState;

#[cfg(doc)]
use atelier_actors::WorkerSocket;

/// Where workers connect.
pub const PATH: &str = "/api/v1/workers/ws";

pub const WORKER_TOKEN_PREFIX: &str = "atw_";

/// The job system as a worker's socket sees it: the job service keeps the worker (and fails its
/// job when it goes), the database says whether its token still holds.
struct JobSystemHub {
    service: JobService,
    db: Db,
}

impl WorkerHub for JobSystemHub {
    fn heartbeat_timeout(&self) -> Duration {
        self.service.limits().heartbeat_timeout
    }

    fn register(&self, hello: WorkerHello, token: WorkerId, link: WorkerLink) -> WorkerId {
        let per_device = u32::try_from(hello.devices.len())
            .unwrap_or(u32::MAX)
            .max(1);
        let join = super::WorkerJoin {
            name: hello.name,
            devices: hello.devices,
            models: hello.models,
            gpu_class: hello.gpu_class,
            slots: hello.slots.unwrap_or(per_device),
            resume: hello.resume,
        };
        self.service.register_worker(join, Some(token), link)
    }

    fn message(&self, worker: WorkerId, msg: WorkerMessage) -> Option<BoxFuture<'static, ()>> {
        self.service.worker_message(worker, msg)
    }

    fn media(
        &self,
        worker: WorkerId,
        frame: MediaFrame,
        permit: MediaPermit,
    ) -> Option<BoxFuture<'static, ()>> {
        self.service.worker_media(worker, frame, permit)
    }

    fn gone(&self, worker: WorkerId) {
        self.service.worker_gone(worker);
    }

    fn token_valid(&self, token: WorkerId) -> BoxFuture<'static, Result<bool, String>> {
        let db = self.db.clone();
        Box::pin(async move {
            db.worker_token_valid(token)
                .await
                .map_err(|e| e.to_string())
        })
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
    let hub = JobSystemHub {
        service: state.jobs.clone(),
        db: state.db.clone(),
    };
    start_worker_socket(io, leftover, token_id, Arc::new(hub));
}

/// A GET without the WebSocket upgrade: the refusals an upgrade would get, else 400.
#[get("/workers/ws")]
pub async fn worker_ws(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    authorize(&state, req.headers()).await?;
    Err(Error::invalid("expected a WebSocket upgrade"))
}
