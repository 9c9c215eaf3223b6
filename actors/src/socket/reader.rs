//! The reading half: the socket's bytes as a `Stream<Item = Result<Bytes, PayloadError>>`, the
//! input `WebsocketContext` decodes.
//!
//! `WebsocketContext` buffers its input in a `BytesMut` of its own and decodes one frame each time
//! its stream is polled, after pulling in *everything* its input has ready. Fed straight from the
//! socket, that buffer would grow with whatever a fast client sent ahead of the session (no TCP
//! backpressure), and actix-http's parser refuses an oversize frame only once all of it has
//! arrived. So this reader follows the frame boundaries in the byte stream (headers only):
//!
//! - it hands on bytes up to the end of one frame, then pauses (one `Pending`, with a wake-up) so
//!   that frame is decoded and handled before the next is read — the context's `wait` while the
//!   session takes a message stops the reading, as before;
//! - a header announcing a frame over the limit ends the stream with [`PayloadError::Overflow`]
//!   before its payload is read (see [`super::is_oversize`]);
//! - what it read beyond the current frame waits in a buffer that exists only while bytes wait.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::prelude::Stream;
use actix_http::error::PayloadError;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

/// Room reserved for one read when bytes are waiting on the socket.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// The longest frame header (2 bytes, 8 of extended length, 4 of mask).
const MAX_HEADER_BYTES: usize = 14;

/// The socket's bytes, cut at frame boundaries, for `WebsocketContext::with_codec`. Ends when the
/// client closes the TCP connection (or resets it); yields one error, then ends, when a frame is
/// over the size limit or the socket fails.
pub struct SocketReader {
    io: Arc<TcpStream>,
    /// Bytes read and not yet handed on. Empty (unallocated) while nothing waits.
    pending: BytesMut,
    frame: FrameTracker,
    /// The last chunk handed on completed a frame: pause once so it is decoded first.
    at_frame_end: bool,
    /// The client closed its side: hand on what is pending, then end.
    eof: bool,
    /// Ended (after the end of input or an error).
    done: bool,
}

impl SocketReader {
    pub(super) fn new(io: Arc<TcpStream>, leftover: BytesMut, max_frame_bytes: usize) -> Self {
        // The caller's buffer may be larger than its contents: keep only a copy of the contents.
        let pending = if leftover.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&leftover[..])
        };
        Self {
            io,
            pending,
            frame: FrameTracker::new(max_frame_bytes),
            at_frame_end: false,
            eof: false,
            done: false,
        }
    }

    fn fail(&mut self, error: PayloadError) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        self.pending = BytesMut::new();
        Poll::Ready(Some(Err(error)))
    }

    /// The pending bytes that belong to the current frame, if any.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, PayloadError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let (len, ends_frame) = self.frame.scan(&self.pending)?;
        if len == 0 {
            return Ok(None);
        }
        let chunk = self.pending.split_to(len).freeze();
        if self.pending.is_empty() {
            // Frees the read buffer once the chunk has been copied and dropped by the decoder.
            self.pending = BytesMut::new();
        }
        self.at_frame_end = ends_frame;
        Ok(Some(chunk))
    }
}

impl Stream for SocketReader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.at_frame_end {
            // The decoder has a whole frame: let it decode and hand it to the actor before more is
            // read. The wake-up brings the reading back even if the context does not poll again
            // on its own.
            this.at_frame_end = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            match this.next_chunk() {
                Ok(Some(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            if this.eof {
                // A partial frame at the end of input is dropped, as the client went away.
                this.done = true;
                this.pending = BytesMut::new();
                return Poll::Ready(None);
            }
            match this.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return this.fail(PayloadError::Io(error)),
                Poll::Ready(Ok(())) => {}
            }
            this.pending.reserve(READ_CHUNK_BYTES);
            match this.io.try_read_buf(&mut this.pending) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                // Readiness was stale; it is cleared now, so the next poll waits for more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.pending.is_empty() {
                        this.pending = BytesMut::new();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client went away without closing: the same as the end of input.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    this.eof = true;
                    this.pending = BytesMut::new();
                }
                Err(error) => return this.fail(PayloadError::Io(error)),
            }
        }
    }
}

