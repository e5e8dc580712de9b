//! `herald serve`: [`ServeArgs`], the [`Config`] they make, and running the
//! hub until SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use clap::builder::BoolishValueParser;
use herald_server::auth::Authenticator;
use herald_server::config::{parse_bind, parse_duration, parse_size};
use herald_server::{Config, Hub, StoreConfig, server};
use tokio_util::sync::CancellationToken;

use super::config_file::ConfigFile;
use super::defaults::defaults;
use crate::logs::{self, LogFormat};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML file of these flags (`max-connections = 20000`,
    /// `drain-window = "5s"`); flags and `HERALD_*` variables override it.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (`IP:PORT`, or `HOST:PORT` resolved once at
    /// start, IPv4 first); port 0 picks a free port.
    #[arg(long, env = "HERALD_BIND", default_value = defaults().bind.as_str(), value_parser = parse_bind)]
    bind: SocketAddr,
    /// Where events are kept: `memory`, `sqlite:PATH` (durable), or
    /// `redis://HOST:PORT[/DB]` / `rediss://…` (several nodes sharing one Redis).
    #[arg(long, env = "HERALD_STORE", default_value = defaults().store.as_str())]
    store: StoreConfig,
    /// Unix datagram socket producers publish to (one JSON event per datagram).
    #[arg(long, env = "HERALD_UNIX_SOCKET")]
    unix_socket: Option<PathBuf>,
    /// Permissions of the unix socket file, in octal.
    #[arg(long, env = "HERALD_UNIX_SOCKET_MODE", default_value = defaults().unix_socket_mode.as_str(), value_parser = parse_mode)]
    unix_socket_mode: u32,
    /// Most simultaneous WebSocket connections (over it: close 1013).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value = defaults().max_connections.as_str())]
    max_connections: usize,
    /// Most simultaneous WebSocket connections of one user: the token's
    /// `sub`, or an open hub's `user_id` (over it: close 1013; 0: any number).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER", default_value = defaults().max_connections_per_user.as_str())]
    max_connections_per_user: usize,
    /// Interval of WebSocket pings and app-level `ping` frames.
    #[arg(long, env = "HERALD_HEARTBEAT_INTERVAL", default_value = defaults().heartbeat_interval.as_str(), value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Close a connection silent for this long [default: 2 × interval + 10s].
    #[arg(long, env = "HERALD_HEARTBEAT_TIMEOUT", value_parser = parse_duration)]
    heartbeat_timeout: Option<Duration>,
    /// Frames queued per connection before low/normal events are shed.
    #[arg(long, env = "HERALD_QUEUE_SIZE", default_value = defaults().queue_size.as_str())]
    queue_size: usize,
    /// How long an approval waits for a decision.
    #[arg(long, env = "HERALD_APPROVAL_TIMEOUT", default_value = defaults().approval_timeout.as_str(), value_parser = parse_duration)]
    approval_timeout: Duration,
    /// What an approval resolves to on timeout when the request does not say
    /// (the seeds proceeded; set false to make silence mean "stop").
    #[arg(long, env = "HERALD_APPROVAL_DEFAULT_PROCEED", default_value = defaults().approval_default_proceed.as_str(), action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    approval_default_proceed: bool,
    /// Events retained per topic.
    #[arg(long, env = "HERALD_HISTORY_SIZE", default_value = defaults().history_size.as_str())]
    history_size: usize,
    /// Oldest event retained.
    #[arg(long, env = "HERALD_HISTORY_AGE", default_value = defaults().history_age.as_str(), value_parser = parse_duration)]
    history_age: Duration,
    /// Memory all retained history may use; idle topics are evicted first past it.
    #[arg(long, env = "HERALD_HISTORY_MEMORY", default_value = defaults().history_memory.as_str(), value_parser = parse_size)]
    history_memory: usize,
    /// Largest WebSocket frame accepted (larger: close 1009).
    #[arg(long, env = "HERALD_MAX_FRAME_SIZE", default_value = defaults().max_frame_size.as_str(), value_parser = parse_size)]
    max_frame_size: usize,
    /// Largest HTTP request body (larger: 413) and Unix datagram (larger: rejected).
    #[arg(long, env = "HERALD_MAX_BODY_SIZE", default_value = defaults().max_body_size.as_str(), value_parser = parse_size)]
    max_body_size: usize,
    /// Most topics and patterns one connection may subscribe to.
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS", default_value = defaults().max_subscriptions.as_str())]
    max_subscriptions: usize,
    /// On SIGTERM, how long closes are spread over: readiness fails, new
    /// connections are refused, each connection gets `system.shutdown` with
    /// its own `retry_after_ms` and is closed (1001) at a random moment
    /// within the window.
    #[arg(long, env = "HERALD_DRAIN_WINDOW", default_value = defaults().drain_window.as_str(), value_parser = parse_duration)]
    drain_window: Duration,
    /// After the drain window, how long shutdown waits for connections to finish.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", default_value = defaults().shutdown_grace.as_str(), value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Secret for HS256 subscriber tokens (enables authentication).
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// A PEM file with the public key (RSA for RS256, Ed25519 for EdDSA)
    /// that verifies subscriber tokens (instead of --jwt-secret).
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", value_name = "PATH")]
    jwt_public_key: Option<PathBuf>,
    /// Audiences a subscriber token's `aud` must name one of, comma-separated (unset: tokens with an `aud` are refused).
    #[arg(long, env = "HERALD_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// Issuer a subscriber token's `iss` must be.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// API keys with scopes for the HTTP API, e.g. `key1:publish,admin;key2:publish`.
    #[arg(long, env = "HERALD_API_KEYS", hide_env_values = true)]
    api_keys: Option<String>,
    /// How often the hub publishes its figures on topic `metrics` while it has subscribers (`/ws/metrics`); 0s: never.
    #[arg(long, env = "HERALD_METRICS_INTERVAL", default_value = defaults().metrics_interval.as_str(), value_parser = parse_duration)]
    metrics_interval: Duration,
    /// Comma-separated origins allowed to open WebSockets (any when unset) and to call the HTTP API from a browser (CORS; none when unset), e.g. `https://app.example.com`.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Frames a second one connection may send (0: unlimited); sustained floods are closed (4029).
    #[arg(long, env = "HERALD_CLIENT_RATE_LIMIT", default_value = defaults().client_rate_limit.as_str())]
    client_rate_limit: u32,
    /// Events a second one producer (API key, or address) may publish (0: unlimited).
    #[arg(long, env = "HERALD_PUBLISH_RATE_LIMIT", default_value = defaults().publish_rate_limit.as_str())]
    publish_rate_limit: u32,
    /// How long a client may take to send its first bytes, a request's headers, and then its body (slow-loris protection).
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", default_value = defaults().header_timeout.as_str(), value_parser = parse_duration)]
    header_timeout: Duration,
    /// Allow a non-loopback --bind without both subscriber tokens and API
    /// keys (`HERALD_INSECURE` takes true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "HERALD_INSECURE", value_parser = BoolishValueParser::new())]
    insecure: bool,
    /// Serve this directory under /app/ (e.g. `web-client` for the example page).
    #[arg(long, env = "HERALD_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Accept WebSocket permessage-deflate when a client offers it
    /// (`HERALD_COMPRESSION` takes true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "HERALD_COMPRESSION", value_parser = BoolishValueParser::new())]
    compression: bool,
    /// Log and count a stall when the runtime cannot run a task for this
    /// long (a blocked worker, or the process paused); 0s: off.
    #[arg(long, env = "HERALD_WATCHDOG_THRESHOLD", default_value = defaults().watchdog_threshold.as_str(), value_parser = parse_duration)]
    watchdog_threshold: Duration,
    /// Runtime worker threads (default: half the cores this process may
    /// use, at least one, leaving the rest to the kernel's socket work).
    #[arg(long, env = "HERALD_WORKERS", default_value = defaults().workers.as_str(), value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: u16,
    /// Log format on stderr (`HERALD_LOG` filters the logs: `debug`,
    /// `herald_server=debug`; default `info`).
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
}

