//! Job webhooks: `POST /sessions/{id}/jobs {webhook: {url, events}}` has the job's events
//! delivered to `url` as signed HTTP POSTs (Standard Webhooks: [`signing`]).
//!
//! - Events: `started`, `progress` (at most one per `ATELIER_WEBHOOK_PROGRESS_INTERVAL_MS` per
//!   job), `completed`, `failed`, `cancelled`. Each becomes one message with a stable id, stored
//!   before it is sent ([`crate::db::webhooks`]); every attempt of it carries the same
//!   `webhook-id`, so a receiver that sees one twice drops the second (delivery is at least once).
//! - Attempts ([`sender`]): a 2xx answer delivers; anything else (another status, a timeout, a
//!   refused connection) is retried after `ATELIER_WEBHOOK_RETRY_BASE_MS`, doubling each time, up
//!   to `ATELIER_WEBHOOK_MAX_ATTEMPTS` — then the message is given up (`failed`). Every attempt is
//!   visible at `GET /jobs/{id}/webhook-deliveries`.
//! - Requests go to public addresses only unless `ATELIER_WEBHOOK_ALLOW_PRIVATE` is set
//!   ([`address_guard`]), follow no redirects, time out (`ATELIER_WEBHOOK_TIMEOUT_MS`), and read at
//!   most [`sender::MAX_RESPONSE_BYTES`] of an answer.
//!
//! Events reach [`Webhooks::job_event`] from the job service (the place every job event is
//! announced), in order, through a bounded channel to one intake task.

pub mod address_guard;
pub mod sender;
pub mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{JobId, SessionId};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use utoipa::ToSchema;

use crate::config::WebhookConfig;
use crate::db::webhooks::JobWebhook;
use crate::db::Db;
use crate::error::{Error, Result};

/// Events waiting for the intake task; beyond this, `progress` events are dropped first (the
/// others are waited for).
const INTAKE_QUEUE: usize = 4096;
/// Longest accepted webhook URL.
pub const MAX_URL_CHARS: usize = 2000;
/// Jobs whose webhook the intake task remembers; beyond it, it forgets and reads again.
const REMEMBERED_JOBS: usize = 10_000;

/// A job event a webhook may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    Started,
    Progress,
    Completed,
    Failed,
    Cancelled,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::Started,
        WebhookEvent::Progress,
        WebhookEvent::Completed,
        WebhookEvent::Failed,
        WebhookEvent::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Started => "started",
            WebhookEvent::Progress => "progress",
            WebhookEvent::Completed => "completed",
            WebhookEvent::Failed => "failed",
            WebhookEvent::Cancelled => "cancelled",
        }
    }

    /// The job event it stands for, and its payload `type`.
    fn of(event: &StudioEvent) -> Option<(JobId, WebhookEvent)> {
        Some(match event {
            StudioEvent::JobStarted { job_id, .. } => (*job_id, WebhookEvent::Started),
            StudioEvent::JobProgress { job_id, .. } => (*job_id, WebhookEvent::Progress),
            StudioEvent::JobSucceeded { job_id, .. } => (*job_id, WebhookEvent::Completed),
            StudioEvent::JobFailed { job_id, .. } => (*job_id, WebhookEvent::Failed),
            StudioEvent::JobCancelled { job_id, .. } => (*job_id, WebhookEvent::Cancelled),
            _ => return None,
        })
    }

    fn is_final(self) -> bool {
        matches!(
            self,
            WebhookEvent::Completed | WebhookEvent::Failed | WebhookEvent::Cancelled
        )
    }
}

/// A job's webhook, as `POST /sessions/{id}/jobs` takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/atelier-hook", "events": ["started", "completed", "failed", "cancelled"]}))]
pub struct WebhookSpec {
    /// An `http` or `https` URL (at most 2000 characters). Redirects are not followed.
    pub url: String,
    /// Which events to deliver; at least one.
    pub events: Vec<WebhookEvent>,
}

impl WebhookSpec {
    /// The events as stored: space-separated.
    pub fn events_text(&self) -> String {
        let mut names: Vec<&str> = self.events.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(" ")
    }
}

struct Announced {
    session: SessionId,
    event: StudioEvent,
}

/// The webhook service (cheap to clone).
#[derive(Clone)]
pub struct Webhooks {
    intake: mpsc::Sender<Announced>,
    config: Arc<WebhookConfig>,
}

