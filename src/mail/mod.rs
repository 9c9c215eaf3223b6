//! Emails through an SMTP relay (lettre), sent off the request: a handler queues an [`Email`]
//! with [`Mailer::send`], which never waits and never fails the request; one task takes the
//! queue and delivers up to [`MAX_SENDING`] at once, retrying what the relay refuses for now
//! (4xx, connection failures, timeouts) with doubling delays, giving up at once on a permanent
//! refusal (5xx). Every outcome is logged and counted in `/metrics`.
//!
//! Bounded: at most [`QUEUE_CAPACITY`] emails wait; beyond it one is dropped (and counted)
//! rather than memory growing with a dead relay. Emails still queued when the server stops are
//! not sent.
//!
//! Without `ATELIER_SMTP_URL` the mailer is off and sends nothing.
//!
//! Layout: this file (settings, queue, delivery); [`invitation`] (what an invitation says).

pub mod invitation;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{mpsc, Semaphore};

use crate::config::MailConfig;

/// Emails waiting to be sent before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Deliveries (each with its retries) in progress at once.
pub const MAX_SENDING: usize = 4;

/// Metric names.
pub mod telemetry {
    /// Counter: emails the relay accepted.
    pub const SENT: &str = "atelier_emails_sent_total";
    /// Counter: emails given up (refused permanently, or after the last attempt), by `reason`.
    pub const FAILED: &str = "atelier_emails_failed_total";
    /// Counter: attempts retried after a temporary failure.
    pub const RETRIES: &str = "atelier_email_retries_total";
    /// Counter: emails dropped because the queue was full.
    pub const DROPPED: &str = "atelier_emails_dropped_total";

    pub fn describe() {
        use metrics::describe_counter;
        describe_counter!(SENT, "Emails the SMTP relay accepted");
        describe_counter!(
            FAILED,
            "Emails given up (label reason: refused, attempts, invalid)"
        );
        describe_counter!(RETRIES, "Email attempts retried after a temporary failure");
        describe_counter!(DROPPED, "Emails dropped because the send queue was full");
    }
}

/// A relay to send through, checked at start-up.
pub struct MailSettings {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    max_attempts: u32,
    retry_base: Duration,
}

impl MailSettings {
    /// The relay `config` names, or `None` when ATELIER_SMTP_URL is unset. A malformed URL or
    /// `From` stops start-up with a message naming the setting (never echoing the URL, which
    /// may hold a password).
    pub fn from_config(config: &MailConfig) -> Result<Option<MailSettings>, String> {
        let Some(url) = config.smtp_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let scheme_ok = url.starts_with("smtp://") || url.starts_with("smtps://");
        let builder = scheme_ok
            .then(|| AsyncSmtpTransport::<Tokio1Executor>::from_url(url).ok())
            .flatten()
            .ok_or_else(|| {
                "ATELIER_SMTP_URL is not a usable SMTP relay URL: expected \
                 smtp://[user:pass@]host[:port][?tls=required|opportunistic] or \
                 smtps://[user:pass@]host[:port]"
                    .to_owned()
            })?;
        let from = config
            .smtp_from
            .as_deref()
            .ok_or_else(|| {
                "ATELIER_SMTP_URL is set but ATELIER_SMTP_FROM is not: emails need a sender, \
                 e.g. \"Atelier <atelier@example.com>\""
                    .to_owned()
            })?
            .parse::<Mailbox>()
            .map_err(|e| format!("ATELIER_SMTP_FROM is not an email address: {e}"))?;
        let timeout = Duration::from_millis(config.smtp_timeout_ms);
        Ok(Some(MailSettings {
            transport: builder.timeout(Some(timeout)).build(),
            from,
            max_attempts: config.smtp_max_attempts.max(1),
            retry_base: Duration::from_millis(config.smtp_retry_base_ms),
        }))
    }
}

/// One email to send: plain text.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Mailbox,
    /// One line (the composer keeps control characters out).
    pub subject: String,
    pub body: String,
}

/// The handle handlers queue emails on: cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    queue: Option<mpsc::Sender<Email>>,
}

impl Mailer {
    /// Sends nothing (no relay configured).
    pub fn off() -> Mailer {
        Mailer { queue: None }
    }

    /// Starts the delivery task (on the current Tokio runtime).
    pub fn start(settings: MailSettings) -> Mailer {
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(Arc::new(settings), waiting));
        Mailer { queue: Some(queue) }
    }

    /// Whether a relay is configured.
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues the email; never waits. Dropped (and counted) when the queue is full; nothing
    /// happens when the mailer is off.
    pub fn send(&self, email: Email) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(email).is_err() {
            metrics::counter!(telemetry::DROPPED).increment(1);
            tracing::warn!(
                "the email queue is full (is the SMTP relay down?); an email was dropped"
            );
        }
    }
}

async fn run(settings: Arc<MailSettings>, mut waiting: mpsc::Receiver<Email>) {
    let sending = Arc::new(Semaphore::new(MAX_SENDING));
    while let Some(email) = waiting.recv().await {
        let Ok(permit) = sending.clone().acquire_owned().await else {
            return;
        };
        let settings = settings.clone();
        tokio::spawn(async move {
            deliver(&settings, email).await;
            drop(permit);
        });
    }
}

/// Sends one email, retrying temporary failures; logs and counts how it ended. Addresses are
/// not logged (only their domain).
async fn deliver(settings: &MailSettings, email: Email) {
    let domain = email.to.email.domain().to_owned();
    let message = match Message::builder()
        .from(settings.from.clone())
        .to(email.to)
        .subject(email.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(email.body)
    {
        Ok(message) => message,
        Err(error) => {
            metrics::counter!(telemetry::FAILED, "reason" => "invalid").increment(1);
            tracing::warn!(%error, %domain, "an email could not be built; not sent");
            return;
        }
    };
    let mut delay = settings.retry_base;
    for attempt in 1..=settings.max_attempts {
        match settings.transport.send(message.clone()).await {
            Ok(_) => {
                metrics::counter!(telemetry::SENT).increment(1);
                tracing::info!(%domain, attempt, "email sent");
                return;
            }
            Err(error) if error.is_permanent() => {
                metrics::counter!(telemetry::FAILED, "reason" => "refused").increment(1);
                tracing::warn!(%error, %domain, "the SMTP relay refused an email; not retried");
                return;
            }
            Err(error) if attempt == settings.max_attempts => {
                metrics::counter!(telemetry::FAILED, "reason" => "attempts").increment(1);
                tracing::warn!(%error, %domain, attempt, "an email could not be sent; given up");
                return;
            }
            Err(error) => {
                metrics::counter!(telemetry::RETRIES).increment(1);
                tracing::info!(%error, %domain, attempt, retry_in_ms = delay.as_millis() as u64, "an email could not be sent yet; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
    }
}
