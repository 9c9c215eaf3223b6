//! The writing half: a task that drives a `WebsocketContext` actor — whose context is the stream
//! of the frames it encodes — and writes those frames, and the binary messages the actor sent
//! with [`DirectBinary`], to the socket with vectored writes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;

use actix::prelude::Stream;
use bytes::Bytes;
use tokio::net::TcpStream;

/// Slices written with one vectored write, at most (a frame sent with [`DirectBinary`] takes
/// two: its header and its payload).
const MAX_SLICES_PER_WRITE: usize = 128;

/// Chunks taken from the context before the queue is written, at most (the actor's mailbox can be
/// refilled from other threads while it runs; writing must not wait for it to run dry).
const MAX_CHUNKS_PER_TURN: usize = 64;

/// After the actor stopped (usually after a close frame), how long the frames before it and the
/// close frame itself may take to reach the socket (a client that stopped reading) before the
/// connection is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// After the close frame and our end of the stream, how long the client has to close its end
/// (what it still sends is read and discarded) before the socket is closed anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Binary messages an actor hands straight to its socket's writer instead of writing them to its
/// context: the context's encoder copies every payload into a buffer of its own (one copy per
/// connection of a frame the session encoded once for all of them), while the writer frames these
/// itself — a header of 2 to 10 bytes written beside the payload, which is written from the
/// `Bytes` it was given, shared by every connection — and drops what came with each (`T`, such
/// as a frame's slot in a bounded queue, [`crate::outbound`]) once its last byte is written, so
/// frames waiting for a client that does not read keep counting against the bound.
///
/// Order: the actor runs only inside the writer's poll of its context, and the writer queues what
/// was sent here before the chunk that poll returns. So these frames go out in the order they
/// were sent, and before everything the actor wrote to its context *after* them in the same
/// turn — in particular before a close frame, after which an actor sends nothing. Control frames
/// (pings, pongs) written to the context in the same turn may go out after frames sent here that
/// followed them, which WebSocket allows.
///
/// Text messages can go the same way ([`DirectBinary::send_text`]), for an actor that needs a
/// text message in order among its binary ones (the worker socket: an `assign`, then its input
/// frames) or to know when it was written.
pub struct DirectBinary<T>(Rc<RefCell<VecDeque<(Opcode, Bytes, T)>>>);

/// The frame opcode of a message sent with [`DirectBinary`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Opcode {
    Text = 0x1,
    Binary = 0x2,
}

impl<T> DirectBinary<T> {
    pub fn new() -> Self {
        Self(Rc::new(RefCell::new(VecDeque::new())))
    }

    /// Sends `payload` as one binary message; `keep` is dropped once it has been written (or the
    /// connection is gone).
    pub fn send(&self, payload: Bytes, keep: T) {
        self.0
            .borrow_mut()
            .push_back((Opcode::Binary, payload, keep));
    }

    /// Sends `text` (UTF-8, which the caller guarantees: a `String`'s bytes) as one text
    /// message, like [`DirectBinary::send`].
    pub fn send_text(&self, text: String, keep: T) {
        self.0
            .borrow_mut()
            .push_back((Opcode::Text, Bytes::from(text), keep));
    }

    /// Everything sent since the last call (no allocation left behind).
    fn take(&self) -> VecDeque<(Opcode, Bytes, T)> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

impl<T> Clone for DirectBinary<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for DirectBinary<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The header of an unmasked, final binary frame (RFC 6455 §5.2) with a payload of `len` bytes.
#[derive(Clone, Copy)]
struct BinaryHeader {
    bytes: [u8; 10],
    len: u8,
}

impl BinaryHeader {
    const NONE: Self = Self {
        bytes: [0; 10],
        len: 0,
    };

    #[cfg(test)]
    fn for_payload(len: usize) -> Self {
        Self::for_frame(Opcode::Binary, len)
    }

