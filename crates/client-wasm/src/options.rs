//! The options object of `new WasmClient(url, options, emit)`, as JSON, mapped
//! onto [`SessionConfig`]. Absent fields keep the session's defaults.

use std::time::Duration;

use herald_protocol::session::SessionConfig;
use serde::Deserialize;

/// The subprotocol Herald speaks.
const SUBPROTOCOL: &str = "herald.v1";

/// The driver's own default for `connectTimeout`, in milliseconds.
pub(crate) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// What the TypeScript wrapper passes, in its camelCase names; durations in
/// milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Options {
    initial_reconnect_delay: Option<u64>,
    max_reconnect_delay: Option<u64>,
    max_reconnect_attempts: Option<u32>,
    stable_after: Option<u64>,
    heartbeat_interval: Option<u64>,
    missed_pongs_allowed: Option<u32>,
    offline_queue_capacity: Option<usize>,
    jitter: Option<bool>,
    max_checkpoints: Option<usize>,
    max_since_bytes: Option<usize>,
    max_frame_bytes: Option<usize>,
    /// How long a socket may stay in `CONNECTING` before the attempt counts
    /// as failed (a hub that accepts TCP but never answers the upgrade).
    /// Default: 10 s; 0 turns it off.
    connect_timeout: Option<u64>,
    /// The WebSocket URLs of the hub's other nodes: each reconnect moves to
    /// the next URL, in turn. Default: none.
    failover: Vec<String>,
    /// The JWT, sent as the subprotocol `bearer.<JWT>` beside `herald.v1`
    /// (never in the URL, where logs and history would keep it).
    token: Option<String>,
}

impl Options {
    /// Parses the options JSON (`""` or `null` mean all defaults).
    pub(crate) fn parse(json: &str) -> Result<Options, serde_json::Error> {
        let json = json.trim();
        if json.is_empty() || json == "null" {
            return Ok(Options::default());
        }
        serde_json::from_str(json)
    }

    /// The other nodes' WebSocket URLs.
    pub(crate) fn failover(&self) -> &[String] {
        &self.failover
    }

    /// The session policy.
    pub(crate) fn session_config(&self) -> SessionConfig {
        let defaults = SessionConfig::default();
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        SessionConfig {
            initial_reconnect_delay: ms(
                self.initial_reconnect_delay,
                defaults.initial_reconnect_delay,
            ),
            max_reconnect_delay: ms(self.max_reconnect_delay, defaults.max_reconnect_delay),
            max_reconnect_attempts: self
                .max_reconnect_attempts
                .or(defaults.max_reconnect_attempts),
            stable_after: ms(self.stable_after, defaults.stable_after),
            heartbeat_interval: ms(self.heartbeat_interval, defaults.heartbeat_interval),
            missed_pongs_allowed: self
                .missed_pongs_allowed
                .unwrap_or(defaults.missed_pongs_allowed),
            offline_queue_capacity: self
                .offline_queue_capacity
                .unwrap_or(defaults.offline_queue_capacity),
            jitter: self.jitter.unwrap_or(defaults.jitter),
            max_checkpoints: self.max_checkpoints.unwrap_or(defaults.max_checkpoints),
            max_since_bytes: self.max_since_bytes.unwrap_or(defaults.max_since_bytes),
            max_frame_bytes: self.max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
            endpoints: 1 + self.failover.len(),
        }
    }

    /// The subprotocols every socket offers: `herald.v1`, and `bearer.<JWT>`
    /// with a token.
    pub(crate) fn subprotocols(&self) -> Vec<String> {
        subprotocols(self.token.as_deref())
    }

    /// The connect timeout in milliseconds (0: none).
    pub(crate) fn connect_timeout_ms(&self) -> u64 {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS)
    }
}

/// The subprotocols a socket offers with `token`: `herald.v1`, and
/// `bearer.<JWT>` with a token.
pub(crate) fn subprotocols(token: Option<&str>) -> Vec<String> {
    let mut protocols = vec![SUBPROTOCOL.to_owned()];
    protocols.extend(token.map(|token| format!("bearer.{token}")));
    protocols
}
