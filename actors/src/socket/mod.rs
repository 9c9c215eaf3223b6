//! A WebSocket transport for actors, on a TCP socket taken over after the HTTP upgrade.
//!
//! The server answers the upgrade request itself (the `101`) and hands over the `TcpStream` plus
//! whatever the client sent right after its request. [`split`] turns them into two halves sharing
//! the socket (`Arc<TcpStream>`: tokio's readiness and `try_*` calls take `&self`):
//!
//! - [`WsReader`], a `Stream` of decoded messages (actix-http's WebSocket codec, server side) for
//!   `ctx.add_stream`. Its buffer exists only while bytes are waiting to be decoded: it is
//!   reserved when the socket is readable and replaced by an empty one whenever it runs empty.
//! - [`WsWriter`], owned by the actor (see [`WsActor`]). Each frame is queued with its header
//!   encoded apart from its payload (no copy), and the queue is written with one vectored write
//!   at the end of the actor's turn — frames queued while handling one batch of messages leave in
//!   one system call. What the socket does not take waits in the queue until it is writable;
//!   payloads (and whatever they carry, such as a queue slot) are dropped once written.
//!   [`WsWriter::close`] sends a close frame after everything queued, then shuts the socket down
//!   on its own, so the actor may stop at once.
//!
//! An idle connection therefore holds no read or write buffer: only the actor, its context and
//! the socket.

mod reader;
mod writer;

use std::sync::Arc;

pub use actix_http::ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use bytes::BytesMut;
use tokio::net::TcpStream;

pub use self::reader::WsReader;
pub use self::writer::{WsActor, WsWriter};

/// Splits a socket taken over after a WebSocket handshake into its reader and its writer.
///
/// `leftover`: bytes read along with the HTTP request that belong to the WebSocket (frames the
/// client sent right after its request). `max_frame_bytes`: larger frames are refused with
/// [`ProtocolError::Overflow`].
pub fn split<B: AsRef<[u8]> + 'static>(
    io: TcpStream,
    leftover: BytesMut,
    max_frame_bytes: usize,
) -> (WsReader, WsWriter<B>) {
    let io = Arc::new(io);
    (
        WsReader::new(io.clone(), leftover, max_frame_bytes),
        WsWriter::new(io),
    )
}
