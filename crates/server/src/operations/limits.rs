//! Rate limits: token buckets for a connection's frames and a producer's publishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; bursts of up to two seconds' worth are allowed.
    pub(crate) fn new(rate_per_second: u32) -> TokenBucket {
        let rate = f64::from(rate_per_second);
        TokenBucket {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if there are enough.
    pub(crate) fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// What the frame limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Refuse this frame (`rate_limited`), keep the connection.
    Refuse,
    /// Sustained abuse: close the connection.
    Close,
}

/// How long refusals are counted before the count starts over.
const ABUSE_WINDOW: Duration = Duration::from_secs(5);

/// A connection's frame limiter: refuses frames over the rate, and closes the
/// connection when it keeps flooding (more refusals in [`ABUSE_WINDOW`] than
/// the rate allows in that window).
#[derive(Debug)]
pub(crate) struct FrameLimiter {
    bucket: Option<TokenBucket>,
    window_start: Instant,
    refused: u64,
    tolerance: u64,
}

impl FrameLimiter {
    /// `rate` frames a second; 0 means unlimited.
    pub(crate) fn new(rate: u32) -> FrameLimiter {
        FrameLimiter {
            bucket: (rate > 0).then(|| TokenBucket::new(rate)),
            window_start: Instant::now(),
            refused: 0,
            tolerance: u64::from(rate).max(10) * ABUSE_WINDOW.as_secs(),
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let Some(bucket) = &mut self.bucket else {
            return Verdict::Allow;
        };
        if bucket.take(1.0, now) {
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.tolerance {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// Most producers tracked at once; idle full buckets are forgotten past it.
const MAX_PRODUCERS: usize = 10_000;

/// Publish rate limits per producer (API key, or remote address without keys).
#[derive(Debug)]
pub(crate) struct PublishLimiter {
    rate: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl PublishLimiter {
    /// `rate` events a second per producer; 0 means unlimited.
    pub(crate) fn new(rate: u32) -> PublishLimiter {
        PublishLimiter {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Whether `producer` may publish `events` more events now.
    pub(crate) fn allow(&self, producer: &str, events: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_PRODUCERS && !buckets.contains_key(producer) {
            let rate = self.rate;
            buckets.retain(|_, bucket| !bucket.clone().take(f64::from(rate) * 2.0, now));
        }
        buckets
            .entry(producer.to_owned())
            .or_insert_with(|| TokenBucket::new(self.rate))
            .take(events as f64, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10);
        assert!((0..20).all(|_| bucket.take(1.0, start)));
        assert!(!bucket.take(1.0, start));
        assert!(bucket.take(1.0, start + Duration::from_millis(150)));
    }

    #[test]
    fn a_sustained_flood_is_closed_but_a_short_burst_only_refused() {
        let start = Instant::now();
        let mut limiter = FrameLimiter::new(10);
        let verdicts: Vec<Verdict> = (0..60).map(|_| limiter.check(start)).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            20
        );
        assert!(verdicts.contains(&Verdict::Refuse));
        assert!(!verdicts.contains(&Verdict::Close));
        assert!((0..100).any(|_| limiter.check(start) == Verdict::Close));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = FrameLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check(Instant::now()) == Verdict::Allow));
        assert!(PublishLimiter::new(0).allow("k", 1_000_000));
    }
}
