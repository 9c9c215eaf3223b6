//! `ConnectionActor` over real WebSockets: sockets accepted on 127.0.0.1:0 and upgraded the way
//! the server does it (the `101` written by hand, then the socket handed over), and a raw client
//! speaking WebSocket frames (actix-http's codec in client mode), like a browser would.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_codec::Encoder;
use actix_http::ws::{Frame as WsFrame, Message as WsMessage};
use atelier_protocol::close_code;
use atelier_protocol::ids::SessionId;
use atelier_protocol::ysync::{decode_frame, encode_frame, Frame, SyncMessage};
use atelier_protocol::Role;
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use yrs::{Doc, Map, ReadTxn, StateVector, Transact};

use super::raw_ws::{client_codec, close_of, handshake, next, upgrade, Ws};
use super::support::participant;
use crate::{
    start_connection, ConnectionLimits, MemoryDocStore, RegistryConfig, SessionRegistryHandle,
};

struct TestServer {
    addr: SocketAddr,
    session: SessionId,
}

/// Serves `/ws?role=…` for one session with the given limits.
fn serve(limits: ConnectionLimits) -> TestServer {
    let registry = SessionRegistryHandle::new(RegistryConfig::new(Arc::new(MemoryDocStore::new())));
    let session = SessionId::new_random();
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("listener");
    actix::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let registry = registry.clone();
            let limits = limits.clone();
            actix::spawn(async move {
                let (stream, head, leftover) = upgrade(stream).await;
                let role = if head.contains("viewer") {
                    Role::Viewer
                } else {
                    Role::Editor
                };
                start_connection(
                    stream,
                    leftover,
                    registry,
                    session,
                    participant(role),
                    limits,
                );
            });
        }
    });
    TestServer { addr, session }
}

fn request(server: &TestServer, query: &str) -> String {
    format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    )
}

async fn connect(server: &TestServer, query: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    handshake(stream, request(server, query).as_bytes()).await
}

async fn send(ws: &mut Ws, bytes: Vec<u8>) {
    ws.send(WsMessage::Binary(Bytes::from(bytes)))
        .await
        .expect("send");
}

