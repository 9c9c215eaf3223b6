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
use atelier_protocol::Role;

use crate::jobs::{JobsSnapshot, NoJobs};
use crate::limits::SessionLimits;
use crate::outbound::Outbox;
use crate::session::messages::{
    BroadcastEvent, BroadcastPreview, CloseSession, Flush, Join, JoinError, Joined, KickAccount,
    RevokeShareLink, SetRole, Shutdown,
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
    pub limits: SessionLimits,
}

impl RegistryConfig {
    /// Default limits and no job system.
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self {
            store,
            jobs: Arc::new(NoJobs),
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

    /// Closes (4403) every live connection using the share link; returns how many.
    pub async fn revoke_share_link(&self, session_id: SessionId, link_id: ShareLinkId) -> usize {
        match self.get(session_id) {
            Some(addr) => addr.send(RevokeShareLink { link_id }).await.unwrap_or(0),
            None => 0,
        }
    }

    /// Applies a membership change to live connections; `None` removes (closes them).
    pub async fn set_role(
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

    /// Closes every live connection of the account, in every session, with `code` (after
    /// `session.kicked {reason}`): an admin suspended it. Returns at once; each session closes
    /// them on its next turn.
    pub fn kick_account(&self, account: AccountId, code: u16, reason: &str) {
        let addrs: Vec<Addr<SessionActor>> = self.shared.sessions().values().cloned().collect();
        for addr in addrs {
            addr.do_send(KickAccount {
                account_id: account,
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Sends a studio event to the session's events-enabled connections (no-op if not live:
    /// nobody is there to tell).
    pub fn broadcast_event(&self, session_id: SessionId, event: StudioEvent) {
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

    /// The session was deleted: kick everyone and unload without storing anything more.
    pub async fn close_session(&self, session_id: SessionId, reason: &str) {
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
