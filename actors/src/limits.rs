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
    /// How often the server pings. Browsers answer pings themselves.
    pub ping_interval: Duration,
    /// Silence after which the client is considered gone (close 1001).
    pub client_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_messages_per_sec: 200,
            message_burst: 1000,
            outbound_queue_frames: 1024,
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
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_doc_bytes: 16 * 1024 * 1024,
            compact_every_updates: 500,
            compact_interval: Duration::from_secs(60),
            idle_unload: Duration::from_secs(60),
        }
    }
}
