//! Typed configuration: every flag is also an `ATELIER_*` environment variable.
//!
//! The doc comment of each field is the configuration reference (`atelier serve --help`
//! prints it); the README's table is generated from the same words.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "atelier",
    version,
    about = "A server for collaborative AI studios"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP + WebSocket server.
    Serve(Box<ServeConfig>),
    /// Run a worker host that connects to a server and takes its jobs.
    Worker(WorkerConfig),
    /// Administration: `create-admin`, `set-role`, `grant-credits`, `create-worker-token`,
    /// `revoke-worker-token` (reading the same database settings as `serve`).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://path` or `postgres://user@host/db`. Missing SQLite files are created.
    #[arg(
        long,
        env = "ATELIER_DATABASE_URL",
        default_value = "sqlite://./data/atelier.db"
    )]
    pub database_url: String,

    /// Maximum open database connections.
    #[arg(long, env = "ATELIER_DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on. Port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "ATELIER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Object storage: `file://path`, `memory://`, or `s3://bucket/prefix` (credentials and region
    /// from the standard AWS_* variables).
    #[arg(
        long,
        env = "ATELIER_STORAGE_URL",
        default_value = "file://./data/objects"
    )]
    pub storage_url: String,

    #[command(flatten)]
    pub cluster: ClusterConfig,

    /// Log format on stderr.
    #[arg(long, env = "ATELIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Largest accepted upload, in bytes.
    #[arg(long, env = "ATELIER_MAX_UPLOAD_BYTES", default_value_t = 25 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_upload_bytes: u64,

    /// Media storage quota per account, in bytes.
    #[arg(long, env = "ATELIER_STORAGE_QUOTA_BYTES", default_value_t = 1024 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub storage_quota_bytes: u64,

    /// Exports (`GET /me/export`) built at once, server-wide; more are refused with 429.
    #[arg(long, env = "ATELIER_MAX_CONCURRENT_EXPORTS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_exports: u32,

    /// Days an account's API requests stay in its usage log (`GET /me/usage`); older entries
    /// are purged in the background.
    #[arg(long, env = "ATELIER_USAGE_LOG_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub usage_log_retention_days: u32,

    /// Largest accepted JSON request body, in bytes.
    #[arg(long, env = "ATELIER_MAX_JSON_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(64..))]
    pub max_json_bytes: u64,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names the
    /// client, e.g. the load balancer in front of a cluster. Unset: the peer is the client.
    #[arg(long, env = "ATELIER_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::http::client_ip::TrustedProxies,

    /// Signup and login attempts allowed per client IP per minute (429 beyond it).
    #[arg(long, env = "ATELIER_AUTH_RATE_PER_MINUTE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_rate_per_minute: u32,

    /// Requests each API key may make per minute (429 with `Retry-After` beyond it).
    #[arg(long, env = "ATELIER_API_KEY_RATE_PER_MINUTE", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_key_rate_per_minute: u32,

    /// Starter credits (millicredits) granted to every new account. Unset: about an hour of
    /// the cheapest class of `--gpu-prices` (6000 with the default `cpu=100`); 0 grants none.
    #[arg(long, env = "ATELIER_SIGNUP_CREDITS",
          value_parser = clap::value_parser!(i64).range(0..=1_000_000_000_000))]
    pub signup_credits: Option<i64>,

    /// Secret for verifying payment-provider webhooks.
    #[arg(long, env = "ATELIER_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payment_webhook_secret: Option<String>,

    #[command(flatten)]
    pub stripe: StripeConfig,

    /// Base URL that links (share links, invitation links and emails) are built from;
    /// defaults to `http://<bind>` (the port actually bound when it is 0).
    #[arg(long, env = "ATELIER_PUBLIC_URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub mail: MailConfig,

    /// Mark the session cookie `Secure` (set this when served over HTTPS).
    #[arg(long, env = "ATELIER_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// The built studio page (`web/dist`), served at `/`. When missing, a placeholder page says
    /// how to build it.
    #[arg(long, env = "ATELIER_WEB_DIR", default_value = "./web/dist")]
    pub web_dir: PathBuf,

    #[command(flatten)]
    pub live: LiveConfig,

    #[command(flatten)]
    pub live_caps: LiveCapsConfig,

    #[command(flatten)]
    pub jobs: JobsConfig,

    #[command(flatten)]
    pub billing: BillingConfig,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub versions: VersionsConfig,

    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(long, env = "ATELIER_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
}

