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
use atelier_protocol::relay::{Envelope, Kick as RelayKick, KickScope, RelayMessage};
use atelier_protocol::ysync::Frame;
use atelier_protocol::Role;
use bytes::Bytes;

use atelier_protocol::close_code;

use crate::admission::{
    Admission, AdmissionCaps, Admissions, CapExceeded, Grant, KickTarget, Revocation,
};
use crate::jobs::{JobsSnapshot, NoJobs};
use crate::limits::SessionLimits;
use crate::outbound::Outbox;
use crate::relay::{NoRelay, Relay};
use crate::session::messages::{
    BroadcastEvent, BroadcastPreview, CloseSession, DocEdit, Flush, GraphJson, GraphView, Join,
    JoinError, Joined, Kick, LiveDocError, ServerEdit, SetRole, Shutdown,
};
use crate::session::replica::{
    CheckHead, NodeGone, PresenceQuery, RemoteAwareness, RemoteBroadcast, RemoteUpdates, Resync,
};
use crate::session::Identity;
use crate::session::{Participant, SessionActor, SessionDeps};
use crate::store::{DocStore, DocStoreError};
use crate::versions::{NoVersions, VersionRecorder};

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
    /// Keeps automatic versions ([`NoVersions`]: none).
    pub versions: Arc<dyn VersionRecorder>,
    /// Connections per share link, account and IP.
    pub caps: AdmissionCaps,
}

impl RegistryConfig {
    /// Default limits, no job system, a single node.
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self {
            store,
            jobs: Arc::new(NoJobs),
            relay: Arc::new(NoRelay),
            limits: SessionLimits::default(),
            versions: Arc::new(NoVersions),
            caps: AdmissionCaps::default(),
        }
    }
}

