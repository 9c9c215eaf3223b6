//! Each API key's own request budget: `ATELIER_API_KEY_RATE_PER_MINUTE` requests per fixed
//! one-minute window. A script that loops too fast gets 429 with `Retry-After`; every answer to
//! a key carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
//! until the window ends), added by [`crate::http::api::rate_limit_headers`].
//!
//! Fixed windows, not a token bucket, because that is what the headers can state exactly and
//! what the cluster's Redis counters count: in a cluster the window's count is kept in Redis (one
//! budget however many nodes serve the key); when Redis does not answer, each node counts alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_protocol::ids::ApiKeyId;

use crate::cluster::rate_limit::SharedRateLimit;
use crate::db::now_ms;
use crate::error::{Error, Result};

const WINDOW_MS: i64 = 60_000;

/// The budget of one key as of one request: what the headers say.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Until the window ends.
    pub reset: Duration,
}

#[derive(Clone)]
pub struct KeyRateLimit {
    per_minute: u32,
    /// Key → (window number, requests counted in it). A std mutex: held for a map look-up only.
    local: Arc<Mutex<HashMap<ApiKeyId, (i64, u32)>>>,
    shared: Option<SharedRateLimit>,
}

impl KeyRateLimit {
    pub fn per_minute(per_minute: u32, shared: Option<SharedRateLimit>) -> Self {
        KeyRateLimit {
            per_minute: per_minute.max(1),
            local: Arc::default(),
            shared,
        }
    }

    /// Counts one request of `key`: its budget afterwards, or 429 (the error carries the wait;
    /// the budget is returned alongside so the refusal has the headers too).
    pub async fn check(&self, key: ApiKeyId) -> (RateLimitInfo, Result<()>) {
        let now = now_ms();
        let window = now / WINDOW_MS;
        let reset = Duration::from_millis(u64::try_from(WINDOW_MS - now % WINDOW_MS).unwrap_or(0));
        let mut count = None;
        if let Some(shared) = &self.shared {
            count = shared.count(&format!("key:{key}")).await;
        }
        let count = match count {
            Some(count) => u32::try_from(count).unwrap_or(u32::MAX),
            None => self.count_locally(key, window),
        };
        let info = RateLimitInfo {
            limit: self.per_minute,
            remaining: self.per_minute.saturating_sub(count),
            reset,
        };
        if count > self.per_minute {
            return (info, Err(Error::RateLimited { retry_after: reset }));
        }
        (info, Ok(()))
    }

    fn count_locally(&self, key: ApiKeyId, window: i64) -> u32 {
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = local.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }

    /// Forgets keys whose window has passed, so the table holds only the last minute's keys.
    pub fn prune(&self) {
        let window = now_ms() / WINDOW_MS;
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        local.retain(|_, (w, _)| *w == window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_window() {
        let limit = KeyRateLimit::per_minute(3, None);
        let (a, b) = (ApiKeyId::new_random(), ApiKeyId::new_random());
        let counts: Vec<u32> = (0..4).map(|_| limit.count_locally(a, 7)).collect();
        assert_eq!(counts, [1, 2, 3, 4]);
        assert_eq!(limit.count_locally(b, 7), 1);
        // A new window starts from zero.
        assert_eq!(limit.count_locally(a, 8), 1);
    }
}