impl ServeArgs {
    /// The hub's configuration these flags make.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let auth = Authenticator::new(
            self.jwt_secret.as_deref(),
            self.jwt_public_key.as_deref(),
            self.api_keys.as_deref(),
        )?
        .expecting(self.jwt_audience.clone(), self.jwt_issuer.clone());
        Ok(Config {
            bind: self.bind,
            max_connections: self.max_connections,
            max_connections_per_user: self.max_connections_per_user,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self
                .heartbeat_timeout
                .unwrap_or_else(|| Config::heartbeat_timeout_for(self.heartbeat_interval)),
            queue_size: self.queue_size,
            approval_timeout: self.approval_timeout,
            approval_default_proceed: self.approval_default_proceed,
            history_size: self.history_size,
            history_age: self.history_age,
            history_memory: self.history_memory,
            max_frame_size: self.max_frame_size,
            max_body_size: self.max_body_size,
            max_subscriptions: self.max_subscriptions,
            store: self.store.clone(),
            unix_socket: self.unix_socket.clone(),
            unix_socket_mode: self.unix_socket_mode,
            drain_window: self.drain_window,
            shutdown_grace: self.shutdown_grace,
            auth,
            metrics_interval: self.metrics_interval,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .collect(),
            client_rate_limit: self.client_rate_limit,
            publish_rate_limit: self.publish_rate_limit,
            header_timeout: self.header_timeout,
            insecure: self.insecure,
            static_dir: self.static_dir.clone(),
            compression: self.compression,
            watchdog_threshold: self.watchdog_threshold,
        })
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode like 660"))
}

