//! The account-wide live channel (`GET /me/events`): what changes an account's dashboard — a
//! session shared with it or taken away, its role changed, an invitation by email received or
//! withdrawn — told to every stream the account has open, on every node.
//!
//! [`AccountEvents`] owns the open streams of this node (one bounded queue each, at most
//! [`MAX_STREAMS_PER_ACCOUNT`] per account: a new one closes the account's oldest, since a
//! closed tab is noticed only at the next write, and reloading a page must never lock anyone
//! out). [`AccountEvents::publish`] delivers here and, in a
//! cluster, through the Redis relay's control channel to the other nodes, which deliver to the
//! streams they hold ([`AccountEvents::deliver_here`]). Events are hints, not a log: a stream
//! that falls [`STREAM_QUEUE`] events behind is closed, and a client that (re)connects reads
//! its lists again, so nothing it missed meanwhile stays missing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use atelier_protocol::ids::{AccountId, InvitationId, SessionId};
use atelier_protocol::relay::RelayMessage;
use atelier_protocol::Role;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::cluster::Cluster;

/// Streams one account may have open at once on one node (tabs, devices); one more closes the
/// oldest.
pub const MAX_STREAMS_PER_ACCOUNT: usize = 8;
/// Events queued for one stream before it is closed as too slow (it reconnects and refreshes).
pub const STREAM_QUEUE: usize = 64;

/// Metric names.
pub mod telemetry {
    /// Gauge: open `/me/events` streams on this node.
    pub const STREAMS: &str = "atelier_account_event_streams";
    /// Counter: events delivered to streams on this node.
    pub const DELIVERED: &str = "atelier_account_events_delivered_total";
    /// Counter: streams closed because they fell behind.
    pub const LAGGED: &str = "atelier_account_event_streams_lagged_total";
    /// Counter: streams closed to make room for a newer one of the same account.
    pub const REPLACED: &str = "atelier_account_event_streams_replaced_total";

    pub fn describe() {
        use metrics::{describe_counter, describe_gauge};
        describe_gauge!(STREAMS, "Open /me/events streams on this node");
        describe_counter!(DELIVERED, "Account events delivered to open streams");
        describe_counter!(
            LAGGED,
            "Account event streams closed because they fell behind"
        );
        describe_counter!(
            REPLACED,
            "Account event streams closed for a newer one of the same account"
        );
    }
}

/// One event of the account channel, sent as the `data:` of a server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum AccountEvent {
    /// Sent first on every (re)connection: read the lists now, events follow from here.
    #[serde(rename = "ready")]
    Ready,
    /// The account became a member of a session.
    #[serde(rename = "membership.added")]
    MembershipAdded { session_id: SessionId, role: Role },
    /// The account's role in a session changed.
    #[serde(rename = "membership.changed")]
    MembershipChanged { session_id: SessionId, role: Role },
    /// The account is no longer a member (removed, or the session was deleted).
    #[serde(rename = "membership.removed")]
    MembershipRemoved { session_id: SessionId },
    /// An invitation by email to the account's address is waiting (`GET /me/invitations`).
    #[serde(rename = "invitation.received")]
    InvitationReceived {
        invitation_id: InvitationId,
        session_id: SessionId,
    },
    /// An invitation to the account's address is no longer open (revoked, declined, replaced).
    #[serde(rename = "invitation.withdrawn")]
    InvitationWithdrawn {
        invitation_id: InvitationId,
        session_id: SessionId,
    },
}

/// A stream's queue carries events already serialized: one encoding for all of an account's
/// streams.
pub type EncodedEvent = Arc<str>;

/// The account channels of this node: a cheap-to-clone handle.
#[derive(Clone)]
pub struct AccountEvents {
    shared: Arc<Shared>,
}

struct Shared {
    /// Open streams by account. A std `Mutex`: it is held only to push to or prune a short
    /// list, never across an `.await`.
    streams: Mutex<HashMap<AccountId, Vec<Registered>>>,
    next_id: AtomicU64,
    cluster: Option<Cluster>,
}

struct Registered {
    id: u64,
    queue: mpsc::Sender<EncodedEvent>,
}

/// One open stream: its queue, and its registration, withdrawn when this is dropped.
pub struct Subscription {
    pub events: mpsc::Receiver<EncodedEvent>,
    _registration: Registration,
}

struct Registration {
    events: AccountEvents,
    account: AccountId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.events.lock();
        if let Some(list) = streams.get_mut(&self.account) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                streams.remove(&self.account);
            }
        }
        drop(streams);
        metrics::gauge!(telemetry::STREAMS).decrement(1.0);
    }
}

