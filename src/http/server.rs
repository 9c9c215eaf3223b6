//! Builds the application and runs the HTTP server until SIGINT/SIGTERM, then drains and closes.
//!
//! The server is actix-web's application in actix-http's `HttpService` on an actix-server
//! `Server`, put together here rather than with `actix_web::HttpServer` for one reason: requests
//! that ask for a WebSocket upgrade go to [`crate::http::upgrade`] with their socket, so WebSockets run
//! on the bare socket instead of inside an HTTP connection and its buffers.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Service};
use actix_web::http::header;
use actix_web::{web, App, HttpResponse};

use atelier_actors::{RegistryConfig, SessionRegistryHandle};

use super::{api, upgrade, ws};
use crate::account_events::AccountEvents;
use crate::auth::rate_limit::AuthRateLimit;
use crate::billing::checkout::Checkout;
use crate::billing::{Billing, BillingSettings};
use crate::cluster::rate_limit::SharedRateLimit;
use crate::cluster::Cluster;
use crate::config::InProcessWorker;
use crate::config::ServeConfig;
use crate::db::documents::SqlDocStore;
use crate::db::Db;
use crate::inference::{Engine, ModelCatalog};
use crate::jobs::{JobBoard, JobService};
use crate::lifecycle::ServerShutdown;
use crate::mail::{MailSettings, Mailer};
use crate::state::AppState;
use crate::storage::Blobs;
use crate::telemetry;

