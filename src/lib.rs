//! # Atelier — the server crate
//!
//! The tree shows the layers: the HTTP edge in [`http`], the domain services beside it, the
//! adapters to databases, storage, Redis and models below them. The live-session and runtime-lease
//! actors are in `atelier-actors`, which sees only ports (traits); this crate implements them.
//!
//! Edge:
//! - [`http`]: [`http::server`] builds the actix-web application and runs it until a shutdown
//!   signal; [`http::upgrade`] answers WebSocket upgrades on their socket, which an actor then
//!   serves (live sessions, remote workers) without the HTTP connection's buffers; [`http::ws`]
//!   is the live-session endpoint (auth, role); [`http::api`] the HTTP API under `/api/v1`, one
//!   module per resource, plus `/metrics`; [`http::client_ip`] the client's address behind
//!   trusted proxies.
//! - [`admin_cli`]: `atelier admin …` (create the first admin, roles, credits, worker tokens).
//! - [`config`]: the command line and `ATELIER_*` environment (clap); its doc comments are the
//!   configuration reference.
//!
//! Domain:
//! - [`auth`]: passwords, tokens, API keys and their scopes, the request principal, CSRF and
//!   rate limits.
//! - [`authz`]: the one place that decides who may do what in a studio session.
//! - [`account_events`]: the account-wide live channel (`GET /me/events`) and its relay.
//! - [`mail`]: emails through an SMTP relay (invitations), queued and retried off the request.
//! - [`billing`]: credits, Pro runtime leases, payment webhooks. The lease's actors are in
//!   `atelier-actors` (the worker lease actor and its `WorkerPool` port in `lease`, the billing
//!   meter actor and its `Ledger` and `MeterHost` ports in `meter`): billing is the meter's host,
//!   the database (`db::leases`) its ledger.
//! - [`jobs`]: the job system — graphs compiled into jobs, the queue, workers and their
//!   sockets, the node cache; it is the `WorkerPool` leases take their workers from.
//! - [`lifecycle`]: what must end when a session, account, login, share link or the server ends
//!   (leases settled, sockets closed) — the one place every way of ending them goes through.
//! - [`housekeeping`]: background chores (usage-log retention, stale upload reservations).
//! - [`versions`]: version history of session documents (retention, storage bound);
//!   [`graph_diff`]: what changed between two graphs.
//! - [`webhooks`]: job webhooks — signed, retried, guarded deliveries of job events.
//!
//! Adapters:
//! - [`db`]: sqlx on SQLite or PostgreSQL — one schema, queries grouped by entity, rows read
//!   with `#[derive(sqlx::FromRow)]`, every write transaction through `db::with_retrying_tx!`;
//!   it implements the actors' `DocStore` port.
//! - [`storage`]: object storage (object_store) for media bytes.
//! - [`inference`]: the model catalog and the ONNX engine (ort).
//! - [`cluster`]: cluster mode — the Redis relay between nodes (the actors' `Relay` port), node
//!   membership, shared rate limits.
//! - [`worker`]: the worker host, in-process or remote.
//!
//! Shared: [`error`] (the one error type, mapped to `{"error":{"code","message"}}` at the
//! edge), [`state`] (what handlers share), [`telemetry`] (logs and metrics).
//!
//! The wire types live in `atelier-protocol`; the actors and their ports in `atelier-actors`.

pub mod account_events;
pub mod admin_cli;
pub mod auth;
pub mod authz;
pub mod billing;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod graph_diff;
pub mod housekeeping;
pub mod http;
pub mod inference;
pub mod jobs;
pub mod lifecycle;
pub mod mail;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod versions;
pub mod webhooks;
pub mod worker;