impl AccountEvents {
    /// `cluster`: where events for the other nodes go (none on a single node).
    pub fn new(cluster: Option<Cluster>) -> Self {
        Self {
            shared: Arc::new(Shared {
                streams: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                cluster,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AccountId, Vec<Registered>>> {
        // A panic while holding the lock cannot leave the map half-changed (each change is
        // one push or retain), so a poisoned lock is still usable.
        self.shared
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a stream for the account (closing its oldest when it has
    /// [`MAX_STREAMS_PER_ACCOUNT`] already); its first event is [`AccountEvent::Ready`].
    pub fn subscribe(&self, account: AccountId) -> Subscription {
        let (queue, events) = mpsc::channel(STREAM_QUEUE);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut streams = self.lock();
            let list = streams.entry(account).or_default();
            list.retain(|s| !s.queue.is_closed());
            if list.len() >= MAX_STREAMS_PER_ACCOUNT {
                // Oldest first: dropping its queue's sender ends its response.
                let excess = list.len() + 1 - MAX_STREAMS_PER_ACCOUNT;
                list.drain(..excess);
                metrics::counter!(telemetry::REPLACED).increment(excess as u64);
            }
            if let Some(ready) = encode(&AccountEvent::Ready) {
                // The queue is new and empty: this cannot fail.
                let _ = queue.try_send(ready);
            }
            list.push(Registered { id, queue });
        }
        metrics::gauge!(telemetry::STREAMS).increment(1.0);
        Subscription {
            events,
            _registration: Registration {
                events: self.clone(),
                account,
                id,
            },
        }
    }

    /// Tells every stream of the account, on this node and (in a cluster) on the others.
    pub fn publish(&self, account: AccountId, event: &AccountEvent) {
        let Some(json) = encode(event) else { return };
        if let Some(cluster) = &self.shared.cluster {
            cluster.send(RelayMessage::AccountEvent {
                account,
                json: json.to_string(),
            });
        }
        self.deliver(account, json);
    }

    /// An event relayed by another node: checked (it becomes a line of a stream, so it must be
    /// one of ours, re-encoded here) and delivered to this node's streams of the account.
    pub fn deliver_here(&self, account: AccountId, json: &str) {
        match serde_json::from_str::<AccountEvent>(json) {
            Ok(event) => {
                if let Some(json) = encode(&event) {
                    self.deliver(account, json);
                }
            }
            Err(error) => tracing::warn!(%error, "relayed account event not understood"),
        }
    }

    fn deliver(&self, account: AccountId, json: EncodedEvent) {
        let mut streams = self.lock();
        let Some(list) = streams.get_mut(&account) else {
            return;
        };
        list.retain(|stream| match stream.queue.try_send(json.clone()) {
            Ok(()) => {
                metrics::counter!(telemetry::DELIVERED).increment(1);
                true
            }
            // Too far behind: closing it makes the client reconnect and read its lists again.
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(telemetry::LAGGED).increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            streams.remove(&account);
        }
    }

    /// Ends every stream (shutdown): their queues close, so their responses finish and do not
    /// hold the graceful shutdown up.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// Streams open on this node for the account (tests, metrics).
    pub fn open_streams(&self, account: AccountId) -> usize {
        self.lock().get(&account).map_or(0, Vec::len)
    }
}

fn encode(event: &AccountEvent) -> Option<EncodedEvent> {
    match serde_json::to_string(event) {
        Ok(json) => Some(json.into()),
        Err(error) => {
            tracing::error!(%error, "account event not serializable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn events_reach_every_stream_of_the_account_only() {
        let hub = AccountEvents::new(None);
        let (a, b) = (AccountId::new_random(), AccountId::new_random());
        let mut a1 = hub.subscribe(a);
        let mut a2 = hub.subscribe(a);
        let mut b1 = hub.subscribe(b);
        for s in [&mut a1, &mut a2, &mut b1] {
            assert_eq!(&*s.events.recv().await.unwrap(), r#"{"type":"ready"}"#);
        }
        let session_id = SessionId::new_random();
        hub.publish(a, &AccountEvent::MembershipRemoved { session_id });
        for s in [&mut a1, &mut a2] {
            let got: AccountEvent = serde_json::from_str(&s.events.recv().await.unwrap()).unwrap();
            assert_eq!(got, AccountEvent::MembershipRemoved { session_id });
        }
        assert!(b1.events.try_recv().is_err());
        drop(a1);
        assert_eq!(hub.open_streams(a), 1);
    }

    #[tokio::test]
    async fn streams_are_capped_per_account_and_slow_ones_closed() {
        let hub = AccountEvents::new(None);
        let a = AccountId::new_random();
        let mut oldest = hub.subscribe(a);
        let mut open: Vec<Subscription> = (1..MAX_STREAMS_PER_ACCOUNT)
            .map(|_| hub.subscribe(a))
            .collect();
        assert_eq!(hub.open_streams(a), MAX_STREAMS_PER_ACCOUNT);
        // One more closes the oldest (after what it had queued).
        open.push(hub.subscribe(a));
        assert_eq!(hub.open_streams(a), MAX_STREAMS_PER_ACCOUNT);
        assert!(oldest.events.recv().await.is_some());
        assert!(oldest.events.recv().await.is_none());
        let session_id = SessionId::new_random();
        for _ in 0..STREAM_QUEUE {
            hub.publish(a, &AccountEvent::MembershipRemoved { session_id });
        }
        // Every stream still holds `ready` plus STREAM_QUEUE - 1 events: the next overflows.
        assert_eq!(hub.open_streams(a), 0);
        let first = &mut open[0];
        let mut seen = 0;
        while first.events.recv().await.is_some() {
            seen += 1;
        }
        assert_eq!(seen, STREAM_QUEUE);
    }

    #[test]
    fn relayed_garbage_is_dropped() {
        let hub = AccountEvents::new(None);
        let a = AccountId::new_random();
        let mut s = hub.subscribe(a);
        let _ = s.events.try_recv();
        hub.deliver_here(a, "{\"type\":\"ready\"}\n\ndata: injected");
        hub.deliver_here(a, r#"{"type":"nope"}"#);
        assert!(s.events.try_recv().is_err());
        hub.deliver_here(a, r#"{ "type" : "ready" }"#);
        assert_eq!(&*s.events.try_recv().unwrap(), r#"{"type":"ready"}"#);
    }
}
