//! The live-session core of Atelier: actix actors plus the ports (traits) they need. Actors see
//! only the ports; `src/` implements them on SQLite/PostgreSQL.
//!
//! Layout:
//! - [`registry`] — [`SessionRegistryHandle`]: finds or starts the one [`SessionActor`] of each
//!   live session (under an actix `Supervisor`), plus helpers the HTTP API calls (kick the
//!   connections of an account, link or token, change a role, broadcast a job event, read the
//!   graph, make a server edit, flush, shutdown) and the relay's deliveries from other nodes.
//! - [`admission`] — [`Admission`]s: every connection let in, counted against the
//!   [`AdmissionCaps`] and found by kicks even while it is still joining.
//! - [`session`] — [`SessionActor`]: owns a session's yrs document (with its nesting index) and
//!   awareness (with who owns which presence), its participants, group-committed persistence and
//!   compaction; its [`session::messages`]; [`session::rebuild_document`] for readers outside a
//!   live session.
//! - [`connection`] — [`ConnectionActor`] and [`start_connection`]: one WebSocket each, an
//!   actix-web-actors `WebsocketContext` actor: heartbeat, rate and size limits, decoding.
//! - [`socket`] — how `WebsocketContext` actors are served on a socket the server took over after
//!   the HTTP upgrade ([`socket::serve`]): the context's input is [`socket::SocketReader`] (the
//!   socket's bytes, one frame at a time), its encoded frames — and the binary messages the actor
//!   hands the writer directly ([`socket::DirectBinary`], not copied per connection) — are
//!   written by a vectored writer. The server's worker socket actor is served the same way.
//! - [`outbound`] — [`Outbound`], what a session sends a connection, and the [`Outbox`], bounded
//!   in frames and bytes.
//! - [`store`] — the [`DocStore`] port; [`memory_store`] — [`MemoryDocStore`] for tests.
//! - [`events`] — the [`events::EventSink`] port: the bus studio events go out on (the live
//!   sessions are one).
//! - [`relay`] — the [`Relay`] port to the other nodes of a cluster ([`NoRelay`] on one node).
//! - [`jobs`] — the [`JobsSnapshot`] port (`session.hello`'s job list).
//! - [`lease`] — Pro runtime leases: the [`lease::WorkerPool`] port (where a lease gets its
//!   worker; the server implements it over its worker hosts), [`lease::WorkerLeaseActor`] (owns
//!   one lease's worker) and [`lease::InProcessWorkerPool`] (a fixed pool, for tests).
//! - [`worker_socket`] — [`WorkerSocket`], a remote worker's connection (a `WebsocketContext`
//!   actor on a taken-over socket, like the connection actor), and the [`WorkerHub`] port it
//!   hands the worker's messages to (the server's job system).
//! - [`meter`] — [`meter::BillingMeterActor`] (one per lease: meters, checkpoints, stops and
//!   settles it) and its ports: [`meter::Ledger`] (the server's database) and
//!   [`meter::MeterHost`] (the billing service that started it); [`meter::cost`] turns time into
//!   credits, [`meter::reason`] lists why a lease stops.
//! - [`versions`] — the [`VersionRecorder`] port (automatic versions after a burst of edits).
//! - [`limits`] — [`ConnectionLimits`], [`SessionLimits`]; [`telemetry`] — metric names.
//!
//! Tests (`src/tests/`) drive sessions with fake connections and [`MemoryDocStore`],
//! connections over real WebSockets, a worker's socket over a real WebSocket with a fake hub
//! (`worker_socket`), the lease's worker actor with fake pools, and its meter with
//! a fake ledger, host and event bus (`tests/meter_fakes.rs`). The `test-hooks` feature exposes
//! `session::messages::InjectPanic` for supervision tests elsewhere (e.g. the server's).
//!
//! The flow of one edit: socket → `SocketReader` → `WebsocketContext` (WebSocket frames) →
//! `ConnectionActor` (size, rate, `decode_frame`) →
//! [`session::messages::Inbound`] → `SessionActor` (role check, validation, nesting check, size
//! limit) → [`DocStore::append`] (batched) → apply to the document (`ysync::integrate`) →
//! [`Outbound`] to the other connections.

pub mod admission;
pub mod connection;
pub mod events;
pub mod jobs;
pub mod lease;
pub mod limits;
pub mod memory_store;
pub mod meter;
pub mod outbound;
pub mod registry;
pub mod relay;
pub mod session;
pub mod socket;
pub mod store;
pub mod telemetry;
pub mod versions;
pub mod worker_link;
pub mod worker_socket;

pub use admission::{Admission, AdmissionCaps, CapExceeded, Grant, KickTarget};
pub use connection::{start_connection, ConnectionActor, ConnectionConfig};
pub use jobs::{JobQueue, JobsSnapshot, NoJobs, QueuedJob, RecoveredQueue};
pub use limits::{ConnectionLimits, SessionLimits};
pub use memory_store::MemoryDocStore;
pub use outbound::{Outbound, OutboundFrame, Outbox, OutboxBudget};
pub use registry::{RegistryConfig, SessionRegistryHandle};
pub use relay::{NoRelay, Relay};
pub use session::{Identity, Participant, SessionActor};
pub use store::{BoxError, BoxFuture, DocStore, DocStoreError, StoredDoc, StoredUpdate};
pub use versions::{EditBurst, NoVersions, VersionRecorder};
pub use worker_link::{worker_link, LinkEnd, LinkError, LinkInbox, WorkerLink};
pub use worker_socket::{
    start_worker_socket, MediaBudget, MediaPermit, WorkerHello, WorkerHub, WorkerResume,
    WorkerSocket,
};

#[cfg(test)]
mod tests;
