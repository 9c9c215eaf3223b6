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
//! Encoding is yrs's: a frame becomes a `yrs::sync::Message` (its own `Sync`, `Auth` and
//! `AwarenessQuery`; `Custom(1, …)` for awareness, whose bytes are passed on as they came, and
//! `Custom(100, …)` for events — `Custom` writes its tag as one byte, which is the varint of any
//! tag below 128, then the payload as `varBytes`), and a preview is written with yrs's
//! `encoding::write::Write` (its fields follow the tag directly, where `Custom(101, …)` would add a
//! length prefix and change the bytes stock clients decode). The message types are yrs's
//! `sync::protocol::MSG_*`, plus [`MESSAGE_EVENT`] and [`MESSAGE_PREVIEW`].
//!
//! Decoding is not yrs's: its decoders trust length prefixes and panic on some hostile input (see
//! `crate::lib0`). [`decode_frame`] reads with the bounded reader and validates everything it
//! returns, including the update and awareness payloads, so a [`Frame`] in hand is well-formed. It
//! never panics on any input.

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
pub use yrs::sync::protocol::{
    MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, MSG_SYNC_STEP_1, MSG_SYNC_STEP_2,
    MSG_SYNC_UPDATE, PERMISSION_DENIED,
};
pub use yrs::sync::SyncMessage;

use yrs::encoding::write::Write;
use yrs::sync::Message;
use yrs::updates::encoder::Encode;

use crate::ids::JobId;
use crate::lib0::Reader;

/// Atelier extension: one JSON studio event (sent only to clients that asked with `?events=1`).
pub const MESSAGE_EVENT: u8 = 100;
/// Atelier extension: a binary job preview (same audience as events).
pub const MESSAGE_PREVIEW: u8 = 101;

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
        u64::from(match self {
            Self::Sync(_) => MSG_SYNC,
            Self::Awareness(_) => MSG_AWARENESS,
            Self::Auth(_) => MSG_AUTH,
            Self::QueryAwareness => MSG_QUERY_AWARENESS,
            Self::Event(_) => MESSAGE_EVENT,
            Self::Preview { .. } => MESSAGE_PREVIEW,
        })
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

    /// Encodes the frame it consumes, without copying its payload first.
    pub fn into_encoded(self) -> Vec<u8> {
        let message = match self {
            Self::Sync(sync) => Message::Sync(sync),
            Self::Auth(reason) => Message::Auth(Some(reason)),
            Self::QueryAwareness => Message::AwarenessQuery,
            // The awareness update as it came: `Message::Awareness` holds a decoded update and
            // would write its clients in hash-map order.
            Self::Awareness(update) => Message::Custom(MSG_AWARENESS, update),
            Self::Event(json) => Message::Custom(MESSAGE_EVENT, json.into_bytes()),
            Self::Preview {
                job_id,
                step,
                mime,
                image,
            } => {
                let mut out = Vec::with_capacity(image.len() + mime.len() + 48);
                out.write_var(MESSAGE_PREVIEW);
                out.write_string(&job_id.to_string());
                out.write_var(step);
                out.write_string(&mime);
                out.write_buf(&image);
                return out;
            }
        };
        message.encode_v1()
    }
}

/// Encodes one frame as the bytes of one WebSocket binary message.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    frame.clone().into_encoded()
}

/// Encodes a sync update frame (`[0, 2, varBytes(update)]`) straight from a borrowed update —
/// what a session fans out for every stored update, without building a [`Frame`] first. (yrs's
/// `SyncMessage::Update` owns its update; this writes the same bytes with yrs's writer.)
pub fn encode_update_frame(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 7);
    out.write_var(MSG_SYNC);
    out.write_var(MSG_SYNC_UPDATE);
    out.write_buf(update);
    out
}

/// Decodes one WebSocket binary message. Any malformed, truncated, oversized-prefix, unknown or
/// trailing input is an error; see [`FrameError::close_code`] for how to answer it.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader::new(bytes);
    let message_type = r.var_u64()?;
    let frame = match u8::try_from(message_type).unwrap_or(u8::MAX) {
        MSG_SYNC => {
            let sync_type = r.var_u64()?;
            Frame::Sync(match u8::try_from(sync_type).unwrap_or(u8::MAX) {
                MSG_SYNC_STEP_1 => SyncMessage::SyncStep1(decode_state_vector(r.var_bytes()?)?),
                MSG_SYNC_STEP_2 => SyncMessage::SyncStep2(checked_update(r.var_bytes()?)?),
                MSG_SYNC_UPDATE => SyncMessage::Update(checked_update(r.var_bytes()?)?),
                _ => return Err(FrameError::UnknownSyncType(sync_type)),
            })
        }
        MSG_AWARENESS => {
            let payload = r.var_bytes()?;
            check_awareness(payload)?;
            Frame::Awareness(payload.to_vec())
        }
        MSG_AUTH => match r.var_u64()? {
            auth if auth == u64::from(PERMISSION_DENIED) => Frame::Auth(r.var_str()?.to_owned()),
            other => return Err(FrameError::UnknownAuthType(other)),
        },
        MSG_QUERY_AWARENESS => Frame::QueryAwareness,
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
        _ => return Err(FrameError::UnknownType(message_type)),
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