/// As actix-web's `HttpServer`: pending connections the OS may queue.
const BACKLOG: i32 = 1024;
/// As actix-web's `HttpServer`: time for a client to send its request head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// As actix-web's `HttpServer`: time for a client to close its end after the server closed.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Shown at `/` when the studio page has not been built (`web/dist` missing).
const PLACEHOLDER_HTML: &str = include_str!("../../web/placeholder.html");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] crate::db::ConnectError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageConfigError),
    #[error("{0}")]
    Metrics(String),
    #[error("billing could not start: {0}")]
    Billing(String),
    #[error("could not listen on {addr} (ATELIER_BIND): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Jobs(String),
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Mail(String),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(config: ServeConfig) -> Result<(), StartError> {
    let cluster_settings = config
        .cluster
        .settings(&config.database.database_url, &config.storage_url)
        .map_err(StartError::Cluster)?;
    // A malformed relay stops start-up before anything else starts.
    let mail_settings = MailSettings::from_config(&config.mail).map_err(StartError::Mail)?;
    let cluster = match &cluster_settings {
        Some(settings) => {
            let (cluster, tasks) = Cluster::new(settings, config.cluster.drop_relay_every)
                .map_err(|e| StartError::Cluster(e.to_string()))?;
            tracing::info!(node_id = %settings.node_id, prefix = %settings.prefix, "cluster mode");
            Some((cluster, tasks))
        }
        None => None,
    };
    let metrics = telemetry::init_metrics().map_err(StartError::Metrics)?;
    let db = Db::connect(
        &config.database.database_url,
        config.database.database_max_connections,
    )
    .await?;
    let blobs = Blobs::from_url(&config.storage_url).await?;
    let rate = NonZeroU32::new(config.auth_rate_per_minute).unwrap_or(NonZeroU32::MIN);
    let auth_rate_limit = AuthRateLimit::per_minute(
        rate,
        cluster
            .as_ref()
            .map(|(c, _)| SharedRateLimit::new(c.clone())),
    );
    let key_rate_limit = crate::auth::key_rate_limit::KeyRateLimit::per_minute(
        config.api_key_rate_per_minute,
        cluster
            .as_ref()
            .map(|(c, _)| SharedRateLimit::new(c.clone())),
    );
    let (catalog, engine) = load_models(&config).await?;
    let board = JobBoard::default();
    let mut registry = RegistryConfig::new(Arc::new(SqlDocStore::new(db.clone())));
    registry.limits = config.live.session_limits();
    (
        registry.limits.version_settle,
        registry.limits.version_every,
    ) = crate::versions::cadence(&config.versions);
    let versions = crate::versions::Versions::new(
        db.clone(),
        crate::versions::Retention::from_config(&config.versions),
    );
    registry.versions = Arc::new(versions.clone());
    registry.caps = config.live_caps.caps();
    registry.jobs = match &cluster {
        // A session's jobs may run on another node: `session.hello` reads those from the
        // database.
        Some(_) => Arc::new(crate::cluster::job_routing::ClusterJobs {
            board: board.clone(),
            db: db.clone(),
        }),
        None => Arc::new(board.clone()),
    };
    if let Some((cluster, _)) = &cluster {
        registry.relay = Arc::new(cluster.clone());
    }
    let live = SessionRegistryHandle::new(registry);
    let account_events = AccountEvents::new(cluster.as_ref().map(|(c, _)| c.clone()));
    let cluster = cluster.map(|(cluster, tasks)| {
        let interval = cluster_settings
            .as_ref()
            .map_or(Duration::from_secs(5), |s| s.head_check_interval);
        cluster.start(
            tasks,
            live.clone(),
            account_events.clone(),
            db.clone(),
            interval,
        );
        cluster
    });
    let mailer = match mail_settings {
        Some(settings) => Mailer::start(settings),
        None => {
            tracing::info!("no SMTP relay (ATELIER_SMTP_URL): invitations are not emailed");
            Mailer::off()
        }
    };
    // Billing: meters run on this (the system) arbiter. Leases left open by a crash are resumed
    // or settled at their last checkpoint before the first request.
    let mut billing_settings = BillingSettings::from_config(&config);
    if let Some(cluster) = &cluster_settings {
        // Leases are owned under the node's cluster name.
        billing_settings.node_id = cluster.node_id.clone();
    }
    let billing = Billing::new(
        db.clone(),
        billing_settings,
        Arc::new(live.clone()),
        // Leases take their worker from the job workers (in-process and remote).
        Arc::new(board.clone()),
    );
    // Cluster mode: leases find their slot on any node through the lease lines, and jobs
    // follow their lease through the nodes' job streams.
    let takeover_after = Duration::from_millis(config.billing.lease_takeover_after_ms);
    let job_routing = match (&cluster, &cluster_settings) {
        (Some(cluster), Some(settings)) => {
            let routing = crate::cluster::job_routing::JobRouting::connect(
                cluster.clone(),
                db.clone(),
                &settings.prefix,
                takeover_after,
            )
            .await
            .map_err(|e| StartError::Cluster(format!("Redis job streams: {e}")))?;
            let lease_line = crate::cluster::lease_line::LeaseLine::new(
                routing.streams().clone(),
                board.clone(),
                billing.clone(),
                live.clone(),
                takeover_after,
            );
            billing.set_placement(Arc::new(lease_line.clone()));
            Some((routing, lease_line))
        }
        _ => None,
    };
    let recovery = billing.recover().await.map_err(|e| {
        StartError::Billing(format!(
            "could not recover the runtime leases left open: {e}"
        ))
    })?;
    if recovery.resumed + recovery.settled + recovery.taken_over > 0 {
        tracing::info!(
            resumed = recovery.resumed,
            settled = recovery.settled,
            taken_over = recovery.taken_over,
            "runtime leases recovered"
        );
    }
    billing.start_ownership();
    let webhooks = crate::webhooks::Webhooks::start(db.clone(), config.webhooks.clone())
        .map_err(|e| StartError::Jobs(e.to_string()))?;
    let durable_queue: Arc<dyn atelier_actors::JobQueue> = match &job_routing {
        // The jobs table plus the nodes' job streams.
        Some((routing, _)) => Arc::new(routing.clone()),
        // The jobs table.
        None => Arc::new(db.clone()),
    };
    let jobs = JobService::new(
        board,
        db.clone(),
        durable_queue,
        blobs.clone(),
        live.clone(),
        billing.clone(),
        config.jobs.limits(),
        webhooks.clone(),
    );
    billing.set_hooks(Arc::new(jobs.clone()));
    // The durable queue: jobs queued before the restart are queued again (under their resumed
    // leases); those that were running failed. Before any worker connects.
    let restored = crate::jobs::restore::requeue_after_restart(&jobs)
        .await
        .map_err(|e| StartError::Jobs(format!("could not restore the job queue: {e}")))?;
    if restored.requeued + restored.failed > 0 {
        tracing::info!(
            requeued = restored.requeued,
            failed = restored.failed,
            "unfinished jobs from before the restart"
        );
    }
    let job_routing = job_routing.map(|(routing, lease_line)| {
        routing.start(jobs.clone());
        // On the server's local task set: taking a lease starts dispatching jobs there.
        actix_web::rt::spawn(lease_line.run());
        routing
    });
    if let Some(engine) = engine {
        crate::worker::start_in_process(engine, jobs.clone(), config.jobs.worker_slots);
    }
    let listener = listen(config.bind).map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let addr = listener.local_addr()?;
    // Links (invitations, emails) and Stripe's way back: the configured public URL, else the
    // address listened on (the port actually bound, when it was 0).
    let public_url = match &config.public_url {
        Some(_) => config.public_url(),
        None => format!("http://{addr}"),
    };
    let return_url = public_url.clone();
    let checkout = Checkout::new(
        &config.stripe.stripe_api_base,
        config.stripe.stripe_secret_key.clone(),
        config.stripe.credit_packs.clone(),
        return_url,
    )
    .map_err(|e| StartError::Billing(e.to_string()))?;
    if !checkout.enabled() {
        tracing::info!(
            "buying credits is off (set ATELIER_STRIPE_SECRET_KEY and ATELIER_CREDIT_PACKS)"
        );
    }
    let config = Arc::new(config);
    let state = web::Data::new(AppState {
        db: db.clone(),
        blobs,
        config: config.clone(),
        auth_rate_limit: auth_rate_limit.clone(),
        key_rate_limit: key_rate_limit.clone(),
        webhooks,
        metrics,
        live: live.clone(),
        billing: billing.clone(),
        checkout,
        jobs,
        versions,
        catalog,
        cluster: cluster.clone(),
        job_routing,
        account_events: account_events.clone(),
        mailer,
        public_url,
        exports: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.max_concurrent_exports).unwrap_or(1),
        )),
    });

    let max_json = usize::try_from(config.max_json_bytes).unwrap_or(usize::MAX);
    let web_dir = config.web_dir.clone();
    let has_web = tokio::fs::try_exists(web_dir.join("index.html"))
        .await
        .unwrap_or(false);
    if !has_web {
        tracing::warn!(dir = %web_dir.display(), "studio page not built; serving a placeholder at /");
    }
    let default_host = header::HeaderValue::from_str(&addr.to_string()).ok();
    let builder = actix_server::Server::build();
    let shutting_down = builder.graceful_shutdown_signal();
    let server = builder
        .shutdown_timeout(config.shutdown_timeout_s)
        // Our own handlers (below) replace actix's: it installs them only when the server is
        // first polled, after the address has been announced, and a SIGTERM in between killed
        // the process.
        .disable_signals()
        .listen("atelier-http", listener, move || {
            let default_host = default_host.clone();
            let app = App::new()
                // actix-web's own server gives the application the listening address as the host
                // of requests that name none; its public `AppConfig` cannot, so such a request
                // gets the address as its `Host` here (what `ConnectionInfo::host` then reads).
                .wrap_fn(move |mut req, srv| {
                    if let Some(host) = &default_host {
                        if !req.headers().contains_key(header::HOST)
                            && req.uri().authority().is_none()
                        {
                            req.headers_mut().insert(header::HOST, host.clone());
                        }
                    }
                    srv.call(req)
                })
                .app_data(state.clone())
                .configure(|cfg| api::configure(cfg, max_json))
                .service(ws::live_session);
            let app = if has_web {
                // The studio is a single page with hash routes: files as they are, index at `/`.
                app.service(actix_files::Files::new("/", &web_dir).index_file("index.html"))
            } else {
                app.route("/", web::get().to(placeholder))
            };
            let app = app
                .into_factory()
                .map_err(|error: actix_web::Error| error.error_response());
            let upgrade_state = state.clone();
            let upgrade = fn_service(move |(req, framed)| {
                upgrade::handle(upgrade_state.clone(), addr, req, framed)
            });
            let shutting_down = shutting_down.clone();
            HttpService::build()
                // Idle keep-alive connections close when a graceful shutdown starts.
                .graceful_shutdown_signal(move || {
                    let signal = shutting_down.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // Small frames go out at once instead of waiting for the previous one's ACK.
                .tcp_nodelay(true)
                .local_addr(addr)
                .upgrade(upgrade)
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?;
    let server = server.run();
    let shutdown = ServerShutdown::new(
        billing.clone(),
        live.clone(),
        cluster.clone(),
        account_events,
    );
    let before_stop = {
        let shutdown = shutdown.clone();
        async move { shutdown.run().await }
    };
    let signals = stop_on_signals(server.handle(), before_stop)?;

    // Forget idle rate-limit entries now and then so the table stays small.
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            auth_rate_limit.prune();
            key_rate_limit.prune();
        }
    });

    let chores = crate::housekeeping::spawn(db.clone(), config.usage_log_retention_days);

    tracing::info!(%addr, "listening");
    // One machine-readable line on stdout: scripts and tests read the chosen port from it.
    println!("atelier listening on http://{addr}");
    // Runs until a signal stops it: SIGTERM stops accepting, drains in-flight requests, returns.
    let result = server.await;
    pruner.abort();
    chores.abort();
    signals.abort();
    shutdown.run().await;
    tracing::info!("closing the database");
    db.close().await;
    result.map_err(StartError::Io)
}

