//! The participants of a session and how frames reach them.

use std::collections::BTreeMap;

use atelier_protocol::events::{ParticipantInfo, StudioEvent};
use atelier_protocol::ids::{AccountId, ConnectionId, ShareLinkId};
use atelier_protocol::ysync::Frame;
use atelier_protocol::Role;
use bytes::Bytes;

use super::sync::Step2Answer;
use crate::admission::Admission;
use crate::outbound::{Outbox, QueueFull};

/// Who is behind a connection, as authenticated by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A signed-in account (bearer token or cookie).
    Account(AccountId),
    /// Someone holding a share link.
    ShareLink(ShareLinkId),
}

/// What the server knows about a connecting participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub identity: Identity,
    /// Shown to the others in presence events.
    pub name: String,
    pub role: Role,
    /// Asked for studio events (`?events=1`): gets types 100/101; stock clients never do.
    pub wants_events: bool,
    /// Its place in the connection caps, and what kicks look for (untracked by default).
    pub admission: Admission,
}

impl Participant {
    pub fn account_id(&self) -> Option<AccountId> {
        match self.identity {
            Identity::Account(id) => Some(id),
            Identity::ShareLink(_) => None,
        }
    }

    pub fn share_link_id(&self) -> Option<ShareLinkId> {
        match self.identity {
            Identity::ShareLink(id) => Some(id),
            Identity::Account(_) => None,
        }
    }
}

/// One connection in the session.
pub(crate) struct Peer {
    pub(crate) outbox: Outbox,
    pub(crate) participant: Participant,
    /// Whether a sync step 2 for this connection is being encoded (and which step 1 came in
    /// meanwhile): at most one encoding per connection at a time.
    pub(crate) step2: Step2Answer,
    /// The document's generation when it joined: any full state encoded since then, plus the
    /// updates sent to it, is the whole document (see `doc::DocCache`).
    pub(crate) joined_at: u64,
    /// Frames held back until `session.hello` has been sent (events clients get it first), and
    /// what they count against the outbound budget.
    held: Option<Held>,
}

#[derive(Default)]
struct Held {
    frames: Vec<Bytes>,
    charge: usize,
}

impl Peer {
    pub(crate) fn info(&self, id: ConnectionId) -> ParticipantInfo {
        ParticipantInfo {
            connection_id: id,
            account_id: self.participant.account_id(),
            name: self.participant.name.clone(),
            role: self.participant.role,
        }
    }

    fn send(&mut self, bytes: Bytes) -> Result<(), QueueFull> {
        match &mut self.held {
            // Held frames count against the same budget as queued ones.
            Some(held) => {
                let charge = self.outbox.charge(bytes.len());
                if !self
                    .outbox
                    .fits(held.frames.len() + 1, held.charge.saturating_add(charge))
                {
                    return Err(QueueFull);
                }
                held.frames.push(bytes);
                held.charge = held.charge.saturating_add(charge);
                Ok(())
            }
            None => self.outbox.try_send(bytes),
        }
    }
}

/// All connections of a session, plus the ones found too slow during the current handler (they
/// are removed by the session afterwards, because removal itself broadcasts).
#[derive(Default)]
pub(crate) struct Peers {
    peers: BTreeMap<ConnectionId, Peer>,
    slow: Vec<ConnectionId>,
}

impl Peers {
    pub(crate) fn insert(&mut self, id: ConnectionId, outbox: Outbox, participant: Participant) {
        let held = participant.wants_events.then(Held::default);
        self.peers.insert(
            id,
            Peer {
                outbox,
                participant,
                step2: Step2Answer::default(),
                joined_at: 0,
                held,
            },
        );
    }

    pub(crate) fn remove(&mut self, id: ConnectionId) -> Option<Peer> {
        self.peers.remove(&id)
    }

    pub(crate) fn get(&self, id: ConnectionId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ConnectionId) -> Option<&mut Peer> {
        self.peers.get_mut(&id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn ids(&self) -> Vec<ConnectionId> {
        self.peers.keys().copied().collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnectionId, &Peer)> {
        self.peers.iter().map(|(id, peer)| (*id, peer))
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (ConnectionId, Peer)> {
        self.slow.clear();
        std::mem::take(&mut self.peers).into_iter()
    }

    /// Connections found too slow since the last call.
    pub(crate) fn take_slow(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.slow)
    }

    /// Sends to one connection.
    pub(crate) fn send_to(&mut self, id: ConnectionId, bytes: Bytes) {
        if let Some(peer) = self.peers.get_mut(&id) {
            if peer.send(bytes).is_err() {
                self.slow.push(id);
            }
        }
    }

    /// Encodes once, sends to one connection.
    pub(crate) fn send_frame(&mut self, id: ConnectionId, frame: &Frame) {
        self.send_to(id, Bytes::from(frame.encode()));
    }

    /// Sends to every connection accepted by `filter`.
    pub(crate) fn broadcast(
        &mut self,
        bytes: &Bytes,
        filter: impl Fn(ConnectionId, &Peer) -> bool,
    ) {
        for (id, peer) in self.peers.iter_mut() {
            if filter(*id, peer) && peer.send(bytes.clone()).is_err() {
                self.slow.push(*id);
            }
        }
    }

    /// Sends a studio event to every events-enabled connection accepted by `filter`.
    pub(crate) fn broadcast_event(
        &mut self,
        event: &StudioEvent,
        filter: impl Fn(ConnectionId, &Peer) -> bool,
    ) {
        if !self.peers.values().any(|p| p.participant.wants_events) {
            return;
        }
        let Some(bytes) = encode_event(event) else {
            return;
        };
        self.broadcast(&bytes, |id, peer| {
            peer.participant.wants_events && filter(id, peer)
        });
    }

    /// Sends a studio event to one connection, if it wants events.
    pub(crate) fn send_event(&mut self, id: ConnectionId, event: &StudioEvent) {
        let wants = self
            .peers
            .get(&id)
            .is_some_and(|p| p.participant.wants_events);
        if let Some(bytes) = wants.then(|| encode_event(event)).flatten() {
            self.send_to(id, bytes);
        }
    }

    /// Sends `session.hello` to a connection, then everything held back for it.
    pub(crate) fn release_with_hello(&mut self, id: ConnectionId, hello: &StudioEvent) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let held = peer.held.take().unwrap_or_default();
        let hello = encode_event(hello).into_iter();
        for bytes in hello.chain(held.frames) {
            if peer.outbox.try_send(bytes).is_err() {
                self.slow.push(id);
                return;
            }
        }
    }
}

fn encode_event(event: &StudioEvent) -> Option<Bytes> {
    match event.to_frame() {
        Ok(frame) => Some(Bytes::from(frame.encode())),
        Err(error) => {
            tracing::error!(%error, kind = event.kind(), "could not serialize studio event");
            None
        }
    }
}