impl ServeConfig {
    /// `--signup-credits`, or an hour of the cheapest class when unset.
    pub fn signup_credits(&self) -> i64 {
        self.signup_credits
            .unwrap_or_else(|| self.billing.gpu_prices.cheapest().saturating_mul(60))
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }
}

/// Selling credits through Stripe Checkout.
#[derive(Debug, Clone, Args)]
pub struct StripeConfig {
    /// Credit packs for sale: `name=millicredits:price:currency`, comma-separated, the price in
    /// the currency's minor unit, e.g. `starter=10000:500:usd,studio=100000:4000:usd`.
    #[arg(long, env = "ATELIER_CREDIT_PACKS", default_value = "",
          value_parser = crate::billing::packs::CreditPacks::parse)]
    pub credit_packs: crate::billing::packs::CreditPacks,

    /// Stripe secret key (`sk_live_…` or `sk_test_…`); unset: buying credits is off.
    #[arg(long, env = "ATELIER_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Stripe's API base URL (tests point it at a local stand-in).
    #[arg(
        long,
        env = "ATELIER_STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
}

/// Live-session limits (WebSocket and document).
/// Cluster mode: several nodes on one PostgreSQL and one Redis behave as one server.
#[derive(Debug, Clone, Args)]
pub struct ClusterConfig {
    /// Redis URL (`redis://host:6379/0`); set, this node runs in cluster mode (which needs a
    /// PostgreSQL ATELIER_DATABASE_URL and shared object storage). Unset: a single node.
    #[arg(long, env = "ATELIER_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    #[arg(long, env = "ATELIER_REDIS_PREFIX", default_value = "atelier")]
    pub redis_prefix: String,

    /// This node's name in the cluster (logs, metrics); generated at each start when unset.
    #[arg(long, env = "ATELIER_NODE_ID")]
    pub node_id: Option<String>,

    /// How often (seconds) live sessions are checked against the database's log head, to find
    /// updates whose relay message was lost.
    #[arg(long, env = "ATELIER_CLUSTER_HEAD_CHECK_INTERVAL_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub head_check_interval_s: u64,

    /// Fault injection for tests: do not publish every n-th relayed update batch (0: publish
    /// all), as if Redis had lost it; the other nodes must repair the gaps from the database.
    #[arg(
        long,
        env = "ATELIER_CLUSTER_DROP_RELAY_EVERY",
        default_value_t = 0,
        hide = true
    )]
    pub drop_relay_every: u64,
}

impl ClusterConfig {
    /// The cluster settings, or `None` on a single node. `database_url` and `storage_url` are
    /// checked: every node must share them.
    pub fn settings(
        &self,
        database_url: &str,
        storage_url: &str,
    ) -> Result<Option<crate::cluster::ClusterSettings>, String> {
        let Some(redis_url) = &self.redis_url else {
            return Ok(None);
        };
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(
                "ATELIER_REDIS_URL (cluster mode) needs a PostgreSQL ATELIER_DATABASE_URL \
                 shared by every node; SQLite is a single node's database"
                    .to_owned(),
            );
        }
        if storage_url.starts_with("memory://") {
            return Err(
                "ATELIER_REDIS_URL (cluster mode) needs object storage every node shares \
                 (ATELIER_STORAGE_URL s3://… or one file:// directory); memory:// is one process's"
                    .to_owned(),
            );
        }
        Ok(Some(crate::cluster::ClusterSettings {
            redis_url: redis_url.clone(),
            prefix: self.redis_prefix.clone(),
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::generate_node_id),
            head_check_interval: std::time::Duration::from_secs(self.head_check_interval_s),
        }))
    }
}

#[derive(Debug, Clone, Args)]
pub struct LiveConfig {
    /// Largest WebSocket message accepted; larger closes the socket with 1009.
    #[arg(long, env = "ATELIER_WS_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub ws_max_message_bytes: u64,

