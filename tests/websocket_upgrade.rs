//! WebSocket upgrades over raw TCP against the real binary: the refusals (JSON errors written on
//! the socket the upgrade came on), plain GETs to the WebSocket paths, and a live-session socket
//! served after its `101`, including frames the client sent along with its request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{error_code, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The RFC 6455 example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn host_port(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

fn upgrade_request(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n",
        host_port(server)
    );
    if !headers.iter().any(|(name, _)| *name == "Sec-WebSocket-Key") {
        request.push_str(&format!("Sec-WebSocket-Key: {KEY}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends an upgrade request that must be refused; returns the status, the head and the JSON body
/// (the server closes the connection after it).
async fn refused(server: &TestServer, request: String) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(host_port(server)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection after a refusal")
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (
        status,
        head.to_lowercase(),
        serde_json::from_str(body).unwrap(),
    )
}

/// A masked (with a zero key: the payload as is) final binary frame, as a client sends it.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// The next unmasked frame from the server: opcode and payload.
async fn server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => usize::from(stream.read_u16().await.unwrap()),
        127 => usize::try_from(stream.read_u64().await.unwrap()).unwrap(),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

async fn upgrade_refusals_are_json_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let eve = server.signup("Eve").await;
    let session = server.create_session(&ada.token, "Upgrades").await;
    let live = format!("/ws/{session}");

    let (status, head, body) = refused(&server, upgrade_request(&server, &live, &[])).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "unauthenticated");
    assert!(head.contains("connection: close"), "{head}");

    let target = format!("{live}?token=atl_nonsense");
    let (status, _, _) = refused(&server, upgrade_request(&server, &target, &[])).await;
    assert_eq!(status, 401);

    let target = format!("/ws/not-a-session?token={}", ada.token);
    let (status, _, body) = refused(&server, upgrade_request(&server, &target, &[])).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));

    let target = format!("{live}?token={}", eve.token);
    let (status, _, body) = refused(&server, upgrade_request(&server, &target, &[])).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));

    // A session cookie from another site's page.
    let cookie = format!("atelier_session={}", ada.token);
    let request = upgrade_request(
        &server,
        &live,
        &[("Cookie", &cookie), ("Origin", "https://elsewhere.example")],
    );
    let (status, _, body) = refused(&server, request).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cross-origin"));

    // Authorized, but not a valid handshake.
    let target = format!("{live}?token={}", ada.token);
    let request = upgrade_request(&server, &target, &[("Sec-WebSocket-Key", "short")]);
    let (status, _, body) = refused(&server, request).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_input"));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("WebSocket upgrade failed"));

    let (status, _, body) = refused(&server, upgrade_request(&server, "/nowhere", &[])).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));

    let workers = "/api/v1/workers/ws";
    let (status, _, _) = refused(&server, upgrade_request(&server, workers, &[])).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {}", ada.token);
    let request = upgrade_request(&server, workers, &[("Authorization", &bearer)]);
    let (status, _, body) = refused(&server, request).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "not a worker token");
}

async fn plain_gets_to_websocket_paths_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Plain").await;
    let get = |url: String| {
        let client = server.client.clone();
        async move {
            let res = client.get(url).send().await.unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = get(server.url(&format!("/ws/{session}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthenticated");
    let (status, body) = get(server.url(&format!("/ws/{session}?token={}", ada.token))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "expected a WebSocket upgrade");
    let (status, _) = server
        .call(Method::GET, "/workers/ws", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn a_live_session_socket_is_served_after_its_101(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Served").await;
    let target = format!("/ws/{session}?token={}", ada.token);
    // The request and, in the same write, a sync step 1 with an empty state vector.
    let mut bytes = upgrade_request(&server, &target, &[]).into_bytes();
    bytes.extend_from_slice(&client_frame(&[0, 0, 1, 0]));
    let mut stream = TcpStream::connect(host_port(&server)).await.unwrap();
    stream.write_all(&bytes).await.unwrap();

    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains(&format!("sec-websocket-accept: {}", ACCEPT.to_lowercase())),
        "{head}"
    );
    // The server's greeting comes first, then the answer to our step 1: a step 2.
    let step2 = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (opcode, payload) = server_frame(&mut stream).await;
            if opcode == 2 && payload.starts_with(&[0, 1]) {
                return payload;
            }
        }
    })
    .await
    .expect("a sync step 2 within 10 s");
    assert!(step2.len() >= 3);

    // A clean close: the server echoes it and closes its end.
    let mut close = vec![0x88, 0x82, 0, 0, 0, 0];
    close.extend_from_slice(&1000u16.to_be_bytes());
    stream.write_all(&close).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (opcode, payload) = server_frame(&mut stream).await;
            if opcode == 8 {
                return payload;
            }
        }
    })
    .await
    .expect("the close is echoed");
    assert_eq!(echoed, 1000u16.to_be_bytes());
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes its end")
        .unwrap();
    assert!(rest.is_empty());
}

on_both_backends!(
    upgrade_refusals_are_json_errors,
    plain_gets_to_websocket_paths_are_refused,
    a_live_session_socket_is_served_after_its_101,
);
