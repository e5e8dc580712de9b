//! Rate limits: a token bucket for a connection's frames, and `governor`'s
//! keyed limiter for producers' publishes.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

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

/// Publish rate limits per producer (API key, or remote address without
/// keys), on `governor`'s keyed GCRA limiter: `rate` events a second with
/// bursts of two seconds' worth, as the frame limit allows. A producer idle
/// long enough for its bucket to be full again is indistinguishable from a
/// new one, and [`PublishLimiter::forget_idle`] drops it.
#[derive(Debug)]
pub(crate) struct PublishLimiter<C: Clock = DefaultClock> {
    limiter: Option<Keyed<C>>,
}

/// `governor`'s keyed limiter by producer, on clock `C`.
type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// How often the hub drops idle producers' limiter state.
pub(crate) const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

impl PublishLimiter {
    /// `rate` events a second per producer; 0 means unlimited.
    pub(crate) fn new(rate: u32) -> PublishLimiter {
        PublishLimiter::on_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock> PublishLimiter<C> {
    fn on_clock(rate: u32, clock: C) -> PublishLimiter<C> {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            let quota = Quota::per_second(rate).allow_burst(burst);
            RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock)
        });
        PublishLimiter { limiter }
    }

    /// Whether `producer` may publish `events` more events now (a batch is
    /// taken whole or not at all; one larger than the burst never passes).
    pub(crate) fn allow(&self, producer: &str, events: usize) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let Some(events) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return events == 0;
        };
        matches!(
            limiter.check_key_n(&producer.to_owned(), events),
            Ok(Ok(()))
        )
    }

    /// Drops the state of producers whose buckets are full again.
    pub(crate) fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Producers tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
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
    fn a_producer_gets_a_burst_of_two_seconds_then_is_refused_and_others_are_not() {
        let limiter = PublishLimiter::new(10);
        assert!(limiter.allow("k1", 15));
        assert!(limiter.allow("k1", 5));
        assert!(!limiter.allow("k1", 1));
        assert!(
            !limiter.allow("k2", 21),
            "a batch over the burst never passes"
        );
        assert!(limiter.allow("k2", 20));
        assert_eq!(limiter.tracked(), 2);
    }

    #[test]
    fn idle_producers_are_forgotten_once_their_bucket_is_full_again() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = PublishLimiter::on_clock(1000, clock.clone());
        assert!(limiter.allow("busy", 2000));
        assert!(limiter.allow("brief", 1));
        // 5 ms later `brief` is full again (1000/s); `busy` needs 2 s.
        clock.advance(Duration::from_millis(5));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 1);
        assert!(
            !limiter.allow("busy", 100),
            "a busy producer keeps its state"
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = FrameLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check(Instant::now()) == Verdict::Allow));
        assert!(PublishLimiter::new(0).allow("k", 1_000_000));
    }
}