    /// Sustained messages per second per connection; more closes the socket with 1008.
    #[arg(long, env = "ATELIER_WS_MAX_MESSAGES_PER_SEC", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_max_messages_per_sec: u32,

    /// Frames queued for one slow client before it is disconnected (it resyncs on reconnect).
    #[arg(long, env = "ATELIER_WS_OUTBOUND_QUEUE_FRAMES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..))]
    pub ws_outbound_queue_frames: u64,

    /// Bytes queued for one slow client before it is disconnected with 1008. A frame counts at
    /// most half of it, so documents larger than this still reach clients that read.
    #[arg(long, env = "ATELIER_WS_OUTBOUND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub ws_outbound_queue_bytes: u64,

    /// Largest session document, in bytes; updates beyond it are refused.
    #[arg(long, env = "ATELIER_MAX_DOC_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_doc_bytes: u64,

    /// Compact a document's update log into a snapshot after this many updates (and once they
    /// add up to half the snapshot's size, so large documents compact less often).
    #[arg(long, env = "ATELIER_COMPACT_EVERY_UPDATES", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_every_updates: u64,

    /// Also compact when updates have waited this many seconds.
    #[arg(long, env = "ATELIER_COMPACT_INTERVAL_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_interval_s: u64,

    /// Unload a session from memory after it has had no participants this many seconds.
    #[arg(long, env = "ATELIER_SESSION_IDLE_UNLOAD_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_unload_s: u64,
}

impl LiveConfig {
    pub fn connection_limits(&self) -> atelier_actors::ConnectionLimits {
        let per_sec = self.ws_max_messages_per_sec;
        atelier_actors::ConnectionLimits {
            max_message_bytes: usize::try_from(self.ws_max_message_bytes).unwrap_or(usize::MAX),
            max_messages_per_sec: per_sec,
            // Stock clients send a burst on (re)connect and on big local changes.
            message_burst: per_sec.saturating_mul(5).max(1000),
            outbound_queue_frames: usize::try_from(self.ws_outbound_queue_frames)
                .unwrap_or(usize::MAX),
            outbound_queue_bytes: usize::try_from(self.ws_outbound_queue_bytes)
                .unwrap_or(usize::MAX),
            ..Default::default()
        }
    }

    pub fn session_limits(&self) -> atelier_actors::SessionLimits {
        atelier_actors::SessionLimits {
            max_doc_bytes: usize::try_from(self.max_doc_bytes).unwrap_or(usize::MAX),
            compact_every_updates: usize::try_from(self.compact_every_updates)
                .unwrap_or(usize::MAX),
            compact_interval: std::time::Duration::from_secs(self.compact_interval_s),
            idle_unload: std::time::Duration::from_secs(self.session_idle_unload_s),
            ..Default::default()
        }
    }
}

/// How many live-session WebSockets one holder of access may have open at once (server-wide).
/// An upgrade beyond a cap is refused with 429 `too_many_connections`.
#[derive(Debug, Clone, Args)]
pub struct LiveCapsConfig {
    /// Open live-session sockets per share link (everyone holding the link together).
    #[arg(long, env = "ATELIER_WS_MAX_PER_SHARE_LINK", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_max_per_share_link: u32,

    /// Open live-session sockets per account (all its tabs and devices).
    #[arg(long, env = "ATELIER_WS_MAX_PER_ACCOUNT", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_max_per_account: u32,

    /// Open live-session sockets per client IP address (behind a load balancer, set
    /// ATELIER_TRUSTED_PROXIES so that this counts the clients, not the balancer).
    #[arg(long, env = "ATELIER_WS_MAX_PER_IP", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_max_per_ip: u32,
}

impl LiveCapsConfig {
    pub fn caps(&self) -> atelier_actors::AdmissionCaps {
        let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        atelier_actors::AdmissionCaps {
            per_share_link: to_usize(self.ws_max_per_share_link),
            per_account: to_usize(self.ws_max_per_account),
            per_ip: to_usize(self.ws_max_per_ip),
        }
    }
}

