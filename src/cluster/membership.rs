//! Which other nodes are alive, from their heartbeats on the control channel.
//!
//! Every node publishes a heartbeat each [`HEARTBEAT`]. A node not heard from for [`DEAD_AFTER`]
//! — killed, partitioned, or its Redis connection gone — is declared gone: the presence of its
//! clients disappears from every live session here (their sockets died with it, or they will
//! reconnect and announce themselves again). A node shutting down says so at once (`Leaving`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atelier_actors::SessionRegistryHandle;
use atelier_protocol::relay::RelayMessage;
use tokio::time::Instant;

use super::{telemetry, Cluster};

/// How often this node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which another node counts as gone.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// Last time each other node was heard from. A std `Mutex`: short map operations, never held
/// across an `.await`.
#[derive(Clone)]
pub struct Membership {
    peers: Arc<Mutex<HashMap<String, Instant>>>,
    registry: SessionRegistryHandle,
}

impl Membership {
    pub fn new(registry: SessionRegistryHandle) -> Self {
        Self {
            peers: Arc::new(Mutex::new(HashMap::new())),
            registry,
        }
    }

    /// Any message from `node` shows it is alive.
    pub fn seen(&self, node: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        match peers.get_mut(node) {
            Some(at) => *at = Instant::now(),
            None => {
                tracing::info!(%node, "cluster node joined");
                peers.insert(node.to_owned(), Instant::now());
                metrics::gauge!(telemetry::PEER_NODES).set(peers.len() as f64);
            }
        }
    }

    /// Whether `node` was heard from within [`DEAD_AFTER`].
    pub fn is_alive(&self, node: &str) -> bool {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.get(node).is_some_and(|at| at.elapsed() <= DEAD_AFTER)
    }

    /// `node` announced its shutdown.
    pub fn left(&self, node: &str) {
        let removed = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let removed = peers.remove(node).is_some();
            metrics::gauge!(telemetry::PEER_NODES).set(peers.len() as f64);
            removed
        };
        tracing::info!(%node, "cluster node left");
        if removed {
            self.registry.node_gone(node);
        }
    }

    /// Declares gone every node silent for [`DEAD_AFTER`].
    fn expire(&self) {
        let dead: Vec<String> = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, at)| at.elapsed() > DEAD_AFTER)
                .map(|(node, _)| node.clone())
                .collect();
            for node in &dead {
                peers.remove(node);
            }
            metrics::gauge!(telemetry::PEER_NODES).set(peers.len() as f64);
            dead
        };
        for node in dead {
            tracing::warn!(%node, "cluster node silent; withdrawing its clients' presence");
            self.registry.node_gone(&node);
        }
    }
}

/// Publishes heartbeats and expires silent nodes until the process ends.
pub async fn run(cluster: Cluster, membership: Membership) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        cluster.send(RelayMessage::Heartbeat);
        membership.expire();
    }
}
