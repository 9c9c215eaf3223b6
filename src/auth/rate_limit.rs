//! Per-IP rate limit for signup and login, so passwords cannot be guessed at line speed.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct AuthRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AuthRateLimit {
    pub fn per_minute(n: NonZeroU32) -> Self {
        AuthRateLimit {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Takes one attempt for this IP, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<()> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Forgets IPs whose budget is full again, so the table does not grow without bound.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}