/// Pro runtime pricing and metering.
#[derive(Debug, Clone, Args)]
pub struct BillingConfig {
    /// GPU classes offered and their prices in millicredits per minute, e.g.
    /// `cpu=100,t4=2000,a100=12000`.
    #[arg(long, env = "ATELIER_GPU_PRICES", default_value = "cpu=100",
          value_parser = crate::billing::prices::PriceTable::parse)]
    pub gpu_prices: crate::billing::prices::PriceTable,

    /// How often a lease's time is metered and `runtime.meter` sent, in milliseconds.
    #[arg(long, env = "ATELIER_METER_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub meter_interval_ms: u64,

    /// How often a lease's use so far is charged to the ledger, in seconds (what a crash can
    /// leave unbilled, in the user's favour).
    #[arg(long, env = "ATELIER_CHECKPOINT_INTERVAL_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub checkpoint_interval_s: u64,

    /// A lease with no job activity for this many seconds stops by itself.
    #[arg(long, env = "ATELIER_LEASE_IDLE_TIMEOUT_S", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_idle_timeout_s: u64,

    /// A running lease warns every participant (`runtime.low_balance`) this many seconds before
    /// its prepaid time runs out.
    #[arg(long, env = "ATELIER_LOW_BALANCE_WARNING_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub low_balance_warning_s: u64,

    /// Most prepaid minutes one lease may hold.
    #[arg(long, env = "ATELIER_MAX_PREPAID_MINUTES", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_prepaid_minutes: u32,

    /// At start-up, leases left open by a crash are resumed when they were alive this many
    /// seconds before; older ones are settled at their last checkpoint. Downtime is never billed.
    #[arg(long, env = "ATELIER_LEASE_RESUME_WINDOW_S", default_value_t = 120)]
    pub lease_resume_window_s: u64,

    /// How long (milliseconds) the node metering a runtime lease may go without refreshing its
    /// ownership before another node takes the lease over (cluster mode). The owner refreshes
    /// every third of it; a lease is taken over this long, plus at most a third, after its node
    /// died.
    #[arg(long, env = "ATELIER_LEASE_TAKEOVER_AFTER_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_takeover_after_ms: u64,
}

/// The inference engine (ONNX Runtime) of a worker, in-process or remote.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Directory holding model files and their manifests.
    #[arg(long, env = "ATELIER_MODELS_DIR", default_value = "./models")]
    pub models_dir: PathBuf,

    /// `auto` (CUDA when available, else CPU, and says so), `cuda` (fails without CUDA), `cpu`.
    #[arg(long, env = "ATELIER_EXECUTION_PROVIDER", default_value = "auto")]
    pub execution_provider: crate::inference::ExecutionProvider,

    /// ONNX Runtime intra-op threads per model; 0 lets ONNX Runtime decide.
    #[arg(long, env = "ATELIER_INTRA_THREADS", default_value_t = 0)]
    pub intra_threads: usize,
}

