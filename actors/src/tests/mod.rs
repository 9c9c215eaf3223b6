//! Tests of the live-session core through its public API: sessions driven by fake connections
//! (`session`), and real WebSockets against an actix-web server (`connection`).

mod connection;
mod session;
mod support;
