//! A remote worker's socket over a real WebSocket (upgraded as the server does it), its job
//! system a fake [`WorkerHub`] that records what the socket hands it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_http::ws::Codec;
use actix_http::ws::{Frame as WsFrame, Message as WsMessage};
use atelier_protocol::ids::{JobId, SessionId, WorkerId};
use atelier_protocol::worker::{
    Assignment, InputRef, MediaBytes, ProvidedTensor, ServerMessage, ToWorker, WorkerMessage,
};
use atelier_protocol::worker_frame::{self, InputKey, MediaFrame, MediaKind};
use bytes::Bytes;
use bytes::BytesMut;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::raw_ws::{close_of, handshake, next, upgrade, Ws};
use crate::store::BoxFuture;
use crate::{start_worker_socket, LinkError, MediaPermit, WorkerHello, WorkerHub, WorkerLink};

struct FakeHub {
    registered: Mutex<Vec<(WorkerHello, WorkerId)>>,
    links: Mutex<Vec<WorkerLink>>,
    messages: Mutex<Vec<(WorkerId, WorkerMessage)>>,
    /// While set, a message is taken only once the test sends on the oneshot: an assignment
    /// that is behind.
    behind: Mutex<Option<oneshot::Receiver<()>>>,
    heartbeat_timeout: Duration,
    /// Media frames handed on, with their permits: held, as a job system that never gets to
    /// store them would.
    media: Mutex<Vec<(MediaFrame, MediaPermit)>>,
    gone: Mutex<Vec<WorkerId>>,
    token_revoked: Mutex<bool>,
}

impl Default for FakeHub {
    fn default() -> Self {
        FakeHub::with_heartbeat_timeout(Duration::from_secs(30))
    }
}

impl FakeHub {
    fn with_heartbeat_timeout(heartbeat_timeout: Duration) -> Self {
        FakeHub {
            registered: Mutex::default(),
            links: Mutex::default(),
            messages: Mutex::default(),
            behind: Mutex::default(),
            heartbeat_timeout,
            media: Mutex::default(),
            gone: Mutex::default(),
            token_revoked: Mutex::default(),
        }
    }
}

impl WorkerHub for FakeHub {
    fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    fn register(&self, hello: WorkerHello, token: WorkerId, link: WorkerLink) -> WorkerId {
        let id = WorkerId::new_random();
        let _ = link.message(ServerMessage::Welcome {
            worker_id: id,
            heartbeat_interval_ms: 1000,
        });
        self.registered.lock().unwrap().push((hello, token));
        self.links.lock().unwrap().push(link);
        id
    }

    fn message(&self, worker: WorkerId, msg: WorkerMessage) -> Option<BoxFuture<'static, ()>> {
        self.messages.lock().unwrap().push((worker, msg));
        let behind = self.behind.lock().unwrap().take()?;
        Some(Box::pin(async move {
            let _ = behind.await;
        }))
    }

    fn media(
        &self,
        _worker: WorkerId,
        frame: MediaFrame,
        permit: MediaPermit,
    ) -> Option<BoxFuture<'static, ()>> {
        self.media.lock().unwrap().push((frame, permit));
        None
    }

    fn gone(&self, worker: WorkerId) {
        self.gone.lock().unwrap().push(worker);
    }

    fn token_valid(&self, _token: WorkerId) -> BoxFuture<'static, Result<bool, String>> {
        let valid = !*self.token_revoked.lock().unwrap();
        Box::pin(async move { Ok(valid) })
    }
}

/// Serves worker sockets for `token` with `hub`; returns where to connect.
fn serve(hub: Arc<FakeHub>, token: WorkerId) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("listener");
    actix::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hub = hub.clone();
            actix::spawn(async move {
                let (stream, _head, leftover) = upgrade(stream).await;
                start_worker_socket(stream, leftover, token, hub);
            });
        }
    });
    addr
}

async fn connect(addr: std::net::SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/v1/workers/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    handshake(stream, request.as_bytes()).await
}

async fn send_json(ws: &mut Ws, msg: &WorkerMessage) {
    let text = serde_json::to_string(msg).expect("json");
    ws.send(WsMessage::Text(text.into())).await.expect("send");
}

