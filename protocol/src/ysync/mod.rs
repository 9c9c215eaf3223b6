//! y-protocols framing over `yrs::sync`, plus Atelier's studio-event extensions.
//!
//! One WebSocket binary frame carries exactly one message (stock `y-websocket` decodes one message
//! per frame), laid out as `varUint(type)` followed by the type's fields:
//!
//! | type | frame | fields |
//! |---|---|---|
//! | 0 | [`Frame::Sync`] | `varUint(0)` step 1 + `varBytes(state vector)`, `varUint(1)` step 2 or `varUint(2)` update + `varBytes(v1 update)` |
//! | 1 | [`Frame::Awareness`] | `varBytes(awareness update)` |
//! | 2 | [`Frame::Auth`] | `varUint(0)` (permission denied) `varString(reason)` |
//! | 3 | [`Frame::QueryAwareness`] | — |
//! | 100 | [`Frame::Event`] | `varString(JSON studio event)` |
//! | 101 | [`Frame::Preview`] | `varString(job_id)` `varUint(step)` `varString(mime)` `varBytes(image)` |
//!
//! [`decode_frame`] validates everything it returns, including the update and awareness payloads,
//! so a [`Frame`] in hand is well-formed. It never panics on any input.

mod awareness;
mod error;
pub mod integrate;
pub mod nesting;
mod state_vector;
mod update;

pub use awareness::{check_awareness, decode_awareness, encode_awareness};
pub use error::FrameError;
pub use nesting::{NestingError, NestingIndex, MAX_TYPE_DEPTH};
pub use state_vector::decode_state_vector;
pub use update::{
    check_update_v1, decode_update, repair_update_v1, summarize_update, BlockKind, BlockSummary,
    DeletedRange, ItemId, ParentRef, Repairs, SectionSummary, UpdateSummary, MAX_ANY_DEPTH,
    SUBDOCUMENTS_UNSUPPORTED,
};
pub use yrs::sync::SyncMessage;

use yrs::updates::encoder::Encode;

use crate::ids::JobId;
use crate::lib0::{write_var_bytes, write_var_str, write_var_u64, Reader};

/// y-protocols message type: document sync.
pub const MESSAGE_SYNC: u64 = 0;
/// y-protocols message type: awareness (presence, cursors).
pub const MESSAGE_AWARENESS: u64 = 1;
/// y-protocols message type: auth (only "permission denied" exists).
pub const MESSAGE_AUTH: u64 = 2;
/// y-protocols message type: ask the peer for all awareness states.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;
/// Atelier extension: one JSON studio event (sent only to clients that asked with `?events=1`).
pub const MESSAGE_EVENT: u64 = 100;
/// Atelier extension: a binary job preview (same audience as events).
pub const MESSAGE_PREVIEW: u64 = 101;

const SYNC_STEP1: u64 = 0;
const SYNC_STEP2: u64 = 1;
const SYNC_UPDATE: u64 = 2;
const AUTH_PERMISSION_DENIED: u64 = 0;

/// The reason sent with `[2, 0, reason]` when a viewer tries to change the document.
pub const READ_ONLY_REASON: &str = "read-only";

/// One message of the live-session protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Type 0: sync step 1 (state vector), step 2 (update answering a step 1) or update.
    Sync(SyncMessage),
    /// Type 1: an encoded awareness update (see [`decode_awareness`]).
    Awareness(Vec<u8>),
    /// Type 2: permission denied, with a reason (`[2, 0, reason]`).
    Auth(String),
    /// Type 3: query awareness.
    QueryAwareness,
    /// Type 100: a studio event as JSON (see [`crate::events::StudioEvent`]).
    Event(String),
    /// Type 101: a preview image of a running job.
    Preview {
        job_id: JobId,
        step: u32,
        mime: String,
        image: Vec<u8>,
    },
}

impl Frame {
    /// Sync step 1 carrying `sv`.
    pub fn step1(sv: yrs::StateVector) -> Self {
        Self::Sync(SyncMessage::SyncStep1(sv))
    }

    /// A sync update carrying a v1-encoded document update.
    pub fn update(update: Vec<u8>) -> Self {
        Self::Sync(SyncMessage::Update(update))
    }

    /// `[2, 0, "read-only"]`: the answer to a viewer's attempted write.
    pub fn read_only() -> Self {
        Self::Auth(READ_ONLY_REASON.to_owned())
    }

