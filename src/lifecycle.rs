//! What must end when a session, an account, a login, a share link or the server itself ends —
//! in one place, so that every way of ending one does all of it: a Pro runtime left running on a deleted session
//! would go on charging its payer, who could no longer stop it, and a socket left open would
//! go on receiving what its holder may no longer see.
//!
//! Close codes: 4404 when the session is gone, 4401 when the credential is (logout, account
//! deleted), 4403 when access was taken away (member removed, link revoked, expired, or its
//! creator lost the right to share). Stock y-websocket does not reconnect after any of them.

use std::sync::Arc;

use atelier_actors::{KickTarget, SessionRegistryHandle};
use atelier_protocol::close_code;
use atelier_protocol::ids::{AccountId, SessionId, ShareLinkId};

use crate::account_events::{AccountEvent, AccountEvents};
use crate::billing::{reason, Billing};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The session's row is gone (deleted, or cascaded from its owner's account): its runtime lease
/// is settled (`session_deleted`, its payer refunded the unused part), its jobs interrupted, and
/// every socket closed (4404). Call it after the row is deleted: no lease can start for a session
/// that does not exist, so none can slip in after this.
pub async fn session_deleted(state: &AppState, session: SessionId) {
    match state
        .billing
        .stop_lease(session, reason::SESSION_DELETED)
        .await
    {
        Ok(settlement) => {
            tracing::info!(%session, lease = %settlement.lease_id, charged = settlement.charged, refunded = settlement.refunded, "runtime of a deleted session settled");
        }
        Err(Error::NotFound(_)) => {}
        // The meter retries a failed settlement on its own, and its checkpoints stop a lease
        // whose session is gone.
        Err(error) => {
            tracing::error!(%session, %error, "could not settle the runtime of a deleted session")
        }
    }
    state
        .live
        .close_session(session, "the session was deleted")
        .await;
}

/// These accounts lost a session (it was deleted): their dashboards drop it at once.
pub fn members_lost_session(state: &AppState, session: SessionId, members: &[AccountId]) {
    for account in members {
        state.account_events.publish(
            *account,
            &AccountEvent::MembershipRemoved {
                session_id: session,
            },
        );
    }
}

/// Share links that stopped working: their sockets close (4403).
pub fn share_links_ended(state: &AppState, links: &[ShareLinkId], why: &str) {
    for link in links {
        state.live.kick(
            KickTarget::ShareLink(*link),
            close_code::ACCESS_REVOKED,
            why,
        );
    }
}

/// A member was removed from a session, or made a viewer: the links they created for it are
/// revoked (links die with their creator's right to share), and on removal their sockets close.
pub async fn member_lost_sharing(
    state: &AppState,
    session: SessionId,
    account: AccountId,
) -> Result<()> {
    let links = state
        .db
        .revoke_share_links_created_by(session, account)
        .await?;
    share_links_ended(
        state,
        &links,
        "the link's creator can no longer share this session",
    );
    Ok(())
}

/// A login token was logged out: the sockets opened with it close (4401).
pub fn logged_out(state: &AppState, token_hash: &str) {
    state.live.kick(
        KickTarget::Credential(token_hash.to_owned()),
        close_code::CREDENTIAL_ENDED,
        "logged out",
    );
}

/// Deletes an account and everything it owns, ending everything that hangs on it: the leases
/// it pays for (`account_deleted`), the sessions it owns (as [`session_deleted`]: leases others
/// pay on them settled, sockets closed), the links it created, its sockets everywhere (4401),
/// and its stored objects.
pub async fn delete_account(state: &AppState, account: AccountId) -> Result<()> {
    let media = state.db.media_of(account).await?;
    let owned: Vec<SessionId> = state
        .db
        .sessions_of(account)
        .await?
        .into_iter()
        .filter(|(session, _)| session.owner_id == account)
        .map(|(session, _)| session.id)
        .collect();
    let mut members_of_owned = Vec::with_capacity(owned.len());
    for session in &owned {
        let others: Vec<AccountId> = state
            .db
            .members(*session)
            .await?
            .into_iter()
            .map(|m| m.account_id)
            .filter(|id| *id != account)
            .collect();
        members_of_owned.push(others);
    }
    let links = state.db.share_links_created_by(account).await?;
    // Its leases are settled while its ledger still exists.
    state
        .billing
        .stop_account_leases(account, reason::ACCOUNT_DELETED)
        .await;
    // One cascade: tokens, sessions (members, links, documents), memberships, media rows, usage.
    state.db.delete_account(account).await?;
    state
        .live
        .kick_account(account, close_code::CREDENTIAL_ENDED, "account deleted");
    for (session, members) in owned.into_iter().zip(members_of_owned) {
        session_deleted(state, session).await;
        members_lost_session(state, session, &members);
    }
    share_links_ended(state, &links, "the link's creator deleted their account");
    // Rows first, then objects: a failure in between leaves unreachable objects, never rows that
    // point at deleted bytes. Object failures are retried once and logged.
    for m in media {
        if let Err(first) = state.blobs.delete(&m.object_key).await {
            tracing::warn!(key = %m.object_key, error = %first, "object delete failed; retrying");
            if let Err(e) = state.blobs.delete(&m.object_key).await {
                tracing::error!(key = %m.object_key, error = %e, "object left behind after account deletion");
            }
        }
    }
    tracing::info!(%account, "account deleted");
    Ok(())
}

/// What must end when the server stops: this node leaves the cluster, the account channels
/// (`/me/events`) end (so they do not hold the graceful drain up; clients reconnect to another
/// node), every runtime lease is settled (`server_shutdown`) and every live session flushed. The signal handler runs it while
/// the HTTP workers still run (database connections opened on a worker's runtime die with it);
/// the server runs it again once it has stopped, for a stop that came another way — a second run
/// waits for the first and does nothing more.
#[derive(Clone)]
pub struct ServerShutdown {
    billing: Billing,
    live: SessionRegistryHandle,
    cluster: Option<Cluster>,
    account_events: AccountEvents,
    done: Arc<tokio::sync::OnceCell<()>>,
}

impl ServerShutdown {
    pub fn new(
        billing: Billing,
        live: SessionRegistryHandle,
        cluster: Option<Cluster>,
        account_events: AccountEvents,
    ) -> Self {
        ServerShutdown {
            billing,
            live,
            cluster,
            account_events,
            done: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    pub async fn run(&self) {
        self.done
            .get_or_init(|| async {
                if let Some(cluster) = &self.cluster {
                    cluster.leave();
                }
                self.account_events.close_all();
                tracing::info!("shutting down: settling runtime leases");
                self.billing.shutdown().await;
                tracing::info!("shutting down: flushing live sessions");
                if let Err(e) = self.live.shutdown().await {
                    tracing::error!(error = %e, "a live session could not be flushed");
                }
            })
            .await;
    }
}
