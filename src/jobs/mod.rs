//! GPU jobs: the session graph compiled into steps, queued fairly, run on worker hosts, and
//! reported live to every participant.
//!
//! - [`graph`]: document → validated graph → [`graph::Plan`].
//! - [`cache`]: cached node results (content-addressed, per session, LRU-capped).
//! - [`board`]: [`JobBoard`] — the one owner of the job system's state (queue, unfinished jobs,
//!   connected workers and their slots, which lease holds which slot, the leases waiting in
//!   line) and every change to it: where a job is queued, assigned, re-queued and finished.
//! - [`queue`]: the fair per-account queue (part of the board).
//! - [`service`]: [`JobService`] — the I/O around the board: submit, cancel, dispatch, workers
//!   joining and leaving, studio events.
//! - [`restore`]: at start-up, the jobs queued before a restart go back on the board. The
//!   durable copy of the queue is behind the `atelier_actors::JobQueue` port (the jobs table on
//!   one node: `crate::db::job_queue`; in a cluster the jobs table plus the nodes' job streams:
//!   `crate::cluster::job_routing`, which also puts the jobs routed to this node on the board).
//! - [`assignment`]: one job on one worker (the worker lease of a job): heartbeat deadline,
//!   events, previews, outputs into media and the document.
//! - [`fleet`]: what operators see and do: connected workers, unfinished jobs, draining and
//!   disconnecting workers.
//! - [`leasing`]: the workers' slots as the pool runtime leases take their worker from.
//! - [`reattach`]: a reconnected worker's leases and running jobs, adopted by the node it
//!   reconnected to.
//! - [`worker_socket`]: `GET /api/v1/workers/ws`, the remote worker's connection: the upgrade's
//!   checks, and the job system as the `WorkerHub` port of `atelier_actors::WorkerSocket`.

pub mod assignment;
pub mod board;
pub mod cache;
pub mod fleet;
pub mod graph;
pub mod graph_edit;
pub mod leasing;
pub mod queue;
pub mod reattach;
pub mod restore;
pub mod service;
pub mod worker_socket;

pub use board::JobBoard;
pub use service::{JobLimits, JobService, WorkerJoin};
