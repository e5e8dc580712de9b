//! [`SessionConfig`]: reconnection, heartbeat and offline-queue policy.

use std::time::Duration;

/// How a [`Session`](super::Session) reconnects, keeps the connection alive
/// and buffers frames while offline. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The delay cap of the first reconnect attempt. Default: 1 s.
    pub initial_reconnect_delay: Duration,
    /// The largest delay between reconnect attempts. Default: 30 s.
    pub max_reconnect_delay: Duration,
    /// How many reconnect attempts in a row (since the last stable
    /// connection) before the session gives up and reports
    /// [`ClosedReason::AttemptsExhausted`](super::ClosedReason::AttemptsExhausted).
    /// Default: `None`, reconnect forever.
    pub max_reconnect_attempts: Option<u32>,
    /// A connection that stayed open at least this long counts as stable:
    /// when it closes, the backoff starts again from attempt 1. Default: 10 s.
    pub stable_after: Duration,
    /// How often the session sends an app-level `ping` while open.
    /// `Duration::ZERO` turns the client heartbeat off. Default: 30 s.
    pub heartbeat_interval: Duration,
    /// How many pings may go unanswered: at the heartbeat tick after
    /// `missed_pongs_allowed + 1` pings without any frame received, the
    /// connection is declared dead (closed with 4000 and reconnected). Any
    /// received frame counts as an answer. Default: 2 (with a 30 s interval,
    /// dead after 120 s of silence).
    pub missed_pongs_allowed: u32,
    /// How many application frames [`Session::send`](super::Session::send)
    /// buffers while offline; when full, the oldest is dropped and reported as
    /// [`SessionEvent::FrameDropped`](super::SessionEvent::FrameDropped).
    /// Subscriptions are state, not queued frames, and are never dropped.
    /// Default: 256.
    pub offline_queue_capacity: usize,
    /// Full jitter on reconnect delays (a uniform random delay in
    /// `[0, cap]`); when off, the delay is the cap itself. Default: `true`.
    pub jitter: bool,
    /// How many topics the session keeps a checkpoint for: past it, the
    /// least recently advanced are forgotten until an eighth of it is free
    /// again, never one a subscription names
    /// (a topic seen under a pattern such as `execution:*` gets one, so a
    /// long session would otherwise keep one for every execution it ever
    /// saw). Default: 4096.
    pub max_checkpoints: usize,
    /// How many bytes of `since` one `subscribe` frame carries at most, as
    /// [`since_bytes`](super::checkpoint) counts them: the topics a
    /// subscription names, then the most recently advanced of the others it
    /// covers, resume from their checkpoint; the rest resume live, and
    /// what each of them missed is reported as a `trimmed` gap at its first
    /// event or `subscribed` after the reconnect. It keeps a resubscription below the hub's
    /// frame limit (`--max-frame-size`, 64 KiB by default), over which the
    /// hub closes the connection with 1009 and the session would stop for
    /// good. Default: 32 KiB (about 350 topics with 32-character epochs).
    pub max_since_bytes: usize,
    /// The largest frame the hub takes: its `--max-frame-size`, 64 KiB by
    /// default (over it the hub closes the connection with 1009). A
    /// subscription, unsubscription or request whose frame would be larger
    /// is refused with [`SessionError::FrameTooLarge`](super::SessionError::FrameTooLarge)
    /// instead of being sent, and a resubscription's `since` is cut to fit.
    /// Default: 64 KiB.
    pub max_frame_bytes: usize,
    /// How many hub URLs the driver can connect to (several nodes of one hub
    /// behind no load balancer): each reconnect moves to the next one, in
    /// turn, and resumes with `since` there. Default: 1.
    pub endpoints: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            initial_reconnect_delay: Duration::from_millis(1_000),
            max_reconnect_delay: Duration::from_millis(30_000),
            max_reconnect_attempts: None,
            stable_after: Duration::from_millis(10_000),
            heartbeat_interval: Duration::from_millis(30_000),
            missed_pongs_allowed: 2,
            offline_queue_capacity: 256,
            jitter: true,
            max_checkpoints: 4096,
            max_since_bytes: 32 * 1024,
            max_frame_bytes: 64 * 1024,
            endpoints: 1,
        }
    }
}

impl SessionConfig {
    /// The delay cap of reconnect attempt `attempt` (1-based), in milliseconds:
    ///
    /// `cap(attempt) = min(max_reconnect_delay, initial_reconnect_delay * 2^(attempt - 1))`
    ///
    /// computed without overflow (saturating). With defaults: 1000, 2000,
    /// 4000, 8000, 16000, 30000, 30000, …. The actual delay is uniform in
    /// `[0, cap]` with jitter, `cap` without.
    pub fn reconnect_delay_cap(&self, attempt: u32) -> u64 {
        let initial = millis(self.initial_reconnect_delay);
        let max = millis(self.max_reconnect_delay);
        let exponent = attempt.saturating_sub(1);
        let scaled = if exponent >= 64 {
            u64::MAX
        } else {
            initial.saturating_mul(1u64 << exponent)
        };
        scaled.min(max)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
