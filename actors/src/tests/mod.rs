//! Tests of the live-session core through its public API: sessions driven by fake connections
//! (`session`, and the hostile-input bounds: `nesting`, `outbound`, `presence`), what the server
//! does to them (`server_side`), and real WebSockets on sockets upgraded the way the server does
//! it (`connection`); the runtime lease's worker actor against fake pools (`worker_lease`) and
//! its meter against fakes of its ledger, host, event bus and pool (`meter`, `meter_fakes`);
//! a worker's socket over a real WebSocket with a fake hub (`worker_socket`). `raw_ws` is the
//! raw WebSocket peer the socket tests share.

mod connection;
mod meter;
mod meter_fakes;
mod nesting;
mod outbound;
mod presence;
mod raw_ws;
mod server_side;
mod session;
mod support;
mod worker_lease;
mod worker_socket;
