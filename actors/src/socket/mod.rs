//! The WebSocket transport of actix-web-actors `WebsocketContext` actors, on a TCP socket taken
//! over after the HTTP upgrade.
//!
//! The server answers the upgrade request itself (the `101`) and hands over the `TcpStream` plus
//! whatever the client sent right after its request. [`serve`] starts the actor in a
//! `WebsocketContext` (`WebsocketContext::with_codec`, with the frame-size limit) and connects it
//! to the socket, whose two halves share the `TcpStream` (`Arc`: tokio's readiness and `try_*`
//! calls take `&self`):
//!
//! - [`SocketReader`] is the context's input, a `Stream` of `Bytes`: the socket's bytes cut at
//!   frame boundaries, one frame at a time (so TCP backpressure still reaches a client that sends
//!   faster than its session takes), frames over the limit refused from their header. What it
//!   reads waits in a buffer only until it is handed on.
//! - The writer ([`writer::run`], a task on the actor's arbiter) polls the stream of encoded
//!   frames the context returns — which is what runs the actor — and the binary (or text)
//!   messages the actor handed it directly ([`DirectBinary`]: framed by the writer, their
//!   payloads written from the shared `Bytes` they came in, not copied), several frames per
//!   vectored write. What the socket does not take waits in its queue; payloads, and what the
//!   actor asked to keep with them (such as a queue slot, or a signal that it was written), are
//!   dropped once written. When the actor stops (after a close frame) it writes what is left,
//!   shuts our end, and lets the client close its.
//!
//! Idle, a connection holds the actor and its context, the decoder's buffer (as large as the
//! largest frame the client sent: actix-web-actors keeps it) and the socket; no write buffer.
//! The numbers are in the README ("Benchmarks").

mod reader;
mod writer;

use std::sync::Arc;

use actix::prelude::*;
use actix_http::error::PayloadError;
use bytes::BytesMut;
use tokio::net::TcpStream;

pub use actix_http::ws::{Codec, Item};
pub use actix_web_actors::ws::{CloseCode, CloseReason, Message, ProtocolError, WebsocketContext};

pub use self::reader::SocketReader;
pub use self::writer::DirectBinary;

/// Serves a socket taken over after a WebSocket handshake with `actor`, on the current arbiter.
///
/// `leftover`: bytes read along with the HTTP request that belong to the WebSocket (frames the
/// client sent right after its request). `max_frame_bytes`: larger frames end the input with an
/// error for which [`is_oversize`] holds. `direct`: the actor's handle for binary messages it
/// hands straight to the writer.
pub fn serve<A, T>(
    io: TcpStream,
    leftover: BytesMut,
    max_frame_bytes: usize,
    actor: A,
    direct: DirectBinary<T>,
) where
    A: Actor<Context = WebsocketContext<A>> + StreamHandler<Result<Message, ProtocolError>>,
    T: 'static,
{
    let io = Arc::new(io);
    let input = SocketReader::new(io.clone(), leftover, max_frame_bytes);
    let codec = Codec::new().max_size(max_frame_bytes);
    let frames = WebsocketContext::with_codec(actor, input, codec);
    actix::spawn(writer::Writer::new(io, frames, direct));
}

/// A close reason must fit a control frame (125 bytes, 2 of them for the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A close frame's reason, its text cut (at a character boundary) to what a control frame holds.
pub fn close_reason(code: CloseCode, description: &str) -> CloseReason {
    let mut end = description.len().min(MAX_CLOSE_REASON_BYTES);
    while !description.is_char_boundary(end) {
        end -= 1;
    }
    CloseReason {
        code,
        description: Some(description.get(..end).unwrap_or_default().to_owned()),
    }
}

/// Whether the input ended because a frame was over the size limit. The context's decoder turns
/// the input's [`PayloadError::Overflow`] into an I/O error carrying its text; its own limit (the
/// same, and never reached first) gives [`ProtocolError::Overflow`].
pub fn is_oversize(error: &ProtocolError) -> bool {
    match error {
        ProtocolError::Overflow => true,
        ProtocolError::Io(error) => error.to_string() == PayloadError::Overflow.to_string(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_close_reasons_are_cut_at_a_char_boundary() {
        let text = "é".repeat(100);
        let reason = close_reason(CloseCode::Policy, &text);
        let cut = reason.description.unwrap_or_default();
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES && cut.len() > 100);
        assert!(text.starts_with(&cut));
        let short = close_reason(CloseCode::Policy, "too slow; resync");
        assert_eq!(short.description.as_deref(), Some("too slow; resync"));
    }

    /// The decoder reports the input's overflow as an I/O error with its text.
    #[test]
    fn an_overflow_of_the_input_is_recognised() {
        let passed_on =
            ProtocolError::Io(std::io::Error::other(format!("{}", PayloadError::Overflow)));
        assert!(is_oversize(&passed_on));
        assert!(is_oversize(&ProtocolError::Overflow));
        assert!(!is_oversize(&ProtocolError::Io(std::io::Error::other(
            "reset"
        ))));
    }
}
