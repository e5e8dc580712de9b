//! Running the hub: accept connections until the shutdown trigger fires, then
//! drain in a stated order.
//!
//! Shutdown order (`drain`): readiness fails and new WebSocket connections
//! are refused; every connection is told `system.shutdown` with its own
//! `retry_after_ms`; connections are closed with 1001, after their queues
//! are flushed, spread over `--drain-window`. Then the hub stops accepting
//! HTTP, stops its tasks, waits for them up to `--shutdown-grace`, and
//! closes the engine.
//!
//! # Layout
//!
//! - this module: the runtime, binding, serving, the accept loop.
//! - `drain`: readiness off, the shutdown notices, the spread closes.

mod drain;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::core::broker::BrokerError;
use crate::core::hub::Hub;
use crate::operations::config::Config;
use crate::operations::watchdog::Watchdog;
use crate::transport::{http, unix};

/// How many polls a worker makes from its own queue for each one it takes
/// from the shared injection queue (see [`runtime`]).
const GLOBAL_QUEUE_INTERVAL: u32 = 3;

/// The tokio runtime `herald serve` runs on, with `workers` worker threads
/// ([`default_workers`] unless told); embedders should build theirs the
/// same way (call `.build()` on it).
///
/// One publish wakes every subscriber's writer task at once. A worker keeps
/// at most 256 woken tasks in its own queue; the rest overflow to the shared
/// injection queue, which tokio by default polls about once every 31–61
/// tasks, so under fan-out the overflowed writers starve while the others
/// are served again and again. Measured with `cargo xtask bench` at 1000
/// subscribers × 1000 publishes/s (p99 publish-to-receive): default ≈ 130
/// ms, 8 → 75 ms, 4 → 45 ms, **3 → 32 ms**, 1 → 27 ms. 1 and 2 go too far
/// the other way: the worker's own queue (new connections, the publishing
/// HTTP request) starves instead, and under 1000 connections/s of churn the
/// p99 went from 11 ms to 30–850 ms. 3 keeps both queues moving.
pub fn runtime(workers: usize) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(workers.max(1))
        .enable_all()
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL);
    builder
}

/// The worker threads `herald serve` runs when not told: half the cores
/// this process may use (its CPU affinity counts), at least one.
///
/// A fan-out hub's other half of the work is the kernel's: every delivery
/// is a socket write, and on loopback the receiving side's processing runs
/// in that write too (a quarter of the CPU in the committed `perf` profile,
/// before the clients' own). A worker per core competes with that work, and
/// a publish's wake-ups then cross between workers: measured with `cargo
/// xtask bench` on 2 cores shared with the load generator (N = 1000, one
/// event per publish from 4 producers), 2 workers delivered 0.39 M/s and 1
/// worker 1.76 M/s; at 1000 publishes/s, p99 3.5 s (not carried) against
/// 79 ms; batches 1.85 M/s against 2.01 M/s. One worker is slower only at
/// accepting connections (1000 new connections/s beside N = 1000: p99 142
/// ms against 74 ms). Only 2 cores were measured; on a machine whose cores
/// are the hub's alone, `--workers` should be measured with the same bench.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::operations::config::ConfigError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] BrokerError),
    #[error(transparent)]
    Ingest(#[from] unix::IngestError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the hub listens on, bound before anyone is told where it is.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP and WebSocket.
    pub http: TcpListener,
    /// The Unix datagram ingest socket, when configured.
    pub unix: Option<unix::Bound>,
}

impl Listeners {
    /// The bound HTTP address (the real port when `--bind` used port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

/// Binds the configured address and, when configured, the Unix socket.
pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
    let http = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let unix = match &config.unix_socket {
        Some(path) => Some(unix::bind(path, config.unix_socket_mode)?),
        None => None,
    };
    Ok(Listeners { http, unix })
}

/// Runs a hub on `listener` until `shutdown` completes, then shuts down
/// gracefully. Returns once every connection task has ended (or the grace
/// period ran out).
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    let hub = Hub::open(config, CancellationToken::new()).await?;
    serve(listeners, hub, shutdown).await
}

