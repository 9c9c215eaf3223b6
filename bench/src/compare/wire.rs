//! A minimal WebSocket client for the load generator: just what a benchmark client needs, and no
//! per-message allocation on the receive path.
//!
//! - The upgrade is a fixed HTTP/1.1 request; the response's status line must be 101 (the accept
//!   key is not checked: the servers are local and known).
//! - Client frames are built once, ahead of time ([`frame`]): masked, as RFC 6455 requires, with
//!   the all-zero key, so the payload goes out as is and a pre-encoded edit is one `write`.
//! - Received frames are parsed in place from one growable buffer ([`Reader`]); the caller gets
//!   borrowed payloads. Pings are answered (the servers drop clients that do not pong), and
//!   fragmented messages are reassembled.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const OP_CONTINUATION: u8 = 0x0;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// First read buffer of a connection: small, because the idle-memory scenario holds thousands of
/// connections in this process too; it doubles when a read fills it.
const INITIAL_BUFFER: usize = 4 * 1024;
/// Most the buffer grows to for throughput (a larger message grows it as far as needed).
const STREAMING_BUFFER: usize = 256 * 1024;
/// Largest message accepted from a server (a 100k-edit document's state is ~1 MB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest HTTP upgrade response.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Appends one masked client frame (zero mask key) to `out`.
pub fn frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Appends one binary client frame to `out`.
pub fn binary(payload: &[u8], out: &mut Vec<u8>) {
    frame(OP_BINARY, payload, out);
}

/// TCP connect (no Nagle, like browsers) and WebSocket upgrade of `path` (path and query).
pub async fn connect(addr: SocketAddr, path: &str) -> Result<(Reader, OwnedWriteHalf)> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let (rd, mut wr) = tcp.into_split();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    wr.write_all(request.as_bytes())
        .await
        .context("sending the upgrade request")?;
    let mut reader = Reader::new(rd);
    let head_end = loop {
        let filled = &reader.buf[..reader.end];
        if let Some(at) = filled.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if reader.end >= MAX_RESPONSE_HEAD {
            bail!("upgrade response head over {MAX_RESPONSE_HEAD} bytes");
        }
        if reader.fill().await? == 0 {
            bail!("connection closed during the upgrade");
        }
    };
    let head = String::from_utf8_lossy(&reader.buf[..head_end]);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {status}");
    }
    // Bytes after the head are the server's first frames: keep them.
    reader.start = head_end;
    Ok((reader, wr))
}

/// One received message (or the end of the connection), borrowed from the reader's buffer.
#[derive(Debug)]
pub enum Message<'a> {
    Binary(&'a [u8]),
    /// The server closed the connection (close frame or end of stream).
    Closed(String),
}

/// Where a parsed message is, so that parsing does not hold a borrow of the reader.
enum Parsed {
    /// In the read buffer.
    Buffered(std::ops::Range<usize>),
    /// Reassembled from fragments.
    Fragments,
    Closed(String),
}

/// The receive side of a connection: reads into one buffer and parses frames in place.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// A fragmented message being reassembled.
    fragments: Vec<u8>,
    /// Whether `fragments` holds a message already returned (cleared on the next parse).
    fragments_returned: bool,
    /// Pong frames to send (written before the connection's next write, see [`send`]).
    pub pongs: Vec<u8>,
}

impl Reader {
    fn new(rd: OwnedReadHalf) -> Self {
        Self {
            rd,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            fragments: Vec::new(),
            fragments_returned: false,
            pongs: Vec::new(),
        }
    }

    /// Reads more bytes (waits for at least one); returns how many (0: end of stream).
    /// Cancel-safe: a cancelled read has read nothing.
    pub async fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        if self.end == self.buf.len() && self.buf.len() < STREAMING_BUFFER {
            // This read filled the buffer: the server is streaming, give the next reads more room.
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        Ok(n)
    }

