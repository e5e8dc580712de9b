//! [`RetryPolicy`]: how often and how patiently HTTP calls are retried.

use std::time::Duration;

/// Exponential backoff with full jitter for retryable failures (connection
/// errors, timeouts, 5xx, 429). Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` disables retries. Default: 8.
    pub max_attempts: u32,
    /// The delay cap before the second attempt; it doubles for each
    /// following one. Default: 100 ms.
    pub initial_delay: Duration,
    /// The largest delay cap. Default: 5 s (with the defaults, the waits
    /// between attempts add up to 11 s at most; each attempt may also take
    /// up to the publisher's `timeout`, 30 s by default, so a hub that
    /// accepts and never answers holds a call for about 4 minutes: bound
    /// it with your own deadline, reusing the event's `id` if you retry).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay cap after failed attempt `attempt` (1-based):
    /// `min(max_delay, initial_delay * 2^(attempt - 1))`.
    pub fn delay_cap(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay after failed attempt `attempt`: uniform in `[cap / 2, cap]`,
    /// so retries of many producers spread out but never come back at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.delay_cap(attempt);
        cap / 2 + (cap / 2).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_it() {
        let policy = RetryPolicy::default();
        let caps: Vec<u64> = (1..=8)
            .map(|a| policy.delay_cap(a).as_millis() as u64)
            .collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.delay_cap(200), Duration::from_secs(5));
        for attempt in 1..10 {
            let delay = policy.delay(attempt);
            let cap = policy.delay_cap(attempt);
            assert!(delay <= cap && delay >= cap / 2, "{delay:?} vs {cap:?}");
        }
    }
}
