//! The writing half, owned by the actor that serves the socket.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseReason, OpCode};
use bytes::Bytes;
use tokio::net::TcpStream;

/// A close reason must fit a control frame (125 bytes, 2 of them for the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Largest payload of a control frame (ping, pong, close).
const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// Frames written with one vectored write, at most (two slices each).
const MAX_FRAMES_PER_WRITE: usize = 32;

/// After a close frame, how long the frames before it and the close frame itself may take to
/// reach the socket (a client that stopped reading) before the connection is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// After the close frame and our end of the stream, how long the client has to close its end
/// (what it still sends is read and discarded) before the socket is closed anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// An actor that serves a WebSocket through a [`WsWriter`] (and usually reads it with
/// `ctx.add_stream(reader)`).
pub trait WsActor: Actor<Context = Context<Self>> {
    /// What a binary payload handed to [`WsWriter::binary_held`] is: it (and whatever it owns,
    /// such as a slot in a bounded queue) lives until its last byte was written to the socket.
    type Held: AsRef<[u8]> + 'static;

    fn writer(&mut self) -> &mut WsWriter<Self::Held>;

    /// Writing to the socket failed (the client is gone): stops the actor unless overridden.
    fn write_failed(&mut self, error: io::Error, ctx: &mut Context<Self>) {
        tracing::debug!(%error, "WebSocket write failed");
        ctx.stop();
    }
}

/// The writing half of a WebSocket (server side: frames are not masked).
pub struct WsWriter<B> {
    io: Arc<TcpStream>,
    /// Frames not yet (completely) written. Empty and unallocated while nothing is pending.
    queue: VecDeque<Queued<B>>,
    /// A [`Flush`] is spawned on the actor's context.
    flush_scheduled: bool,
    /// A close frame was queued (or writing failed): nothing more is sent.
    closed: bool,
}

struct Queued<B> {
    head: Head,
    payload: Payload<B>,
    /// Bytes of the head, then of the payload, already written.
    written: usize,
}

enum Payload<B> {
    Shared(Bytes),
    Held(B),
}

impl<B: AsRef<[u8]>> Payload<B> {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Shared(bytes) => bytes,
            Payload::Held(held) => held.as_ref(),
        }
    }
}

impl<B: AsRef<[u8]>> Queued<B> {
    fn new(opcode: OpCode, payload: Payload<B>) -> Self {
        Self {
            head: Head::new(opcode, payload.bytes().len()),
            payload,
            written: 0,
        }
    }

    /// What is left to write: the rest of the head, the rest of the payload.
    fn remaining(&self) -> (&[u8], &[u8]) {
        let head = self.head.bytes();
        let payload = self.payload.bytes();
        if self.written < head.len() {
            (head.get(self.written..).unwrap_or_default(), payload)
        } else {
            let offset = self.written - head.len();
            (&[], payload.get(offset..).unwrap_or_default())
        }
    }

    fn len(&self) -> usize {
        self.head.bytes().len() + self.payload.bytes().len()
    }
}

/// A final, unmasked frame's header (RFC 6455 §5.2).
struct Head {
    bytes: [u8; 10],
    len: u8,
}

impl Head {
    fn new(opcode: OpCode, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | u8::from(opcode);
        let len = if let Ok(short @ 0..=125) = u8::try_from(payload_len) {
            bytes[1] = short;
            2
        } else if let Ok(medium) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&medium.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl<B: AsRef<[u8]> + 'static> WsWriter<B> {
    pub(super) fn new(io: Arc<TcpStream>) -> Self {
        Self {
            io,
            queue: VecDeque::new(),
            flush_scheduled: false,
            closed: false,
        }
    }

    /// A close frame was sent (or the socket failed): further frames are dropped.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Frames queued and not completely written yet.
    pub fn pending_frames(&self) -> usize {
        self.queue.len()
    }

    /// Sends a binary message.
    pub fn binary<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, payload: Bytes) {
        self.push(ctx, Queued::new(OpCode::Binary, Payload::Shared(payload)));
    }

    /// Sends a binary message; `payload` is dropped once it was written.
    pub fn binary_held<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, payload: B) {
        self.push(ctx, Queued::new(OpCode::Binary, Payload::Held(payload)));
    }

    /// Sends a text message.
    pub fn text<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, text: String) {
        self.push(ctx, Queued::new(OpCode::Text, Payload::Shared(text.into())));
    }

    /// Sends a ping (payloads over 125 bytes are cut).
    pub fn ping<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, payload: &[u8]) {
        self.push(ctx, control(OpCode::Ping, payload));
    }

    /// Answers a ping (payloads over 125 bytes are cut).
    pub fn pong<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, payload: &[u8]) {
        self.push(ctx, control(OpCode::Pong, payload));
    }

    /// Sends a close frame after every frame already queued, then closes the connection: our end
    /// of the stream is shut once the frame is out, and the socket is closed when the client has
    /// closed its end too (or after a short grace period). This happens on its own task, so the
    /// actor can stop right away. Later frames are dropped.
    pub fn close(&mut self, reason: Option<CloseReason>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut payload = Vec::new();
        if let Some(reason) = reason {
            payload.extend_from_slice(&u16::from(reason.code).to_be_bytes());
            if let Some(description) = &reason.description {
                payload.extend_from_slice(truncate(description, MAX_CLOSE_REASON_BYTES).as_bytes());
            }
        }
        self.queue.push_back(Queued::new(
            OpCode::Close,
            Payload::Shared(Bytes::from(payload)),
        ));
        let queue = std::mem::take(&mut self.queue);
        actix::spawn(finish(self.io.clone(), queue));
    }

    fn push<A: WsActor<Held = B>>(&mut self, ctx: &mut Context<A>, frame: Queued<B>) {
        if self.closed {
            return;
        }
        self.queue.push_back(frame);
        if !self.flush_scheduled {
            // Runs once the actor has handled what is in its mailbox: everything queued by then
            // leaves in one write.
            self.flush_scheduled = true;
            ctx.spawn(Flush::<A>(PhantomData));
        }
    }
}

