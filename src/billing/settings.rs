//! Billing configuration, from `ServeConfig`.

use std::time::Duration;

use super::prices::PriceTable;
use super::MeterSettings;

/// Billing configuration (from `ServeConfig`).
#[derive(Debug, Clone)]
pub struct BillingSettings {
    pub prices: PriceTable,
    pub meter: MeterSettings,
    pub max_prepaid_minutes: u32,
    /// Open leases whose last sign of life is older than this at start-up are settled at their
    /// last checkpoint instead of resumed.
    pub resume_window: Duration,
    /// This node's name as a lease owner (`ATELIER_NODE_ID`, else generated per start; the
    /// cluster's node id in cluster mode).
    pub node_id: String,
    /// Cluster mode: leases of a node silent for `takeover_delay` are taken over by another.
    pub clustered: bool,
    /// How long a lease's owner may go without an ownership heartbeat before another node
    /// takes the lease over (it heartbeats every third of it).
    pub takeover_delay: Duration,
    /// How long a lease whose worker's connection dropped waits for the worker to come back
    /// (to this node or another) before it is settled `worker_lost`: the worker heartbeat
    /// timeout. A silent node's RUNNING leases are taken over only this much after the
    /// takeover delay, so a reconnecting worker adopts them first.
    pub reconnect_grace: Duration,
    /// Millicredits granted at signup (`ATELIER_SIGNUP_CREDITS`, by default an hour of the
    /// cheapest class).
    pub signup_credits: i64,
}

impl BillingSettings {
    pub fn from_config(config: &crate::config::ServeConfig) -> Self {
        let b = &config.billing;
        BillingSettings {
            prices: b.gpu_prices.clone(),
            meter: MeterSettings {
                meter_interval: Duration::from_millis(b.meter_interval_ms),
                checkpoint_interval: Duration::from_secs(b.checkpoint_interval_s),
                idle_timeout: Duration::from_secs(b.lease_idle_timeout_s),
                low_balance_warning: Duration::from_secs(b.low_balance_warning_s),
            },
            max_prepaid_minutes: b.max_prepaid_minutes,
            resume_window: Duration::from_secs(b.lease_resume_window_s),
            node_id: config
                .cluster
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::generate_node_id),
            clustered: config.cluster.redis_url.is_some(),
            takeover_delay: Duration::from_millis(b.lease_takeover_after_ms),
            reconnect_grace: Duration::from_secs(config.jobs.worker_heartbeat_timeout_s),
            signup_credits: config.signup_credits(),
        }
    }
}
