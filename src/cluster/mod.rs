//! Cluster mode: several `atelier serve` nodes on one PostgreSQL and one Redis behave as one
//! server.
//!
//! Every node that has a studio session loaded holds a full replica of its document
//! (`atelier_actors::session::replica`); what one node commits to PostgreSQL it publishes on the
//! session's Redis channel, with its `seq`, to the other nodes holding it. Redis is a fast path,
//! never the source of truth: a lost message is a gap in the `seq`s, repaired from PostgreSQL,
//! and [`heads`] checks the live sessions against the database's head now and then, so even a
//! lost last message is found. When Redis is down every node keeps serving its own clients; when
//! it returns, every live session catches up and re-announces its presence.
//!
//! Layout:
//! - this file: [`ClusterSettings`], [`Cluster`] (the [`Relay`] port for the session actors, and
//!   the status `/readyz` reports), start-up of the tasks below;
//! - [`channels`]: Redis channel and key names under the configured prefix;
//! - [`publisher`]: one task publishing what this node's sessions relay (bounded queue);
//! - [`subscriber`]: one task owning the pub/sub connection — session channels follow the
//!   sessions loaded here, messages go to the registry (account events to the account
//!   channels), reconnects trigger a resync;
//! - [`membership`]: heartbeats, and withdrawing a silent node's presence;
//! - [`heads`]: the periodic check of live sessions against the durable log;
//! - [`rate_limit`]: counters shared by all nodes (signup/login attempts per IP);
//! - [`job_stream`]: work lines in Redis Streams (consumer group, acks, `XAUTOCLAIM`, trim);
//! - [`lease_line`]: runtime leases find a free slot on any node through their class's line;
//! - [`job_routing`]: jobs follow their lease — the durable queue as each node's job stream,
//!   a dead node's queued jobs re-routed, cancellations relayed.

pub mod channels;
pub mod heads;
pub mod job_routing;
pub mod job_stream;
pub mod lease_line;
pub mod membership;
pub mod publisher;
pub mod rate_limit;
pub mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atelier_actors::{BoxFuture, Relay, SessionRegistryHandle};
use atelier_protocol::ids::JobId;
use atelier_protocol::relay::{Envelope, RelayMessage, MAX_NODE_ID_LEN};
use atelier_protocol::SessionId;
use tokio::sync::{mpsc, oneshot};

use self::channels::Channels;
use self::subscriber::Command;
use crate::account_events::AccountEvents;
use crate::db::Db;

/// Metric names of the cluster (the session-side `atelier_cluster_gap_repairs_total` lives in
/// `atelier_actors::telemetry`).
pub mod telemetry {
    /// Histogram: publish → delivery time of relayed document updates, by the sender's clock.
    pub const RELAY_LAG_SECONDS: &str = "atelier_cluster_relay_lag_seconds";
    /// Counter: Redis connections re-established after a loss.
    pub const REDIS_RECONNECTS: &str = "atelier_cluster_redis_reconnects_total";
    /// Counter: relay messages not published (queue full or Redis down).
    pub const RELAY_DROPPED: &str = "atelier_cluster_relay_dropped_total";
    /// Gauge: 1 while this node's Redis connections are up.
    pub const REDIS_UP: &str = "atelier_cluster_redis_up";
    /// Gauge: 1, labelled with `node_id`.
    pub const NODE_INFO: &str = "atelier_node_info";
    /// Gauge: other nodes seen alive.
    pub const PEER_NODES: &str = "atelier_cluster_peer_nodes";
    /// Counter (label `line`: `jobs`, `leases`): entries this node added to a stream.
    pub const STREAM_PUSHED: &str = "atelier_job_stream_pushed_total";
    /// Counter (label `line`): entries this node read from a stream for itself.
    pub const STREAM_CLAIMED: &str = "atelier_job_stream_claimed_total";
    /// Counter (label `line`): entries this node took over from a silent node (`XAUTOCLAIM`,
    /// or a dead node's undelivered entries).
    pub const STREAM_TAKEN_OVER: &str = "atelier_job_stream_taken_over_total";
    /// Counter: queued jobs this node sent on to the node now running their lease.
    pub const STREAM_REROUTED: &str = "atelier_job_stream_rerouted_total";
    /// Counter: stream entries this node acknowledged (their job or lease is done with).
    pub const STREAM_ACKED: &str = "atelier_job_stream_acked_total";

    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_histogram!(
            RELAY_LAG_SECONDS,
            Unit::Seconds,
            "Time from a node publishing a committed update to another node receiving it"
        );
        describe_counter!(REDIS_RECONNECTS, "Redis connections re-established");
        describe_counter!(RELAY_DROPPED, "Relay messages not published");
        describe_gauge!(REDIS_UP, "1 while the Redis connection is up");
        describe_gauge!(NODE_INFO, "This node (label node_id)");
        describe_gauge!(PEER_NODES, "Other cluster nodes seen alive");
        describe_counter!(
            STREAM_PUSHED,
            "Entries this node added to a job or lease stream"
        );
        describe_counter!(STREAM_CLAIMED, "Stream entries this node read for itself");
        describe_counter!(
            STREAM_TAKEN_OVER,
            "Stream entries this node took over from a silent node"
        );
        describe_counter!(
            STREAM_REROUTED,
            "Queued jobs sent on to the node now running their lease"
        );
        describe_counter!(STREAM_ACKED, "Stream entries this node acknowledged");
    }
}

