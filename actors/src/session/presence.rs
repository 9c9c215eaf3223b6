//! Presence (y-protocols awareness): which connection may change which state, and how much
//! presence a connection and the whole session may hold.
//!
//! The states themselves live in yrs's [`Awareness`] (it also holds the document); this module
//! decides what reaches it.
//!
//! - **Ownership.** A connection may only set or remove the awareness client ids it introduced
//!   (first come owns it). Entries for ids another connection owns are neither applied nor
//!   relayed, so a viewer cannot rewrite or erase anybody's cursor. A removal (`null`) for an id
//!   nobody owns is dropped too (yrs would keep an entry for it forever).
//! - **Reconnecting tabs.** A stock y-websocket client that reconnects keeps its client id and
//!   announces its state on the new socket, possibly before the server noticed that the old
//!   socket died (that takes up to the ping timeout). Such an announcement is kept as a *claim*:
//!   when the owner leaves, its ids pass to the connection that claimed them and the claimed
//!   state is shown instead of a removal — no flicker, no cursor stuck until the next renewal.
//! - **Other nodes** (cluster mode). Presence relayed from another node is held by a holder
//!   standing for that node (`receive_from_node`): its clients own their ids like connections do,
//!   without the per-connection limits (a node carries many clients), and when the node dies or
//!   leaves, `leave` withdraws them all.
//! - **Bytes.** Every joiner receives every state, so what presence may weigh is bounded:
//!   [`SessionLimits::max_presence_bytes_per_connection`] (a connection going over is closed with
//!   1008) and [`SessionLimits::max_presence_bytes_per_session`] (a new or larger state that does
//!   not fit is not applied and not relayed; the connection stays). Plus at most
//!   [`MAX_AWARENESS_STATES_PER_CONNECTION`] ids per connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use atelier_protocol::ids::ConnectionId;
use atelier_protocol::ysync::{encode_awareness, Frame};
use bytes::Bytes;
use thiserror::Error;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::ClientID;

use crate::limits::SessionLimits;

/// How many awareness client ids one connection may control (a browser tab uses one).
pub(crate) const MAX_AWARENESS_STATES_PER_CONNECTION: usize = 8;

/// yrs keeps an entry (its clock) for every removed state; past this many the awareness is
/// rebuilt from the live states.
const DEAD_STATES_BEFORE_PURGE: usize = 1024;

/// The JSON of a removed state.
const NULL_STATE: &str = "null";

/// Why a connection's awareness update closes it (1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum PresenceError {
    #[error("too many awareness states")]
    TooManyStates,
    #[error("presence too large")]
    TooLarge,
}

/// What one connection holds.
#[derive(Debug, Default)]
struct Holder {
    owned: BTreeSet<u64>,
    /// JSON bytes of its states.
    bytes: usize,
    /// Ids it offered a state for while another connection owned them.
    claimed: BTreeSet<u64>,
}

/// A state offered for an id owned by another connection.
#[derive(Debug, Clone)]
struct Claim {
    from: ConnectionId,
    clock: u32,
    json: Arc<str>,
}

#[derive(Debug, Default)]
pub(crate) struct Presence {
    owners: HashMap<u64, ConnectionId>,
    holders: HashMap<ConnectionId, Holder>,
    /// JSON bytes of every live state.
    sizes: HashMap<u64, usize>,
    total_bytes: usize,
    claims: HashMap<u64, Claim>,
    dead: usize,
    /// Every live state as one frame, kept until presence changes (joiners and query-awareness
    /// get it; `None` inside: there are no states).
    states_frame: Option<Option<Bytes>>,
}

impl Presence {
    /// Applies the part of `update` that `from` may change; returns the frame announcing what
    /// changed (for everyone, the sender included, like y-websocket), if anything did.
    pub(crate) fn receive(
        &mut self,
        awareness: &mut Awareness,
        from: ConnectionId,
        update: AwarenessUpdate,
        limits: &SessionLimits,
    ) -> Result<Option<Bytes>, PresenceError> {
        self.receive_as(awareness, from, update, limits, true)
    }

    /// Applies presence relayed from another node, held by `node` (an id standing for that
    /// node): ownership and the session's bytes apply, the per-connection limits do not.
    pub(crate) fn receive_from_node(
        &mut self,
        awareness: &mut Awareness,
        node: ConnectionId,
        update: AwarenessUpdate,
        limits: &SessionLimits,
    ) -> Option<Bytes> {
        self.receive_as(awareness, node, update, limits, false)
            .ok()
            .flatten()
    }

