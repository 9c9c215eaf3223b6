//! `SessionRegistryHandle`: finds or starts the one actor of each live session.
//!
//! A cheap-to-clone handle over `Arc<Shared>` (the mini-redis pattern). The map sits behind a
//! std `Mutex` because every critical section is a short, synchronous map operation — no
//! `.await` ever happens while it is held — so an async mutex would only add overhead. Sessions
//! hold a `Weak` link back, used to remove themselves when they unload, so the registry and its
//! actors do not keep each other alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use actix::{Addr, Supervisor};
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, JobId, SessionId, ShareLinkId};
use atelier_protocol::relay::{Envelope, Kick, RelayMessage};
use atelier_protocol::ysync::Frame;
use atelier_protocol::Role;
use bytes::Bytes;

use crate::jobs::{JobsSnapshot, NoJobs};
use crate::limits::SessionLimits;
use crate::outbound::Outbox;
use crate::relay::{NoRelay, Relay};
use crate::session::messages::{
    BroadcastEvent, BroadcastPreview, CloseSession, Flush, Join, JoinError, Joined,
    RevokeShareLink, SetRole, Shutdown,
};
use crate::session::replica::{
    CheckHead, NodeGone, PresenceQuery, RemoteAwareness, RemoteBroadcast, RemoteUpdates, Resync,
};
use crate::session::{Participant, SessionActor, SessionDeps};
use crate::store::{DocStore, DocStoreError};

/// How often [`SessionRegistryHandle::join`] retries when it races with an unloading session.
const JOIN_ATTEMPTS: usize = 3;

/// What every session actor is built with.
#[derive(Clone)]
pub struct RegistryConfig {
    pub store: Arc<dyn DocStore>,
    pub jobs: Arc<dyn JobsSnapshot>,
    /// The other nodes of a cluster ([`NoRelay`] on a single node).
    pub relay: Arc<dyn Relay>,
    pub limits: SessionLimits,
}

impl RegistryConfig {
    /// Default limits, no job system, a single node.
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self {
            store,
            jobs: Arc::new(NoJobs),
            relay: Arc::new(NoRelay),
            limits: SessionLimits::default(),
        }
    }
}

