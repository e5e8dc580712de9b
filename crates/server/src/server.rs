//! Running the hub: accept connections until the shutdown trigger fires, then
//! drain in a stated order.
//!
//! Shutdown order: stop accepting; publish `system.shutdown` on `global` to
//! every connection; close every connection with 1001 after its queue is
//! flushed; wait for connection tasks up to the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use herald_protocol::payload::Payload as _;
use herald_protocol::{EventType, Priority, PublishRequest, Topic};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http;
use crate::hub::{Audience, Hub};

/// How often history is trimmed by age and idle topics are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })
}

/// Runs a hub on `listener` until `shutdown` completes, then shuts down
/// gracefully. Returns once every connection task has ended (or the grace
/// period ran out).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    let hub = Hub::open(config, CancellationToken::new())?;
    serve(listener, hub, shutdown).await
}

/// [`run`] with a hub the caller built (to publish in-process).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = hub.shutdown_token().clone();
    if let Some(path) = hub.config().unix_socket.clone() {
        let socket = crate::ingest::bind(&path, hub.config().unix_socket_mode)?;
        tracing::info!(path = %path.display(), "accepting events on the unix socket");
        hub.tasks()
            .spawn(crate::ingest::run(hub.clone(), socket, path));
    }
    spawn_sweeper(&hub);
    let timeouts = hub.clone();
    hub.tasks()
        .spawn(async move { timeouts.run_approval_timeouts().await });
    let app = http::router(hub.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop_accepting = CancellationToken::new();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let hub_for_shutdown = hub.clone();
    let stopper = stop_accepting.clone();
    let trigger = async move {
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        stopper.cancel();
        begin_shutdown(&hub_for_shutdown).await;
    };
    let (served, ()) = tokio::join!(server.into_future(), trigger);
    served?;
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
    let closing = hub.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close_store()).await;
    tracing::info!("hub stopped");
    Ok(())
}

/// Tells every client the hub is going away, then closes every connection
/// with 1001 (after its queue is flushed).
async fn begin_shutdown(hub: &Hub) {
    tracing::info!(connections = hub.connection_count(), "shutting down");
    let notice = PublishRequest::new(
        Topic::global(),
        EventType::SystemShutdown,
        herald_protocol::payload::ErrorPayload {
            message: "the hub is shutting down; reconnect shortly".to_owned(),
            code: Some("shutdown".to_owned()),
            details: None,
        }
        .to_data(),
    )
    .priority(Priority::Critical);
    if let Err(error) = hub.publish_to(notice, Audience::Everyone).await {
        tracing::warn!(%error, "could not announce shutdown");
    }
    hub.shutdown_token().cancel();
}

fn spawn_sweeper(hub: &Hub) {
    let hub_for_task = hub.clone();
    hub.tasks().spawn(async move {
        let token = hub_for_task.shutdown_token().clone();
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = ticks.tick() => hub_for_task.sweep(),
            }
        }
    });
}
