//! What a session sends to a connection, and the bounded queue in between.
//!
//! The session sends with `do_send` (it must never wait on a slow client), so the bound is kept
//! by the sender: an [`Outbox`] counts frames handed to the connection and not yet written by it.
//! Each [`OutboundFrame`] holds a slot of that count and releases it when dropped, i.e. once the
//! connection has written its last byte to the socket (or the connection is gone), so frames
//! waiting for a client that does not read count against the bound. When a client lets the count
//! reach its limit, the session stops sending to it and closes it with 1008 ("too slow;
//! resync") — so a frame is never silently dropped from a connection that stays open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use bytes::Bytes;

/// A message from a session to one of its connections.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Outbound {
    /// One encoded frame, to be sent as one binary WebSocket message.
    Frame(OutboundFrame),
    /// Close the WebSocket with this code and reason, then stop.
    Close { code: u16, reason: String },
}

/// One encoded frame plus its slot in the sender's queue count.
#[derive(Debug)]
pub struct OutboundFrame {
    bytes: Bytes,
    _slot: QueueSlot,
}

impl OutboundFrame {
    /// The encoded frame.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Takes the frame out, releasing its queue slot.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl AsRef<[u8]> for OutboundFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Decrements the queued-frame count when the frame is dropped.
#[derive(Debug)]
struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outbound queue's capacity was reached: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A connection's mailbox as seen by its session: where to send, and how much is in flight.
#[derive(Debug, Clone)]
pub struct Outbox {
    recipient: Recipient<Outbound>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl Outbox {
    /// `capacity`: frames that may be queued before the client counts as too slow.
    pub fn new(recipient: Recipient<Outbound>, capacity: usize) -> Self {
        Self {
            recipient,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
        }
    }

    /// Frames sent and not yet written to the connection's socket.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Frames that may be queued before the client counts as too slow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a frame unless the queue is full. Only the session sends on an outbox, so the
    /// check-then-increment cannot race with another sender.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), QueueFull> {
        if self.queued() >= self.capacity {
            return Err(QueueFull);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let frame = OutboundFrame {
            bytes,
            _slot: QueueSlot(self.queued.clone()),
        };
        self.recipient.do_send(Outbound::Frame(frame));
        Ok(())
    }

    /// Asks the connection to close (always delivered, after the frames already queued).
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        self.recipient.do_send(Outbound::Close {
            code,
            reason: reason.into(),
        });
    }
}
