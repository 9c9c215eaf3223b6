//! Lease ownership, the node's side: every third of the takeover delay this node refreshes the
//! ownership heartbeat of the leases it meters, and in a cluster claims those of nodes that
//! went silent ([`Billing::take_over_stale`]). The SQL (claims, epochs, the conditional writes)
//! is in `crate::db::leases`; what a fenced meter does is in `atelier_actors::meter`.

use std::time::Duration;

use super::Billing;

/// Metric names of lease ownership.
pub mod telemetry {
    /// Counter: leases this node took over from a silent node.
    pub const LEASE_TAKEOVERS: &str = "atelier_lease_takeovers_total";
    /// Counter: leases this node stopped metering because another node claimed them (a write
    /// refused at a stale epoch; nothing charged).
    pub const LEASES_FENCED: &str = "atelier_lease_fenced_total";
    /// Gauge: open leases whose ownership heartbeat this node refreshed last time.
    pub const LEASES_OWNED: &str = "atelier_leases_owned";
    /// Counter: runtime leases this node adopted with their reconnected worker.
    pub const LEASE_ADOPTIONS: &str = "atelier_lease_adoptions_total";

    pub fn describe() {
        use metrics::{describe_counter, describe_gauge};
        describe_counter!(
            LEASE_TAKEOVERS,
            "Runtime leases taken over from a silent node"
        );
        describe_counter!(
            LEASES_FENCED,
            "Runtime leases this node stopped metering because another node claimed them"
        );
        describe_gauge!(LEASES_OWNED, "Open runtime leases this node owns");
        describe_counter!(
            LEASE_ADOPTIONS,
            "Runtime leases adopted (claimed at a new epoch) with their reconnected worker"
        );
    }
}

/// The fastest heartbeat, whatever the takeover delay.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Heartbeats this node's leases (and in a cluster takes over those of silent nodes) until the
/// process ends. A failed round is logged and retried at the next tick.
pub async fn run(billing: Billing) {
    let every = (billing.shared.settings.takeover_delay / 3).max(MIN_HEARTBEAT);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match billing.db().heartbeat_owned_leases(billing.node_id()).await {
            Ok(owned) => metrics::gauge!(telemetry::LEASES_OWNED).set(owned as f64),
            Err(error) => {
                tracing::warn!(%error, "could not refresh the ownership of this node's leases")
            }
        }
        if billing.shared.settings.clustered {
            if let Err(error) = billing.take_over_stale().await {
                tracing::warn!(%error, "could not take over the leases of silent nodes");
            }
        }
    }
}

impl Billing {
    /// Starts the ownership heartbeat (and cluster takeovers) on the current runtime.
    pub fn start_ownership(&self) {
        tokio::spawn(run(self.clone()));
    }
}
