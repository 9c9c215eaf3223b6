//! What a session sends to a connection, and the bounded queue in between.
//!
//! The session sends with `do_send` (it must never wait on a slow client), so the bound is kept
//! by the sender: an [`Outbox`] counts the frames and bytes handed to the connection and not yet
//! written by it. Each [`OutboundFrame`] holds its share of those counts and releases it when
//! dropped, i.e. once the connection has written its last byte to the socket (or the connection
//! is gone), so frames waiting for a client that does not read count against the bound. When a
//! client lets either count reach its limit, the session stops sending to it and closes it with
//! 1008 ("too slow; resync") — so a frame is never silently dropped from a connection that stays
//! open.
//!
//! **Bytes.** A frame counts its length against [`OutboxBudget::bytes`], except that no frame
//! counts for more than half of it: a document larger than the whole budget must still reach a
//! client that reads (a fresh joiner's step 2 is the whole document), and the updates that arrive
//! while it is being written must still fit beside it. So what one connection can hold is at
//! most the budget plus two such large frames — each no larger than the document (bounded by
//! `max_doc_bytes`) — whatever the client asks for.

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

/// One encoded frame plus its share of the sender's queue counts.
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

    /// The frame and its queue slot apart: the slot counts until it is dropped (the connection
    /// keeps it until the frame's bytes were written).
    pub fn into_parts(self) -> (Bytes, QueueSlot) {
        (self.bytes, self._slot)
    }
}

impl AsRef<[u8]> for OutboundFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// How much may wait for one connection before it counts as too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBudget {
    pub frames: usize,
    /// Bytes, with frames larger than half of it counted as half (see the module docs).
    pub bytes: usize,
}

/// Frames and (counted) bytes queued and not yet written.
#[derive(Debug, Default)]
struct Queued {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

/// A frame's share of its connection's queue counts, given back when dropped.
#[derive(Debug)]
pub struct QueueSlot {
    queued: Arc<Queued>,
    charge: usize,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.queued.frames.fetch_sub(1, Ordering::AcqRel);
        self.queued.bytes.fetch_sub(self.charge, Ordering::AcqRel);
    }
}

/// The outbound queue's budget was reached: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A connection's mailbox as seen by its session: where to send, and how much is in flight.
#[derive(Debug, Clone)]
pub struct Outbox {
    recipient: Recipient<Outbound>,
    queued: Arc<Queued>,
    budget: OutboxBudget,
}

impl Outbox {
    pub fn new(recipient: Recipient<Outbound>, budget: OutboxBudget) -> Self {
        Self {
            recipient,
            queued: Arc::new(Queued::default()),
            budget: OutboxBudget {
                frames: budget.frames.max(1),
                bytes: budget.bytes.max(2),
            },
        }
    }

    /// Frames sent and not yet written to the connection's socket.
    pub fn queued(&self) -> usize {
        self.queued.frames.load(Ordering::Acquire)
    }

    /// Bytes (as counted against the budget) sent and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.bytes.load(Ordering::Acquire)
    }

    pub fn budget(&self) -> OutboxBudget {
        self.budget
    }

    /// What a frame of `len` bytes counts against the byte budget.
    pub fn charge(&self, len: usize) -> usize {
        len.min(self.budget.bytes / 2)
    }

    /// Whether `frames` more frames counting `charge` bytes fit beside what is queued.
    pub fn fits(&self, frames: usize, charge: usize) -> bool {
        self.queued().saturating_add(frames) <= self.budget.frames
            && self.queued_bytes().saturating_add(charge) <= self.budget.bytes
    }

    /// Queues a frame unless the budget is used up. Only the session sends on an outbox, so the
    /// check-then-increment cannot race with another sender.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), QueueFull> {
        let charge = self.charge(bytes.len());
        if !self.fits(1, charge) {
            return Err(QueueFull);
        }
        self.queued.frames.fetch_add(1, Ordering::AcqRel);
        self.queued.bytes.fetch_add(charge, Ordering::AcqRel);
        let frame = OutboundFrame {
            bytes,
            _slot: QueueSlot {
                queued: self.queued.clone(),
                charge,
            },
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