/// Where the byte stream is in the current frame (RFC 6455 §5.2): reading its header, or so many
/// payload bytes from its end.
struct FrameTracker {
    max_frame_bytes: usize,
    head: [u8; MAX_HEADER_BYTES],
    head_len: usize,
    /// Payload bytes of the current frame still to come, once its header is complete.
    payload_left: Option<u64>,
}

impl FrameTracker {
    fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            head: [0; MAX_HEADER_BYTES],
            head_len: 0,
            payload_left: None,
        }
    }

    /// How many of `bytes` (the next bytes of the stream) belong to the current frame, and
    /// whether they complete it. Fails when the frame's header announces more than the limit.
    fn scan(&mut self, bytes: &[u8]) -> Result<(usize, bool), PayloadError> {
        let mut used = 0;
        while self.payload_left.is_none() {
            let Some(&byte) = bytes.get(used) else {
                return Ok((used, false));
            };
            if let Some(slot) = self.head.get_mut(self.head_len) {
                *slot = byte;
            }
            self.head_len += 1;
            used += 1;
            if let Some(len) = self.payload_len()? {
                self.payload_left = Some(len);
            }
        }
        let left = self.payload_left.unwrap_or(0);
        let available = (bytes.len() - used) as u64;
        let take = left.min(available);
        used += take as usize;
        if take == left {
            self.head_len = 0;
            self.payload_left = None;
            Ok((used, true))
        } else {
            self.payload_left = Some(left - take);
            Ok((used, false))
        }
    }

    /// The payload length, once the header is complete; `None` while more of it is needed.
    fn payload_len(&self) -> Result<Option<u64>, PayloadError> {
        let head = self.head.get(..self.head_len).unwrap_or_default();
        let [_, second, rest @ ..] = head else {
            return Ok(None);
        };
        let mask_len = if second & 0x80 != 0 { 4 } else { 0 };
        let (len, ext_len) = match second & 0x7f {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.get(..8) {
                Some(ext) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(ext);
                    (u64::from_be_bytes(be), 8)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        if len > self.max_frame_bytes as u64 {
            return Err(PayloadError::Overflow);
        }
        if self.head_len < 2 + ext_len + mask_len {
            return Ok(None);
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize, masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut head = vec![0x82];
        if len < 126 {
            head.push(mask_bit | len as u8);
        } else if len <= usize::from(u16::MAX) {
            head.push(mask_bit | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            head.push(mask_bit | 127);
            head.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            head.extend_from_slice(&[1, 2, 3, 4]);
        }
        head
    }

    /// Frames are found whatever the header's form and however the bytes are cut.
    #[test]
    fn frames_end_where_their_headers_say() {
        for len in [0, 1, 125, 126, 65_535, 65_536] {
            let mut stream = header(len, true);
            stream.resize(stream.len() + len, 7);
            let frame_len = stream.len();
            stream.extend_from_slice(&header(3, true));
            stream.extend_from_slice(&[1, 2, 3]);
            for cut in [1, 2, 3, 5, 4096] {
                let mut tracker = FrameTracker::new(1 << 20);
                let mut offset = 0;
                let mut ends = Vec::new();
                while offset < stream.len() {
                    let end = (offset + cut).min(stream.len());
                    let mut at = offset;
                    while at < end {
                        let (used, done) = tracker.scan(&stream[at..end]).unwrap();
                        assert!(used > 0 || at == end);
                        at += used;
                        if done {
                            ends.push(at);
                        }
                    }
                    offset = end;
                }
                assert_eq!(
                    ends,
                    vec![frame_len, stream.len()],
                    "{len} bytes, cut {cut}"
                );
            }
        }
    }

    #[test]
    fn an_oversize_header_fails_before_its_payload() {
        let mut tracker = FrameTracker::new(1000);
        assert!(matches!(
            tracker.scan(&header(1001, true)),
            Err(PayloadError::Overflow)
        ));
        let mut tracker = FrameTracker::new(1000);
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(tracker.scan(&huge), Err(PayloadError::Overflow)));
        let mut tracker = FrameTracker::new(1000);
        assert_eq!(tracker.scan(&header(1000, true)).unwrap(), (8, false));
    }
}