/// Stops the server on SIGTERM (gracefully: in-flight requests drain for up to the shutdown
/// timeout) and on SIGINT/SIGQUIT (at once), as actix-server would. The handlers are installed
/// here, before the address is announced, so a signal sent right after start-up is never met by
/// the default action (immediate termination).
fn stop_on_signals(
    server: actix_server::ServerHandle,
    before_stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        Ok(tokio::spawn(async move {
            let graceful = tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => false,
                _ = quit.recv() => false,
            };
            tracing::info!(graceful, "shutdown signal received; stopping the server");
            before_stop.await;
            server.stop(graceful).await;
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                before_stop.await;
                server.stop(false).await;
            }
        }))
    }
}

/// Binds the listening socket as actix-web's `HttpServer::bind` does (`SO_REUSEADDR`, a backlog
/// of 1,024).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

async fn placeholder() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(PLACEHOLDER_HTML)
}

/// The model catalog (for validating graphs and listing node types) and, when configured, the
/// engine of the in-process worker. A missing or corrupt model is an error here, at start-up.
async fn load_models(
    config: &ServeConfig,
) -> Result<(Arc<ModelCatalog>, Option<Arc<Engine>>), StartError> {
    let engine_config = config.jobs.engine.engine_config();
    let dir = engine_config.models_dir.clone();
    let has_models = tokio::fs::try_exists(&dir).await.unwrap_or(false);
    let mode = config.jobs.in_process_worker;
    if mode == InProcessWorker::Auto && !has_models {
        tracing::warn!(dir = %dir.display(), "no models directory: the in-process worker is off (run scripts/fetch-models)");
    }
    let run_engine = match mode {
        InProcessWorker::On => true,
        InProcessWorker::Off => false,
        InProcessWorker::Auto => has_models,
    };
    if run_engine {
        let engine = tokio::task::spawn_blocking(move || Engine::load(&engine_config))
            .await
            .map_err(|e| StartError::Jobs(e.to_string()))?
            .map_err(|e| {
                StartError::Jobs(format!(
                    "in-process worker (ATELIER_IN_PROCESS_WORKER): {e}"
                ))
            })?;
        tracing::info!(device = %engine.device(), models = ?engine.catalog().names(), "in-process worker ready");
        let catalog = Arc::new(engine.catalog().clone());
        return Ok((catalog, Some(Arc::new(engine))));
    }
    let catalog = if has_models {
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || ModelCatalog::load(&dir2))
            .await
            .map_err(|e| StartError::Jobs(e.to_string()))?
            .map_err(|e| StartError::Jobs(format!("model catalog (ATELIER_MODELS_DIR): {e}")))?
    } else {
        ModelCatalog::default()
    };
    Ok((Arc::new(catalog), None))
}