/// Relay messages waiting to be published before new ones are dropped (the others repair).
const PUBLISH_QUEUE: usize = 16_384;

/// What cluster mode needs (from `ServeConfig`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    /// Prefix of every Redis key and channel (several clusters, or test runs, can share a Redis).
    pub prefix: String,
    pub node_id: String,
    /// How often live sessions are checked against the database's head.
    pub head_check_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("ATELIER_REDIS_URL is not a valid Redis URL: {0}")]
    BadUrl(redis::RedisError),
    #[error("ATELIER_NODE_ID must be 1 to {MAX_NODE_ID_LEN} characters of [A-Za-z0-9._-]")]
    BadNodeId,
}

/// The cluster as the rest of the server sees it: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: String,
    channels: Channels,
    client: redis::Client,
    outbound: mpsc::Sender<(String, Vec<u8>)>,
    commands: mpsc::UnboundedSender<Command>,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    /// Messages published, for tests and metrics of the publisher.
    published: AtomicU64,
    /// Fault injection for tests (`ATELIER_CLUSTER_DROP_RELAY_EVERY`): every n-th document
    /// update batch is not published, as if Redis had lost it.
    drop_every: u64,
    /// Which other nodes are alive (set by [`Cluster::start`]).
    membership: OnceLock<membership::Membership>,
    /// Where relayed job cancellations go (the job routing task, once started).
    job_cancels: OnceLock<mpsc::Sender<(JobId, Option<String>)>>,
}

/// The receiving ends of the cluster's queues, handed to [`Cluster::start`].
pub struct ClusterTasks {
    outbound: mpsc::Receiver<(String, Vec<u8>)>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl Cluster {
    /// Validates the settings; nothing connects until [`Cluster::start`].
    pub fn new(
        settings: &ClusterSettings,
        drop_every: u64,
    ) -> Result<(Self, ClusterTasks), ClusterError> {
        let valid_id = !settings.node_id.is_empty()
            && settings.node_id.len() <= MAX_NODE_ID_LEN
            && settings
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_id {
            return Err(ClusterError::BadNodeId);
        }
        let client =
            redis::Client::open(settings.redis_url.as_str()).map_err(ClusterError::BadUrl)?;
        let (outbound_tx, outbound) = mpsc::channel(PUBLISH_QUEUE);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let cluster = Cluster {
            shared: Arc::new(Shared {
                node_id: settings.node_id.clone(),
                channels: Channels::new(&settings.prefix),
                client,
                outbound: outbound_tx,
                commands: commands_tx,
                publisher_up: AtomicBool::new(false),
                subscriber_up: AtomicBool::new(false),
                published: AtomicU64::new(0),
                drop_every,
                membership: OnceLock::new(),
                job_cancels: OnceLock::new(),
            }),
        };
        Ok((cluster, ClusterTasks { outbound, commands }))
    }

    /// Starts the publisher, the subscriber, heartbeats and head checks.
    pub fn start(
        &self,
        tasks: ClusterTasks,
        registry: SessionRegistryHandle,
        account_events: AccountEvents,
        db: Db,
        head_check_interval: Duration,
    ) {
        metrics::gauge!(telemetry::NODE_INFO, "node_id" => self.shared.node_id.clone()).set(1.0);
        let membership = membership::Membership::new(registry.clone());
        let _ = self.shared.membership.set(membership.clone());
        tokio::spawn(publisher::run(self.clone(), tasks.outbound));
        tokio::spawn(subscriber::run(
            self.clone(),
            tasks.commands,
            registry.clone(),
            account_events,
            membership.clone(),
        ));
        tokio::spawn(membership::run(self.clone(), membership));
        tokio::spawn(heads::run(registry, db, head_check_interval));
    }

    /// Whether `node` is this node or another node heard from lately.
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.shared.node_id
            || self
                .shared
                .membership
                .get()
                .is_some_and(|membership| membership.is_alive(node))
    }