    /// The y-protocols/extension message type number of this frame.
    pub fn message_type(&self) -> u64 {
        match self {
            Self::Sync(_) => MESSAGE_SYNC,
            Self::Awareness(_) => MESSAGE_AWARENESS,
            Self::Auth(_) => MESSAGE_AUTH,
            Self::QueryAwareness => MESSAGE_QUERY_AWARENESS,
            Self::Event(_) => MESSAGE_EVENT,
            Self::Preview { .. } => MESSAGE_PREVIEW,
        }
    }

    /// The v1 update carried by a sync step 2 or update message, if this frame writes.
    pub fn document_update(&self) -> Option<&[u8]> {
        match self {
            Self::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                Some(update)
            }
            _ => None,
        }
    }

    /// Whether only the server may send this frame (clients never send studio extensions).
    pub fn is_server_only(&self) -> bool {
        matches!(self, Self::Event(_) | Self::Preview { .. })
    }

    /// Encodes the frame; see [`encode_frame`].
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self)
    }
}

/// Encodes one frame as the bytes of one WebSocket binary message.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, frame.message_type());
    match frame {
        Frame::Sync(SyncMessage::SyncStep1(sv)) => {
            write_var_u64(&mut out, SYNC_STEP1);
            write_var_bytes(&mut out, &sv.encode_v1());
        }
        Frame::Sync(SyncMessage::SyncStep2(update)) => {
            write_var_u64(&mut out, SYNC_STEP2);
            write_var_bytes(&mut out, update);
        }
        Frame::Sync(SyncMessage::Update(update)) => {
            write_var_u64(&mut out, SYNC_UPDATE);
            write_var_bytes(&mut out, update);
        }
        Frame::Awareness(update) => write_var_bytes(&mut out, update),
        Frame::Auth(reason) => {
            write_var_u64(&mut out, AUTH_PERMISSION_DENIED);
            write_var_str(&mut out, reason);
        }
        Frame::QueryAwareness => {}
        Frame::Event(json) => write_var_str(&mut out, json),
        Frame::Preview {
            job_id,
            step,
            mime,
            image,
        } => {
            write_var_str(&mut out, &job_id.to_string());
            write_var_u64(&mut out, u64::from(*step));
            write_var_str(&mut out, mime);
            write_var_bytes(&mut out, image);
        }
    }
    out
}

/// Encodes a sync update frame (`[0, 2, varBytes(update)]`) straight from a borrowed update —
/// what a session fans out for every stored update, without building a [`Frame`] first.
pub fn encode_update_frame(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 7);
    write_var_u64(&mut out, MESSAGE_SYNC);
    write_var_u64(&mut out, SYNC_UPDATE);
    write_var_bytes(&mut out, update);
    out
}

/// Decodes one WebSocket binary message. Any malformed, truncated, oversized-prefix, unknown or
/// trailing input is an error; see [`FrameError::close_code`] for how to answer it.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader::new(bytes);
    let frame = match r.var_u64()? {
        MESSAGE_SYNC => Frame::Sync(match r.var_u64()? {
            SYNC_STEP1 => SyncMessage::SyncStep1(decode_state_vector(r.var_bytes()?)?),
            SYNC_STEP2 => SyncMessage::SyncStep2(checked_update(r.var_bytes()?)?),
            SYNC_UPDATE => SyncMessage::Update(checked_update(r.var_bytes()?)?),
            other => return Err(FrameError::UnknownSyncType(other)),
        }),
        MESSAGE_AWARENESS => {
            let payload = r.var_bytes()?;
            check_awareness(payload)?;
            Frame::Awareness(payload.to_vec())
        }
        MESSAGE_AUTH => match r.var_u64()? {
            AUTH_PERMISSION_DENIED => Frame::Auth(r.var_str()?.to_owned()),
            other => return Err(FrameError::UnknownAuthType(other)),
        },
        MESSAGE_QUERY_AWARENESS => Frame::QueryAwareness,
        MESSAGE_EVENT => Frame::Event(r.var_str()?.to_owned()),
        MESSAGE_PREVIEW => Frame::Preview {
            job_id: r
                .var_str()?
                .parse()
                .map_err(|_| FrameError::Malformed("preview job id is not a UUID"))?,
            step: r.var_u32()?,
            mime: r.var_str()?.to_owned(),
            image: r.var_bytes()?.to_vec(),
        },
        other => return Err(FrameError::UnknownType(other)),
    };
    r.finish()?;
    Ok(frame)
}

fn checked_update(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    check_update_v1(payload)?;
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests;
