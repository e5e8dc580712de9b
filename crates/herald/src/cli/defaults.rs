//! The defaults of `herald serve`'s flags: [`Config::default()`], spelled the
//! way the flags are written (`30s`, `64KiB`, `660`), so that each default is
//! stated once, in `herald-server`, and `herald serve --help` still shows it.
//! `--workers` is the runtime's, not the hub's: its default is
//! [`herald_server::server::default_workers`].

use std::sync::LazyLock;

use herald_server::Config;
use herald_server::config::{format_duration as duration, format_size as size};

/// The default of every `serve` flag that has one, as clap's default text.
#[derive(Debug)]
pub(crate) struct Defaults {
    pub(crate) bind: String,
    pub(crate) store: String,
    pub(crate) unix_socket_mode: String,
    pub(crate) max_connections: String,
    pub(crate) max_connections_per_user: String,
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
    pub(crate) drain_window: String,
    pub(crate) shutdown_grace: String,
    pub(crate) watchdog_threshold: String,
    pub(crate) metrics_interval: String,
    pub(crate) client_rate_limit: String,
    pub(crate) publish_rate_limit: String,
    pub(crate) header_timeout: String,
    pub(crate) workers: String,
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
            store: config.store.to_string(),
            unix_socket_mode: format!("{:o}", config.unix_socket_mode),
            max_connections: config.max_connections.to_string(),
            max_connections_per_user: config.max_connections_per_user.to_string(),
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
            drain_window: duration(config.drain_window),
            shutdown_grace: duration(config.shutdown_grace),
            watchdog_threshold: duration(config.watchdog_threshold),
            metrics_interval: duration(config.metrics_interval),
            client_rate_limit: config.client_rate_limit.to_string(),
            publish_rate_limit: config.publish_rate_limit.to_string(),
            header_timeout: duration(config.header_timeout),
            workers: herald_server::server::default_workers().to_string(),
        }
    }
}
