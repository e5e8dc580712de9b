//! Rate limits on `governor`'s GCRA limiters: one per connection for the
//! frames it sends, and one keyed by producer for publishes. Both allow
//! `rate` a second with bursts of two seconds' worth.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, MonotonicClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// `rate` a second, with bursts of up to two seconds' worth.
fn quota(rate: NonZeroU32) -> Quota {
    let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
    Quota::per_second(rate).allow_burst(burst)
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
/// the rate allows in that window). On the monotonic clock it is as small as
/// the counters it keeps: every connection's reader holds one.
#[derive(Debug)]
pub(crate) struct FrameLimiter<C: Clock = MonotonicClock> {
    limiter: Option<Direct<C>>,
    /// Subscription frames' own allowance, drawn on before the
    /// connection's: the same rate, with a burst of as many frames as a
    /// connection may hold subscriptions, so that a client resubscribing
    /// after a reconnect (a frame per subscription) is not refused half of
    /// them, and the commands it sends next (an approval answered while
    /// it was offline) are not refused for them. Made by the first
    /// subscription frame (a connection subscribed by its URL holds none).
    subscriptions: Option<Box<Direct<C>>>,
    clock: C,
    window_start: C::Instant,
    refused: u32,
    /// Frames a second (0: unlimited).
    rate: u32,
}

/// `governor`'s limiter for one connection, on clock `C`.
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

impl FrameLimiter {
    /// `rate` frames a second; 0 means unlimited.
    pub(crate) fn new(rate: u32) -> FrameLimiter {
        FrameLimiter::on_clock(rate, MonotonicClock)
    }
}

impl<C: Clock + Clone> FrameLimiter<C> {
    fn on_clock(rate: u32, clock: C) -> FrameLimiter<C> {
        let limiter = NonZeroU32::new(rate)
            .map(|rate| RateLimiter::direct_with_clock(quota(rate), clock.clone()));
        FrameLimiter {
            limiter,
            subscriptions: None,
            window_start: clock.now(),
            clock,
            refused: 0,
            rate,
        }
    }

    /// Counts a frame the peer sent now. `subscriptions`: for a
    /// `subscribe` or `unsubscribe` frame, how many subscriptions a
    /// connection may hold (the burst such frames get).
    pub(crate) fn check(&mut self, subscriptions: impl FnOnce() -> Option<usize>) -> Verdict {
        let Some(limiter) = &self.limiter else {
            return Verdict::Allow;
        };
        if let (Some(rate), Some(burst)) = (
            NonZeroU32::new(self.rate),
            subscriptions().and_then(|n| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))),
        ) {
            let bucket = self.subscriptions.get_or_insert_with(|| {
                let quota = Quota::per_second(rate).allow_burst(burst);
                Box::new(RateLimiter::direct_with_clock(quota, self.clock.clone()))
            });
            if bucket.check().is_ok() {
                return Verdict::Allow;
            }
        }
        if limiter.check().is_ok() {
            return Verdict::Allow;
        }
        let now = self.clock.now();
        if Duration::from(now.duration_since(self.window_start)) > ABUSE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        // More refusals in the window than the rate allows in it.
        let tolerance = u64::from(self.rate).max(10) * ABUSE_WINDOW.as_secs();
        if u64::from(self.refused) > tolerance {
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

/// What the publish limit says of a producer's publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Now,
    /// Over the rate: the same publish fits after this long.
    Later(Duration),
    /// A batch larger than the burst: it never fits, split it.
    Never,
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
        let limiter = NonZeroU32::new(rate)
            .map(|rate| RateLimiter::new(quota(rate), DefaultKeyedStateStore::default(), clock));
        PublishLimiter { limiter }
    }

    /// Whether `producer` may publish `events` more events now: a batch is
    /// taken whole or not at all, and one larger than the burst never is.
    pub(crate) fn admit(&self, producer: &str, events: usize) -> Admission {
        let Some(limiter) = &self.limiter else {
            return Admission::Now;
        };
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return if events == 0 {
                Admission::Now
            } else {
                Admission::Never
            };
        };
        match limiter.check_key_n(&producer.to_owned(), n) {
            Ok(Ok(())) => Admission::Now,
            Ok(Err(not_until)) => Admission::Later(not_until.wait_time_from(limiter.clock().now())),
            Err(_) => Admission::Never,
        }
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
    fn subscription_frames_past_the_rate_have_a_burst_of_a_connections_subscriptions() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut limiter = FrameLimiter::on_clock(10, clock.clone());
        assert!((0..20).all(|_| limiter.check(|| None) == Verdict::Allow));
        assert_eq!(limiter.check(|| None), Verdict::Refuse);
        assert!((0..100).all(|_| limiter.check(|| Some(100)) == Verdict::Allow));
        assert_eq!(limiter.check(|| Some(100)), Verdict::Refuse);
    }

    #[test]
    fn a_resubscription_leaves_the_connection_its_allowance_for_other_frames() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut limiter = FrameLimiter::on_clock(10, clock.clone());
        assert!((0..100).all(|_| limiter.check(|| Some(100)) == Verdict::Allow));
        assert!((0..20).all(|_| limiter.check(|| None) == Verdict::Allow));
        assert_eq!(limiter.check(|| None), Verdict::Refuse);
    }

    #[test]
    fn a_connection_gets_a_burst_of_two_seconds_then_the_rate() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut limiter = FrameLimiter::on_clock(10, clock.clone());
        assert!((0..20).all(|_| limiter.check(|| None) == Verdict::Allow));
        assert_eq!(limiter.check(|| None), Verdict::Refuse);
        clock.advance(Duration::from_millis(150));
        assert_eq!(limiter.check(|| None), Verdict::Allow);
        assert_eq!(
            limiter.check(|| None),
            Verdict::Refuse,
            "one frame per 100 ms"
        );
    }

    #[test]
    fn a_sustained_flood_is_closed_but_a_short_burst_only_refused() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut limiter = FrameLimiter::on_clock(10, clock.clone());
        let verdicts: Vec<Verdict> = (0..60).map(|_| limiter.check(|| None)).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            20
        );
        assert!(verdicts.contains(&Verdict::Refuse));
        assert!(!verdicts.contains(&Verdict::Close));
        assert!((0..100).any(|_| limiter.check(|| None) == Verdict::Close));
    }

    #[test]
    fn refusals_older_than_the_abuse_window_are_forgiven() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut limiter = FrameLimiter::on_clock(10, clock.clone());
        // 20 allowed, then 49 refusals: one short of the 50 that close.
        assert!((0..69).all(|_| limiter.check(|| None) != Verdict::Close));
        clock.advance(ABUSE_WINDOW + Duration::from_millis(1));
        // The burst is back (5 s at 10/s), then the count starts over.
        assert!((0..20).all(|_| limiter.check(|| None) == Verdict::Allow));
        assert!((0..50).all(|_| limiter.check(|| None) == Verdict::Refuse));
        assert_eq!(limiter.check(|| None), Verdict::Close);
    }

    #[test]
    fn a_producer_gets_a_burst_of_two_seconds_then_is_refused_and_others_are_not() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = PublishLimiter::on_clock(10, clock.clone());
        assert_eq!(limiter.admit("k1", 15), Admission::Now);
        assert_eq!(limiter.admit("k1", 5), Admission::Now);
        assert_eq!(
            limiter.admit("k1", 1),
            Admission::Later(Duration::from_millis(100)),
            "one more fits a tenth of a second later"
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(limiter.admit("k1", 1), Admission::Now);
        assert_eq!(
            limiter.admit("k2", 21),
            Admission::Never,
            "a batch over the burst never passes"
        );
        assert_eq!(limiter.admit("k2", 20), Admission::Now);
        assert_eq!(limiter.tracked(), 2);
    }

    #[test]
    fn idle_producers_are_forgotten_once_their_bucket_is_full_again() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = PublishLimiter::on_clock(1000, clock.clone());
        assert_eq!(limiter.admit("busy", 2000), Admission::Now);
        assert_eq!(limiter.admit("brief", 1), Admission::Now);
        // 5 ms later `brief` is full again (1000/s); `busy` needs 2 s.
        clock.advance(Duration::from_millis(5));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 1);
        assert!(
            matches!(limiter.admit("busy", 100), Admission::Later(_)),
            "a busy producer keeps its state"
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = FrameLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.check(|| None) == Verdict::Allow));
        assert_eq!(PublishLimiter::new(0).admit("k", 1_000_000), Admission::Now);
    }
}
