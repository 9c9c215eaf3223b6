//! Configured bounds for connections and sessions. Every limit has a name, a default and a clear
//! close code or error when hit. The server builds these from its own configuration.

use std::time::Duration;

/// Per-WebSocket bounds, enforced by [`crate::ConnectionActor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Largest accepted message (after reassembling fragments). Larger: close 1009.
    pub max_message_bytes: usize,
    /// Sustained inbound messages per second. Exceeded: close 1008.
    pub max_messages_per_sec: u32,
    /// Messages allowed in a burst (token bucket size). Generous on purpose: y-websocket sends
    /// one message per local transaction, so a script or a paste of many small transactions
    /// arrives as hundreds of messages at once.
    pub message_burst: u32,
    /// Frames the server may have queued for this client before it counts as too slow
    /// (close 1008 "too slow; resync"). Frames are never dropped from an open connection.
    pub outbound_queue_frames: usize,
    /// Bytes the server may have queued for this client before it counts as too slow (same
    /// close). A frame counts at most half of it, so a document larger than the budget still
    /// reaches a client that reads; see [`crate::outbound`].
    pub outbound_queue_bytes: usize,
    /// How often the server pings. Browsers answer pings themselves.
    pub ping_interval: Duration,
    /// Silence after which the client is considered gone (close 1001).
    pub client_timeout: Duration,
}

impl ConnectionLimits {
    /// The outbound queue's budget, for an [`crate::Outbox`].
    pub fn outbox_budget(&self) -> crate::OutboxBudget {
        crate::OutboxBudget {
            frames: self.outbound_queue_frames,
            bytes: self.outbound_queue_bytes,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_messages_per_sec: 200,
            message_burst: 1000,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(5),
            client_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-document bounds and persistence cadence, enforced by [`crate::SessionActor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest stored document (snapshot plus update tail). An update that would exceed it is
    /// refused with `[2, 0, "document-too-large"]` and not stored.
    pub max_doc_bytes: usize,
    /// Compact (snapshot + truncate the update log) after this many stored updates, once they
    /// also add up to half the snapshot's size (large documents compact less often).
    pub compact_every_updates: usize,
    /// Also compact when this much time has passed with uncompacted updates.
    pub compact_interval: Duration,
    /// Unload a session (after flushing) once it has had no participants for this long.
    pub idle_unload: Duration,
    /// Presence (awareness states, as JSON) one connection may hold. A state that would take it
    /// over closes the connection with 1008.
    pub max_presence_bytes_per_connection: usize,
    /// Presence all participants together may hold (every joiner receives all of it). A new or
    /// larger state that does not fit is not applied and not relayed.
    pub max_presence_bytes_per_session: usize,
    /// A burst of editing has settled (an automatic version is due) after this long without
    /// an edit.
    pub version_settle: Duration,
    /// A burst that goes on this long gets an automatic version anyway (at most one per this
    /// much activity).
    pub version_every: Duration,
}

/// Default of [`SessionLimits::max_presence_bytes_per_connection`]: a cursor, a selection and a
/// name weigh well under a kilobyte.
pub const MAX_PRESENCE_BYTES_PER_CONNECTION: usize = 64 * 1024;

/// Default of [`SessionLimits::max_presence_bytes_per_session`].
pub const MAX_PRESENCE_BYTES_PER_SESSION: usize = 1024 * 1024;

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_doc_bytes: 16 * 1024 * 1024,
            compact_every_updates: 500,
            compact_interval: Duration::from_secs(60),
            idle_unload: Duration::from_secs(60),
            max_presence_bytes_per_connection: MAX_PRESENCE_BYTES_PER_CONNECTION,
            max_presence_bytes_per_session: MAX_PRESENCE_BYTES_PER_SESSION,
            version_settle: Duration::from_secs(10),
            version_every: Duration::from_secs(300),
        }
    }
}
