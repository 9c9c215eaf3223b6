//! GPU jobs: the session graph compiled into steps, queued fairly, run on worker hosts, and
//! reported live to every participant.
//!
//! - [`graph`]: document → validated graph → [`graph::Plan`].
//! - [`cache`]: cached node results (content-addressed, per session, LRU-capped).
//! - [`queue`]: the fair per-account queue.
//! - [`service`]: [`JobService`] — submit, cancel, dispatch, workers joining and leaving.
//! - [`assignment`]: one job on one worker (the worker lease of a job): heartbeat deadline,
//!   events, previews, outputs into media and the document.
//! - [`fleet`]: what operators see and do: connected workers, unfinished jobs, draining and
//!   disconnecting workers.
//! - [`leasing`]: the job workers as the pool runtime leases take their worker from.
//! - [`worker_socket`]: `GET /api/v1/workers/ws`, the remote worker's connection: the upgrade's
//!   checks, and the job system as the `WorkerHub` port of `atelier_actors::WorkerSocket`.

pub mod assignment;
pub mod cache;
pub mod fleet;
pub mod graph;
pub mod graph_edit;
pub mod leasing;
pub mod queue;
pub mod service;
pub mod worker_socket;

pub use service::{JobBoard, JobLimits, JobService};