impl EngineArgs {
    pub fn engine_config(&self) -> crate::inference::EngineConfig {
        let mut c = crate::inference::EngineConfig::new(self.models_dir.clone());
        c.ort_dylib_path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        c.execution_provider = self.execution_provider;
        c.intra_threads = self.intra_threads;
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InProcessWorker {
    /// Run one when the models directory has models; otherwise say so and run without.
    Auto,
    /// Always: failing to load ONNX Runtime or a model stops start-up.
    On,
    /// Never: jobs wait for remote workers.
    Off,
}

/// Jobs and workers.
#[derive(Debug, Clone, Args)]
pub struct JobsConfig {
    /// The worker inside `atelier serve`.
    #[arg(long, env = "ATELIER_IN_PROCESS_WORKER", value_enum, default_value_t = InProcessWorker::Auto)]
    pub in_process_worker: InProcessWorker,

    /// Slots of the in-process worker: how many runtime leases it serves at once, each holding
    /// one slot exclusively (further leases of its class wait in line).
    #[arg(long, env = "ATELIER_WORKER_SLOTS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub worker_slots: u32,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Jobs one account may have waiting (429 beyond it).
    #[arg(long, env = "ATELIER_MAX_QUEUED_JOBS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_jobs: u64,

    /// Jobs one account may have running at once.
    #[arg(long, env = "ATELIER_MAX_RUNNING_JOBS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_running_jobs: u64,

    /// A worker silent this long loses its job ("worker lost").
    #[arg(long, env = "ATELIER_WORKER_HEARTBEAT_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_heartbeat_timeout_s: u64,

    /// At most one preview frame per job per this many milliseconds.
    #[arg(long, env = "ATELIER_PREVIEW_MIN_INTERVAL_MS", default_value_t = 200)]
    pub preview_min_interval_ms: u64,

    /// Bytes of cached node results (their output tensors) one session keeps; beyond it the
    /// least recently used results are evicted. 0 turns the node cache off.
    #[arg(long, env = "ATELIER_NODE_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub node_cache_max_bytes: u64,

    /// List test models (the tiny denoiser) in the studio's palette (`GET /node-types`). Graphs
    /// may use them either way.
    #[arg(long, env = "ATELIER_TEST_MODELS", default_value_t = false, action = clap::ArgAction::Set)]
    pub test_models: bool,
}

impl JobsConfig {
    pub fn limits(&self) -> crate::jobs::JobLimits {
        let timeout = std::time::Duration::from_secs(self.worker_heartbeat_timeout_s);
        crate::jobs::JobLimits {
            max_queued_per_account: usize::try_from(self.max_queued_jobs).unwrap_or(usize::MAX),
            max_running_per_account: usize::try_from(self.max_running_jobs).unwrap_or(usize::MAX),
            heartbeat_timeout: timeout,
            heartbeat_interval: (timeout / 4).max(std::time::Duration::from_millis(250)),
            preview_min_interval: std::time::Duration::from_millis(self.preview_min_interval_ms),
            node_cache_max_bytes: self.node_cache_max_bytes,
            test_models: self.test_models,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080` (or a load balancer's). Several
    /// (repeated, or comma-separated): when a connection ends the worker reconnects to the next,
    /// round robin.
    #[arg(long, env = "ATELIER_SERVER", value_delimiter = ',', required = true)]
    pub server: Vec<String>,

    /// The longest wait between two connection attempts after the connection ended (the wait
    /// doubles from 100 ms up to this, with random jitter; it starts over once connected).
    #[arg(long, env = "ATELIER_WORKER_RECONNECT_MAX_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub reconnect_max_ms: u64,

    /// A worker token from `atelier admin create-worker-token`.
    #[arg(long, env = "ATELIER_WORKER_TOKEN", hide_env_values = true)]
    pub token: String,

    /// The name this worker shows.
    #[arg(long, env = "ATELIER_WORKER_NAME", default_value = "worker")]
    pub name: String,

    /// The GPU class runtime leases take this worker as (a class of the server's
    /// ATELIER_GPU_PRICES, e.g. `t4`). Default: its execution provider, `cuda` or `cpu`.
    #[arg(long, env = "ATELIER_WORKER_GPU_CLASS")]
    pub gpu_class: Option<String>,

    /// Runtime leases this worker serves at once, each holding one slot exclusively (one per
    /// device by default).
    #[arg(long, env = "ATELIER_WORKER_SLOTS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,

    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (or make an existing account admin). Prompts for a password on
    /// a terminal; otherwise generates one and prints it once.
    CreateAdmin {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        email: String,
        /// Display name of a new account (default: the part of the email before `@`).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from this environment variable instead of prompting.
        #[arg(long)]
        password_env: Option<String>,
    },
    /// Set an account's role.
    SetRole {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: crate::db::accounts::AccountRole,
    },
    /// Grant credits to an account (negative: deduct, as an adjustment).
    GrantCredits {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        email: String,
        /// Millicredits (1000 = one credit).
        #[arg(long, allow_hyphen_values = true)]
        amount: i64,
        /// Why: shown in the account's ledger and in the audit log.
        #[arg(long)]
        reason: String,
        /// Makes a retried command change nothing (default: a new key each time).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Create a token a worker host connects with; prints it once (its id goes to stderr).
    CreateWorkerToken {
        #[command(flatten)]
        database: DatabaseConfig,
        /// A name for the worker (shown in logs and the admin page).
        #[arg(long, default_value = "worker")]
        name: String,
    },
    /// Revoke a worker token: refused from now on, and a worker connected with it is
    /// disconnected within a heartbeat interval.
    RevokeWorkerToken {
        #[command(flatten)]
        database: DatabaseConfig,
        /// The token's id (printed by create-worker-token, listed by the admin API) or name.
        #[arg(long)]
        token: String,
    },
}

/// Job webhooks: how deliveries are made and retried.
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Let webhooks reach private, loopback and link-local addresses. Off by default, so that a
    /// job's webhook cannot be pointed at the server's own network; tests and single-machine
    /// setups turn it on.
    #[arg(long, env = "ATELIER_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,

    /// How long one delivery attempt may take (connect, send, answer), in milliseconds.
    #[arg(long, env = "ATELIER_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub webhook_timeout_ms: u64,

    /// Delay before the first retry, in milliseconds; each further retry waits twice as long.
    #[arg(long, env = "ATELIER_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_retry_base_ms: u64,

    /// Attempts per message before it is given up (marked `failed`). With the default base,
    /// 8 attempts span about 10 minutes.
    #[arg(long, env = "ATELIER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub webhook_max_attempts: u32,

    /// Least time between two `progress` deliveries of one job, in milliseconds.
    #[arg(long, env = "ATELIER_WEBHOOK_PROGRESS_INTERVAL_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub webhook_progress_interval_ms: u64,
}

/// Version history of session documents: when automatic versions are made and how long they
/// are kept. Named, job and restore versions are kept until deleted (or, for job and restore
/// versions, until the session's version storage is full).
#[derive(Debug, Clone, Args)]
pub struct VersionsConfig {
    /// An automatic version is made once nobody has edited for this many milliseconds.
    #[arg(long, env = "ATELIER_VERSION_SETTLE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub version_settle_ms: u64,

    /// ... and at least this often (seconds) while editing goes on without a pause.
    #[arg(long, env = "ATELIER_VERSION_EVERY_S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub version_every_s: u64,

    /// Automatic versions younger than this (hours) are all kept.
    #[arg(long, env = "ATELIER_VERSIONS_KEEP_ALL_HOURS", default_value_t = 24)]
    pub versions_keep_all_hours: u64,

    /// After that, one automatic version per hour is kept until this age (days)…
    #[arg(long, env = "ATELIER_VERSIONS_HOURLY_DAYS", default_value_t = 7)]
    pub versions_hourly_days: u64,

    /// …then one per day until this age (days), after which automatic versions are deleted;
    /// 0 keeps one per day forever.
    #[arg(long, env = "ATELIER_VERSIONS_DAILY_DAYS", default_value_t = 90)]
    pub versions_daily_days: u64,

    /// Version storage per session (distinct document states, bytes). When a new version
    /// would exceed it, the oldest automatic versions go first, then the oldest job and
    /// restore versions; a named version that still does not fit is refused (413).
    #[arg(long, env = "ATELIER_VERSIONS_MAX_BYTES_PER_SESSION", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub versions_max_bytes_per_session: u64,
}

/// Invitation emails. Without `ATELIER_SMTP_URL` the server sends no email at all: invitations
/// by email wait on the invited person's dashboard (and join at signup).
#[derive(Debug, Clone, Args)]
pub struct MailConfig {
    /// SMTP relay: `smtp://[user:pass@]host[:port]` (plain; add `?tls=required` for STARTTLS,
    /// `?tls=opportunistic` for STARTTLS when offered) or `smtps://[user:pass@]host[:port]`
    /// (TLS from the start, port 465 by default). Credentials percent-encoded. Unset: no email.
    #[arg(long, env = "ATELIER_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The `From` of the emails, e.g. `Atelier <atelier@example.com>`; required with
    /// ATELIER_SMTP_URL.
    #[arg(long, env = "ATELIER_SMTP_FROM")]
    pub smtp_from: Option<String>,

    /// Attempts per email before it is given up (a relay's permanent refusal, 5xx, is not
    /// retried).
    #[arg(long, env = "ATELIER_SMTP_MAX_ATTEMPTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub smtp_max_attempts: u32,

    /// Delay before the first retry, in milliseconds; each further retry waits twice as long.
    #[arg(long, env = "ATELIER_SMTP_RETRY_BASE_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub smtp_retry_base_ms: u64,

    /// How long one delivery attempt may take (connect, greeting, each command), in
    /// milliseconds.
    #[arg(long, env = "ATELIER_SMTP_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub smtp_timeout_ms: u64,
}
