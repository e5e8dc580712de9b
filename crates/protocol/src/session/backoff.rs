//! Reconnect backoff: exponential with full jitter, driven by a caller-seeded
//! PRNG so the crate needs no OS entropy and tests are deterministic.

use super::config::SessionConfig;

/// xorshift64*: tiny, fast, good enough for jitter. Not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // xorshift has one fixed point, zero: any other value works.
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `[0, max]` (the modulo bias is irrelevant for jitter).
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(bound) => self.next_u64() % bound,
            None => self.next_u64(),
        }
    }
}

/// Counts reconnect attempts since the last stable connection and picks
/// each attempt's delay.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    attempts: u32,
    rng: Rng,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Backoff {
        Backoff {
            attempts: 0,
            rng: Rng::new(seed),
        }
    }

    /// Attempts made since the last reset.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts again from attempt 1 (after a stable connection, or when the
    /// application asks to reconnect).
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Starts again, counting the attempt about to be made as attempt 1
    /// (the hub said when to come back); returns 1.
    pub(crate) fn restart_at_one(&mut self) -> u32 {
        self.attempts = 1;
        self.attempts
    }

    /// Counts one more attempt and returns its number (1-based) and delay in
    /// milliseconds: `cap(attempt)`, or uniform in `[0, cap(attempt)]` with jitter.
    pub(crate) fn next_delay(&mut self, config: &SessionConfig) -> (u32, u64) {
        self.attempts = self.attempts.saturating_add(1);
        let cap = config.reconnect_delay_cap(self.attempts);
        let delay = if config.jitter {
            self.rng.up_to(cap)
        } else {
            cap
        };
        (self.attempts, delay)
    }
}
