//! The hub's configuration: one struct, every default stated, validated in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where events are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// In memory (the default): history and snapshots are lost on restart, and
    /// every topic gets a new epoch.
    #[default]
    Memory,
    /// A SQLite file (WAL mode): publishes are acknowledged once durable, and
    /// seqs, history, snapshots and pending approvals survive restarts.
    Sqlite(PathBuf),
    /// A Redis server shared by several nodes: `redis://HOST:PORT[/DB]`, or
    /// `rediss://` for TLS; a password goes in the URL
    /// (`redis://:PASSWORD@HOST:PORT`).
    Redis(String),
}

impl StoreConfig {
    /// As `--store` reads it, with the credentials in a Redis URL masked
    /// (user and password, and a `password` parameter): for logs and printed
    /// configurations.
    pub fn redacted(&self) -> String {
        let StoreConfig::Redis(url) = self else {
            return self.to_string();
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.clone();
        };
        let (place, query) = match rest.split_once('?') {
            Some((place, query)) => (place, Some(query)),
            None => (rest, None),
        };
        let mut redacted = match place.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => format!("{scheme}://{place}"),
        };
        if let Some(query) = query {
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => parameter.to_owned(),
                })
                .collect();
            redacted.push('?');
            redacted.push_str(&parameters.join("&"));
        }
        redacted
    }
}

impl std::fmt::Display for StoreConfig {
    /// As `--store` reads it: `memory` or `sqlite:PATH`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Memory => f.write_str("memory"),
            StoreConfig::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreConfig::Redis(url) => f.write_str(url),
        }
    }
}

impl std::str::FromStr for StoreConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreConfig::Memory);
        }
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            if s.contains("***") {
                return Err(format!(
                    "{s:?} holds `***`, what `herald config print` writes in place of credentials: give the real ones"
                ));
            }
            return Ok(StoreConfig::Redis(s.to_owned()));
        }
        match s.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(StoreConfig::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "unknown store {s:?}: use \"memory\", \"sqlite:PATH\" or \"redis://HOST:PORT[/DB]\""
            )),
        }
    }
}

/// Everything `herald serve` can be told. Field docs state each default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8765`; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Most simultaneous WebSocket connections; over it, new ones are closed
    /// with 1013. Default 10000.
    pub max_connections: usize,
    /// Most simultaneous WebSocket connections of one user (the token's
    /// `sub`, or the `user_id` an open hub is given); over it, new ones are
    /// closed with 1013. Counted per node. Default 0: any number.
    pub max_connections_per_user: usize,
    /// How often the hub sends WebSocket pings and app-level `ping` frames.
    /// Default 30 s.
    pub heartbeat_interval: Duration,
    /// A connection from which nothing (frame, pong) arrived for this long is
    /// closed. Default 2 × the heartbeat interval + 10 s (70 s).
    pub heartbeat_timeout: Duration,
    /// Frames queued per connection before shedding starts. Default 1024.
    pub queue_size: usize,
    /// How long an approval waits for a decision. Default 300 s.
    pub approval_timeout: Duration,
    /// What an approval resolves to on timeout, unless the request says.
    /// Default `true` (proceed), as the seed did.
    pub approval_default_proceed: bool,
    /// Events retained per topic. Default 1000.
    pub history_size: usize,
    /// Oldest event retained. Default 5 minutes.
    pub history_age: Duration,
    /// Approximate memory all retained history may use; past it, idle topics
    /// are evicted first. Default 256 MiB.
    pub history_memory: usize,
    /// Largest WebSocket frame accepted; larger ones close the connection with
    /// 1009. Default 64 KiB.
    pub max_frame_size: usize,
    /// Largest HTTP request body (larger ones get 413) and Unix datagram
    /// (larger ones are rejected; at most 16 MiB). Default 1 MiB.
    pub max_body_size: usize,
    /// Most topics and patterns one connection may subscribe to. Default 1000.
    pub max_subscriptions: usize,
    /// Where events are kept. Default in memory.
    pub store: StoreConfig,
    /// A Unix datagram socket producers may publish to. Default none.
    pub unix_socket: Option<PathBuf>,
    /// Permissions of the Unix socket file. Default 0o660 (owner and group).
    pub unix_socket_mode: u32,
    /// How long a shutdown spreads its closes over: on SIGTERM readiness
    /// fails, new connections are refused, each connection is told
    /// `system.shutdown` with its own `retry_after_ms`, and each is closed
    /// (1001) at a random moment within the window, so clients do not all
    /// come back at once. Default 3 s.
    pub drain_window: Duration,
    /// After the drain window, how long the hub waits for connection tasks
    /// to finish before dropping them. Default 5 s.
    pub shutdown_grace: Duration,
    /// API keys and JWT verification. Default none: the hub runs open.
    pub auth: crate::operations::auth::Authenticator,
    /// How often the hub publishes its figures on topic `metrics` while it
    /// has subscribers (`/ws/metrics`); zero turns that off. Default 5 s.
    pub metrics_interval: Duration,
    /// Origins allowed to open WebSockets (exact `scheme://host[:port]`;
    /// empty allows any) and to call the HTTP API from a browser (CORS; empty
    /// allows none but the hub's own). Default empty.
    pub allowed_origins: Vec<String>,
    /// Frames a second one connection may send; 0 is unlimited. Default 100.
    pub client_rate_limit: u32,
    /// Events a second one producer (API key, or address) may publish; 0 is
    /// unlimited. Default 0.
    pub publish_rate_limit: u32,
    /// How long a client may take to send a request's headers (slow-loris
    /// protection; also bounds idle keep-alive connections). Default 10 s.
    pub header_timeout: Duration,
    /// Allow a non-loopback bind without authentication. Default false.
    pub insecure: bool,
    /// A directory served under `/app/` (e.g. `web-client` for its example
    /// page). Default none.
    pub static_dir: Option<PathBuf>,
    /// Accept WebSocket `permessage-deflate` when a client offers it.
    /// Default off: compression costs CPU that only large payloads repay.
    pub compression: bool,
    /// A runtime that cannot run a task for this long (a worker blocked in
    /// one poll, or the whole process paused) is logged and counted as a
    /// stall; zero turns the watchdog off. Default 1 s.
    pub watchdog_threshold: Duration,
}

