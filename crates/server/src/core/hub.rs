//! [`Hub`]: the thin facade over the parts of a running hub, each with one
//! job: the [`Broker`] (where events and approvals live), the
//! [`Publisher`] (the one way in for events), [`Subscriptions`] and the
//! fan-out (this node's subscribers), [`Connections`], [`Approvals`], and
//! what every part shares (configuration, metrics, the task tracker and the
//! shutdown token).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::approvals::{Approvals, Decisions};
use crate::core::broker::{self, Broker, BrokerError, BrokerHandler, Engine};
use crate::core::connection::ConnHandle;
use crate::core::connections::Connections;
use crate::core::fanout::{Fanout, NodeHandler};
use crate::core::publish::{Events, PublishError, PublishOptions, Publisher};
use crate::core::subscriptions::Subscriptions;
use crate::operations::config::Config;
use crate::operations::limits::PublishLimiter;
use crate::operations::metrics::Metrics;

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    config: Config,
    /// This node's id (among the nodes sharing a broker).
    node: String,
    started: Instant,
    metrics: Arc<Metrics>,
    broker: Arc<dyn Broker>,
    publisher: Publisher,
    subscriptions: Subscriptions,
    connections: Arc<Connections>,
    approvals: Approvals,
    publish_limiter: PublishLimiter,
    draining: CancellationToken,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Hub {
    /// A hub that keeps everything in memory, whatever `config.store` says.
    /// `shutdown` stops everything it runs.
    pub fn new(config: Config, shutdown: CancellationToken) -> Hub {
        let retention = broker::Retention::from(&config);
        let metrics = Arc::new(Metrics::default());
        let connections = Arc::new(Connections::default());
        let node = new_node_id();
        let (fanout, decisions, handler) = node_parts(&config, &node, &metrics, &connections);
        let engine = broker::in_memory(retention, handler);
        Hub::assemble(
            config,
            shutdown,
            node,
            metrics,
            connections,
            fanout,
            decisions,
            engine,
        )
    }

    /// A hub on the engine `config.store` names: for SQLite, opens the file
    /// and recovers its topics (seqs continue, history, snapshots and
    /// pending approvals are back); for Redis, connects and starts following.
    pub async fn open(config: Config, shutdown: CancellationToken) -> Result<Hub, BrokerError> {
        let retention = broker::Retention::from(&config);
        let metrics = Arc::new(Metrics::default());
        let connections = Arc::new(Connections::default());
        let node = new_node_id();
        let (fanout, decisions, handler) = node_parts(&config, &node, &metrics, &connections);
        let engine =
            broker::open(&config.store, retention, handler, &node, shutdown.clone()).await?;
        Ok(Hub::assemble(
            config,
            shutdown,
            node,
            metrics,
            connections,
            fanout,
            decisions,
            engine,
        ))
    }

    /// The node's parts around its engine; the engine's upkeep runs until
    /// `shutdown`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the node's parts, built by `new` and `open`, assembled once"
    )]
    fn assemble(
        config: Config,
        shutdown: CancellationToken,
        node: String,
        metrics: Arc<Metrics>,
        connections: Arc<Connections>,
        fanout: Arc<Fanout>,
        decisions: Arc<Decisions>,
        engine: Engine,
    ) -> Hub {
        let tasks = TaskTracker::new();
        if let Some(upkeep) = engine.upkeep {
            let stop = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = upkeep => {}
                }
            });
        }
        let broker = engine.broker;
        let publisher = Publisher::new(broker.clone(), shutdown.clone(), metrics.clone());
        let approvals = Approvals::new(
            broker.clone(),
            publisher.clone(),
            decisions,
            config.approval_timeout,
            config.approval_default_proceed,
            metrics.clone(),
        );
        let subscriptions = Subscriptions::new(
            broker.clone(),
            fanout,
            connections.clone(),
            config.max_subscriptions,
            config.queue_size,
            metrics.clone(),
        );
        let publish_limiter = PublishLimiter::new(config.publish_rate_limit);
        Hub {
            parts: Arc::new(Parts {
                config,
                node,
                started: Instant::now(),
                metrics,
                broker,
                publisher,
                subscriptions,
                connections,
                approvals,
                publish_limiter,
                draining: CancellationToken::new(),
                shutdown,
                tasks,
            }),
        }
    }

    /// Publishes one event or a batch (see [`Publisher::publish`]).
    pub async fn publish<E: Events>(
        &self,
        events: E,
        options: PublishOptions,
    ) -> Result<E::Output, PublishError> {
        self.parts.publisher.publish(events, options).await
    }

    /// The approvals service.
    pub fn approvals(&self) -> &Approvals {
        &self.parts.approvals
    }

    /// This node's open connections.
    pub fn connections(&self) -> &Connections {
        &self.parts.connections
    }

    /// This node's subscriptions.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.parts.subscriptions
    }

    /// The engine events and approvals live in.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.parts.broker
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.parts.node
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.parts.metrics
    }

    /// The hub's counters, shared (for a part that outlives a borrow).
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.parts.metrics.clone()
    }

    /// The producers' publish rate limit.
    pub(crate) fn publish_limiter(&self) -> &PublishLimiter {
        &self.parts.publish_limiter
    }

    /// Cancelled when the hub starts draining (before it stops): readiness
    /// fails and new connections are refused from then on.
    pub fn draining(&self) -> &CancellationToken {
        &self.parts.draining
    }

    /// Neither draining nor stopped: what every status and health
    /// endpoint reports as running.
    pub fn running(&self) -> bool {
        !self.parts.draining.is_cancelled() && !self.parts.shutdown.is_cancelled()
    }

    /// The token that stops the hub.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.parts.shutdown
    }

    /// The tracker every task of the hub is spawned on.
    pub fn tasks(&self) -> &TaskTracker {
        &self.parts.tasks
    }

    /// Seconds since the hub started.
    pub fn uptime_s(&self) -> u64 {
        self.parts.started.elapsed().as_secs()
    }

    /// An admitted connection is open: its user's topic followed, and the
    /// connection counted.
    pub(crate) async fn attach(&self, conn: &Arc<ConnHandle>) {
        self.parts.subscriptions.attach(conn).await;
        let metrics = &self.parts.metrics;
        metrics.connections_active.inc();
        metrics.connections_total.inc();
    }

    /// A connection ended: it and all its subscriptions are forgotten.
    pub(crate) async fn detach(&self, conn: &ConnHandle) {
        if self.parts.subscriptions.detach(conn).await {
            self.parts.metrics.connections_active.dec();
        }
    }

    /// Finishes the engine's pending writes and stops it.
    pub async fn close(&self) {
        self.parts.broker.close().await;
    }
}

/// The node side a broker delivers to: the fan-out, the approval waiters,
/// and the handler over both.
fn node_parts(
    config: &Config,
    node: &str,
    metrics: &Arc<Metrics>,
    connections: &Arc<Connections>,
) -> (Arc<Fanout>, Arc<Decisions>, Arc<dyn BrokerHandler>) {
    let fanout = Arc::new(Fanout::new(
        connections.clone(),
        metrics.clone(),
        config.queue_size,
    ));
    let decisions = Arc::new(Decisions::default());
    let handler: Arc<dyn BrokerHandler> = Arc::new(NodeHandler {
        node: node.to_owned(),
        fanout: fanout.clone(),
        decisions: decisions.clone(),
    });
    (fanout, decisions, handler)
}

fn new_node_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
