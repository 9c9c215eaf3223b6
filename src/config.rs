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
    /// Administration: `create-worker-token`.
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

    /// Redis URL for multi-node deployments; unset runs as a single node.
    #[arg(long, env = "ATELIER_REDIS_URL")]
    pub redis_url: Option<String>,

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

    /// Largest accepted JSON request body, in bytes.
    #[arg(long, env = "ATELIER_MAX_JSON_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(64..))]
    pub max_json_bytes: u64,

    /// Signup and login attempts allowed per client IP per minute (429 beyond it).
    #[arg(long, env = "ATELIER_AUTH_RATE_PER_MINUTE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_rate_per_minute: u32,

    /// Credits (millicredits) granted to every new account.
    #[arg(long, env = "ATELIER_SIGNUP_CREDITS", default_value_t = 0)]
    pub signup_credits: i64,

    /// Secret for verifying payment-provider webhooks.
    #[arg(long, env = "ATELIER_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payment_webhook_secret: Option<String>,

    /// Base URL that links (share links) are built from; defaults to `http://<bind>`.
    #[arg(long, env = "ATELIER_PUBLIC_URL")]
    pub public_url: Option<String>,

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
    pub jobs: JobsConfig,

    #[command(flatten)]
    pub billing: BillingConfig,

    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(long, env = "ATELIER_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
}

impl ServeConfig {
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }
}

/// Live-session limits (WebSocket and document).
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

    /// Most prepaid minutes one lease may hold.
    #[arg(long, env = "ATELIER_MAX_PREPAID_MINUTES", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_prepaid_minutes: u32,

    /// At start-up, leases left open by a crash are resumed when they were alive this many
    /// seconds before; older ones are settled at their last checkpoint. Downtime is never billed.
    #[arg(long, env = "ATELIER_LEASE_RESUME_WINDOW_S", default_value_t = 120)]
    pub lease_resume_window_s: u64,
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
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "ATELIER_SERVER")]
    pub server: String,

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

    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a token a worker host connects with; prints it once.
    CreateWorkerToken {
        #[command(flatten)]
        database: DatabaseConfig,
        /// A name for the worker (shown in logs).
        #[arg(long, default_value = "worker")]
        name: String,
    },
}
