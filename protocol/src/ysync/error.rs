//! Why a frame was rejected, and which WebSocket close code that deserves.

use thiserror::Error;

use crate::close_code;

/// A frame that could not be decoded. Decoders return this for every malformed input; they never
/// panic and never allocate based on an unchecked length prefix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame ended in the middle of a value")]
    Truncated,
    #[error("malformed variable-length integer")]
    BadVarInt,
    #[error("length prefix {declared} exceeds the {remaining} bytes left in the frame")]
    LengthOverflow { declared: u64, remaining: usize },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("{len} unexpected bytes after the message (one message per frame)")]
    TrailingBytes { len: usize },
    #[error("unknown message type {0}")]
    UnknownType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("document update rejected: {0}")]
    InvalidUpdate(String),
}

impl FrameError {
    /// The close code a server should use when a peer sends such a frame: 1003 (unsupported data)
    /// for message types we do not speak, 1002 (protocol error) for everything malformed.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::UnknownType(_) | Self::UnknownSyncType(_) | Self::UnknownAuthType(_) => {
                close_code::UNSUPPORTED_DATA
            }
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}
