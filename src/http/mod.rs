//! The HTTP edge: the server, WebSocket upgrades, the live-session endpoint and the API handlers.
//!
//! - [`server`]: builds the actix-web application and runs it until a shutdown signal.
//! - [`upgrade`]: WebSocket upgrade requests, answered on their socket, which is then served by
//!   an actor (live sessions, remote workers) without the HTTP connection's buffers.
//! - [`ws`]: the live-session WebSocket endpoint (auth, role), handing sockets to the actors.
//! - [`api`]: the HTTP API under `/api/v1`, one module per resource, plus `/metrics`.
//! - [`client_ip`]: the client's address behind trusted proxies (`X-Forwarded-For`).

pub mod api;
pub mod client_ip;
pub mod server;
pub mod upgrade;
pub mod ws;