/// How often the hub pings each connection, unless told.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8765)),
            max_connections: 10_000,
            max_connections_per_user: 0,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: Config::heartbeat_timeout_for(DEFAULT_HEARTBEAT_INTERVAL),
            queue_size: 1024,
            approval_timeout: Duration::from_secs(300),
            approval_default_proceed: true,
            history_size: 1000,
            history_age: Duration::from_secs(300),
            history_memory: 256 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_body_size: 1024 * 1024,
            max_subscriptions: 1000,
            store: StoreConfig::Memory,
            unix_socket: None,
            unix_socket_mode: 0o660,
            drain_window: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(5),
            auth: crate::operations::auth::Authenticator::default(),
            allowed_origins: Vec::new(),
            metrics_interval: Duration::from_secs(5),
            client_rate_limit: 100,
            publish_rate_limit: 0,
            header_timeout: Duration::from_secs(10),
            insecure: false,
            static_dir: None,
            compression: false,
            watchdog_threshold: Duration::from_secs(1),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// The heartbeat timeout when none is given: two heartbeat intervals and
    /// 10 s of slack, so one lost ping does not end a connection.
    pub fn heartbeat_timeout_for(interval: Duration) -> Duration {
        interval
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(10))
    }

    /// Checks the values together; the hub refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max-connections", self.max_connections),
            ("queue-size", self.queue_size),
            ("history-size", self.history_size),
            ("max-frame-size", self.max_frame_size),
            ("max-body-size", self.max_body_size),
            ("max-subscriptions", self.max_subscriptions),
            ("history-memory", self.history_memory),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("--{name} must be at least 1")));
            }
        }
        let durations = [
            ("heartbeat-interval", self.heartbeat_interval),
            // 0s would keep no event, and time out every request at once.
            ("history-age", self.history_age),
            ("header-timeout", self.header_timeout),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ConfigError(format!("--{name} must be positive")));
            }
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(ConfigError(format!(
                "--static-dir {} is not a directory",
                dir.display()
            )));
        }
        // The timeout of every approval that names none of its own: out of
        // range, each of them would be refused, about a field its producer
        // never sent.
        let most = crate::core::approvals::MAX_TIMEOUT;
        if self.approval_timeout < Duration::from_millis(1) || self.approval_timeout > most {
            return Err(ConfigError(format!(
                "--approval-timeout must be between 1ms and {}h",
                most.as_secs() / 3600
            )));
        }
        if !self.metrics_interval.is_zero() && self.metrics_interval < MIN_METRICS_INTERVAL {
            return Err(ConfigError(format!(
                "--metrics-interval must be 0s (off) or at least {MIN_METRICS_INTERVAL:?}"
            )));
        }
        // Beyond loopback, both halves or neither (`--insecure`): with one
        // half only, the other is open to the network, and the HTTP API's
        // history would hand anyone what the tokens' `topics` refuse.
        let missing = match (self.auth.requires_token(), self.auth.requires_key()) {
            (true, true) => None,
            (false, false) => {
                Some("without authentication: set --jwt-secret or --jwt-public-key and --api-keys")
            }
            (true, false) => Some("with the HTTP API open to anyone: set --api-keys too"),
            (false, true) => {
                Some("with subscribers unauthenticated: set --jwt-secret or --jwt-public-key too")
            }
        };
        if let Some(missing) = missing
            && !self.bind.ip().is_loopback()
            && !self.insecure
        {
            return Err(ConfigError(format!(
                "refusing to listen on {} {missing}, or pass --insecure to run it so",
                self.bind
            )));
        }
        if !self.watchdog_threshold.is_zero() && self.watchdog_threshold < MIN_WATCHDOG_THRESHOLD {
            return Err(ConfigError(format!(
                "--watchdog-threshold must be 0s (off) or at least {MIN_WATCHDOG_THRESHOLD:?}"
            )));
        }
        if self.heartbeat_timeout < self.heartbeat_interval {
            return Err(ConfigError(
                "--heartbeat-timeout must be at least the heartbeat interval".into(),
            ));
        }
        Ok(())
    }
}