    /// Relayed job cancellations go to `sink` (bounded: a flood is dropped, and counted).
    pub(crate) fn attach_job_cancels(&self, sink: mpsc::Sender<(JobId, Option<String>)>) {
        let _ = self.shared.job_cancels.set(sink);
    }

    /// A job cancellation from another node.
    fn deliver_cancel(&self, job: JobId, reason: Option<String>) {
        if let Some(sink) = self.shared.job_cancels.get() {
            if sink.try_send((job, reason)).is_err() {
                metrics::counter!(telemetry::RELAY_DROPPED).increment(1);
            }
        }
    }

    /// Tells the other nodes this one is shutting down (its clients' presence is gone now).
    pub fn leave(&self) {
        self.send(RelayMessage::Leaving);
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.shared.client
    }

    pub(crate) fn channels(&self) -> &Channels {
        &self.shared.channels
    }

    /// Both Redis connections are up (else `/readyz` says `degraded`).
    pub fn redis_up(&self) -> bool {
        self.shared.publisher_up.load(Ordering::Relaxed)
            && self.shared.subscriber_up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_publisher_up(&self, up: bool) {
        self.shared.publisher_up.store(up, Ordering::Relaxed);
        self.update_up_gauge();
    }

    pub(crate) fn set_subscriber_up(&self, up: bool) {
        self.shared.subscriber_up.store(up, Ordering::Relaxed);
        self.update_up_gauge();
    }

    fn update_up_gauge(&self) {
        metrics::gauge!(telemetry::REDIS_UP).set(if self.redis_up() { 1.0 } else { 0.0 });
    }

    /// Queues a message for the other nodes (dropped, and counted, when the queue is full).
    pub fn send(&self, message: RelayMessage) {
        if let RelayMessage::Updates { .. } = message {
            let n = self.shared.published.fetch_add(1, Ordering::Relaxed) + 1;
            if self.shared.drop_every > 0 && n % self.shared.drop_every == 0 {
                metrics::counter!(telemetry::RELAY_DROPPED).increment(1);
                return;
            }
        }
        let channel = match message.session() {
            Some(session) => self.shared.channels.session(session),
            None => self.shared.channels.control().to_owned(),
        };
        let envelope = Envelope {
            node: self.shared.node_id.clone(),
            sent_at_ms: now_ms(),
            message,
        };
        if self
            .shared
            .outbound
            .try_send((channel, envelope.encode()))
            .is_err()
        {
            metrics::counter!(telemetry::RELAY_DROPPED).increment(1);
        }
    }
}

impl Relay for Cluster {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, message: RelayMessage) {
        self.send(message);
    }

    fn subscribe(&self, session: SessionId) -> BoxFuture<'static, ()> {
        let (done, wait) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Subscribe(session, done))
            .is_err()
        {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            // An error only means the subscriber is gone (shutdown): nothing to wait for.
            let _ = wait.await;
        })
    }

    fn unsubscribe(&self, session: SessionId) {
        let _ = self.shared.commands.send(Command::Unsubscribe(session));
    }
}

/// Wall-clock milliseconds since the Unix epoch (relay lag is measured across machines).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh node id: the host name's first label plus a random suffix, so logs stay readable.
pub fn generate_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|h| {
            h.trim().split('.').next().map(|s| {
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(40)
                    .collect::<String>()
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    format!("{host}-{suffix}")
}
