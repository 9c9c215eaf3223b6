//! # Atelier — the server crate
//!
//! Layout:
//! - [`config`]: the command line and `ATELIER_*` environment (clap); its doc comments are the
//!   configuration reference.
//! - [`server`]: builds the actix-web application and runs it until a shutdown signal.
//! - [`upgrade`]: WebSocket upgrade requests, answered on their socket, which is then served by
//!   an actor (live sessions, remote workers) without the HTTP connection's buffers.
//! - [`admin_cli`]: `atelier admin …` (create the first admin, roles, credits, worker tokens).
//! - [`api`]: the HTTP API under `/api/v1`, one module per resource, plus `/metrics`.
//! - [`auth`]: passwords, tokens, API keys and their scopes, the request principal, CSRF and
//!   rate limits.
//! - [`authz`]: the one place that decides who may do what in a studio session.
//! - [`billing`]: credits, Pro runtime leases (worker lease + billing meter actors), payment
//!   webhooks.
//! - [`client_ip`]: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - [`cluster`]: cluster mode — the Redis relay between nodes, node membership, shared rate
//!   limits.
//! - [`db`]: sqlx on SQLite or PostgreSQL — one schema, queries grouped by entity.
//! - [`storage`]: object storage (object_store) for media bytes.
//! - [`error`]: the one error type, mapped to `{"error":{"code","message"}}` at the edge.
//! - [`lifecycle`]: what must end when a session, account, login or share link ends (leases
//!   settled, sockets closed) — the one place every way of ending them goes through.
//! - [`housekeeping`]: background chores (usage-log retention, stale upload reservations).
//! - [`versions`]: version history of session documents (retention, storage bound);
//!   [`graph_diff`]: what changed between two graphs.
//! - [`telemetry`]: logs and metrics.
//! - [`ws`]: the live-session WebSocket endpoint (auth, role), handing sockets to the actors.
//! - [`webhooks`]: job webhooks — signed, retried, guarded deliveries of job events.
//!
//! The wire types live in `atelier-protocol`; the live-session actors in `atelier-actors`.

pub mod admin_cli;
pub mod api;
pub mod auth;
pub mod authz;
pub mod billing;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod graph_diff;
pub mod housekeeping;
pub mod inference;
pub mod jobs;
pub mod lifecycle;
pub mod server;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod upgrade;
pub mod versions;
pub mod webhooks;
pub mod worker;
pub mod ws;
