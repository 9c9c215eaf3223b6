//! The writing half: a task that drives a `WebsocketContext` actor — whose context is the stream
//! of the frames it encodes — and writes those frames to the socket with vectored writes.

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

/// Chunks written with one vectored write, at most.
const MAX_CHUNKS_PER_WRITE: usize = 64;

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

/// Things an actor wants kept until the frames it has sent so far are written to the socket —
/// such as a frame's slot in a bounded queue ([`crate::outbound`]), so that frames waiting for a
/// client that does not read keep counting against the bound.
///
/// The actor runs only inside the writer's poll of its context, and every message the actor
/// wrote is encoded into the chunk that poll returns; so whatever was held when a chunk comes out
/// belongs to that chunk (or an earlier one) and is released when the chunk has been written.
pub struct UntilWritten<T>(Rc<RefCell<Vec<T>>>);

impl<T> UntilWritten<T> {
    pub fn new() -> Self {
        Self(Rc::new(RefCell::new(Vec::new())))
    }

    /// Keeps `item` until every frame sent so far has been written.
    pub fn hold(&self, item: T) {
        self.0.borrow_mut().push(item);
    }

    /// Everything held since the last call (no allocation left behind).
    fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

impl<T> Clone for UntilWritten<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for UntilWritten<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// One chunk of encoded frames from the context, not yet (completely) written.
struct Queued<T> {
    bytes: Bytes,
    /// Released once the chunk is written.
    _held: Vec<T>,
    written: usize,
}

impl<T> Queued<T> {
    fn remaining(&self) -> &[u8] {
        self.bytes.get(self.written..).unwrap_or_default()
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
    until_written: UntilWritten<T>,
}

impl<S, E, T> Writer<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
    T: 'static,
{
    pub(super) fn new(io: Arc<TcpStream>, frames: S, until_written: UntilWritten<T>) -> Self {
        Self {
            io,
            frames: Some(frames),
            queue: VecDeque::new(),
            until_written,
        }
    }

    /// Takes the context's frames until it has none ready; `Ready` when it ended.
    fn poll_frames(&mut self, task: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        for _ in 0..MAX_CHUNKS_PER_TURN {
            match Pin::new(&mut *frames).poll_next(task) {
                Poll::Ready(Some(Ok(bytes))) => self.queue.push_back(Queued {
                    bytes,
                    _held: self.until_written.take(),
                    written: 0,
                }),
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
        let mut slices = [IoSlice::new(&[]); MAX_CHUNKS_PER_WRITE];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(queue.iter()) {
            *slot = IoSlice::new(chunk.remaining());
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
        let left = front.remaining().len();
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

    fn chunk(bytes: &'static [u8], held: Vec<Counted>) -> Queued<Counted> {
        Queued {
            bytes: Bytes::from_static(bytes),
            _held: held,
            written: 0,
        }
    }

    /// What a chunk holds is released when its last byte is written, not before.
    #[test]
    fn advance_keeps_partial_chunks_and_what_they_hold() {
        let released = Arc::new(AtomicUsize::new(0));
        let mut queue = VecDeque::new();
        queue.push_back(chunk(b"abcde", vec![Counted(released.clone())]));
        queue.push_back(chunk(
            b"fghi",
            vec![Counted(released.clone()), Counted(released.clone())],
        ));
        advance(&mut queue, 4);
        assert_eq!(released.load(Ordering::SeqCst), 0);
        advance(&mut queue, 2);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(queue.front().map(Queued::remaining), Some(&b"ghi"[..]));
        advance(&mut queue, 3);
        assert!(queue.is_empty());
        assert_eq!(released.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn held_items_go_with_the_next_chunk_only() {
        let until_written = UntilWritten::new();
        until_written.hold(1);
        until_written.hold(2);
        assert_eq!(until_written.take(), vec![1, 2]);
        assert!(until_written.take().is_empty());
    }
}