/// The next text frame, parsed (pings skipped).
async fn next_message(ws: &mut Ws) -> ServerMessage {
    loop {
        match next(ws).await {
            WsFrame::Text(bytes) => return serde_json::from_slice(&bytes).expect("server json"),
            WsFrame::Ping(_) | WsFrame::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn hello() -> WorkerMessage {
    WorkerMessage::Hello {
        name: "gpu-box".into(),
        version: "test".into(),
        devices: vec![],
        models: vec!["terrain".into()],
        gpu_class: Some("t4".into()),
        slots: None,
        previous_worker_id: None,
        running_jobs: Vec::new(),
        leases: Vec::new(),
    }
}

/// Until `cond` holds (the hub is told things on the actor's own time), at most 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

#[actix::test]
async fn a_worker_says_hello_talks_and_its_end_is_reported() {
    let hub = Arc::new(FakeHub::default());
    let token = WorkerId::new_random();
    let addr = serve(hub.clone(), token);
    let mut ws = connect(addr).await;
    send_json(&mut ws, &hello()).await;
    let ServerMessage::Welcome { worker_id, .. } = next_message(&mut ws).await else {
        panic!("expected the welcome the hub sent through the link");
    };
    {
        let registered = hub.registered.lock().unwrap();
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].0.name, "gpu-box");
        assert_eq!(registered[0].0.gpu_class.as_deref(), Some("t4"));
        assert_eq!(
            registered[0].1, token,
            "registered with its connection's token"
        );
    }
    send_json(&mut ws, &WorkerMessage::Heartbeat).await;
    eventually("the heartbeat reaches the hub", || {
        hub.messages.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(
        hub.messages.lock().unwrap()[0],
        (worker_id, WorkerMessage::Heartbeat)
    );
    // What the job system sends later goes out as a text frame; a refusal closes with 1008.
    let link = hub.links.lock().unwrap()[0].clone();
    link.message(ServerMessage::Refused {
        reason: "no such class".into(),
    })
    .expect("link open");
    assert_eq!(
        next_message(&mut ws).await,
        ServerMessage::Refused {
            reason: "no such class".into()
        }
    );
    assert_eq!(close_of(&mut ws).await, (1008, "no such class".into()));
    eventually("the worker's end is reported", || {
        hub.gone.lock().unwrap().as_slice() == [worker_id]
    })
    .await;
}

#[actix::test]
async fn a_worker_must_say_hello_first_and_only_once() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    send_json(&mut ws, &WorkerMessage::Heartbeat).await;
    assert_eq!(close_of(&mut ws).await, (1008, "say hello first".into()));
    assert!(hub.registered.lock().unwrap().is_empty());

    let mut ws = connect(addr).await;
    send_json(&mut ws, &hello()).await;
    next_message(&mut ws).await;
    send_json(&mut ws, &hello()).await;
    assert_eq!(
        close_of(&mut ws).await,
        (1008, "hello was already said".into())
    );
    eventually("the closed worker is reported gone", || {
        hub.gone.lock().unwrap().len() == 1
    })
    .await;
}

#[actix::test]
async fn garbage_and_binary_frames_close_with_their_codes() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    ws.send(WsMessage::Text("{not json".into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.starts_with("bad worker message"), "{reason}");

    let mut ws = connect(addr).await;
    ws.send(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(close_of(&mut ws).await, (1008, "say hello first".into()));
    assert!(hub.registered.lock().unwrap().is_empty());

    let mut ws = connect(addr).await;
    send_json(&mut ws, &hello()).await;
    next_message(&mut ws).await;
    ws.send(WsMessage::Binary(vec![9, 2, 3].into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1003, "{reason}");
    assert!(reason.contains("unknown media frame kind 9"), "{reason}");
}

fn output(image_bytes: usize) -> MediaFrame {
    MediaFrame {
        job_id: JobId::new_random(),
        node_id: "n1".into(),
        mime: "image/png".into(),
        kind: MediaKind::NodeOutput {
            tensors: Default::default(),
            run_us: 1,
            inference_us: 1,
        },
        image: vec![7; image_bytes],
    }
}

#[actix::test]
async fn a_worker_that_outruns_its_media_budget_is_closed() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    send_json(&mut ws, &hello()).await;
    next_message(&mut ws).await;
    // The hub holds every frame's permits: three 30 MiB outputs fit in the 96 MiB budget,
    // a preview after them is skipped, the fourth output closes the worker.
    let big = worker_frame::encode(&output(30 * 1024 * 1024));
    for _ in 0..3 {
        ws.send(WsMessage::Binary(big.clone().into()))
            .await
            .expect("send");
    }
    let preview = MediaFrame {
        kind: MediaKind::Preview { step: 1 },
        ..output(16 * 1024 * 1024)
    };
    ws.send(WsMessage::Binary(worker_frame::encode(&preview).into()))
        .await
        .expect("send");
    ws.send(WsMessage::Binary(big.into())).await.expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("faster than the server stores"), "{reason}");
    let media = hub.media.lock().unwrap();
    assert_eq!(
        media.len(),
        3,
        "the preview was skipped, the last output refused"
    );
    assert!(media
        .iter()
        .all(|(f, _)| matches!(f.kind, MediaKind::NodeOutput { .. })));
}

fn assignment(image: usize, tensor: usize) -> Assignment {
    Assignment {
        job_id: JobId::new_random(),
        session_id: SessionId::new_random(),
        steps: Vec::new(),
        provided: vec![ProvidedTensor {
            node_id: "cached".into(),
            port: "latent".into(),
            data: Bytes::from(vec![5u8; tensor]),
        }],
        media: vec![MediaBytes {
            media_id: "m1".into(),
            data: Bytes::from(vec![9u8; image]),
        }],
    }
}

/// Says hello and reads the welcome; returns the worker's link.
async fn registered(hub: &FakeHub, ws: &mut Ws) -> WorkerLink {
    send_json(ws, &hello()).await;
    next_message(ws).await;
    let link = hub.links.lock().unwrap().last().cloned();
    link.expect("registered")
}

#[actix::test]
async fn an_assign_goes_out_as_text_then_one_binary_frame_per_input() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    let link = registered(&hub, &mut ws).await;
    let job = assignment(3 * 1024 * 1024, 1000);
    link.send(ToWorker::Assign(Box::new(job.clone())))
        .expect("link open");
    link.message(ServerMessage::Cancel { job_id: job.job_id })
        .expect("link open");
    let ServerMessage::Assign { job_id, inputs, .. } = next_message(&mut ws).await else {
        panic!("expected the assign first");
    };
    assert_eq!(job_id, job.job_id);
    assert_eq!(
        inputs,
        vec![
            InputRef::Media {
                media_id: "m1".into(),
                bytes: 3 * 1024 * 1024
            },
            InputRef::Tensor {
                node_id: "cached".into(),
                port: "latent".into(),
                bytes: 1000
            }
        ]
    );
    for (key, data) in [
        (
            InputKey::Media {
                media_id: "m1".into(),
            },
            &job.media[0].data,
        ),
        (
            InputKey::Tensor {
                node_id: "cached".into(),
                port: "latent".into(),
            },
            &job.provided[0].data,
        ),
    ] {
        let WsFrame::Binary(bytes) = next(&mut ws).await else {
            panic!("expected an input frame");
        };
        let frame = worker_frame::decode_input(&bytes).expect("an input frame");
        assert_eq!(
            (frame.job_id, &frame.key, &frame.data),
            (job.job_id, &key, data)
        );
    }
    // What was sent after the assign comes after its inputs.
    assert_eq!(
        next_message(&mut ws).await,
        ServerMessage::Cancel { job_id: job.job_id }
    );
}

/// A worker connection whose client never reads: a receive buffer of a few KiB, so what the
/// server writes backs up into its own socket buffer at once.
async fn connect_without_reading(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/v1/workers/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("read"));
    }
    let mut hello_frame = BytesMut::new();
    let text = serde_json::to_string(&hello()).expect("json");
    actix_codec::Encoder::encode(
        &mut Codec::new().client_mode(),
        WsMessage::Text(text.into()),
        &mut hello_frame,
    )
    .expect("encode");
    stream.write_all(&hello_frame).await.expect("hello");
    stream
}