/// Runs `herald serve`: opens the store, binds, prints the listening line,
/// and serves until SIGINT or SIGTERM, then drains; a second one during the
/// drain stops it at once.
pub(crate) async fn run(args: ServeArgs, file: Option<&ConfigFile>) -> anyhow::Result<()> {
    logs::init(args.log_format);
    for unknown in super::environment::unknown_in_environment() {
        tracing::warn!(variable = %unknown.name, "{unknown}");
    }
    if let Some(file) = file {
        tracing::info!(path = %file.path.display(), keys = file.settings.len(), "configuration file read");
    }
    let config = args.config()?;
    config.validate()?;
    tracing::info!(workers = args.workers, "runtime started");
    raise_open_files(config.max_connections);
    // The store is opened before the port, so a bad database fails before
    // anyone is told where to connect.
    let hub = Hub::open(config.clone(), CancellationToken::new()).await?;
    // Signal handlers, the port and the Unix socket are all in place before
    // the listening line: a script that reads it may use the hub, or stop it,
    // at once.
    let mut signals = Signals::install()?;
    let listeners = server::bind(&config).await?;
    let addr = listeners
        .local_addr()
        .context("reading the bound address")?;
    // The first line on stdout is the contract scripts rely on to find the
    // port. A stdout nobody reads (a closed pipe) does not stop the hub.
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "listening on http://{addr}").and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "could not print the listening line on stdout");
    }
    drop(stdout);
    let auth = &config.auth;
    if !auth.requires_token() && !auth.requires_key() {
        if addr.ip().is_loopback() {
            if config.allowed_origins.is_empty() {
                tracing::warn!(
                    "running open: no authentication is configured (loopback only), and any web page this machine's browser visits may connect: pass --allowed-origins with your frontend's origin"
                );
            } else {
                tracing::warn!("running open: no authentication is configured (loopback only)");
            }
        } else {
            tracing::warn!(%addr, "running open on a non-loopback address (--insecure)");
        }
    } else if !auth.requires_token() {
        tracing::warn!(%addr, "subscribers are not authenticated: set --jwt-secret or --jwt-public-key");
    } else if !auth.requires_key() {
        tracing::warn!(
            %addr,
            "the HTTP API is not authenticated (its history reads every topic): set --api-keys"
        );
    }
    // The first signal starts the drain; a second one stops at once.
    let drain = CancellationToken::new();
    let signalled = {
        let drain = drain.clone();
        async move {
            signals.next().await;
            drain.cancel();
            signals.next().await;
        }
    };
    tokio::select! {
        served = server::serve(listeners, hub, drain.cancelled_owned()) => served?,
        () = signalled => anyhow::bail!("stopped by a second signal before the drain was over"),
    }
    Ok(())
}

