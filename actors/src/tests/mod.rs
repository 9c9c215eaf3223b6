//! Tests of the live-session core through its public API: sessions driven by fake connections
//! (`session`), what the server does to them (`server_side`), and real WebSockets on sockets upgraded the way the server does it (`connection`).

mod connection;
mod server_side;
mod session;
mod support;