#[actix::test]
async fn a_worker_that_stops_reading_is_closed_as_too_slow() {
    let hub = Arc::new(FakeHub::with_heartbeat_timeout(Duration::from_secs(1)));
    let addr = serve(hub.clone(), WorkerId::new_random());
    let _stream = connect_without_reading(addr).await;
    eventually("the worker is registered", || {
        !hub.links.lock().unwrap().is_empty()
    })
    .await;
    let link = hub.links.lock().unwrap()[0].clone();
    // 3 × 32 MiB of input: more than any socket buffer takes.
    for _ in 0..3 {
        link.send(ToWorker::Assign(Box::new(assignment(
            24 * 1024 * 1024,
            8 * 1024 * 1024,
        ))))
        .expect("queued");
    }
    for _ in 0..500 {
        if hub.gone.lock().unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        hub.gone.lock().unwrap().len(),
        1,
        "closed within the heartbeat timeout (1 s) and a bit"
    );
    // The link is closed with the socket: what the job system sends now fails at once.
    assert_eq!(
        link.message(ServerMessage::Cancel {
            job_id: JobId::new_random()
        }),
        Err(LinkError::Closed)
    );
}

#[actix::test]
async fn a_full_link_closes_the_worker_as_too_slow() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    let link = registered(&hub, &mut ws).await;
    let cancel = || {
        ToWorker::Message(ServerMessage::Cancel {
            job_id: JobId::new_random(),
        })
    };
    // Filled faster than the actor runs (it runs on this thread, between awaits).
    let mut full = false;
    for _ in 0..10 * crate::worker_link::WORKER_LINK_CAPACITY {
        if link.send(cancel()) == Err(LinkError::Full) {
            full = true;
            break;
        }
    }
    assert!(full, "the link is bounded");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.starts_with("too slow"), "{reason}");
}

#[actix::test]
async fn a_job_that_is_behind_pauses_reading_the_worker() {
    let hub = Arc::new(FakeHub::default());
    let addr = serve(hub.clone(), WorkerId::new_random());
    let mut ws = connect(addr).await;
    registered(&hub, &mut ws).await;
    let (release, behind) = oneshot::channel();
    *hub.behind.lock().unwrap() = Some(behind);
    let job_id = JobId::new_random();
    let progress = |step| WorkerMessage::Progress {
        job_id,
        node_id: "n".into(),
        step,
        total: 3,
    };
    send_json(&mut ws, &progress(1)).await;
    send_json(&mut ws, &progress(2)).await;
    eventually("the first progress is handed on", || {
        hub.messages.lock().unwrap().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hub.messages.lock().unwrap().len(),
        1,
        "nothing more is read while the job is behind"
    );
    release.send(()).unwrap();
    eventually("the second follows once the job took the first", || {
        hub.messages.lock().unwrap().len() == 2
    })
    .await;
}
