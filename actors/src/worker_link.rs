//! The server → worker link: what the job system sends one worker (welcome, assignments with
//! their inputs, cancels, a refusal), through a bounded queue.
//!
//! The job system never waits on a worker: it sends with [`WorkerLink::send`], which fails at
//! once when the queue is full. A full queue means the worker stopped reading (the traffic to a
//! worker is bounded by its slots, see [`WORKER_LINK_CAPACITY`]), so it also raises the link's
//! overflow: the worker's socket closes it with 1008 "too slow" and its jobs are handled as a
//! lost worker's. The remote worker's socket additionally closes it when one frame waits longer
//! than the heartbeat timeout for the socket to take it ([`crate::WorkerSocket`]), so what waits
//! for a worker that does not read is at most this queue plus one message being written.

use std::sync::Arc;

use atelier_protocol::worker::{ServerMessage, ToWorker, MAX_SLOTS};
use tokio::sync::{mpsc, Notify};

/// Messages that may wait for one worker. The server sends a worker at most: one welcome; per
/// slot one `assign` and a `cancel` or two for its running job; one refusal. Four per slot of the
/// most a worker may have, plus a few, is never reached by a worker that reads its socket — so a
/// full queue is a worker that stopped reading, not a burst.
pub const WORKER_LINK_CAPACITY: usize = 4 * MAX_SLOTS as usize + 8;

/// The job system's end of a worker's link (cheap to clone).
#[derive(Clone, Debug)]
pub struct WorkerLink {
    tx: mpsc::Sender<ToWorker>,
    overflow: Arc<Notify>,
}

/// The worker's end: its socket's forwarder, or the in-process worker host.
#[derive(Debug)]
pub struct LinkInbox {
    rx: mpsc::Receiver<ToWorker>,
    overflow: Arc<Notify>,
}

/// Why a message did not go to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the worker does not read its socket (its link is full)")]
    Full,
    #[error("the worker is gone")]
    Closed,
}

/// Why a link's inbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// Every [`WorkerLink`] was dropped: the worker is off the board.
    Closed,
    /// A send found the queue full: the worker is too slow.
    Overflow,
}

/// A new bounded link.
pub fn worker_link() -> (WorkerLink, LinkInbox) {
    let (tx, rx) = mpsc::channel(WORKER_LINK_CAPACITY);
    let overflow = Arc::new(Notify::new());
    (
        WorkerLink {
            tx,
            overflow: overflow.clone(),
        },
        LinkInbox { rx, overflow },
    )
}

impl WorkerLink {
    /// Queues `msg` for the worker without waiting. A full queue raises the overflow (the
    /// worker is closed as too slow).
    pub fn send(&self, msg: ToWorker) -> Result<(), LinkError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                Err(LinkError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LinkError::Closed),
        }
    }

    /// [`WorkerLink::send`] of a plain message.
    pub fn message(&self, msg: ServerMessage) -> Result<(), LinkError> {
        self.send(ToWorker::Message(msg))
    }
}

impl LinkInbox {
    /// The next message, or why there is none.
    pub async fn recv(&mut self) -> Result<ToWorker, LinkEnd> {
        tokio::select! {
            biased;
            () = self.overflow.notified() => Err(LinkEnd::Overflow),
            msg = self.rx.recv() => msg.ok_or(LinkEnd::Closed),
        }
    }

    /// The queue and the overflow signal apart (the in-process worker reads the queue itself).
    pub fn into_parts(self) -> (mpsc::Receiver<ToWorker>, Arc<Notify>) {
        (self.rx, self.overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel() -> ToWorker {
        ToWorker::Message(ServerMessage::Cancel {
            job_id: atelier_protocol::ids::JobId::new_random(),
        })
    }

    #[tokio::test]
    async fn a_full_link_fails_the_send_and_raises_the_overflow() {
        let (link, mut inbox) = worker_link();
        for _ in 0..WORKER_LINK_CAPACITY {
            link.send(cancel()).unwrap();
        }
        assert_eq!(link.send(cancel()), Err(LinkError::Full));
        // The overflow comes before what is queued: the worker is closed, not fed.
        assert_eq!(inbox.recv().await, Err(LinkEnd::Overflow));
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_the_end_is_seen() {
        let (link, mut inbox) = worker_link();
        let (a, b) = (cancel(), cancel());
        link.send(a.clone()).unwrap();
        link.send(b.clone()).unwrap();
        drop(link);
        assert_eq!(inbox.recv().await, Ok(a));
        assert_eq!(inbox.recv().await, Ok(b));
        assert_eq!(inbox.recv().await, Err(LinkEnd::Closed));
        let (link, inbox) = worker_link();
        drop(inbox);
        assert_eq!(link.send(cancel()), Err(LinkError::Closed));
    }
}
