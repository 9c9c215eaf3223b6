//! Test doubles: a fake connection actor, a gated store, a Yjs "client" producing updates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::ids::{AccountId, SessionId, ShareLinkId};
use atelier_protocol::ysync::{decode_frame, Frame, SyncMessage};
use atelier_protocol::Role;
use tokio::sync::{mpsc, Semaphore};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, Transact, Update};

use crate::session::messages::{Inbound, Joined, Leave};
use crate::store::{BoxFuture, DocStore, DocStoreError, StoredDoc, StoredUpdate};
use crate::{
    Identity, MemoryDocStore, Outbound, OutboundFrame, Outbox, Participant, SessionActor,
    SessionRegistryHandle,
};

/// What a fake connection received.
#[derive(Debug)]
pub enum Received {
    Frame(Frame),
    Close(u16, String),
}

/// Stands in for a `ConnectionActor`: decodes every outbound frame and forwards it to the test.
/// A "hoarding" one keeps the frames instead (a client that never reads its socket).
struct FakeConn {
    tx: mpsc::UnboundedSender<Received>,
    hoard: Option<Vec<OutboundFrame>>,
}

impl Actor for FakeConn {
    type Context = Context<Self>;
}

impl Handler<Outbound> for FakeConn {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _ctx: &mut Context<Self>) {
        let received = match msg {
            Outbound::Frame(frame) => {
                if let Some(hoard) = &mut self.hoard {
                    hoard.push(frame);
                    return;
                }
                Received::Frame(decode_frame(&frame.into_bytes()).expect("server sent garbage"))
            }
            Outbound::Close { code, reason } => Received::Close(code, reason),
        };
        let _ = self.tx.send(received);
    }
}

pub fn participant(role: Role) -> Participant {
    Participant {
        identity: Identity::Account(AccountId::new_random()),
        name: format!("{role} tester"),
        role,
        wants_events: false,
        admission: Default::default(),
    }
}

pub fn share_link_viewer(link: ShareLinkId) -> Participant {
    Participant {
        identity: Identity::ShareLink(link),
        name: "guest".into(),
        role: Role::Viewer,
        wants_events: true,
        admission: Default::default(),
    }
}

/// A participant seen from the test: its inbox, and a Yjs document of its own.
pub struct Client {
    pub joined: Joined,
    pub session: Addr<SessionActor>,
    rx: mpsc::UnboundedReceiver<Received>,
    pub doc: Doc,
}

pub struct JoinOptions {
    pub outbox_capacity: usize,
    pub hoard: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            outbox_capacity: 1024,
            hoard: false,
        }
    }
}

impl Client {
    pub async fn join(
        registry: &SessionRegistryHandle,
        session_id: SessionId,
        participant: Participant,
    ) -> Client {
        Self::join_with(registry, session_id, participant, JoinOptions::default()).await
    }

