//! Per-IP rate limit for signup and login, so passwords cannot be guessed at line speed.
//!
//! In a cluster the count is kept in Redis (one budget across all nodes, whichever node the load
//! balancer picks); when Redis does not answer, each node's own limiter decides.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::cluster::rate_limit::{Shared, SharedRateLimit};
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct AuthRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    per_minute: NonZeroU32,
    shared: Option<SharedRateLimit>,
}

impl AuthRateLimit {
    /// `shared`: the cluster's counters (cluster mode).
    pub fn per_minute(n: NonZeroU32, shared: Option<SharedRateLimit>) -> Self {
        AuthRateLimit {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(n))),
            per_minute: n,
            shared,
        }
    }

    /// Takes one attempt for this IP, or says how long to wait.
    pub async fn check(&self, ip: IpAddr) -> Result<()> {
        if let Some(shared) = &self.shared {
            match shared
                .check(&format!("auth:{ip}"), self.per_minute.get())
                .await
            {
                Shared::Allowed => return Ok(()),
                Shared::Limited(retry_after) => return Err(Error::RateLimited { retry_after }),
                Shared::Unavailable => {}
            }
        }
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