    /// The ids owned by holders `local` accepts (this node's own connections).
    pub(crate) fn owned_by(&self, local: impl Fn(ConnectionId) -> bool) -> Vec<ClientID> {
        self.owners
            .iter()
            .filter(|(_, owner)| local(**owner))
            .map(|(id, _)| ClientID::new(*id))
            .collect()
    }

    fn receive_as(
        &mut self,
        awareness: &mut Awareness,
        from: ConnectionId,
        update: AwarenessUpdate,
        limits: &SessionLimits,
        per_connection_limits: bool,
    ) -> Result<Option<Bytes>, PresenceError> {
        let holder = self.holders.entry(from).or_default();
        let mut owned = holder.owned.len();
        let mut bytes = holder.bytes;
        let mut total = self.total_bytes;
        let mut accepted = HashMap::new();
        for (client, entry) in update.clients {
            let id = client.get();
            let removal = &*entry.json == NULL_STATE;
            match self.owners.get(&id) {
                Some(owner) if *owner != from => {
                    self.claim(from, id, &entry, limits);
                    continue;
                }
                None if removal => continue,
                None => owned += 1,
                Some(_) => {}
            }
            if !removal {
                let old = self.sizes.get(&id).copied().unwrap_or(0);
                let new = entry.json.len();
                let grown = total.saturating_add(new).saturating_sub(old);
                if new > old && grown > limits.max_presence_bytes_per_session {
                    tracing::info!(connection = %from, "session presence full; state not applied");
                    continue;
                }
                total = grown;
                bytes = bytes.saturating_add(new).saturating_sub(old);
            }
            accepted.insert(client, entry);
        }
        if per_connection_limits && owned > MAX_AWARENESS_STATES_PER_CONNECTION {
            return Err(PresenceError::TooManyStates);
        }
        if per_connection_limits && bytes > limits.max_presence_bytes_per_connection {
            return Err(PresenceError::TooLarge);
        }
        Ok(self.apply(awareness, from, accepted))
    }

    /// Remembers a state offered for an id someone else owns (bounded like owned states).
    fn claim(
        &mut self,
        from: ConnectionId,
        id: u64,
        entry: &AwarenessUpdateEntry,
        limits: &SessionLimits,
    ) {
        let Some(holder) = self.holders.get_mut(&from) else {
            return;
        };
        if &*entry.json == NULL_STATE {
            holder.claimed.remove(&id);
            if self.claims.get(&id).is_some_and(|c| c.from == from) {
                self.claims.remove(&id);
            }
            return;
        }
        let fits = entry.json.len() <= limits.max_presence_bytes_per_connection
            && (holder.claimed.contains(&id)
                || holder.claimed.len() < MAX_AWARENESS_STATES_PER_CONNECTION);
        if !fits {
            return;
        }
        holder.claimed.insert(id);
        let previous = self.claims.insert(
            id,
            Claim {
                from,
                clock: entry.clock,
                json: entry.json.clone(),
            },
        );
        // An id has one claim: the latest. The previous claimant forgets it.
        if let Some(previous) = previous.filter(|p| p.from != from) {
            if let Some(other) = self.holders.get_mut(&previous.from) {
                other.claimed.remove(&id);
            }
        }
    }

    /// Applies accepted entries and updates ownership from what yrs actually changed (it
    /// ignores entries whose clock is not newer).
    fn apply(
        &mut self,
        awareness: &mut Awareness,
        from: ConnectionId,
        accepted: HashMap<ClientID, AwarenessUpdateEntry>,
    ) -> Option<Bytes> {
        if accepted.is_empty() {
            return None;
        }
        let sizes: HashMap<u64, usize> = accepted
            .iter()
            .map(|(client, entry)| (client.get(), entry.json.len()))
            .collect();
        let summary = match awareness.apply_update_summary(AwarenessUpdate { clients: accepted }) {
            Ok(Some(summary)) => summary,
            Ok(None) => return None, // stale clocks: nothing changed
            Err(error) => {
                tracing::debug!(%error, "awareness update not applied");
                return None;
            }
        };
        for client in summary.added.iter().chain(&summary.updated) {
            let id = client.get();
            let size = sizes.get(&id).copied().unwrap_or(0);
            self.set_owner(id, from, size);
        }
        for client in &summary.removed {
            self.release(client.get());
            self.dead += 1;
        }
        let frame = self.changed(awareness, summary.all_changes());
        self.purge_dead(awareness);
        frame
    }

    fn set_owner(&mut self, id: u64, owner: ConnectionId, size: usize) {
        if let Some(previous) = self.owners.insert(id, owner) {
            if previous != owner {
                self.release_from(previous, id);
            }
        }
        let old = self.sizes.insert(id, size).unwrap_or(0);
        self.total_bytes = self.total_bytes.saturating_add(size).saturating_sub(old);
        let holder = self.holders.entry(owner).or_default();
        if !holder.owned.insert(id) {
            holder.bytes = holder.bytes.saturating_sub(old);
        }
        holder.bytes = holder.bytes.saturating_add(size);
        holder.claimed.remove(&id);
    }