    pub async fn join_with(
        registry: &SessionRegistryHandle,
        session_id: SessionId,
        participant: Participant,
        options: JoinOptions,
    ) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let hoard = options.hoard.then(Vec::new);
        let conn = FakeConn { tx, hoard }.start();
        let outbox = Outbox::new(conn.recipient(), options.outbox_capacity);
        let (session, joined) = registry
            .join(session_id, outbox, participant)
            .await
            .expect("join refused");
        Client {
            joined,
            session,
            rx,
            doc: Doc::new(),
        }
    }

    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("nothing received within 5 s")
            .expect("connection channel closed")
    }

    pub async fn recv_frame(&mut self) -> Frame {
        match self.recv().await {
            Received::Frame(frame) => frame,
            Received::Close(code, reason) => panic!("closed {code}: {reason}"),
        }
    }

    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            if let Received::Close(code, reason) = self.recv().await {
                return (code, reason);
            }
        }
    }

    /// Nothing arrives for a short while (all actors are idle by then).
    pub async fn expect_silence(&mut self) {
        if let Ok(Some(received)) =
            tokio::time::timeout(Duration::from_millis(100), self.rx.recv()).await
        {
            panic!("expected nothing, got {received:?}");
        }
    }

    /// Receives the join greeting (step 1 and, if any, awareness) and answers the step 1 with a
    /// step 2, like y-websocket.
    pub async fn handshake(&mut self) {
        match self.recv_frame().await {
            Frame::Sync(SyncMessage::SyncStep1(sv)) => {
                let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                self.send(Frame::Sync(SyncMessage::SyncStep2(diff))).await;
            }
            other => panic!("expected step 1, got {other:?}"),
        }
    }

    /// Asks for the server's state and applies it to the local document.
    pub async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector();
        self.send(Frame::step1(sv)).await;
        loop {
            if let Frame::Sync(SyncMessage::SyncStep2(update)) = self.recv_frame().await {
                self.apply(&update);
                return;
            }
        }
    }

    pub async fn send(&self, frame: Frame) {
        self.session
            .send(Inbound {
                connection_id: self.joined.connection_id,
                frame,
            })
            .await
            .expect("session gone");
    }

    pub async fn leave(self) {
        self.session
            .send(Leave {
                connection_id: self.joined.connection_id,
            })
            .await
            .expect("session gone");
    }

    /// Sets `nodes[key] = value` locally and returns the resulting v1 update.
    pub fn edit(&self, key: &str, value: &str) -> Vec<u8> {
        let before = self.doc.transact().state_vector();
        let nodes = self.doc.get_or_insert_map("nodes");
        nodes.insert(&mut self.doc.transact_mut(), key, value);
        self.doc.transact().encode_state_as_update_v1(&before)
    }

    /// Edits and sends the update.
    pub async fn send_edit(&self, key: &str, value: &str) -> Vec<u8> {
        let update = self.edit(key, value);
        self.send(Frame::update(update.clone())).await;
        update
    }

    pub fn apply(&self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("bad update");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("update did not apply");
    }

    pub fn node(&self, key: &str) -> Option<String> {
        let nodes = self.doc.get_or_insert_map("nodes");
        let txn = self.doc.transact();
        nodes.get(&txn, key).map(|v| v.to_string(&txn))
    }
}

/// The document a stored state decodes to: `nodes[key]` as a string.
pub fn stored_node(stored: &StoredDoc, key: &str) -> Option<String> {
    let doc = Doc::new();
    for update in stored
        .snapshot
        .iter()
        .chain(stored.updates.iter().map(|(_, u)| u))
    {
        let update = Update::decode_v1(update).expect("stored garbage");
        doc.transact_mut()
            .apply_update(update)
            .expect("stored update does not apply");
    }
    let nodes = doc.get_or_insert_map("nodes");
    let txn = doc.transact();
    nodes.get(&txn, key).map(|v| v.to_string(&txn))
}

/// A store whose appends wait for a permit, to hold a batch "in flight" as long as a test needs.
pub struct GatedStore {
    pub inner: Arc<MemoryDocStore>,
    pub gate: Arc<Semaphore>,
    pub entered: Arc<Mutex<usize>>,
}

impl GatedStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(MemoryDocStore::new()),
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Mutex::new(0)),
        })
    }

    /// Appends that have started (and may be waiting at the gate).
    pub fn appends_started(&self) -> usize {
        *self.entered.lock().unwrap()
    }
}

impl DocStore for GatedStore {
    fn load(&self, session: SessionId) -> BoxFuture<'_, Result<StoredDoc, DocStoreError>> {
        self.inner.load(session)
    }

    fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<i64, DocStoreError>> {
        *self.entered.lock().unwrap() += 1;
        Box::pin(async move {
            self.gate.acquire().await.expect("gate closed").forget();
            self.inner.append(session, updates).await
        })
    }

    fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<StoredUpdate>>, DocStoreError>> {
        self.inner.updates_since(session, after_seq)
    }

    fn compact(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> BoxFuture<'_, Result<(), DocStoreError>> {
        self.inner.compact(session, snapshot, upto_seq)
    }
}

/// Lets the actors run until every queued message has been handled.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Decodes an update frame's payload, panicking on anything else.
pub fn expect_update(frame: Frame) -> Vec<u8> {
    match frame {
        Frame::Sync(SyncMessage::Update(update)) => update,
        other => panic!("expected an update, got {other:?}"),
    }
}
