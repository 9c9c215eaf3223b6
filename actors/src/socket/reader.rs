//! The reading half: a `Stream` of WebSocket messages decoded straight from the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::prelude::Stream;
use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use bytes::BytesMut;
use bytestring::ByteString;
use tokio::net::TcpStream;

/// Room reserved for one read when bytes are waiting on the socket.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// The longest frame header (2 bytes, 8 of extended length, 4 of mask).
const MAX_HEADER_BYTES: usize = 14;

/// Decoded messages from the client, for `ctx.add_stream`. Ends when the client closes the TCP
/// connection (or resets it); yields one error, then ends, when the stream is not valid
/// WebSocket (bad frame, frame over the size limit, text that is not UTF-8) or the socket fails.
pub struct WsReader {
    io: Arc<TcpStream>,
    /// Bytes received and not yet decoded. Empty (unallocated) between messages.
    buf: BytesMut,
    codec: Codec,
    max_frame_bytes: usize,
    /// The client closed its side: decode what is buffered, then end.
    eof: bool,
    /// Ended (after the end of input or an error).
    done: bool,
}

impl WsReader {
    pub(super) fn new(io: Arc<TcpStream>, leftover: BytesMut, max_frame_bytes: usize) -> Self {
        // The caller's buffer may be larger than its contents: keep only a copy of the contents.
        let buf = if leftover.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&leftover[..])
        };
        Self {
            io,
            buf,
            codec: Codec::new().max_size(max_frame_bytes),
            max_frame_bytes,
            eof: false,
            done: false,
        }
    }

    /// Frees the buffer once everything in it has been decoded, so an idle connection holds none.
    /// (Decoded payloads share its allocation and keep it alive only as long as they live.)
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    fn fail(&mut self, error: ProtocolError) -> Poll<Option<Result<Message, ProtocolError>>> {
        self.done = true;
        self.buf = BytesMut::new();
        Poll::Ready(Some(Err(error)))
    }

    /// The next complete frame in the buffer, if there is one.
    fn decode(&mut self) -> Result<Option<Message>, ProtocolError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match self.codec.decode(&mut self.buf)? {
            Some(frame) => {
                self.release_if_empty();
                message(frame).map(Some)
            }
            // A frame within the limit is decoded once this many bytes are in: anything longer
            // that is still incomplete is over the limit. Refuse it now rather than buffering all
            // of it first.
            None if self.buf.len() > self.max_frame_bytes.saturating_add(MAX_HEADER_BYTES) => {
                Err(ProtocolError::Overflow)
            }
            None => Ok(None),
        }
    }
}

fn message(frame: Frame) -> Result<Message, ProtocolError> {
    Ok(match frame {
        Frame::Text(data) => Message::Text(ByteString::try_from(data).map_err(|e| {
            ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        })?),
        Frame::Binary(data) => Message::Binary(data),
        Frame::Continuation(item) => Message::Continuation(item),
        Frame::Ping(data) => Message::Ping(data),
        Frame::Pong(data) => Message::Pong(data),
        Frame::Close(reason) => Message::Close(reason),
    })
}

impl Stream for WsReader {
    type Item = Result<Message, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            if this.eof {
                // A partial frame at the end of input is dropped, as the client went away.
                this.done = true;
                this.buf = BytesMut::new();
                return Poll::Ready(None);
            }
            match this.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return this.fail(ProtocolError::Io(error)),
                Poll::Ready(Ok(())) => {}
            }
            this.buf.reserve(READ_CHUNK_BYTES);
            match this.io.try_read_buf(&mut this.buf) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                // Readiness was stale; it is cleared now, so the next poll waits for more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.release_if_empty(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client went away without closing: the same as the end of input.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    this.eof = true;
                    this.buf = BytesMut::new();
                }
                Err(error) => return this.fail(ProtocolError::Io(error)),
            }
        }
    }
}
