//! The defaults of `herald serve`'s flags: [`Config::default()`], spelled the
//! way the flags are written (`30s`, `64KiB`, `660`), so that each default is
//! stated once, in `herald-server`, and `herald serve --help` still shows it.

use std::sync::LazyLock;
use std::time::Duration;

use herald_server::{Config, StoreConfig};

/// The default of every `serve` flag that has one, as clap's default text.
#[derive(Debug)]
pub(crate) struct Defaults {
    pub(crate) bind: String,
    pub(crate) store: String,
    pub(crate) unix_socket_mode: String,
    pub(crate) max_connections: String,
    pub(crate) heartbeat_interval: String,
    pub(crate) queue_size: String,
    pub(crate) approval_timeout: String,
    pub(crate) approval_default_proceed: String,
    pub(crate) history_size: String,
    pub(crate) history_age: String,
    pub(crate) history_memory: String,
    pub(crate) max_frame_size: String,
    pub(crate) max_body_size: String,
    pub(crate) max_subscriptions: String,
    pub(crate) shutdown_grace: String,
    pub(crate) metrics_interval: String,
    pub(crate) client_rate_limit: String,
    pub(crate) publish_rate_limit: String,
    pub(crate) header_timeout: String,
}

/// The defaults, spelled once per process (clap's default texts are `&'static str`).
pub(crate) fn defaults() -> &'static Defaults {
    static DEFAULTS: LazyLock<Defaults> = LazyLock::new(|| Defaults::of(&Config::default()));
    &DEFAULTS
}

impl Defaults {
    fn of(config: &Config) -> Defaults {
        Defaults {
            bind: config.bind.to_string(),
            store: store(&config.store),
            unix_socket_mode: format!("{:o}", config.unix_socket_mode),
            max_connections: config.max_connections.to_string(),
            heartbeat_interval: duration(config.heartbeat_interval),
            queue_size: config.queue_size.to_string(),
            approval_timeout: duration(config.approval_timeout),
            approval_default_proceed: config.approval_default_proceed.to_string(),
            history_size: config.history_size.to_string(),
            history_age: duration(config.history_age),
            history_memory: size(config.history_memory),
            max_frame_size: size(config.max_frame_size),
            max_body_size: size(config.max_body_size),
            max_subscriptions: config.max_subscriptions.to_string(),
            shutdown_grace: duration(config.shutdown_grace),
            metrics_interval: duration(config.metrics_interval),
            client_rate_limit: config.client_rate_limit.to_string(),
            publish_rate_limit: config.publish_rate_limit.to_string(),
            header_timeout: duration(config.header_timeout),
        }
    }
}

/// The heartbeat timeout when `--heartbeat-timeout` is absent: two
/// heartbeat intervals and 10 s of slack. `herald-server` exposes no
/// function for it, only its value for the default interval
/// (`Config::default().heartbeat_timeout`); a test keeps the two equal.
pub(crate) fn heartbeat_timeout_for(interval: Duration) -> Duration {
    interval
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(10))
}

/// A store as `--store` reads it: `memory` or `sqlite:PATH`.
fn store(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Memory => "memory".to_owned(),
        StoreConfig::Sqlite(path) => format!("sqlite:{}", path.display()),
    }
}

/// A duration as the duration flags read it, in the largest unit that
/// states it exactly: `5m`, `30s`, `500ms`.
fn duration(duration: Duration) -> String {
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

/// A size as the size flags read it, in the largest binary unit that states
/// it exactly: `256MiB`, `64KiB`, `1000`.
fn size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(factor, _)| bytes != 0 && bytes % factor == 0)
        .map_or_else(
            || bytes.to_string(),
            |(factor, unit)| format!("{}{unit}", bytes / factor),
        )
}

#[cfg(test)]
mod tests {
    use herald_server::config::{parse_duration, parse_size};

    use super::*;

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
            assert_eq!(duration(value), text);
            assert_eq!(parse_duration(text), Ok(value));
        }
        let odd = Duration::from_micros(1_500);
        assert_eq!(parse_duration(&duration(odd)), Ok(odd));
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
            assert_eq!(size(value), text);
            assert_eq!(parse_size(text), Ok(value));
        }
    }

    #[test]
    fn stores_are_spelled_so_that_they_parse_back() {
        for store_config in [StoreConfig::Memory, StoreConfig::Sqlite("/tmp/h.db".into())] {
            assert_eq!(store(&store_config).parse(), Ok(store_config));
        }
    }

    #[test]
    fn the_heartbeat_timeout_formula_gives_the_servers_default() {
        let config = Config::default();
        assert_eq!(
            heartbeat_timeout_for(config.heartbeat_interval),
            config.heartbeat_timeout
        );
    }
}
