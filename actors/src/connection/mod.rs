//! `ConnectionActor`: one live-session WebSocket, an actix-web-actors `WebsocketContext` actor
//! served by [`crate::socket`] on the socket the server took over after the upgrade.
//!
//! It owns everything per-connection: heartbeat, rate limit, message size limit,
//! frame decoding, and the outbound side of the [`Outbox`] the session writes to. It never
//! interprets the document — decoded frames go to the [`SessionActor`], which decides (roles,
//! storage, fan-out). Every refusal closes the socket with a code and a reason:
//!
//! | condition | close |
//! |---|---|
//! | text frame, or a server-only type (100/101) | 1003 |
//! | malformed frame (see `FrameError::close_code`) | 1002 (1003 for unknown types) |
//! | message over `max_message_bytes` | 1009 |
//! | over the message rate | 1008 |
//! | outbound queue full (client too slow) | 1008 (decided by the session) |
//! | no frame from the client for `client_timeout` | 1001 |
//! | share link revoked, member removed (decided by the session) | 4403 (no reconnect) |
//! | session deleted (decided by the session) | 4404 (no reconnect) |
//! | session failed or restarted | 1011 |

mod rate_limit;

use actix::prelude::*;
use atelier_protocol::close_code;
use atelier_protocol::ids::{ConnectionId, SessionId};
use atelier_protocol::ysync::decode_frame;
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::rate_limit::TokenBucket;
use crate::limits::ConnectionLimits;
use crate::outbound::{Outbound, Outbox, QueueSlot};
use crate::registry::SessionRegistryHandle;
use crate::session::messages::{Inbound, JoinError, Leave};
use crate::session::{Participant, SessionActor};
use crate::socket::{
    self, CloseCode, DirectBinary, Item, Message, ProtocolError, WebsocketContext,
};
use crate::telemetry;

/// The codec's own frame-size limit sits this far above `max_message_bytes`, so that messages a
/// little too large reach our check (which answers 1009 with the actual size) and only absurd
/// frames hit the codec's backstop (`ProtocolError::Overflow`, also answered with 1009).
const CODEC_SLACK_BYTES: usize = 64 * 1024;

/// Everything a connection needs; see [`ConnectionActor::new`].
#[derive(Clone)]
pub struct ConnectionConfig {
    pub registry: SessionRegistryHandle,
    pub session_id: SessionId,
    pub participant: Participant,
    pub limits: ConnectionLimits,
}

/// Serves a WebSocket with a [`ConnectionActor`] joined to `session_id`, on the current arbiter
/// (a `WebsocketContext` fed by the socket, see [`crate::socket::serve`]).
///
/// `io` is the client's socket after the server answered its upgrade request (`101`), and
/// `leftover` what the client had sent after that request. The caller has already authenticated
/// the request and decided the participant's role.
pub fn start_connection(
    io: TcpStream,
    leftover: BytesMut,
    registry: SessionRegistryHandle,
    session_id: SessionId,
    participant: Participant,
    limits: ConnectionLimits,
) {
    let max_frame_bytes = limits.max_message_bytes.saturating_add(CODEC_SLACK_BYTES);
    let config = ConnectionConfig {
        registry,
        session_id,
        participant,
        limits,
    };
    let direct = DirectBinary::new();
    let actor = ConnectionActor::new(config, direct.clone());
    socket::serve(io, leftover, max_frame_bytes, actor, direct);
}

/// One participant's WebSocket.
pub struct ConnectionActor {
    config: ConnectionConfig,
    /// Frames from the session go straight to the socket's writer (encoded once by the session
    /// for all its connections, not copied here), each with its queue slot, kept until written.
    direct: DirectBinary<QueueSlot>,
    /// The byte counters (`telemetry::WS_BYTES_IN`, `WS_BYTES_OUT`), looked up once, not per
    /// frame.
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    /// Set once the session accepted the join.
    session: Option<(Addr<SessionActor>, ConnectionId)>,
    last_heard: Instant,
    rate: TokenBucket,
    /// A fragmented binary message being reassembled.
    fragments: Option<BytesMut>,
    closing: bool,
}

impl ConnectionActor {
    /// A connection whose session frames go to `direct`, the handle its socket's writer takes
    /// them from ([`crate::socket::serve`], as [`start_connection`] does).
    pub fn new(config: ConnectionConfig, direct: DirectBinary<QueueSlot>) -> Self {
        let rate = TokenBucket::new(
            config.limits.max_messages_per_sec,
            config.limits.message_burst,
        );
        Self {
            config,
            direct,
            bytes_in: metrics::counter!(telemetry::WS_BYTES_IN),
            bytes_out: metrics::counter!(telemetry::WS_BYTES_OUT),
            session: None,
            last_heard: Instant::now(),
            rate,
            fragments: None,
            closing: false,
        }
    }

    /// Sends a close frame and stops. The close frame follows every frame already queued.
    fn close(&mut self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        tracing::debug!(
            session = %self.config.session_id,
            code,
            reason,
            "closing live-session connection"
        );
        ctx.close(Some(socket::close_reason(CloseCode::from(code), reason)));
        ctx.stop();
    }

