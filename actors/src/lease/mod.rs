//! Worker assignment for runtime leases: the [`WorkerPool`] port ([`pool`]) and the
//! [`WorkerLeaseActor`] that owns one lease's assignment ([`worker`]); [`in_process`] is a fixed
//! pool for running without worker hosts.
//!
//! The pool hands out workers of a GPU class; the server's job system implements it over the
//! connected worker hosts (`atelier::jobs::leasing`). [`InProcessWorkerPool`] is a fixed stand-in for tests
//! of billing alone: it offers every configured class and assigns immediately.
//!
//! A worker's liveness travels with its assignment as a `watch` of [`WorkerHeartbeat`]s: the
//! meter reads the latest heartbeat to bill only up to it, and the lease actor tells the meter
//! when the worker is lost so billing stops at its last heartbeat.

pub mod in_process;
pub mod pool;
pub mod worker;

pub use in_process::InProcessWorkerPool;
pub use pool::{PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool};
pub use worker::{LeaseNews, ReleaseWorker, WorkerLeaseActor};