/// Parses `500ms`, `1s`, `5m`, `1h` (a bare number is seconds, and a
/// fraction such as `1.5s` is taken). Written here rather than taken from
/// `humantime`, whose parser refuses both forms, which the flags, their
/// environment variables and the configuration file accept.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?} has an unknown unit: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A duration as [`parse_duration`] reads it, in the largest unit that
/// states it exactly: `5m`, `30s`, `500ms`.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() == 0 {
        match seconds {
            0 => "0s".to_owned(),
            _ if seconds % 3600 == 0 => format!("{}h", seconds / 3600),
            _ if seconds % 60 == 0 => format!("{}m", seconds / 60),
            _ => format!("{seconds}s"),
        }
    } else if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// A size as [`parse_size`] reads it, in the largest binary unit that states
/// it exactly: `256MiB`, `64KiB`, `1000`.
pub fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(factor, _)| bytes != 0 && bytes % factor == 0)
        .map_or_else(
            || bytes.to_string(),
            |(factor, unit)| format!("{}{unit}", bytes / factor),
        )
}

/// Parses a size in bytes: `65536`, `64KiB`, `1MiB`, `1GiB` (also `KB`/`MB`, powers of ten).
/// Written here rather than taken from `bytesize`, which reads `K`, `M` and
/// `G` as powers of ten where these flags read them as powers of two.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 65536, 64KiB or 1MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1024,
        "MiB" | "M" => 1024 * 1024,
        "GiB" | "G" => 1024 * 1024 * 1024,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit: use B, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The shortest `--watchdog-threshold`: the watchdog looks four times per
/// threshold, and below a millisecond it would mostly measure itself.
const MIN_WATCHDOG_THRESHOLD: Duration = Duration::from_millis(1);

/// The shortest `--metrics-interval`: ten figures a second are plenty for a
/// page, and each is an event in the `metrics` topic's history.
const MIN_METRICS_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    /// Whether a browser page from `origin` may open WebSockets and call the
    /// HTTP API of the hub it reached as `host` (the request's `Host`): the
    /// hub's own origin (its console), and those `--allowed-origins` lists
    /// (`*`: any); any when it is unset, as the contract says.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let own = origin
            .split_once("://")
            .zip(host)
            .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host));
        own || self.allowed_origins.is_empty()
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed == "*" || allowed == origin)
    }

    /// Whether a request that reached the hub as `host` (its `Host`) may be
    /// answered: on loopback, a request to a half of the hub that is open (a
    /// WebSocket `upgrade` without subscriber tokens, an HTTP call without
    /// API keys) only when it names this machine (`localhost`, a name under
    /// it, or an IP address), so a page whose own name was rebound to
    /// 127.0.0.1 (DNS rebinding) cannot use the hub as its own origin; a
    /// proxy in front of such a hub passes `Host: localhost`. Anything
    /// else: any host.
    pub fn host_allowed(&self, host: Option<&str>, upgrade: bool) -> bool {
        let authenticated = if upgrade {
            self.auth.requires_token()
        } else {
            self.auth.requires_key()
        };
        if authenticated || !self.bind.ip().is_loopback() {
            return true;
        }
        host.and_then(authority_host)
            .is_none_or(|host| is_localhost(&host) || host.parse::<std::net::IpAddr>().is_ok())
    }
}