    /// Forgets the state of `id` (removed): no owner, no bytes.
    fn release(&mut self, id: u64) {
        if let Some(owner) = self.owners.remove(&id) {
            self.release_from(owner, id);
        }
        let size = self.sizes.remove(&id).unwrap_or(0);
        self.total_bytes = self.total_bytes.saturating_sub(size);
    }

    fn release_from(&mut self, owner: ConnectionId, id: u64) {
        let size = self.sizes.get(&id).copied().unwrap_or(0);
        if let Some(holder) = self.holders.get_mut(&owner) {
            if holder.owned.remove(&id) {
                holder.bytes = holder.bytes.saturating_sub(size);
            }
        }
    }

    /// A connection is gone: the ids it owned pass to whoever claimed them, or their states are
    /// removed. Returns the frame announcing that, if anything changed.
    pub(crate) fn leave(
        &mut self,
        awareness: &mut Awareness,
        id: ConnectionId,
        limits: &SessionLimits,
    ) -> Option<Bytes> {
        let holder = self.holders.remove(&id)?;
        for claimed in &holder.claimed {
            if self.claims.get(claimed).is_some_and(|c| c.from == id) {
                self.claims.remove(claimed);
            }
        }
        let mut changed = Vec::new();
        for client in holder.owned {
            let size = self.sizes.remove(&client).unwrap_or(0);
            self.total_bytes = self.total_bytes.saturating_sub(size);
            self.owners.remove(&client);
            if self.take_over(awareness, client, limits) {
                changed.push(ClientID::new(client));
                continue;
            }
            awareness.remove_state(ClientID::new(client));
            self.dead += 1;
            changed.push(ClientID::new(client));
        }
        let frame = self.changed(awareness, changed);
        self.purge_dead(awareness);
        frame
    }

    /// Gives `client` (whose owner just left) to the connection that claimed it, showing the
    /// claimed state. False when nobody (still within limits) claimed it.
    fn take_over(
        &mut self,
        awareness: &mut Awareness,
        client: u64,
        limits: &SessionLimits,
    ) -> bool {
        let Some(claim) = self.claims.remove(&client) else {
            return false;
        };
        let Some(holder) = self.holders.get_mut(&claim.from) else {
            return false;
        };
        holder.claimed.remove(&client);
        let size = claim.json.len();
        let fits = holder.owned.len() < MAX_AWARENESS_STATES_PER_CONNECTION
            && holder.bytes.saturating_add(size) <= limits.max_presence_bytes_per_connection
            && self.total_bytes.saturating_add(size) <= limits.max_presence_bytes_per_session;
        let current = awareness
            .meta(ClientID::new(client))
            .map_or(0, |(clock, _)| clock);
        if !fits || claim.clock <= current {
            return false;
        }
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(client),
            AwarenessUpdateEntry {
                clock: claim.clock,
                json: claim.json,
            },
        );
        match awareness.apply_update_summary(AwarenessUpdate { clients }) {
            Ok(Some(_)) => {
                self.set_owner(client, claim.from, size);
                true
            }
            _ => false,
        }
    }

    /// Invalidates the cached states and encodes `clients`' current states for everyone.
    fn changed(&mut self, awareness: &Awareness, clients: Vec<ClientID>) -> Option<Bytes> {
        self.states_frame = None;
        if clients.is_empty() {
            return None;
        }
        let update = awareness.update_with_clients(clients).ok()?;
        Some(Bytes::from(
            Frame::Awareness(encode_awareness(&update)).encode(),
        ))
    }

    /// Rebuilds the awareness from its live states once removed ones pile up.
    fn purge_dead(&mut self, awareness: &mut Awareness) {
        if self.dead < DEAD_STATES_BEFORE_PURGE {
            return;
        }
        let Ok(live) = awareness.update() else {
            return;
        };
        let mut fresh = Awareness::new(awareness.doc().clone());
        if fresh.apply_update(live).is_ok() {
            *awareness = fresh;
            self.dead = 0;
        }
    }

    /// Every live state as one awareness frame (`None` if there are none), encoded once per
    /// change.
    pub(crate) fn states_frame(&mut self, awareness: &Awareness) -> Option<Bytes> {
        self.states_frame
            .get_or_insert_with(|| {
                let update = awareness.update().ok()?;
                (!update.clients.is_empty())
                    .then(|| Bytes::from(Frame::Awareness(encode_awareness(&update)).encode()))
            })
            .clone()
    }
}
