//! WebSocket close codes (RFC 6455 §7.4.1) used by the live-session endpoint, named for why
//! Atelier sends them.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down, or the peer stopped answering pings.
pub const GOING_AWAY: u16 = 1001;
/// A malformed frame (see `FrameError::close_code`).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame, or a message type the server does not accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Policy: rate limit exceeded, client too slow to keep up, access revoked.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message larger than the configured maximum.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server failed (storage error, session restarted); reconnecting resyncs the client.
pub const INTERNAL_ERROR: u16 = 1011;

// Private-use codes (4000–4999). y-websocket (3.1+) treats 4400–4499 like HTTP 4xx — a
// deliberate decision that reconnecting cannot fix — and stops reconnecting; every other code
// makes it reconnect with backoff.

/// The credential the socket was opened with ended: its token was logged out, or its account
/// was deleted (or suspended).
pub const CREDENTIAL_ENDED: u16 = 4401;
/// Access was taken away on an open socket: share link revoked or expired, member removed,
/// the link's creator lost the right to share.
pub const ACCESS_REVOKED: u16 = 4403;
/// The session was deleted.
pub const SESSION_DELETED: u16 = 4404;
/// A document update the server will not store (shared types nested too deep, or depending on
/// or deleting items the session does not have). Final: the client would send it again.
pub const UPDATE_REFUSED: u16 = 4422;
