//! Metering of Pro runtime leases: [`BillingMeterActor`] ([`actor`]; what it is asked, in
//! [`messages`]), one per lease, owns the lease's billing state — it meters the time used,
//! checkpoints and settles it, and tells the session — reaching the rest of the server only
//! through ports:
//! - [`ledger`] — the [`Ledger`] port (segments, checkpoints, extensions, settlements) and the
//!   values it trades in ([`MeteredLease`], [`Settlement`], …); the server implements it on its
//!   database.
//! - [`host`] — the [`MeterHost`] port: the billing service that started the meter (forgets the
//!   meter once settled) and the job system behind it.
//! - [`state`] — [`LeaseState`], what the meter publishes over a `watch` (status, worker, owner
//!   and epoch, used and charged so far): the one place billing and the views read a lease's
//!   live state from.
//! - the [`crate::events::EventSink`] (studio events) and [`crate::lease::WorkerPool`] ports,
//!   shared with the rest of the crate.
//! - [`cost`] — time → credits (charges round down, holds round up); [`reason`] — why a lease
//!   stopped, as `runtime.stopped` says it.

pub mod actor;
pub mod cost;
pub mod host;
pub mod ledger;
pub mod messages;
pub mod reason;
pub mod state;

pub use actor::{BillingMeterActor, MeterPorts, MeterSettings};
pub use host::MeterHost;
pub use ledger::{Checkpointed, LeaseStatus, Ledger, LedgerError, MeteredLease, Settlement};
pub use messages::{ExtendLease, HandOver, JobActivity, MeterError, StopLease};
pub use state::LeaseState;
