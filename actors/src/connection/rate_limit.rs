//! A token bucket for inbound messages.

use tokio::time::Instant;

/// Allows `burst` messages at once and `per_sec` sustained.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        let capacity = f64::from(burst.max(per_sec).max(1));
        Self {
            capacity,
            per_sec: f64::from(per_sec.max(1)),
            tokens: capacity,
            refilled_at: Instant::now(),
        }
    }

    /// Takes one token; `false` when the client exceeds its rate.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_refills() {
        let mut bucket = TokenBucket::new(10, 20);
        assert!((0..20).all(|_| bucket.take()));
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
    }
}