    fn join(&mut self, ctx: &mut WebsocketContext<Self>) {
        let outbox = Outbox::new(
            ctx.address().recipient(),
            self.config.limits.outbox_budget(),
        );
        let registry = self.config.registry.clone();
        let session_id = self.config.session_id;
        let participant = self.config.participant.clone();
        // `wait`: no inbound frame is processed before the session has accepted us.
        ctx.wait(
            async move { registry.join(session_id, outbox, participant).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok((addr, joined)) => act.session = Some((addr, joined.connection_id)),
                    Err(JoinError::ShuttingDown) => {
                        act.close(ctx, close_code::GOING_AWAY, "server shutting down");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not join session");
                        act.close(
                            ctx,
                            close_code::INTERNAL_ERROR,
                            "session unavailable; retry",
                        );
                    }
                }),
        );
    }

    fn heartbeat(&mut self, ctx: &mut WebsocketContext<Self>) {
        if self.closing {
            return;
        }
        if self.last_heard.elapsed() > self.config.limits.client_timeout {
            self.close(ctx, close_code::GOING_AWAY, "ping timeout");
        } else {
            ctx.ping(b"");
        }
    }

    /// One complete binary message from the client.
    fn on_message(&mut self, bytes: &[u8], ctx: &mut WebsocketContext<Self>) {
        let max = self.config.limits.max_message_bytes;
        if bytes.len() > max {
            let reason = format!("message of {} bytes exceeds {max}", bytes.len());
            self.close(ctx, close_code::MESSAGE_TOO_BIG, &reason);
            return;
        }
        self.bytes_in.increment(bytes.len() as u64);
        let frame = match decode_frame(bytes) {
            Ok(frame) => frame,
            Err(error) => {
                self.close(ctx, error.close_code(), &error.to_string());
                return;
            }
        };
        if frame.is_server_only() {
            let reason = format!("message type {} is server-only", frame.message_type());
            self.close(ctx, close_code::UNSUPPORTED_DATA, &reason);
            return;
        }
        let Some((session, connection_id)) = self.session.clone() else {
            return;
        };
        // `send` + `wait`: one message of ours at a time in the session's mailbox, so a fast
        // client is slowed down (TCP backpressure) instead of flooding the session.
        ctx.wait(
            session
                .send(Inbound {
                    connection_id,
                    frame,
                })
                .into_actor(self)
                .map(|result, act, ctx| {
                    if result.is_err() {
                        act.close(
                            ctx,
                            close_code::INTERNAL_ERROR,
                            "session unavailable; retry",
                        );
                    }
                }),
        );
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut WebsocketContext<Self>) {
        let max = self.config.limits.max_message_bytes;
        let (start, chunk, last) = match item {
            Item::FirstText(_) => {
                self.close(ctx, close_code::UNSUPPORTED_DATA, "binary frames only");
                return;
            }
            Item::FirstBinary(chunk) => (true, chunk, false),
            Item::Continue(chunk) => (false, chunk, false),
            Item::Last(chunk) => (false, chunk, true),
        };
        let buffer = match (start, self.fragments.as_mut()) {
            (true, None) => self.fragments.insert(BytesMut::new()),
            (false, Some(buffer)) => buffer,
            _ => {
                self.close(
                    ctx,
                    close_code::PROTOCOL_ERROR,
                    "unexpected continuation frame",
                );
                return;
            }
        };
        if buffer.len() + chunk.len() > max {
            let reason = format!("fragmented message exceeds {max} bytes");
            self.close(ctx, close_code::MESSAGE_TOO_BIG, &reason);
            return;
        }
        buffer.extend_from_slice(&chunk);
        if last {
            if let Some(message) = self.fragments.take() {
                self.on_message(&message, ctx);
            }
        }
    }
}

impl Actor for ConnectionActor {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!(telemetry::WS_CONNECTIONS).increment(1.0);
        ctx.run_interval(self.config.limits.ping_interval, |act, ctx| {
            act.heartbeat(ctx)
        });
        self.join(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!(telemetry::WS_CONNECTIONS).decrement(1.0);
        if let Some((session, connection_id)) = self.session.take() {
            session.do_send(Leave { connection_id });
        }
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for ConnectionActor {
    fn handle(&mut self, msg: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        let msg = match msg {
            Ok(msg) => msg,
            Err(error) if socket::is_oversize(&error) => {
                let max = self.config.limits.max_message_bytes;
                self.close(
                    ctx,
                    close_code::MESSAGE_TOO_BIG,
                    &format!("message exceeds {max} bytes"),
                );
                return;
            }
            Err(error) => {
                self.close(ctx, close_code::PROTOCOL_ERROR, &error.to_string());
                return;
            }
        };
        self.last_heard = Instant::now();
        if !matches!(msg, Message::Pong(_)) && !self.rate.take() {
            self.close(ctx, close_code::POLICY_VIOLATION, "rate limit exceeded");
            return;
        }
        match msg {
            Message::Binary(bytes) => self.on_message(&bytes, ctx),
            Message::Continuation(item) => self.on_fragment(item, ctx),
            Message::Text(_) => {
                self.close(ctx, close_code::UNSUPPORTED_DATA, "binary frames only");
            }
            Message::Ping(payload) => ctx.pong(&payload),
            Message::Pong(_) | Message::Nop => {}
            Message::Close(reason) => {
                self.closing = true;
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The client went away without a close frame.
        ctx.stop();
    }
}

impl Handler<Outbound> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(frame) => {
                if self.closing {
                    return;
                }
                self.bytes_out.increment(frame.bytes().len() as u64);
                // Its slot in the session's count is kept until the frame was written.
                let (bytes, slot) = frame.into_parts();
                self.direct.send(bytes, slot);
            }
            Outbound::Close { code, reason } => self.close(ctx, code, &reason),
        }
    }
}
