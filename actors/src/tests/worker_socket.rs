//! A remote worker's socket over a real WebSocket (upgraded as the server does it), its job
//! system a fake [`WorkerHub`] that records what the socket hands it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_http::ws::{Frame as WsFrame, Message as WsMessage};
use atelier_protocol::ids::JobId;
use atelier_protocol::ids::WorkerId;
use atelier_protocol::worker::{ServerMessage, WorkerMessage};
use atelier_protocol::worker_frame::{self, MediaFrame, MediaKind};
use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::raw_ws::{close_of, handshake, next, upgrade, Ws};
use crate::store::BoxFuture;
use crate::{start_worker_socket, MediaPermit, WorkerHello, WorkerHub};

#[derive(Default)]
struct FakeHub {
    registered: Mutex<Vec<(WorkerHello, WorkerId)>>,
    links: Mutex<Vec<mpsc::UnboundedSender<ServerMessage>>>,
    messages: Mutex<Vec<(WorkerId, WorkerMessage)>>,
    /// Media frames handed on, with their permits: held, as a job system that never gets to
    /// store them would.
    media: Mutex<Vec<(MediaFrame, MediaPermit)>>,
    gone: Mutex<Vec<WorkerId>>,
    token_revoked: Mutex<bool>,
}

impl WorkerHub for FakeHub {
    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn register(
        &self,
        hello: WorkerHello,
        token: WorkerId,
        link: mpsc::UnboundedSender<ServerMessage>,
    ) -> WorkerId {
        let id = WorkerId::new_random();
        let _ = link.send(ServerMessage::Welcome {
            worker_id: id,
            heartbeat_interval_ms: 1000,
        });
        self.registered.lock().unwrap().push((hello, token));
        self.links.lock().unwrap().push(link);
        id
    }

    fn message(&self, worker: WorkerId, msg: WorkerMessage) {
        self.messages.lock().unwrap().push((worker, msg));
    }

    fn media(&self, _worker: WorkerId, frame: MediaFrame, permit: MediaPermit) {
        self.media.lock().unwrap().push((frame, permit));
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
    link.send(ServerMessage::Refused {
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
