//! Delivering stored webhook messages: picks the due ones, claims each (so that two nodes of a
//! cluster do not both send it; a claim that outlives a crash expires and the message is sent
//! again — at least once), signs, sends, records the attempt and schedules the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_client::header::CONTENT_TYPE;
use tokio::sync::{Notify, Semaphore};

use super::{address_guard, signing};
use crate::config::WebhookConfig;
use crate::db::webhooks::{DeliveryAttempt, DueDelivery, Outcome};
use crate::db::{now_ms, Db};
use crate::error::{Error, Result};

/// Most bytes of a receiver's answer that are read (the rest is not: only the status counts).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Attempts in flight at once, server-wide.
const CONCURRENT_ATTEMPTS: usize = 16;
/// Messages looked at per round.
const BATCH: i64 = 64;
/// How often due messages are looked for when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, however many there were.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The HTTP client of deliveries: no redirects, no proxies, a timeout, and (unless private
/// addresses are allowed) a resolver that only hands out public addresses.
pub fn client(config: &WebhookConfig) -> Result<http_client::Client> {
    let timeout = Duration::from_millis(config.webhook_timeout_ms);
    let mut builder = http_client::Client::builder()
        .redirect(http_client::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("Atelier-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !config.webhook_allow_private {
        builder = builder.dns_resolver(address_guard::PublicOnly);
    }
    builder
        .build()
        .map_err(|e| Error::Internal(format!("webhook HTTP client: {e}")))
}

/// The sender loop: runs for the life of the server.
pub async fn run(
    db: Db,
    client: http_client::Client,
    config: Arc<WebhookConfig>,
    wake: Arc<Notify>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_ATTEMPTS));
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let due = match db.due_deliveries(BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read due webhook messages");
                continue;
            }
        };
        for message in due {
            // Held past the attempt's longest duration; the attempt's outcome replaces it.
            let until = now_ms()
                + i64::try_from(config.webhook_timeout_ms).unwrap_or(i64::MAX / 2)
                + 30_000;
            match db.claim_delivery(&message, until).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a webhook message");
                    continue;
                }
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (db, client, config) = (db.clone(), client.clone(), config.clone());
            tokio::spawn(async move {
                attempt(&db, &client, &config, message).await;
                drop(slot);
            });
        }
    }
}

/// One attempt of one message, recorded.
async fn attempt(db: &Db, client: &http_client::Client, config: &WebhookConfig, m: DueDelivery) {
    let number = m.attempts + 1;
    let at = now_ms();
    let started = Instant::now();
    let result = send(db, client, config, &m).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (status_code, error, permanent) = match result {
        Ok(status) => (Some(i64::from(status)), None, false),
        Err(Failure { why, permanent }) => (None, Some(why), permanent),
    };
    let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
    let max = i64::from(config.webhook_max_attempts);
    let outcome = if delivered {
        Outcome::Delivered
    } else if permanent || number >= max {
        Outcome::GiveUp
    } else {
        Outcome::Retry {
            at: now_ms() + backoff(config.webhook_retry_base_ms, number),
        }
    };
    match &outcome {
        Outcome::Delivered => {}
        Outcome::Retry { .. } => {
            tracing::info!(id = %m.id, attempt = number, ?status_code, ?error, "webhook attempt failed; will retry")
        }
        Outcome::GiveUp => {
            tracing::warn!(id = %m.id, attempt = number, ?status_code, ?error, "webhook message given up")
        }
    }
    let record = DeliveryAttempt {
        attempt: number,
        at,
        status_code,
        error,
        latency_ms,
    };
    if let Err(e) = db.record_attempt(&m.id, &record, outcome).await {
        // The claim expires and the message is sent again: at least once.
        tracing::error!(id = %m.id, error = %e, "could not record a webhook attempt");
    }
}

/// Milliseconds before attempt `number + 1`: the base, doubled per attempt made, capped, with up
/// to a tenth of jitter so that retries of many messages spread out.
fn backoff(base_ms: u64, number: i64) -> i64 {
    let doublings = u32::try_from(number.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    let cap = u64::try_from(MAX_BACKOFF.as_millis()).unwrap_or(u64::MAX);
    let delay = base_ms.saturating_mul(1u64 << doublings).min(cap);
    let jitter = rand::random::<u64>() % (delay / 10 + 1);
    i64::try_from(delay + jitter).unwrap_or(i64::MAX)
}

struct Failure {
    why: String,
    /// Retrying cannot help (an address the guard refuses, a URL that does not parse).
    permanent: bool,
}

impl Failure {
    fn permanent(why: impl Into<String>) -> Self {
        Failure {
            why: why.into(),
            permanent: true,
        }
    }

    fn transient(why: impl Into<String>) -> Self {
        Failure {
            why: why.into(),
            permanent: false,
        }
    }
}

/// Signs and sends; the receiver's status, or why there is none.
async fn send(
    db: &Db,
    client: &http_client::Client,
    config: &WebhookConfig,
    m: &DueDelivery,
) -> Result<u16, Failure> {
    let url = http_client::Url::parse(&m.url)
        .map_err(|e| Failure::permanent(format!("the URL does not parse: {e}")))?;
    if !config.webhook_allow_private {
        // Names are checked by the resolver as they are connected to; literal addresses here.
        let literal = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
        if literal {
            address_guard::check_host(&url)
                .await
                .map_err(Failure::permanent)?;
        }
    }
    let secret = db
        .webhook_secret(m.account, signing::new_secret)
        .await
        .map_err(|e| Failure::transient(format!("signing secret: {e}")))?;
    let timestamp = now_ms() / 1000;
    let signature = signing::sign(&secret, &m.id, timestamp, &m.payload)
        .map_err(|e| Failure::transient(e.to_string()))?;
    let mut response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(m.payload.clone())
        .send()
        .await
        .map_err(|e| Failure::transient(describe(&e)))?;
    let status = response.status().as_u16();
    // Read a bounded part of the answer (so a well-behaved connection can be reused), never more.
    let mut read = 0usize;
    while read < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(status)
}

/// A request error with its causes (reqwest's own message is often just "error sending request").
fn describe(e: &http_client::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(1000, 1);
        assert!((1000..=1100).contains(&first), "{first}");
        let third = backoff(1000, 3);
        assert!((4000..=4400).contains(&third), "{third}");
        let late = backoff(1000, 40);
        assert!(late <= 3_960_000, "{late}");
    }
}