fn control<B>(opcode: OpCode, payload: &[u8]) -> Queued<B>
where
    B: AsRef<[u8]>,
{
    let payload = payload.get(..MAX_CONTROL_PAYLOAD_BYTES).unwrap_or(payload);
    Queued::new(opcode, Payload::Shared(Bytes::copy_from_slice(payload)))
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Writes the actor's queue when the socket takes it; done when the queue is empty.
struct Flush<A>(PhantomData<fn() -> A>);

impl<A: WsActor> ActorFuture<A> for Flush<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        let writer = act.writer();
        if writer.closed {
            // The queue went with the close frame.
            writer.flush_scheduled = false;
            return Poll::Ready(());
        }
        match poll_write(&writer.io, &mut writer.queue, task) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                writer.flush_scheduled = false;
                Poll::Ready(())
            }
            Poll::Ready(Err(error)) => {
                writer.flush_scheduled = false;
                writer.closed = true;
                writer.queue = VecDeque::new();
                act.write_failed(error, ctx);
                Poll::Ready(())
            }
        }
    }
}

/// Writes queued frames until the queue is empty (ready) or the socket is full (pending).
fn poll_write<B: AsRef<[u8]>>(
    io: &TcpStream,
    queue: &mut VecDeque<Queued<B>>,
    task: &mut task::Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if queue.is_empty() {
            // Nothing pending: hold no allocation.
            *queue = VecDeque::new();
            return Poll::Ready(Ok(()));
        }
        match io.poll_write_ready(task) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => {}
        }
        let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
        let mut count = 0;
        for frame in queue.iter().take(MAX_FRAMES_PER_WRITE) {
            let (head, payload) = frame.remaining();
            for part in [head, payload] {
                if !part.is_empty() {
                    if let Some(slot) = slices.get_mut(count) {
                        *slot = IoSlice::new(part);
                        count += 1;
                    }
                }
            }
        }
        match io.try_write_vectored(slices.get(..count).unwrap_or_default()) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(written) => advance(queue, written),
            // Readiness was stale and is cleared now: the next `poll_write_ready` waits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
}

/// Drops the frames `written` bytes completed; records how far the next one got.
fn advance<B: AsRef<[u8]>>(queue: &mut VecDeque<Queued<B>>, mut written: usize) {
    while written > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        let left = front.len() - front.written;
        if written >= left {
            written -= left;
            queue.pop_front();
        } else {
            front.written += written;
            return;
        }
    }
}

/// The end of a connection after a close frame: write what is queued (the close frame last),
/// shut our end, give the client a moment to close its end, then close the socket.
async fn finish<B: AsRef<[u8]>>(io: Arc<TcpStream>, mut queue: VecDeque<Queued<B>>) {
    let written = tokio::time::timeout(
        CLOSE_FLUSH_TIMEOUT,
        poll_fn(|task| poll_write(&io, &mut queue, task)),
    )
    .await;
    drop(queue);
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    if socket2::SockRef::from(&*io)
        .shutdown(Shutdown::Write)
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, drain(&io)).await;
}

/// Reads and discards until the client closes its end (or the socket fails).
async fn drain(io: &TcpStream) {
    let mut scratch = [0u8; 512];
    loop {
        if io.readable().await.is_err() {
            return;
        }
        match io.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::Parser;
    use bytes::BytesMut;

    use super::*;

    /// Our headers are what actix-http's encoder writes before the payload.
    #[test]
    fn heads_match_the_codec() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            for opcode in [OpCode::Binary, OpCode::Text, OpCode::Ping, OpCode::Close] {
                let payload = vec![7u8; len];
                let mut encoded = BytesMut::new();
                Parser::write_message(&mut encoded, &payload, opcode, true, false);
                let head = Head::new(opcode, len);
                let mut ours = head.bytes().to_vec();
                ours.extend_from_slice(&payload);
                assert_eq!(ours, encoded.to_vec(), "{opcode:?} of {len} bytes");
            }
        }
    }

    #[test]
    fn advance_keeps_partial_frames() {
        let mut queue: VecDeque<Queued<Bytes>> = VecDeque::new();
        queue.push_back(Queued::new(
            OpCode::Binary,
            Payload::Shared(Bytes::from_static(b"abc")),
        ));
        queue.push_back(Queued::new(
            OpCode::Binary,
            Payload::Shared(Bytes::from_static(b"defg")),
        ));
        // First frame: 2 + 3 bytes; then 3 bytes into the second (head 2, one payload byte).
        advance(&mut queue, 8);
        assert_eq!(queue.len(), 1);
        let (head, payload) = queue.front().map(Queued::remaining).unwrap_or_default();
        assert!(head.is_empty());
        assert_eq!(payload, b"efg");
        advance(&mut queue, 3);
        assert!(queue.is_empty());
    }

    #[test]
    fn long_close_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate(&reason, MAX_CLOSE_REASON_BYTES);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES);
        assert!(reason.starts_with(cut));
    }
}
