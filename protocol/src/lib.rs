//! Wire types (the live-session framing and events arrive with the live-sessions work).

pub mod ids;
pub mod role;

pub use role::Role;