/// [`run`] with a hub the caller built (to publish in-process).
pub async fn serve(
    listeners: Listeners,
    hub: Hub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = hub.shutdown_token().clone();
    let Listeners {
        http: listener,
        unix,
    } = listeners;
    if let Some(bound) = unix {
        tracing::info!(path = %bound.path().display(), "accepting events on the unix socket");
        hub.tasks().spawn(unix::run(hub.clone(), bound));
    }
    let interval = hub.config().metrics_interval;
    if !interval.is_zero() {
        hub.tasks()
            .spawn(crate::operations::figures::run(hub.clone(), interval));
    }
    let limits = hub.clone();
    if hub.config().publish_rate_limit > 0 {
        hub.tasks().spawn(async move {
            let stop = limits.shutdown_token().clone();
            let mut every = tokio::time::interval(crate::operations::limits::FORGET_IDLE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => limits.publish_limiter().forget_idle(),
                }
            }
        });
    }
    let timeouts = hub.clone();
    hub.tasks().spawn(async move {
        let stop = timeouts.shutdown_token().clone();
        let approvals = timeouts.approvals();
        tokio::join!(
            approvals.run_timeouts(stop.clone()),
            approvals.run_announcements(stop),
        );
    });
    let watchdog = watch(&hub);
    let stop_accepting = CancellationToken::new();
    let server = accept_loop(listener, hub.clone(), stop_accepting.clone());
    let hub_for_shutdown = hub.clone();
    let stopper = stop_accepting.clone();
    let trigger = async move {
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        drain::run(&hub_for_shutdown).await;
        stopper.cancel();
        hub_for_shutdown.shutdown_token().cancel();
    };
    tokio::join!(server, trigger);
    let tasks = hub.tasks();
    tasks.close();
    if tokio::time::timeout(hub.config().shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tasks.len(),
            "shutdown grace period over; dropping connections"
        );
    }
    if let Some(watchdog) = watchdog {
        watchdog.stop();
    }
    hub.close().await;
    tracing::info!("hub stopped");
    Ok(())
}

/// Starts the watchdog on this runtime, unless `--watchdog-threshold` is 0.
fn watch(hub: &Hub) -> Option<Watchdog> {
    let threshold = hub.config().watchdog_threshold;
    if threshold.is_zero() {
        return None;
    }
    let started = Watchdog::start(
        tokio::runtime::Handle::current(),
        hub.tasks().clone(),
        hub.metrics_handle(),
        threshold,
    );
    match started {
        Ok(watchdog) => Some(watchdog),
        Err(error) => {
            tracing::warn!(%error, "could not start the watchdog thread");
            None
        }
    }
}

/// Accepts TCP connections until `stop` fires; each is served on its own
/// task (tracked, so shutdown waits for it) with `TCP_NODELAY` and a deadline
/// for its first bytes and each request's headers (and, in the router, its
/// body), so a slow-loris client cannot hold a connection open.
async fn accept_loop(listener: TcpListener, hub: Hub, stop: CancellationToken) {
    let router = http::router(hub.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hub.config().header_timeout)
        .keep_alive(true);
    // HTTP/2 (h2c) has no header deadline: a connection that opened and
    // went quiet is pinged, and closed when the ping goes unanswered.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(hub.config().heartbeat_interval))
        .keep_alive_timeout(hub.config().header_timeout);
    loop {
        let (stream, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let builder = builder.clone();
        let stop = stop.clone();
        let header_timeout = hub.config().header_timeout;
        let open = Open::counted(&hub);
        hub.tasks().spawn(async move {
            let _open = open;
            // hyper first reads to tell HTTP/1 from HTTP/2, with no deadline
            // of its own (its header deadline starts with the first byte):
            // a connection that sends nothing gets the same deadline here.
            let mut first = [0u8; 1];
            tokio::select! {
                first = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => {
                    if !matches!(first, Ok(Ok(1..))) {
                        tracing::debug!(%remote, "closing a connection that sent nothing");
                        return;
                    }
                }
                () = stop.cancelled() => return,
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%remote, %error, "http connection ended with an error");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// An HTTP connection counted in `herald_http_connections_active` for as
/// long as its task holds this.
struct Open(Gauge);

impl Open {
    fn counted(hub: &Hub) -> Open {
        let gauge = hub.metrics().http_connections_active.clone();
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