pub(crate) struct Shared {
    sessions: Mutex<HashMap<SessionId, Addr<SessionActor>>>,
    deps: SessionDeps,
}

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Addr<SessionActor>>> {
        // A panic elsewhere cannot leave the map half-updated (each operation is one call), so a
        // poisoned lock is safe to keep using.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle the server keeps (in its app state) to reach live sessions.
///
/// Methods that start actors must run inside an actix system (any actix-web handler does): a
/// session actor lives on the arbiter of whoever started it.
#[derive(Clone)]
pub struct SessionRegistryHandle {
    shared: Arc<Shared>,
}

impl SessionRegistryHandle {
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                sessions: Mutex::new(HashMap::new()),
                deps: SessionDeps {
                    store: config.store,
                    jobs: config.jobs,
                    relay: config.relay,
                    limits: config.limits,
                },
            }),
        }
    }

    /// The session's actor, started (under a supervisor) if it is not live.
    pub fn get_or_start(&self, session_id: SessionId) -> Addr<SessionActor> {
        let mut sessions = self.shared.sessions();
        if let Some(addr) = sessions.get(&session_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let deps = self.shared.deps.clone();
        let link = RegistryLink(Arc::downgrade(&self.shared));
        let addr = Supervisor::start(move |_| SessionActor::new(session_id, deps, link));
        sessions.insert(session_id, addr.clone());
        addr
    }

    /// The session's actor if it is live (never starts one).
    pub fn get(&self, session_id: SessionId) -> Option<Addr<SessionActor>> {
        self.shared
            .sessions()
            .get(&session_id)
            .filter(|addr| addr.connected())
            .cloned()
    }

    /// How many sessions are loaded.
    pub fn live_sessions(&self) -> usize {
        self.shared.sessions().len()
    }

    /// Joins a connection to a session, starting it if needed; retries if the session was
    /// unloading at that moment. Returns the actor to send [`crate::session::messages::Inbound`]
    /// and [`crate::session::messages::Leave`] to.
    pub async fn join(
        &self,
        session_id: SessionId,
        outbox: Outbox,
        participant: Participant,
    ) -> Result<(Addr<SessionActor>, Joined), JoinError> {
        for _ in 0..JOIN_ATTEMPTS {
            let addr = self.get_or_start(session_id);
            let join = Join {
                outbox: outbox.clone(),
                participant: participant.clone(),
            };
            match addr.send(join).await {
                Ok(Ok(joined)) => return Ok((addr, joined)),
                Ok(Err(JoinError::Unloaded)) | Err(_) => {
                    RegistryLink(Arc::downgrade(&self.shared)).forget(session_id, &addr);
                }
                Ok(Err(error)) => return Err(error),
            }
        }
        Err(JoinError::Unloaded)
    }

    /// Closes (4403) every connection using the share link, on every node; returns how many
    /// were closed on this one.
    pub async fn revoke_share_link(&self, session_id: SessionId, link_id: ShareLinkId) -> usize {
        self.publish(RelayMessage::Kick(Kick::ShareLink {
            session: session_id,
            link: link_id,
        }));
        self.revoke_share_link_here(session_id, link_id).await
    }

    async fn revoke_share_link_here(&self, session_id: SessionId, link_id: ShareLinkId) -> usize {
        match self.get(session_id) {
            Some(addr) => addr.send(RevokeShareLink { link_id }).await.unwrap_or(0),
            None => 0,
        }
    }

    /// Applies a membership change to live connections on every node; `None` removes (closes
    /// them). Returns how many were affected on this node.
    pub async fn set_role(
        &self,
        session_id: SessionId,
        account_id: AccountId,
        role: Option<Role>,
    ) -> usize {
        self.publish(RelayMessage::Kick(Kick::Role {
            session: session_id,
            account: account_id,
            role,
        }));
        self.set_role_here(session_id, account_id, role).await
    }

    async fn set_role_here(
        &self,
        session_id: SessionId,
        account_id: AccountId,
        role: Option<Role>,
    ) -> usize {
        match self.get(session_id) {
            Some(addr) => addr.send(SetRole { account_id, role }).await.unwrap_or(0),
            None => 0,
        }
    }

    /// Sends a studio event to the session's events-enabled connections on every node (no-op
    /// where the session is not live: nobody is there to tell).
    pub fn broadcast_event(&self, session_id: SessionId, event: StudioEvent) {
        if self.shared.deps.relay.is_clustered() {
            match serde_json::to_string(&event) {
                Ok(json) => self.publish(RelayMessage::Event {
                    session: session_id,
                    json,
                }),
                Err(error) => tracing::error!(%error, "studio event not relayed"),
            }
        }
        if let Some(addr) = self.get(session_id) {
            addr.do_send(BroadcastEvent { event });
        }
    }

    /// Sends a job preview (frame type 101) to the session's events-enabled connections.
    pub fn broadcast_preview(
        &self,
        session_id: SessionId,
        job_id: JobId,
        step: u32,
        mime: String,
        image: Vec<u8>,
    ) {
        if self.shared.deps.relay.is_clustered() {
            let frame = Frame::Preview {
                job_id,
                step,
                mime: mime.clone(),
                image: image.clone(),
            };
            self.publish(RelayMessage::Preview {
                session: session_id,
                frame: frame.encode(),
            });
        }
        if let Some(addr) = self.get(session_id) {
            addr.do_send(BroadcastPreview {
                job_id,
                step,
                mime,
                image,
            });
        }
    }

    /// Applies a server-made update: through the live session (stored, then fanned out) or, when
    /// nobody is connected, straight into storage (the next load replays it).
    pub async fn apply_server_update(
        &self,
        session_id: SessionId,
        update: Vec<u8>,
    ) -> Result<(), String> {
        if let Some(addr) = self.get(session_id) {
            if let Ok(result) = addr
                .send(crate::session::messages::ApplyServerUpdate {
                    update: update.clone(),
                })
                .await
            {
                return result;
            }
        }
        self.shared
            .deps
            .store
            .append(session_id, vec![update])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The session was deleted: kick everyone (on every node) and unload without storing
    /// anything more.
    pub async fn close_session(&self, session_id: SessionId, reason: &str) {
        self.publish(RelayMessage::Kick(Kick::Session {
            session: session_id,
            reason: reason.to_owned(),
        }));
        self.close_session_here(session_id, reason).await;
    }

    async fn close_session_here(&self, session_id: SessionId, reason: &str) {
        if let Some(addr) = self.get(session_id) {
            let _ = addr
                .send(CloseSession {
                    reason: reason.to_owned(),
                })
                .await;
        }
    }

    /// Waits until everything accepted by a live session is stored and compacted.
    pub async fn flush(&self, session_id: SessionId) -> Result<(), DocStoreError> {
        match self.get(session_id) {
            Some(addr) => addr
                .send(Flush)
                .await
                .unwrap_or_else(|e| Err(DocStoreError::backend(e.to_string()))),
            None => Ok(()),
        }
    }

    /// Graceful shutdown: every live session closes its connections (1001), stores what is
    /// pending, compacts and unloads. Returns the first storage error, after trying them all.
    pub async fn shutdown(&self) -> Result<(), DocStoreError> {
        let addrs: Vec<Addr<SessionActor>> = self.shared.sessions().values().cloned().collect();
        let mut first_error = None;
        for addr in addrs {
            let result = addr
                .send(Shutdown)
                .await
                .unwrap_or_else(|e| Err(DocStoreError::backend(e.to_string())));
            if let Err(error) = result {
                tracing::error!(%error, "session did not flush on shutdown");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl SessionRegistryHandle {
    fn publish(&self, message: RelayMessage) {
        if self.shared.deps.relay.is_clustered() {
            self.shared.deps.relay.publish(message);
        }
    }

    /// The sessions loaded on this node.
    pub fn live_session_ids(&self) -> Vec<SessionId> {
        self.shared.sessions().keys().copied().collect()
    }

    /// Hands a message from another node to whatever it concerns here, without waiting for
    /// any actor. Messages for sessions not loaded on this node are dropped (whoever loads one
    /// reads the database first).
    pub fn deliver(&self, envelope: Envelope) {
        let node = envelope.node;
        match envelope.message {
            RelayMessage::Updates {
                session,
                first_seq,
                updates,
            } => self.tell(session, RemoteUpdates { first_seq, updates }),
            RelayMessage::Awareness { session, payload } => {
                self.tell(session, RemoteAwareness { node, payload })
            }
            RelayMessage::QueryAwareness { session } => self.tell(session, PresenceQuery),
            RelayMessage::Event { session, json } => match serde_json::from_str(&json) {
                Ok(event) => self.tell(session, RemoteBroadcast::Event(event)),
                Err(error) => tracing::warn!(%node, %error, "relayed studio event not understood"),
            },
            RelayMessage::Preview { session, frame } => {
                self.tell(session, RemoteBroadcast::Preview(Bytes::from(frame)))
            }
            RelayMessage::Kick(Kick::ShareLink { session, link }) => {
                self.tell(session, RevokeShareLink { link_id: link })
            }
            RelayMessage::Kick(Kick::Role {
                session,
                account,
                role,
            }) => self.tell(
                session,
                SetRole {
                    account_id: account,
                    role,
                },
            ),
            RelayMessage::Kick(Kick::Session { session, reason }) => {
                self.tell(session, CloseSession { reason })
            }
            RelayMessage::Kick(Kick::Account { .. }) => {}
            // Liveness is the cluster's business (it calls `node_gone`).
            RelayMessage::Heartbeat | RelayMessage::Leaving => {}
        }
    }

    /// A node died or left: its clients' presence disappears from every live session.
    pub fn node_gone(&self, node: &str) {
        for addr in self.shared.sessions().values() {
            addr.do_send(NodeGone {
                node: node.to_owned(),
            });
        }
    }

    /// The durable log of `session` ends at `head_seq`; a live replica behind it catches up.
    pub fn check_head(&self, session: SessionId, head_seq: i64) {
        self.tell(session, CheckHead { head_seq });
    }

    /// The relay was interrupted: every live session catches up from the database and
    /// re-announces its presence.
    pub fn resync_all(&self) {
        for addr in self.shared.sessions().values() {
            addr.do_send(Resync);
        }
    }

    fn tell<M>(&self, session: SessionId, message: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        SessionActor: actix::Handler<M>,
    {
        if let Some(addr) = self.get(session) {
            addr.do_send(message);
        }
    }
}

/// A session's way back to the registry, to remove itself when it unloads.
pub(crate) struct RegistryLink(Weak<Shared>);

impl RegistryLink {
    /// Removes `session_id` from the registry if it still maps to `addr` (a newer actor for the
    /// same session is left alone).
    pub(crate) fn forget(&self, session_id: SessionId, addr: &Addr<SessionActor>) {
        if let Some(shared) = self.0.upgrade() {
            let mut sessions = shared.sessions();
            if sessions.get(&session_id) == Some(addr) {
                sessions.remove(&session_id);
            }
        }
    }
}