    fn for_frame(opcode: Opcode, len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode as u8; // FIN + opcode
        let header_len = if len < 126 {
            bytes[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            bytes,
            len: header_len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// One chunk of frames encoded by the context, or one frame sent with [`DirectBinary`] (its
/// header apart), not yet (completely) written.
struct Queued<T> {
    header: BinaryHeader,
    bytes: Bytes,
    /// Released once the chunk is written.
    _held: Option<T>,
    /// Bytes written so far, the header's first.
    written: usize,
}

impl<T> Queued<T> {
    fn encoded(bytes: Bytes) -> Self {
        Self {
            header: BinaryHeader::NONE,
            bytes,
            _held: None,
            written: 0,
        }
    }

    fn direct(opcode: Opcode, payload: Bytes, held: T) -> Self {
        Self {
            header: BinaryHeader::for_frame(opcode, payload.len()),
            bytes: payload,
            _held: Some(held),
            written: 0,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.header.len) + self.bytes.len()
    }

    /// What is left to write: of the header, then of the bytes.
    fn remaining(&self) -> [&[u8]; 2] {
        let header = self.header.as_slice();
        let in_header = self.written.min(header.len());
        let in_bytes = self.written - in_header;
        [
            header.get(in_header..).unwrap_or_default(),
            self.bytes.get(in_bytes..).unwrap_or_default(),
        ]
    }
}

/// Drives the actor's context (`frames`) and writes what it encodes, until the actor stops; then
/// writes what is left, shuts our end and lets the client close its end (on a task of its own).
///
/// A plain struct rather than an `async fn`: this future is what an idle connection's task holds,
/// and an `async fn` taking the context by value keeps two or three copies of its slot (measured:
/// 2,104 bytes against 656 for the context itself).
pub(super) struct Writer<S, T> {
    io: Arc<TcpStream>,
    /// The context; `None` once it ended (dropping it frees the actor and its input, and stops
    /// the actor if it still runs — when writing failed because the client is gone).
    frames: Option<S>,
    queue: VecDeque<Queued<T>>,
    direct: DirectBinary<T>,
}

impl<S, E, T> Writer<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    T: 'static,
{
    pub(super) fn new(io: Arc<TcpStream>, frames: S, direct: DirectBinary<T>) -> Self {
        Self {
            io,
            frames: Some(frames),
            queue: VecDeque::new(),
            direct,
        }
    }

    /// Takes the context's frames until it has none ready; `Ready` when it ended.
    fn poll_frames(&mut self, task: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        for _ in 0..MAX_CHUNKS_PER_TURN {
            let polled = Pin::new(&mut *frames).poll_next(task);
            // What the actor sent directly in this turn goes before what the turn encoded.
            queue_direct(&self.direct, &mut self.queue);
            match polled {
                Poll::Ready(Some(Ok(bytes))) => self.queue.push_back(Queued::encoded(bytes)),
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "WebSocket frame could not be encoded");
                    return Poll::Ready(Err(io::Error::other(error.to_string())));
                }
                // The actor stopped; every frame it sent is in the queue.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

// Nothing in the queue is ever pinned: only the context is polled, and it is `Unpin`.
impl<S: Unpin, T> Unpin for Writer<S, T> {}

impl<S, E, T> Future for Writer<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    T: 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, task: &mut task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let ended = match this.poll_frames(task) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => match poll_write(&this.io, &mut this.queue, task) {
                Poll::Ready(Ok(())) | Poll::Pending => None,
                Poll::Ready(Err(error)) => Some(Err(error)),
            },
        };
        match ended {
            None => Poll::Pending,
            Some(Ok(())) => {
                this.frames = None;
                let queue = std::mem::take(&mut this.queue);
                actix::spawn(finish(this.io.clone(), queue));
                Poll::Ready(())
            }
            Some(Err(error)) => {
                this.frames = None;
                this.queue = VecDeque::new();
                tracing::debug!(%error, "WebSocket write failed");
                Poll::Ready(())
            }
        }
    }
}

/// Queues the frames the actor sent with [`DirectBinary`] so far.
fn queue_direct<T>(direct: &DirectBinary<T>, queue: &mut VecDeque<Queued<T>>) {
    queue.extend(
        direct
            .take()
            .into_iter()
            .map(|(opcode, payload, held)| Queued::direct(opcode, payload, held)),
    );
}

/// Writes queued chunks until the queue is empty (ready) or the socket is full (pending).
fn poll_write<T>(
    io: &TcpStream,
    queue: &mut VecDeque<Queued<T>>,
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
        let mut slices = [IoSlice::new(&[]); MAX_SLICES_PER_WRITE];
        let mut count = 0;
        let parts = queue
            .iter()
            .flat_map(|chunk| chunk.remaining())
            .filter(|part| !part.is_empty());
        for (slot, part) in slices.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
            count += 1;
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

/// Drops the chunks `written` bytes completed (and what they held); records how far the next
/// one got.
fn advance<T>(queue: &mut VecDeque<Queued<T>>, mut written: usize) {
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

/// The end of a connection: write what is queued (the close frame last, when there is one),
/// shut our end, give the client a moment to close its end, then close the socket.
async fn finish<T: 'static>(io: Arc<TcpStream>, mut queue: VecDeque<Queued<T>>) {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn chunk(bytes: &'static [u8], held: Counted) -> Queued<Counted> {
        Queued::direct(Opcode::Binary, Bytes::from_static(bytes), held)
    }

    fn remaining(chunk: &Queued<Counted>) -> Vec<u8> {
        chunk.remaining().concat()
    }

    /// What a frame holds is released when its last byte is written, not before; its header is
    /// written first.
    #[test]
    fn advance_keeps_partial_frames_and_what_they_hold() {
        let released = Arc::new(AtomicUsize::new(0));
        let mut queue = VecDeque::new();
        queue.push_back(chunk(b"abcde", Counted(released.clone())));
        queue.push_back(chunk(b"fghi", Counted(released.clone())));
        queue.push_back(Queued::encoded(Bytes::from_static(b"jk")));
        assert_eq!(
            queue.front().map(remaining),
            Some(b"\x82\x05abcde".to_vec())
        );
        advance(&mut queue, 1);
        assert_eq!(queue.front().map(remaining), Some(b"\x05abcde".to_vec()));
        advance(&mut queue, 4);
        assert_eq!(released.load(Ordering::SeqCst), 0);
        assert_eq!(queue.front().map(remaining), Some(b"de".to_vec()));
        advance(&mut queue, 2 + 2 + 2);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(queue.front().map(remaining), Some(b"hi".to_vec()));
        advance(&mut queue, 2 + 1);
        assert_eq!(released.load(Ordering::SeqCst), 2);
        assert_eq!(queue.front().map(remaining), Some(b"k".to_vec()));
        advance(&mut queue, 1);
        assert!(queue.is_empty());
    }

    /// The header of every payload size a binary frame can have, as RFC 6455 lays it out.
    #[test]
    fn binary_headers_follow_the_payload_length() {
        assert_eq!(BinaryHeader::for_payload(0).as_slice(), &[0x82, 0]);
        assert_eq!(
            BinaryHeader::for_frame(Opcode::Text, 5).as_slice(),
            &[0x81, 5]
        );
        assert_eq!(BinaryHeader::for_payload(125).as_slice(), &[0x82, 125]);
        assert_eq!(
            BinaryHeader::for_payload(126).as_slice(),
            &[0x82, 126, 0, 126]
        );
        assert_eq!(
            BinaryHeader::for_payload(65_535).as_slice(),
            &[0x82, 126, 0xff, 0xff]
        );
        assert_eq!(
            BinaryHeader::for_payload(65_536).as_slice(),
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn direct_frames_are_taken_once() {
        let direct = DirectBinary::new();
        direct.send(Bytes::from_static(b"a"), 1);
        direct.send(Bytes::from_static(b"b"), 2);
        direct.send_text("c".into(), 3);
        let taken: Vec<(Opcode, i32)> = direct
            .take()
            .into_iter()
            .map(|(opcode, _, held)| (opcode, held))
            .collect();
        assert_eq!(
            taken,
            vec![(Opcode::Binary, 1), (Opcode::Binary, 2), (Opcode::Text, 3)]
        );
        assert!(direct.take().is_empty());
    }
}