impl Webhooks {
    /// Starts the intake and sender tasks.
    pub fn start(db: Db, config: WebhookConfig) -> Result<Webhooks> {
        let config = Arc::new(config);
        let wake = Arc::new(Notify::new());
        let client = sender::client(&config)?;
        let (tx, rx) = mpsc::channel(INTAKE_QUEUE);
        tokio::spawn(intake(rx, db.clone(), config.clone(), wake.clone()));
        tokio::spawn(sender::run(db, client, config.clone(), wake));
        Ok(Webhooks { intake: tx, config })
    }

    /// Checks a webhook before the job is queued: a well-formed `http(s)` URL, events named,
    /// and (unless private addresses are allowed) a host that is a public address. 400 if not.
    pub async fn validate(&self, spec: &WebhookSpec) -> Result<()> {
        if spec.events.is_empty() {
            return Err(Error::invalid(format!(
                "webhook.events must name at least one of {}",
                WebhookEvent::ALL.map(WebhookEvent::as_str).join(", ")
            )));
        }
        if spec.url.chars().count() > MAX_URL_CHARS {
            return Err(Error::invalid(format!(
                "webhook.url is longer than {MAX_URL_CHARS} characters"
            )));
        }
        let url = http_client::Url::parse(&spec.url)
            .map_err(|e| Error::invalid(format!("webhook.url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid("webhook.url must be an http or https URL"));
        }
        if !self.config.webhook_allow_private {
            address_guard::check_host(&url)
                .await
                .map_err(|why| Error::invalid(format!("webhook.url: {why}")))?;
        }
        Ok(())
    }

    /// A job event was announced (never blocks: the intake task does the work).
    pub fn job_event(&self, session: SessionId, event: &StudioEvent) {
        let Some((job, kind)) = WebhookEvent::of(event) else {
            return;
        };
        let announced = Announced {
            session,
            event: event.clone(),
        };
        match self.intake.try_send(announced) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(announced)) if kind != WebhookEvent::Progress => {
                // Rare (thousands of events queued); a final event must not be lost.
                let intake = self.intake.clone();
                tokio::spawn(async move {
                    let _ = intake.send(announced).await;
                });
            }
            Err(_) => tracing::warn!(%job, "webhook intake full; a progress event was dropped"),
        }
    }
}

/// Turns announced events into stored messages, in order.
async fn intake(
    mut rx: mpsc::Receiver<Announced>,
    db: Db,
    config: Arc<WebhookConfig>,
    wake: Arc<Notify>,
) {
    let mut hooks: HashMap<JobId, Option<JobWebhook>> = HashMap::new();
    let mut last_progress: HashMap<JobId, Instant> = HashMap::new();
    let progress_interval = Duration::from_millis(config.webhook_progress_interval_ms);
    while let Some(Announced { session, event }) = rx.recv().await {
        let Some((job, kind)) = WebhookEvent::of(&event) else {
            continue;
        };
        if hooks.len() > REMEMBERED_JOBS {
            hooks.clear();
            last_progress.clear();
        }
        let hook = match hooks.get(&job) {
            Some(hook) => hook.clone(),
            None => {
                let hook = match db.job_webhook(job).await {
                    Ok(hook) => hook,
                    Err(e) => {
                        tracing::error!(%job, error = %e, "could not read the job's webhook");
                        None
                    }
                };
                hooks.insert(job, hook.clone());
                hook
            }
        };
        if kind.is_final() {
            hooks.remove(&job);
            last_progress.remove(&job);
        }
        let Some(hook) = hook else { continue };
        if !hook.events.iter().any(|e| e == kind.as_str()) {
            continue;
        }
        if kind == WebhookEvent::Progress {
            let now = Instant::now();
            if last_progress
                .get(&job)
                .is_some_and(|t| now.duration_since(*t) < progress_interval)
            {
                continue;
            }
            last_progress.insert(job, now);
        }
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let payload = payload(session, kind, &event);
        if let Err(e) = db
            .insert_delivery(&id, job, &hook, kind.as_str(), &payload.to_string())
            .await
        {
            tracing::error!(%job, error = %e, "could not queue a webhook message");
            continue;
        }
        wake.notify_one();
    }
}

/// The message body: `{type, timestamp, data}` as Standard Webhooks recommends; `data` is the
/// studio event's fields plus `session_id`.
fn payload(session: SessionId, kind: WebhookEvent, event: &StudioEvent) -> serde_json::Value {
    let mut data = serde_json::to_value(event).unwrap_or_default();
    if let Some(map) = data.as_object_mut() {
        map.remove("type");
        map.insert("session_id".into(), serde_json::json!(session));
    }
    serde_json::json!({
        "type": format!("job.{}", kind.as_str()),
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "data": data,
    })
}
