//! Rate limits counted in Redis, so a client cannot multiply its budget by the number of nodes.
//!
//! Fixed one-minute windows (`INCR` + `EXPIRE` on a key per client and window). When Redis
//! cannot answer, the caller falls back to its node-local limiter: a Redis outage must not lock
//! everyone out of signing in.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::{now_ms, Cluster};

/// How long a counter may take before the local limiter decides instead.
const TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct SharedRateLimit {
    cluster: Cluster,
    connection: std::sync::Arc<OnceCell<ConnectionManager>>,
}

/// The outcome of one shared attempt.
pub enum Shared {
    Allowed,
    /// Over the limit; retry after this long (the end of the window).
    Limited(Duration),
    /// Redis did not answer.
    Unavailable,
}

impl SharedRateLimit {
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            connection: std::sync::Arc::new(OnceCell::new()),
        }
    }

    /// Counts one attempt of `what` against `per_minute`.
    pub async fn check(&self, what: &str, per_minute: u32) -> Shared {
        let now = now_ms();
        match self.count(what).await {
            Some(count) if count <= u64::from(per_minute) => Shared::Allowed,
            Some(_) => Shared::Limited(Duration::from_millis(60_000 - now % 60_000)),
            None => Shared::Unavailable,
        }
    }

    /// Counts one attempt of `what` in the current one-minute window; returns the window's count
    /// so far, or `None` when Redis did not answer.
    pub async fn count(&self, what: &str) -> Option<u64> {
        let now = now_ms();
        let window = now / 60_000;
        let key = self.cluster.channels().rate_limit(what, window);
        let attempt = async {
            let mut conn = self
                .connection
                .get_or_try_init(|| self.cluster.client().get_connection_manager())
                .await?
                .clone();
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, 120)
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok::<u64, redis::RedisError>(count)
        };
        match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(count)) => Some(count),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}