/// The host of an authority (`host[:port]`, `[v6]:port`), without brackets.
fn authority_host(authority: &str) -> Option<String> {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `localhost` or a name under it (RFC 6761: browsers resolve those to
/// loopback themselves, so no site can rebind one). `host` is lowercase.
fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// Parses `--bind`: `IP:PORT`, or `HOST:PORT` resolved once (an IPv4
/// address first, as `localhost` usually means `127.0.0.1`).
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text:?} is not an address like 127.0.0.1:8765: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_name_origins_or_any_with_a_star() {
        assert!(Config::default().origin_allowed("https://anywhere.example", None));
        let mut config = Config {
            allowed_origins: vec!["https://app.example".into()],
            ..Config::default()
        };
        assert!(config.origin_allowed("https://app.example", None));
        assert!(!config.origin_allowed("https://app.example.evil.example", None));
        config.allowed_origins.push("*".into());
        assert!(config.origin_allowed("https://anywhere.example", None));
    }

    #[test]
    fn the_hubs_own_origin_is_allowed_whatever_allowed_origins_lists() {
        let config = Config {
            allowed_origins: vec!["https://app.example".into()],
            ..Config::default()
        };
        let host = Some("herald.example:8765");
        assert!(config.origin_allowed("https://herald.example:8765", host));
        assert!(!config.origin_allowed("https://herald.example:9999", host));
        assert!(!config.origin_allowed("https://evil.example", host));
    }

    #[test]
    fn an_open_hub_on_loopback_answers_hosts_that_name_this_machine_only() {
        let config = Config::default();
        for host in [
            None,
            Some("127.0.0.1:8765"),
            Some("localhost:8765"),
            Some("app.localhost:8765"),
            Some("[::1]:8765"),
        ] {
            for upgrade in [false, true] {
                assert!(config.host_allowed(host, upgrade), "{host:?}");
            }
        }
        for upgrade in [false, true] {
            assert!(!config.host_allowed(Some("rebind.evil.example:8765"), upgrade));
        }
        let beyond = Config {
            bind: "0.0.0.0:8765".parse().unwrap(),
            ..Config::default()
        };
        assert!(beyond.host_allowed(Some("herald.internal:8765"), false));
    }

    #[test]
    fn bind_takes_an_address_or_a_host_name() {
        assert_eq!(
            parse_bind("127.0.0.1:0"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        let localhost = parse_bind("localhost:8765").unwrap();
        assert!(localhost.ip().is_loopback() && localhost.port() == 8765);
        assert!(parse_bind("127.0.0.1").is_err());
    }

    #[test]
    fn durations_read_like_the_contract_says() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1 lightyear").is_err());
    }

    #[test]
    fn durations_are_spelled_so_that_they_parse_back() {
        for (value, text) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(value), text);
            assert_eq!(parse_duration(text), Ok(value));
        }
        let odd = Duration::from_micros(1_500);
        assert_eq!(parse_duration(&format_duration(odd)), Ok(odd));
    }

    #[test]
    fn sizes_are_spelled_so_that_they_parse_back() {
        for (value, text) in [
            (256 << 20, "256MiB"),
            (64 << 10, "64KiB"),
            (1 << 30, "1GiB"),
            (1000, "1000"),
            (0, "0"),
        ] {
            assert_eq!(format_size(value), text);
            assert_eq!(parse_size(text), Ok(value));
        }
    }

    #[test]
    fn stores_are_spelled_so_that_they_parse_back() {
        for store in [
            StoreConfig::Memory,
            StoreConfig::Sqlite("/tmp/h.db".into()),
            StoreConfig::Redis("redis://127.0.0.1:6379/2".into()),
        ] {
            assert_eq!(store.to_string().parse(), Ok(store));
        }
    }

    #[test]
    fn the_default_heartbeat_timeout_follows_the_default_interval() {
        let config = Config::default();
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(70));
    }

    #[test]
    fn store_parses_memory_and_sqlite_paths() {
        assert_eq!("memory".parse(), Ok(StoreConfig::Memory));
        assert_eq!(
            "sqlite:/tmp/h.db".parse(),
            Ok(StoreConfig::Sqlite("/tmp/h.db".into()))
        );
        assert!("postgres:x".parse::<StoreConfig>().is_err());
        assert!(
            "redis://***@cache.example:6379"
                .parse::<StoreConfig>()
                .is_err_and(|e| e.contains("config print")),
            "a masked URL read back"
        );
        let secret: StoreConfig = "rediss://:hunter2@cache.example:6380/1".parse().unwrap();
        assert_eq!(secret.redacted(), "rediss://***@cache.example:6380/1");
    }

    #[test]
    fn a_redacted_redis_url_keeps_no_credential() {
        for (url, redacted) in [
            ("redis://admin:hunter2@h:1/0", "redis://***@h:1/0"),
            (
                "redis://h:1/0?password=hunter2&protocol=resp3",
                "redis://h:1/0?password=***&protocol=resp3",
            ),
            ("redis://h:1", "redis://h:1"),
        ] {
            let store: StoreConfig = url.parse().unwrap();
            assert_eq!(store.redacted(), redacted);
        }
    }
}
