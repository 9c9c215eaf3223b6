//! The HTTP edge as actix-web's own server would configure it, though it is assembled from
//! actix-web's public parts: a request that names no host (HTTP/1.0: actix-http refuses an
//! HTTP/1.1 request without `Host`) is addressed to the listening address
//! (`ConnectionInfo::host`), which the live-session endpoint compares with a browser's `Origin`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `GET /ws/{id}` over HTTP/1.0 (no upgrade, no `Host`) with a login cookie and `origin`; returns the
/// response's status code.
async fn hostless_cookie_get(server: &TestServer, origin: &str) -> u16 {
    let addr = server.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let session = uuid::Uuid::new_v4();
    let request = format!(
        "GET /ws/{session} HTTP/1.0\r\nOrigin: {origin}\r\n\
         Cookie: atelier_session=atl_not_a_real_token\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).expect("a status line");
    status.parse().unwrap()
}

async fn a_request_without_host_is_addressed_to_the_listening_address(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Same origin as the address listened on: the cookie is read (and refused: 401).
    assert_eq!(hostless_cookie_get(&server, &server.base).await, 401);
    // Another origin: a cross-site page's cookie is not used at all (403).
    assert_eq!(
        hostless_cookie_get(&server, "http://elsewhere.example").await,
        403
    );
}

on_both_backends!(a_request_without_host_is_addressed_to_the_listening_address);
