//! The writing half: a task that drives a `WebsocketContext` actor — whose context is the stream
//! of the frames it encodes — and writes those frames to the socket with vectored writes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::pin;
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
/// writes what is left, shuts our end and lets the client close its end.
pub(super) async fn run<S, E, T>(io: Arc<TcpStream>, frames: S, until_written: UntilWritten<T>)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    // The context (the actor, its input) is dropped when `drive` returns: before the lingering
    // below, and stopping the actor if it still runs (writing failed: the client is gone).
    let (ended, queue) = drive(&io, frames, until_written).await;
    match ended {
        Ok(()) => finish(io, queue).await,
        Err(error) => tracing::debug!(%error, "WebSocket write failed"),
    }
}

/// Polls the context for frames and writes them until the context ends (`Ok`, with what is still
/// to write) or writing fails.
async fn drive<S, E, T>(
    io: &TcpStream,
    frames: S,
    until_written: UntilWritten<T>,
) -> (io::Result<()>, VecDeque<Queued<T>>)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut frames = pin!(frames);
    let mut queue: VecDeque<Queued<T>> = VecDeque::new();
    let ended = poll_fn(|task| {
        let mut taken = 0;
        loop {
            if taken == MAX_CHUNKS_PER_TURN {
                task.waker().wake_by_ref();
                break;
            }
            match frames.as_mut().poll_next(task) {
                Poll::Ready(Some(Ok(bytes))) => {
                    taken += 1;
                    queue.push_back(Queued {
                        bytes,
                        _held: until_written.take(),
                        written: 0,
                    });
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "WebSocket frame could not be encoded");
                    return Poll::Ready(Err(io::Error::other(error.to_string())));
                }
                // The actor stopped; every frame it sent is in the queue.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match poll_write(io, &mut queue, task) {
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    })
    .await;
    (ended, queue)
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
async fn finish<T>(io: Arc<TcpStream>, mut queue: VecDeque<Queued<T>>) {
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