pub(crate) struct Shared {
    sessions: Mutex<HashMap<SessionId, Addr<SessionActor>>>,
    deps: SessionDeps,
    admissions: Admissions,
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
                    versions: config.versions,
                },
                admissions: Admissions::new(config.caps),
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
                Ok(Ok(joined)) => {
                    // A kick that marked this admission while the connection was on its way in
                    // may have missed it in the session: look again now that it is there.
                    if let Some(revocation) = participant.admission.revocation() {
                        let target = KickTarget::Connection(session_id, joined.connection_id);
                        let _ = addr.send(Kick { target, revocation }).await;
                    }
                    return Ok((addr, joined));
                }
                Ok(Err(JoinError::Unloaded)) | Err(_) => {
                    RegistryLink(Arc::downgrade(&self.shared)).forget(session_id, &addr);
                }
                Ok(Err(error)) => return Err(error),
            }
        }
        Err(JoinError::Unloaded)
    }

    /// Lets a connection in on `grant` (counted against the caps until it is gone). A grant
    /// that expires closes its connections then (4403).
    pub fn admit(&self, grant: Grant) -> Result<Admission, CapExceeded> {
        let expiry = match grant.identity {
            Identity::ShareLink(link) => grant.expires_at.map(|at| (link, at)),
            Identity::Account(_) => None,
        };
        let (admission, freed) = self.shared.admissions.admit_watched(grant)?;
        if let Some((link, at)) = expiry {
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let registry = Arc::downgrade(&self.shared);
            actix::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {
                        if let Some(shared) = registry.upgrade() {
                            SessionRegistryHandle { shared }.kick(
                                KickTarget::ShareLink(link),
                                close_code::ACCESS_REVOKED,
                                "share link expired",
                            );
                        }
                    }
                    // The connection ended first: nothing to do.
                    _ = freed => {}
                }
            });
        }
        Ok(admission)
    }

    /// Ends access for every connection the target covers — open ones and ones still being
    /// upgraded or joining, on every node — with `code` (after `session.kicked {reason}` to
    /// events clients). Returns at once; the sessions close the connections within milliseconds.
    pub fn kick(&self, target: KickTarget, code: u16, reason: &str) {
        self.publish_kick(&target, code, reason);
        self.kick_here(&target, code, reason);
    }

    fn kick_here(&self, target: &KickTarget, code: u16, reason: &str) {
        let revocation = Revocation {
            code,
            reason: reason.to_owned(),
        };
        for session in self.shared.admissions.revoke(target, &revocation) {
            if let Some(addr) = self.get(session) {
                addr.do_send(Kick {
                    target: target.clone(),
                    revocation: revocation.clone(),
                });
            }
        }
    }

    /// [`SessionRegistryHandle::kick`], waiting until this node's live sessions have closed the
    /// connections; returns how many they closed (other nodes close theirs meanwhile).
    pub async fn kick_and_wait(&self, target: KickTarget, code: u16, reason: &str) -> usize {
        self.publish_kick(&target, code, reason);
        let revocation = Revocation {
            code,
            reason: reason.to_owned(),
        };
        let mut closed = 0;
        for session in self.shared.admissions.revoke(&target, &revocation) {
            if let Some(addr) = self.get(session) {
                let kick = Kick {
                    target: target.clone(),
                    revocation: revocation.clone(),
                };
                closed += addr.send(kick).await.unwrap_or(0);
            }
        }
        closed
    }

    /// Closes every connection of the account, in every session, with `code` (e.g. 4401 when
    /// the account is deleted or suspended).
    pub fn kick_account(&self, account: AccountId, code: u16, reason: &str) {
        self.kick(KickTarget::Account(account), code, reason);
    }

    /// Closes (4403) every connection using the share link, on every node; returns how many
    /// were closed on this one.
    pub async fn revoke_share_link(&self, session_id: SessionId, link_id: ShareLinkId) -> usize {
        let target = KickTarget::ShareLink(link_id);
        let reason = "share link revoked";
        self.publish_kick(&target, close_code::ACCESS_REVOKED, reason);
        let revocation = Revocation {
            code: close_code::ACCESS_REVOKED,
            reason: reason.to_owned(),
        };
        self.shared.admissions.revoke(&target, &revocation);
        match self.get(session_id) {
            Some(addr) => addr.send(Kick { target, revocation }).await.unwrap_or(0),
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
        let Some(role) = role else {
            let target = KickTarget::Member(session_id, account_id);
            return self
                .kick_and_wait(target, close_code::ACCESS_REVOKED, "removed from session")
                .await;
        };
        self.publish(RelayMessage::Kick(RelayKick::Role {
            session: session_id,
            account: account_id,
            role,
        }));
        match self.get(session_id) {
            Some(addr) => addr
                .send(SetRole {
                    account_id,
                    role: Some(role),
                })
                .await
                .unwrap_or(0),
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

    /// Makes a server-side change to the session's document through its live session (loaded
    /// for it if nobody is connected) — the one writer of each document — and returns once the
    /// change is stored (and applied and fanned out).
    pub async fn apply_server_edit(
        &self,
        session_id: SessionId,
        edit: DocEdit,
    ) -> Result<(), LiveDocError> {
        self.apply_edit_for(session_id, None, edit).await
    }

    /// [`Self::apply_server_edit`] on behalf of a person's editing (`editor`): the change
    /// counts towards automatic versions as theirs.
    pub async fn apply_edit_for(
        &self,
        session_id: SessionId,
        editor: Option<AccountId>,
        edit: DocEdit,
    ) -> Result<(), LiveDocError> {
        for _ in 0..JOIN_ATTEMPTS {
            let addr = self.get_or_start(session_id);
            let msg = ServerEdit {
                edit: edit.clone(),
                editor,
            };
            match addr.send(msg).await {
                // An actor that was unloading ran nothing: ask a fresh one.
                Ok(Err(LiveDocError::Unloaded)) | Err(_) => {
                    RegistryLink(Arc::downgrade(&self.shared)).forget(session_id, &addr);
                }
                Ok(result) => return result,
            }
        }
        Err(LiveDocError::Unloaded)
    }

    /// The session's graph (`{"nodes", "edges"}` JSON) as its live document has it, once every
    /// update accepted so far is applied; the session is loaded if nobody is connected.
    pub async fn graph_json(
        &self,
        session_id: SessionId,
    ) -> Result<serde_json::Value, LiveDocError> {
        Ok(self.graph_view(session_id).await?.graph)
    }

    /// As [`Self::graph_json`], with the document's version (state vector) it was read at.
    pub async fn graph_view(&self, session_id: SessionId) -> Result<GraphView, LiveDocError> {
        for _ in 0..JOIN_ATTEMPTS {
            let addr = self.get_or_start(session_id);
            match addr.send(GraphJson).await {
                Ok(Err(LiveDocError::Unloaded)) | Err(_) => {
                    RegistryLink(Arc::downgrade(&self.shared)).forget(session_id, &addr);
                }
                Ok(result) => return result,
            }
        }
        Err(LiveDocError::Unloaded)
    }

    /// The session was deleted: kick everyone (4404), on every node — connections still joining
    /// included — and unload without storing anything more.
    pub async fn close_session(&self, session_id: SessionId, reason: &str) {
        self.publish_kick(
            &KickTarget::Session(session_id),
            close_code::SESSION_DELETED,
            reason,
        );
        if let Some(addr) = self.close_session_here(session_id, reason) {
            let _ = addr
                .send(CloseSession {
                    reason: reason.to_owned(),
                })
                .await;
        }
    }

    /// Revokes the session's admissions here; returns its live actor, to be closed.
    fn close_session_here(
        &self,
        session_id: SessionId,
        reason: &str,
    ) -> Option<Addr<SessionActor>> {
        self.shared.admissions.revoke(
            &KickTarget::Session(session_id),
            &Revocation {
                code: close_code::SESSION_DELETED,
                reason: reason.to_owned(),
            },
        );
        self.get(session_id)
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

    /// Tells the other nodes to close what `target` covers (a single connection is this node's
    /// business only).
    fn publish_kick(&self, target: &KickTarget, code: u16, reason: &str) {
        let scope = match target {
            KickTarget::Account(account) => KickScope::Account(*account),
            KickTarget::Member(session, account) => KickScope::Member(*session, *account),
            KickTarget::ShareLink(link) => KickScope::ShareLink(*link),
            KickTarget::Credential(hash) => KickScope::Credential(hash.clone()),
            KickTarget::Session(session) => KickScope::Session(*session),
            KickTarget::Connection(..) => return,
        };
        self.publish(RelayMessage::Kick(RelayKick::Close {
            scope,
            code,
            reason: reason.to_owned(),
        }));
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
            RelayMessage::Kick(RelayKick::Close {
                scope: KickScope::Session(session),
                reason,
                ..
            }) => {
                if let Some(addr) = self.close_session_here(session, &reason) {
                    addr.do_send(CloseSession { reason });
                }
            }
            RelayMessage::Kick(RelayKick::Close {
                scope,
                code,
                reason,
            }) => self.kick_here(&target_of(scope), code, &reason),
            RelayMessage::Kick(RelayKick::Role {
                session,
                account,
                role,
            }) => self.tell(
                session,
                SetRole {
                    account_id: account,
                    role: Some(role),
                },
            ),
            // Liveness is the cluster's business (it calls `node_gone`); account events go to
            // the server's account channels and job cancellations to the job system, not to
            // sessions.
            RelayMessage::Heartbeat
            | RelayMessage::Leaving
            | RelayMessage::AccountEvent { .. }
            | RelayMessage::CancelJob { .. } => {}
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

/// The kick target a relayed scope stands for.
fn target_of(scope: KickScope) -> KickTarget {
    match scope {
        KickScope::Account(account) => KickTarget::Account(account),
        KickScope::Member(session, account) => KickTarget::Member(session, account),
        KickScope::ShareLink(link) => KickTarget::ShareLink(link),
        KickScope::Credential(hash) => KickTarget::Credential(hash),
        KickScope::Session(session) => KickTarget::Session(session),
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