/// Descriptors the hub holds besides its WebSocket connections: listeners,
/// the Unix socket, the epoll instance, the store's files or Redis
/// connections, producers' HTTP connections, the log.
const OTHER_FILES: u64 = 256;

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does for every program: each connection is a descriptor, and the usual
/// soft limit (1024) refuses connections far below `--max-connections`,
/// while the hard limit is usually far higher. Warns when even the hard
/// limit is below what `max_connections` needs.
fn raise_open_files(max_connections: usize) {
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OTHER_FILES);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is below what --max-connections needs; \
             raise the hard limit (ulimit -Hn, systemd LimitNOFILE=)"
        ),
        Ok(limit) => tracing::debug!(open_files = limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// The signals that stop the hub with a drain: SIGINT (Ctrl-C) and SIGTERM
/// (what `docker stop`, `systemctl stop` and Kubernetes send); handlers
/// installed at once. SIGHUP keeps its default (the process ends), so that
/// `nohup` still ignores it, and a closing terminal's repeated hang-ups do
/// not count as a second signal.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Completes on the next of them.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::Cli;

    /// `herald serve ARGS` as clap reads it, `HERALD_*` variables ignored.
    fn serve_args(args: &[&str]) -> ServeArgs {
        let command =
            Cli::command().mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.env(None)));
        let matches = command
            .try_get_matches_from(["herald", "serve"].iter().chain(args))
            .unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        ServeArgs::from_arg_matches(serve).unwrap()
    }

    #[test]
    fn serve_without_flags_runs_the_servers_default_config() {
        let config = serve_args(&[]).config().unwrap();
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn the_heartbeat_timeout_follows_the_interval_unless_given() {
        let config = serve_args(&["--heartbeat-interval", "1s"])
            .config()
            .unwrap();
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(12));
        let config = serve_args(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "3s"])
            .config()
            .unwrap();
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(3));
    }

    #[test]
    fn serve_help_shows_every_default() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        let defaults = defaults();
        for default in [
            &defaults.bind,
            &defaults.store,
            &defaults.unix_socket_mode,
            &defaults.max_connections,
            &defaults.max_connections_per_user,
            &defaults.heartbeat_interval,
            &defaults.queue_size,
            &defaults.approval_timeout,
            &defaults.approval_default_proceed,
            &defaults.history_size,
            &defaults.history_age,
            &defaults.history_memory,
            &defaults.max_frame_size,
            &defaults.max_body_size,
            &defaults.max_subscriptions,
            &defaults.drain_window,
            &defaults.shutdown_grace,
            &defaults.watchdog_threshold,
            &defaults.metrics_interval,
            &defaults.client_rate_limit,
            &defaults.publish_rate_limit,
            &defaults.header_timeout,
            &defaults.workers,
        ] {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{default} missing from:\n{help}"
            );
        }
        assert!(help.contains("[default: 2 × interval + 10s]"), "{help}");
    }

    #[test]
    fn serve_help_says_logs_are_filtered_with_herald_log() {
        let mut command = Cli::command();
        let serve = command.find_subcommand_mut("serve").unwrap();
        for help in [serve.render_help(), serve.render_long_help()] {
            let help = help.to_string();
            assert!(help.contains("`HERALD_LOG` filters the logs"), "{help}");
        }
    }

    #[test]
    fn the_runtime_gets_the_workers_asked_for_and_half_the_cores_by_default() {
        assert_eq!(serve_args(&["--workers", "3"]).workers, 3);
        assert_eq!(
            usize::from(serve_args(&[]).workers),
            server::default_workers()
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(server::default_workers(), (cores / 2).max(1));
    }

    #[test]
    fn client_commands_default_to_the_address_the_hub_binds_by_default() {
        assert_eq!(
            herald_client::DEFAULT_URL,
            format!("http://{}", Config::default().bind)
        );
    }
}
