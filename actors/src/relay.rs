//! The [`Relay`] port: how live sessions reach the same sessions on the other nodes of a cluster.
//!
//! A single node uses [`NoRelay`]. In a cluster (`src/cluster/`, over Redis) every node that has
//! a session loaded subscribes to that session's channel; what one node's session commits,
//! changes or announces is published there and delivered by the registry to the other nodes'
//! actors ([`crate::SessionRegistryHandle::deliver`]). Publishing never blocks and never fails
//! the caller: a relay that is down loses messages, which is safe because every document update
//! carries its `seq` and a node repairs gaps from the database (see `session::replica`).

use atelier_protocol::relay::RelayMessage;
use atelier_protocol::SessionId;

use crate::store::BoxFuture;

/// Messages to and subscriptions on the other nodes.
pub trait Relay: Send + Sync + 'static {
    /// Whether other nodes may hold this node's sessions (cluster mode). A single node skips all
    /// relay work, including the periodic checks against the database.
    fn is_clustered(&self) -> bool;

    /// Sends `message` to the other nodes; fire-and-forget (bounded; dropped when the relay is
    /// down or backed up, and counted).
    fn publish(&self, message: RelayMessage);

    /// Starts receiving the session's messages. Resolves once the subscription is active (so a
    /// load that follows it cannot miss an update committed in between), or at once when the
    /// relay is down (the node then catches up from the database when it returns).
    fn subscribe(&self, session: SessionId) -> BoxFuture<'static, ()>;

    /// Stops receiving the session's messages (it unloaded here).
    fn unsubscribe(&self, session: SessionId);
}

/// A single node: nothing to relay.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRelay;

impl Relay for NoRelay {
    fn is_clustered(&self) -> bool {
        false
    }

    fn publish(&self, _message: RelayMessage) {}

    fn subscribe(&self, _session: SessionId) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn unsubscribe(&self, _session: SessionId) {}
}
