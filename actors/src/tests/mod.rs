//! Tests of the live-session core through its public API: sessions driven by fake connections
//! (`session`), and real WebSockets on sockets upgraded the way the server does it (`connection`).

mod connection;
mod nesting;
mod session;
mod support;
