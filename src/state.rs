//! Shared application state: a cheap-to-clone bundle of handles given to every handler.

use std::sync::Arc;

use atelier_actors::SessionRegistryHandle;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::rate_limit::AuthRateLimit;
use crate::billing::Billing;
use crate::config::ServeConfig;
use crate::db::Db;
use crate::storage::Blobs;

pub struct AppState {
    pub db: Db,
    pub blobs: Blobs,
    pub config: Arc<ServeConfig>,
    pub auth_rate_limit: AuthRateLimit,
    /// Each API key's request budget.
    pub key_rate_limit: crate::auth::key_rate_limit::KeyRateLimit,
    /// Job webhooks (validation at submission; delivery runs in the background).
    pub webhooks: crate::webhooks::Webhooks,
    pub metrics: PrometheusHandle,
    /// Live studio sessions (one actor each).
    pub live: SessionRegistryHandle,
    /// Credits, Pro runtime leases and their meters.
    pub billing: Billing,
    /// Credit packs and Stripe Checkout.
    pub checkout: crate::billing::checkout::Checkout,
    /// The queue, unfinished jobs and connected workers.
    pub jobs: crate::jobs::JobService,
    /// The version history of session documents.
    pub versions: crate::versions::Versions,
    /// The node types jobs may use (the models directory's manifests).
    pub catalog: Arc<crate::inference::ModelCatalog>,
    /// The other nodes (cluster mode), `None` on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Cluster mode: the job streams (jobs follow their lease to the node running it).
    pub job_routing: Option<crate::cluster::job_routing::JobRouting>,
    /// The account-wide live channels (`GET /me/events`) open on this node.
    pub account_events: crate::account_events::AccountEvents,
    /// Emails (invitations) through the SMTP relay, when one is configured.
    pub mailer: crate::mail::Mailer,
    /// Base of the links the server hands out: ATELIER_PUBLIC_URL, else the address listened on.
    pub public_url: String,
    /// One permit per export being built (`ATELIER_MAX_CONCURRENT_EXPORTS`).
    pub exports: Arc<tokio::sync::Semaphore>,
}