    /// The next complete message in the buffer, if any; pings are answered (into `pongs`) and
    /// other control frames skipped. `Ok(None)`: call [`Reader::fill`] first.
    pub fn next(&mut self) -> Result<Option<Message<'_>>> {
        Ok(self.advance()?.map(|parsed| self.view(parsed)))
    }

    /// Waits for the next message, reading as needed.
    pub async fn recv(&mut self) -> Result<Message<'_>> {
        loop {
            if let Some(parsed) = self.advance()? {
                return Ok(self.view(parsed));
            }
            if self.fill().await? == 0 {
                return Ok(Message::Closed("connection ended".into()));
            }
        }
    }

    fn view(&self, parsed: Parsed) -> Message<'_> {
        match parsed {
            Parsed::Buffered(range) => Message::Binary(&self.buf[range]),
            Parsed::Fragments => Message::Binary(&self.fragments),
            Parsed::Closed(reason) => Message::Closed(reason),
        }
    }

    fn advance(&mut self) -> Result<Option<Parsed>> {
        if self.fragments_returned {
            self.fragments.clear();
            self.fragments_returned = false;
        }
        loop {
            let Some(Header {
                len: header,
                payload: len,
                mask,
            }) = parse_header(&self.buf[self.start..self.end])?
            else {
                return Ok(None);
            };
            if len > MAX_MESSAGE {
                bail!("a {len}-byte frame from the server (limit {MAX_MESSAGE})");
            }
            let total = header + len;
            if self.end - self.start < total {
                // Make room for the whole frame before reading on.
                if self.buf.len() - self.start < total {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                }
                return Ok(None);
            }
            let b0 = self.buf[self.start];
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            let payload = self.start + header..self.start + total;
            self.start += total;
            if let Some(key) = mask {
                // Servers never mask; unmask anyway rather than misread.
                for (i, byte) in self.buf[payload.clone()].iter_mut().enumerate() {
                    *byte ^= key[i % 4];
                }
            }
            match opcode {
                OP_BINARY | OP_CONTINUATION if fin && self.fragments.is_empty() => {
                    return Ok(Some(Parsed::Buffered(payload)));
                }
                OP_BINARY | OP_CONTINUATION => {
                    if self.fragments.len() + len > MAX_MESSAGE {
                        bail!("a fragmented message over {MAX_MESSAGE} bytes");
                    }
                    self.fragments.extend_from_slice(&self.buf[payload]);
                    if fin {
                        self.fragments_returned = true;
                        return Ok(Some(Parsed::Fragments));
                    }
                }
                OP_PING => {
                    let ping = self.buf[payload].to_vec();
                    frame(OP_PONG, &ping, &mut self.pongs);
                }
                OP_CLOSE => {
                    let body = &self.buf[payload];
                    let code = body.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
                    return Ok(Some(Parsed::Closed(format!(
                        "closed by the server: code {code:?} {reason:?}"
                    ))));
                }
                // Text frames and pongs: nothing the benchmark uses.
                _ => {}
            }
        }
    }
}

/// A frame's header.
struct Header {
    /// Bytes of the header itself.
    len: usize,
    payload: usize,
    mask: Option<[u8; 4]>,
}

/// The header of the frame at the start of `buf`, if it is complete.
fn parse_header(buf: &[u8]) -> Result<Option<Header>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        bail!("a frame with reserved bits set (no extension was negotiated)");
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut header) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(b);
                (u64::from_be_bytes(bytes), 10)
            }
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    let key = if masked {
        let Some(k) = buf.get(header..header + 4) else {
            return Ok(None);
        };
        header += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let payload = usize::try_from(len).map_err(|_| anyhow!("frame length {len}"))?;
    Ok(Some(Header {
        len: header,
        payload,
        mask: key,
    }))
}

/// Writes `bytes` and then any pongs the reader has queued.
pub async fn send(wr: &mut OwnedWriteHalf, reader: &mut Reader, bytes: &[u8]) -> Result<()> {
    if !reader.pongs.is_empty() {
        wr.write_all(&reader.pongs).await?;
        reader.pongs.clear();
    }
    if !bytes.is_empty() {
        wr.write_all(bytes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server frame (unmasked) with `fin` and `opcode`.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=0xffff => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn reads_frames_answers_pings_and_reassembles_fragments() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big = vec![7u8; 70_000];
        let mut script = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        // In the same segment as the 101: the server's first message.
        script.extend(server_frame(true, OP_BINARY, b"first"));
        script.extend(server_frame(true, OP_PING, b"p"));
        script.extend(server_frame(false, OP_BINARY, b"frag"));
        script.extend(server_frame(true, OP_CONTINUATION, b"mented"));
        script.extend(server_frame(true, OP_BINARY, &big));
        script.extend(server_frame(
            true,
            OP_CLOSE,
            &[0x03, 0xE8, b'b', b'y', b'e'],
        ));
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let n = socket.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"GET /room?x=1 HTTP/1.1\r\n"));
            // Byte by byte for the first part: frames split anywhere must parse.
            for chunk in script.chunks(3).take(40) {
                socket.write_all(chunk).await.unwrap();
                socket.flush().await.unwrap();
            }
            socket
                .write_all(&script[120.min(script.len())..])
                .await
                .unwrap();
            let mut pong = vec![0u8; 64];
            let n = socket.read(&mut pong).await.unwrap();
            pong.truncate(n);
            pong
        });
        let (mut reader, mut writer) = connect(addr, "/room?x=1").await.unwrap();
        let mut got = Vec::new();
        loop {
            match reader.recv().await.unwrap() {
                Message::Binary(bytes) => got.push(bytes.to_vec()),
                Message::Closed(reason) => {
                    assert!(
                        reason.contains("1000") && reason.contains("bye"),
                        "{reason}"
                    );
                    break;
                }
            }
        }
        assert_eq!(got, vec![b"first".to_vec(), b"fragmented".to_vec(), big]);
        send(&mut writer, &mut reader, &[]).await.unwrap();
        // The pong: masked with the zero key, payload echoed.
        assert_eq!(
            server.await.unwrap(),
            vec![0x80 | OP_PONG, 0x81, 0, 0, 0, 0, b'p']
        );
    }

    #[test]
    fn client_frames_are_masked_with_the_zero_key() {
        let mut out = Vec::new();
        binary(b"abc", &mut out);
        assert_eq!(out, vec![0x82, 0x83, 0, 0, 0, 0, b'a', b'b', b'c']);
        out.clear();
        binary(&[1u8; 300], &mut out);
        assert_eq!(&out[..8], &[0x82, 0x80 | 126, 1, 44, 0, 0, 0, 0]);
        assert_eq!(out.len(), 8 + 300);
    }
}
