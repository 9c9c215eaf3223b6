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
    Identity, MemoryDocStore, Outbound, OutboundFrame, Outbox, OutboxBudget, Participant,
    SessionActor, SessionRegistryHandle,
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
    pub outbox_bytes: usize,
    pub hoard: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            outbox_capacity: 1024,
            outbox_bytes: 64 * 1024 * 1024,
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
        let outbox = Outbox::new(
            conn.recipient(),
            OutboxBudget {
                frames: options.outbox_capacity,
                bytes: options.outbox_bytes,
            },
        );
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

/// An awareness frame setting `(client id, clock, JSON state)` entries (`"null"` removes).
pub fn awareness(entries: &[(u64, u64, &str)]) -> Frame {
    let mut payload = Vec::new();
    craft::var(&mut payload, entries.len() as u64);
    for (client, clock, json) in entries {
        craft::var(&mut payload, *client);
        craft::var(&mut payload, *clock);
        craft::string(&mut payload, json);
    }
    Frame::Awareness(payload)
}

/// The `(client id, JSON state)` entries of an awareness frame, sorted.
pub fn awareness_entries(frame: &Frame) -> Vec<(u64, String)> {
    let Frame::Awareness(payload) = frame else {
        panic!("expected awareness, got {frame:?}");
    };
    let update = atelier_protocol::ysync::decode_awareness(payload).expect("valid awareness");
    let mut entries: Vec<(u64, String)> = update
        .clients
        .iter()
        .map(|(client, entry)| (client.get(), entry.json.to_string()))
        .collect();
    entries.sort();
    entries
}

/// Hand-written v1 updates, for structures yrs cannot even build (or drop) safely itself.
pub mod craft {
    pub fn var(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    pub fn string(out: &mut Vec<u8>, s: &str) {
        var(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    /// A `Y.Map` at key `k`: under the root `nodes` when `parent` is `None`, else under the map
    /// item `parent` (client, clock).
    fn map_block(out: &mut Vec<u8>, parent: Option<(u64, u64)>) {
        out.push(0b0010_0000 | 7); // parent sub, type content
        match parent {
            None => {
                var(out, 1);
                string(out, "nodes");
            }
            Some((client, clock)) => {
                var(out, 0);
                var(out, client);
                var(out, clock);
            }
        }
        string(out, "k");
        out.push(1); // TYPE_REFS_MAP
    }

    /// `levels` maps nested at key `k` by `client` from clock `start`: the first under `parent`
    /// (or the root `nodes`), each next one under the previous. `deletes`: the delete set.
    pub fn nested_maps(
        client: u64,
        start: u64,
        levels: u64,
        parent: Option<(u64, u64)>,
        deletes: &[(u64, u64, u64)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, 1);
        var(&mut out, levels);
        var(&mut out, client);
        var(&mut out, start);
        for clock in start..start + levels {
            let parent = if clock == start {
                parent
            } else {
                Some((client, clock - 1))
            };
            map_block(&mut out, parent);
        }
        delete_set(&mut out, deletes);
        out
    }

    /// One item by `client` at `clock` whose parent is copied from its left origin `origin`
    /// (a map entry overwriting the entry `origin`): a string, or a new `Y.Map` when `map`.
    pub fn after(client: u64, clock: u64, origin: (u64, u64), map: bool) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, 1);
        var(&mut out, 1);
        var(&mut out, client);
        var(&mut out, clock);
        if map {
            out.push(0b1000_0000 | 7);
            var(&mut out, origin.0);
            var(&mut out, origin.1);
            out.push(1);
        } else {
            out.push(0b1000_0000 | 8);
            var(&mut out, origin.0);
            var(&mut out, origin.1);
            var(&mut out, 1);
            out.push(119);
            string(&mut out, "x");
        }
        delete_set(&mut out, &[]);
        out
    }

    /// A plain value by `client` at `clock` at key `k` of the map item `parent`.
    pub fn value(client: u64, clock: u64, parent: (u64, u64)) -> Vec<u8> {
        let mut out = Vec::new();
        var(&mut out, 1);
        var(&mut out, 1);
        var(&mut out, client);
        var(&mut out, clock);
        out.push(0b0010_0000 | 8);
        var(&mut out, 0);
        var(&mut out, parent.0);
        var(&mut out, parent.1);
        string(&mut out, "k");
        var(&mut out, 1);
        out.push(119);
        string(&mut out, "plain");
        delete_set(&mut out, &[]);
        out
    }

    /// `(client, clock, len)` ranges.
    fn delete_set(out: &mut Vec<u8>, deletes: &[(u64, u64, u64)]) {
        var(out, deletes.len() as u64);
        for (client, clock, len) in deletes {
            var(out, *client);
            var(out, 1);
            var(out, *clock);
            var(out, *len);
        }
    }
}