/// The next y-sync frame from the server (pings are skipped).
async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match next(ws).await {
            WsFrame::Binary(bytes) => return decode_frame(&bytes).expect("server sent garbage"),
            WsFrame::Ping(_) | WsFrame::Pong(_) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

fn some_update() -> Vec<u8> {
    let doc = Doc::new();
    doc.get_or_insert_map("nodes")
        .insert(&mut doc.transact_mut(), "n1", "sampler");
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

#[actix::test]
async fn stock_client_syncs_over_a_real_websocket() {
    let server = serve(ConnectionLimits::default());
    let mut alice = connect(&server, "").await;
    let mut bob = connect(&server, "viewer").await;
    for ws in [&mut alice, &mut bob] {
        assert!(matches!(
            next_frame(ws).await,
            Frame::Sync(SyncMessage::SyncStep1(_))
        ));
    }
    let update = some_update();
    send(&mut alice, encode_frame(&Frame::update(update.clone()))).await;
    assert_eq!(next_frame(&mut bob).await, Frame::update(update));

    // The viewer's writes are refused in-band; the socket stays open.
    send(&mut bob, encode_frame(&Frame::update(some_update()))).await;
    assert_eq!(next_frame(&mut bob).await, Frame::read_only());
    send(
        &mut bob,
        encode_frame(&Frame::step1(StateVector::default())),
    )
    .await;
    assert!(matches!(
        next_frame(&mut bob).await,
        Frame::Sync(SyncMessage::SyncStep2(_))
    ));
    let _ = server.session;
}

#[actix::test]
async fn text_frames_are_refused_with_1003() {
    let server = serve(ConnectionLimits::default());
    let mut ws = connect(&server, "").await;
    ws.send(WsMessage::Text("hello".into())).await.unwrap();
    assert_eq!(close_of(&mut ws).await.0, close_code::UNSUPPORTED_DATA);
}

#[actix::test]
async fn malformed_frames_close_only_their_connection() {
    let server = serve(ConnectionLimits::default());
    let mut healthy = connect(&server, "").await;
    let _ = next_frame(&mut healthy).await;

    let mut bad = connect(&server, "").await;
    send(&mut bad, vec![0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    let (code, reason) = close_of(&mut bad).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR);
    assert!(reason.contains("length prefix"), "{reason}");

    let mut unknown = connect(&server, "").await;
    send(&mut unknown, vec![42]).await;
    assert_eq!(close_of(&mut unknown).await.0, close_code::UNSUPPORTED_DATA);

    let mut impostor = connect(&server, "").await;
    send(&mut impostor, encode_frame(&Frame::Event("{}".into()))).await;
    let (code, reason) = close_of(&mut impostor).await;
    assert_eq!(code, close_code::UNSUPPORTED_DATA);
    assert!(reason.contains("server-only"), "{reason}");

    // The server and the other participant carry on.
    send(
        &mut healthy,
        encode_frame(&Frame::step1(StateVector::default())),
    )
    .await;
    assert!(matches!(
        next_frame(&mut healthy).await,
        Frame::Sync(SyncMessage::SyncStep2(_))
    ));
}

#[actix::test]
async fn oversized_messages_close_with_1009() {
    let limits = ConnectionLimits {
        max_message_bytes: 1024,
        ..ConnectionLimits::default()
    };
    let server = serve(limits);
    // Slightly too large: caught by our check.
    let mut ws = connect(&server, "").await;
    send(&mut ws, vec![3; 2000]).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, close_code::MESSAGE_TOO_BIG);
    assert!(reason.contains("2000"), "{reason}");
    // Far too large: caught by the codec's backstop, answered the same way.
    let mut ws = connect(&server, "").await;
    send(&mut ws, vec![3; 200 * 1024]).await;
    assert_eq!(close_of(&mut ws).await.0, close_code::MESSAGE_TOO_BIG);
}

#[actix::test]
async fn flooding_is_closed_with_1008() {
    let limits = ConnectionLimits {
        max_messages_per_sec: 5,
        message_burst: 5,
        ..ConnectionLimits::default()
    };
    let server = serve(limits);
    let mut ws = connect(&server, "").await;
    for _ in 0..50 {
        if ws
            .send(WsMessage::Binary(Bytes::from_static(&[3])))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "rate limit exceeded");
}

#[actix::test]
async fn frames_sent_along_with_the_upgrade_request_are_read() {
    let server = serve(ConnectionLimits::default());
    let mut bytes = request(&server, "").into_bytes();
    let mut frame = BytesMut::new();
    client_codec()
        .encode(
            WsMessage::Binary(encode_frame(&Frame::step1(StateVector::default())).into()),
            &mut frame,
        )
        .expect("encode");
    bytes.extend_from_slice(&frame);
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let mut ws = handshake(stream, &bytes).await;
    // The greeting, then the answer to the step 1 that came with the request.
    loop {
        if let Frame::Sync(SyncMessage::SyncStep2(_)) = next_frame(&mut ws).await {
            break;
        }
    }
}

#[actix::test]
async fn a_client_that_stops_reading_is_closed_as_too_slow() {
    let limits = ConnectionLimits {
        outbound_queue_frames: 8,
        ..ConnectionLimits::default()
    };
    let server = serve(limits);
    let mut alice = connect(&server, "").await;
    // Bob's socket takes little before the server's writes to it block.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut bob = handshake(stream, request(&server, "viewer").as_bytes()).await;
    let _ = next_frame(&mut alice).await;
    let _ = next_frame(&mut bob).await;

    // Bob reads nothing while Alice writes 4 MiB.
    let doc = Doc::new();
    let nodes = doc.get_or_insert_map("nodes");
    for i in 0..256 {
        let before = doc.transact().state_vector();
        nodes.insert(
            &mut doc.transact_mut(),
            format!("n{i}"),
            "x".repeat(16 * 1024),
        );
        let update = doc.transact().encode_state_as_update_v1(&before);
        send(&mut alice, encode_frame(&Frame::update(update))).await;
    }
    // What was queued for Bob still reaches him, then the close.
    let (code, reason) = close_of(&mut bob).await;
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "too slow; resync");
}
