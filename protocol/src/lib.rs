//! Atelier wire types, sans-IO: no sockets, no database, nothing that blocks. Everything here can
//! be fuzzed and unit-tested on byte slices.
//!
//! Layout:
//! - [`ysync`] — y-protocols framing for the live session WebSocket (`/ws/{session_id}`): the
//!   [`ysync::Frame`] enum (sync, awareness, auth, query-awareness, plus Atelier's type 100
//!   studio events and type 101 previews), [`ysync::decode_frame`] / [`ysync::encode_frame`]
//!   (encoding through yrs's `sync::Message` and `encoding::write::Write`; the message types are
//!   yrs's `MSG_*` plus [`ysync::MESSAGE_EVENT`] and [`ysync::MESSAGE_PREVIEW`]), and bounded
//!   validators for the Yjs payloads inside frames ([`ysync::decode_update`],
//!   [`ysync::decode_awareness`], [`ysync::decode_state_vector`]) — they exist because yrs's own
//!   decoder is not safe on hostile input, and mirror its internals (hence yrs pinned to
//!   `=0.28.1`). Decoders never panic and never
//!   trust a length prefix; errors carry the close code to answer with. Also the bound on how
//!   deep shared types nest ([`ysync::nesting`], on [`ysync::summarize_update`]'s structure) and
//!   the one way updates enter a session document ([`ysync::integrate`]).
//! - [`events`] — [`events::StudioEvent`], the JSON carried by type-100 frames.
//! - [`ids`] — typed id newtypes (`SessionId`, `JobId`, …) made by one macro.
//! - [`role`] — [`Role`]: `owner`, `editor`, `viewer`.
//! - [`worker`] — the worker protocol (JSON frames on `/api/v1/workers/ws`).
//! - [`close_code`] — the WebSocket close codes the server uses, named.
//! - [`relay`] — what cluster nodes tell each other through Redis ([`relay::Envelope`]).
//! - `lib0` (private) — the bounds-checked lib0 varint/bytes reader behind every decoder (writing
//!   is yrs's `encoding::write::Write`).
//!
//! The wire format is described in `protocol/README.md`; fuzzing lives in `protocol/fuzz/`.

pub mod close_code;
pub mod events;
pub mod ids;
mod lib0;
pub mod relay;
pub mod role;
pub mod worker;
pub mod worker_frame;
pub mod ysync;

pub use ids::{AccountId, ConnectionId, JobId, LeaseId, MediaId, SessionId, ShareLinkId, WorkerId};
pub use role::Role;
