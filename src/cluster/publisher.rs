//! The one task that publishes this node's relay messages, in the order they were queued, with
//! everything waiting sent as one pipeline per round trip. Redis delivers one connection's
//! publishes in order, so the others see a session's batches in `seq` order unless something is
//! lost.
//!
//! While Redis is unreachable, messages are dropped and counted rather than buffered: the other
//! nodes repair document gaps from the database, and presence and events are ephemeral.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{telemetry, Cluster};

/// How long one PUBLISH may take before the connection counts as down.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to reach Redis.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Most messages sent in one round trip.
const PIPELINE: usize = 256;

pub async fn run(cluster: Cluster, mut queue: mpsc::Receiver<(String, Vec<u8>)>) {
    let mut connection: Option<ConnectionManager> = None;
    let mut last_attempt: Option<Instant> = None;
    let mut batch = Vec::with_capacity(PIPELINE);
    while queue.recv_many(&mut batch, PIPELINE).await > 0 {
        if connection.is_none() && last_attempt.is_none_or(|at| at.elapsed() >= RECONNECT_DELAY) {
            last_attempt = Some(Instant::now());
            connection = connect(&cluster).await;
        }
        let Some(conn) = connection.as_mut() else {
            metrics::counter!(telemetry::RELAY_DROPPED).increment(batch.len() as u64);
            batch.clear();
            continue;
        };
        // Everything queued meanwhile goes in one pipeline: one round trip, in order.
        let mut pipe = redis::pipe();
        for (channel, payload) in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        let count = pipe.len() as u64;
        match tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => cluster.set_publisher_up(true),
            Ok(Err(error)) => {
                tracing::warn!(%error, "relay publish failed");
                metrics::counter!(telemetry::RELAY_DROPPED).increment(count);
                cluster.set_publisher_up(false);
            }
            Err(_) => {
                tracing::warn!("relay publish timed out");
                metrics::counter!(telemetry::RELAY_DROPPED).increment(count);
                cluster.set_publisher_up(false);
            }
        }
    }
}

/// A connection manager (it reconnects by itself once it exists), or `None` for now: messages
/// are dropped until the next attempt, one `RECONNECT_DELAY` later at the earliest.
async fn connect(cluster: &Cluster) -> Option<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(PUBLISH_TIMEOUT));
    match cluster
        .client()
        .get_connection_manager_with_config(config)
        .await
    {
        Ok(conn) => {
            cluster.set_publisher_up(true);
            Some(conn)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot reach Redis to publish; relaying resumes when it is back");
            cluster.set_publisher_up(false);
            None
        }
    }
}
