//! Requests that ask for a WebSocket upgrade, with the socket they came on.
//!
//! actix-http's HTTP/1 dispatcher hands every request carrying `Upgrade: websocket` (and every
//! `CONNECT`) to this service together with the connection, as a `Framed` socket, instead of to
//! the application. Here the request is routed and authorized, answered — `101` or an error in
//! the API's JSON shape — and for a `101` the socket is taken out of the `Framed` and served by an
//! actix-web-actors `WebsocketContext` actor on this arbiter (`atelier_actors::socket::serve`: the
//! context reads the socket's bytes and its encoded frames are written straight to the socket).
//! The dispatcher's task ends right after, and with it its 8 KiB read and write buffers: an idle
//! WebSocket keeps neither (`ws::start` would keep the dispatcher streaming the socket for the
//! connection's life).
//!
//! Endpoints: `/ws/{session_id}` ([`crate::ws`]) and `/api/v1/workers/ws`
//! ([`crate::jobs::worker_socket`]); anything else is 404. The refusals are those of the plain
//! GET routes of the same paths (which answer requests without the upgrade).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_codec::{Encoder, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::{h1, ws as http_ws, ConnectionType, HttpMessage, Request, Response};
use actix_web::{web, ResponseError};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::http::api::usage_log;
use crate::http::ws;
use crate::jobs::worker_socket;
use crate::state::AppState;

/// After a refusal, how long the client has to close its end before the socket is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// A WebSocket endpoint, from the request path.
enum Endpoint<'a> {
    /// `/ws/{session_id}`, with the raw segment.
    Live(&'a str),
    Worker,
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Self> {
        if path == worker_socket::PATH {
            return Some(Endpoint::Worker);
        }
        path.strip_prefix(ws::PATH_PREFIX)
            .filter(|segment| !segment.is_empty() && !segment.contains('/'))
            .map(Endpoint::Live)
    }
}

/// An upgrade that passed every check.
enum Accepted {
    Live(ws::Accepted),
    /// With the id of the worker token it presented.
    Worker(atelier_protocol::ids::WorkerId),
}

/// Serves one upgrade request on its connection. `local_addr`: the listening address (the host
/// of last resort, as for actix-web's `ConnectionInfo`).
pub async fn handle(
    state: web::Data<AppState>,
    local_addr: SocketAddr,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    let started = Instant::now();
    let decision = decide(&state, local_addr, &req).await;
    let parts = framed.into_parts();
    let (mut io, mut codec, read_buf) = (parts.io, parts.codec, parts.read_buf);
    // The dispatcher's write buffer is of no more use; its read buffer is copied (what the client
    // sent after its request) by whoever serves the socket, then dropped too.
    drop(parts.write_buf);
    let status = match decision {
        Ok((accepted, response)) => match respond(&mut io, &mut codec, response, None).await {
            Ok(()) => {
                let _ = io.set_nodelay(true);
                match accepted {
                    Accepted::Live(accepted) => ws::start(&state, accepted, io, read_buf),
                    Accepted::Worker(token) => worker_socket::start(&state, token, io, read_buf),
                }
                101
            }
            Err(error) => {
                tracing::debug!(%error, "could not answer a WebSocket upgrade");
                return Ok(());
            }
        },
        Err(error) => {
            let status = error.status_code().as_u16();
            drop(read_buf);
            if let Err(error) = refuse(io, &mut codec, &error).await {
                tracing::debug!(%error, "could not answer a refused upgrade");
            }
            status
        }
    };
    let path = req.path();
    if path.starts_with("/api/") {
        let route = match Endpoint::of(path) {
            Some(Endpoint::Worker) => worker_socket::PATH,
            _ => "unmatched",
        };
        usage_log::record_upgrade(&state, req.method(), route, status, started.elapsed()).await;
    }
    Ok(())
}

/// Routes and authorizes the request, then checks the handshake itself: the answer is a `101`
/// or the refusal.
async fn decide(
    state: &AppState,
    local_addr: SocketAddr,
    req: &Request,
) -> Result<(Accepted, Response<()>), Error> {
    let accepted = match Endpoint::of(req.path()) {
        Some(Endpoint::Live(session)) => {
            let host = ws::request_host(req.headers(), req.uri(), &local_addr.to_string());
            let upgrade = ws::UpgradeRequest {
                headers: req.headers(),
                query: req.uri().query().unwrap_or(""),
                host: &host,
                // The client behind a trusted proxy (per-IP caps count clients, not the balancer).
                peer: req.peer_addr().map(|a| {
                    state
                        .config
                        .trusted_proxies
                        .client_ip(a.ip(), req.headers())
                }),
            };
            Accepted::Live(ws::authorize(state, session, &upgrade).await?)
        }
        Some(Endpoint::Worker) => {
            Accepted::Worker(worker_socket::authorize(state, req.headers()).await?)
        }
        None => {
            return Err(Error::NoRoute(format!(
                "no WebSocket endpoint at {}",
                req.path()
            )))
        }
    };
    let response = http_ws::handshake(req.head())
        .map_err(|e| Error::invalid(format!("WebSocket upgrade failed: {e}")))?
        .finish()
        .drop_body();
    Ok((accepted, response))
}

/// Writes a response head (and body, if any) with the connection's HTTP/1 codec.
async fn respond(
    io: &mut TcpStream,
    codec: &mut h1::Codec,
    head: Response<()>,
    body: Option<bytes::Bytes>,
) -> io::Result<()> {
    let mut buf = BytesMut::new();
    match body {
        None => codec.encode(h1::Message::Item((head, BodySize::None)), &mut buf)?,
        Some(body) => {
            let size = BodySize::Sized(body.len() as u64);
            codec.encode(h1::Message::Item((head, size)), &mut buf)?;
            codec.encode(h1::Message::Chunk(Some(body)), &mut buf)?;
            codec.encode(h1::Message::Chunk(None), &mut buf)?;
        }
    }
    io.write_all(&buf).await
}

/// Answers with the error's status and JSON body, then closes the connection (gracefully: our
/// end first, then a moment for the client to close its end).
async fn refuse(mut io: TcpStream, codec: &mut h1::Codec, error: &Error) -> io::Result<()> {
    let (head, body) = error.error_response().into_parts();
    let mut head: Response<()> = head.into();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let body = body.try_into_bytes().unwrap_or_default();
    respond(&mut io, codec, head, Some(body)).await?;
    io.shutdown().await?;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut scratch = [0u8; 512];
        while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}
