//! A raw WebSocket peer for the actors' socket tests: the server side's upgrade (the `101`
//! written by hand, as the server does before handing the socket over) and a client speaking
//! frames with actix-http's codec in client mode.

use actix_codec::Framed;
use actix_http::ws::{hash_key, Codec, Frame as WsFrame};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads the upgrade request and answers it with a `101`; returns the socket, the request head
/// and the bytes that followed it.
pub async fn upgrade(mut stream: TcpStream) -> (TcpStream, String, BytesMut) {
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(stream.read_buf(&mut buf).await.expect("read") > 0, "eof");
    };
    let head = String::from_utf8(buf.split_to(end).to_vec()).expect("head");
    let key = head
        .lines()
        .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key");
    let accept = hash_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        String::from_utf8_lossy(&accept)
    );
    stream
        .write_all(response.as_bytes())
        .await
        .expect("write 101");
    (stream, head, buf)
}

pub type Ws = Framed<TcpStream, Codec>;

/// Writes `request` (and whatever follows it), reads the `101`.
pub async fn handshake(mut stream: TcpStream, request: &[u8]) -> Ws {
    stream.write_all(request).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("read"));
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Framed::new(stream, client_codec())
}

pub fn client_codec() -> Codec {
    Codec::new().client_mode().max_size(64 << 20)
}

pub async fn next(ws: &mut Ws) -> WsFrame {
    tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("nothing from the server within 5 s")
        .expect("connection ended")
        .expect("protocol error")
}

/// Skips everything until the close frame; returns its code and reason.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        if let WsFrame::Close(reason) = next(ws).await {
            let reason = reason.expect("close without a code");
            return (
                u16::from(reason.code),
                reason.description.unwrap_or_default(),
            );
        }
    }
}
