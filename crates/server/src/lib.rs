//! `herald-server`: the Herald hub as a library, and the `herald` binary.
//!
//! Embed it to publish in-process (build the runtime with
//! [`server::runtime`], which is tuned for fan-out):
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use herald_server::{Config, Hub, server};
//! use herald_protocol::{EventType, PublishRequest, Topic};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config::default();
//! let listeners = server::bind(&config).await?;
//! let hub = Hub::new(config, CancellationToken::new());
//! let publisher = hub.clone();
//! tokio::spawn(server::serve(listeners, hub, std::future::pending()));
//! let topic = Topic::parse("execution:exec_123")?;
//! publisher
//!     .publish(PublishRequest::new(topic, EventType::ExecutionStarted, serde_json::json!({})))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`auth`]: API keys, JWT verification, per-topic access.
//! - `limits`: token buckets for frame and publish rates.
//! - [`config`]: [`Config`], its defaults, and the duration and size parsers.
//! - [`approvals`]: the approval registry: decisions, timeouts, audit.
//! - [`hub`]: [`Hub`]: topics, subscriptions, connections, the publish path.
//! - `stream`: one topic's seqs, history, snapshot and exact subscribers.
//! - `outbox`: a connection's bounded queue with priority shedding and gaps.
//! - `connection`: a connection's reader and writer, heartbeats, frame handling.
//! - [`ingest`]: the Unix datagram socket producers publish to.
//! - [`http`]: the router, the JSON API and the WebSocket endpoints.
//! - [`metrics`]: counters and histograms in the Prometheus text format.
//! - `metrics_topic`: the hub's headline figures as `metrics.updated` events
//!   on topic `metrics`, for `/ws/metrics`.
//! - [`store`]: the [`store::Store`] trait and the SQLite store (group commit, recovery).
//! - [`server`]: running the hub and shutting it down in order.

pub mod approvals;
pub mod auth;
pub mod config;
mod connection;
pub mod http;
pub mod hub;
pub mod ingest;
mod limits;
pub mod metrics;
mod metrics_topic;
mod outbox;
pub mod server;
pub mod store;
mod stream;

pub use config::{Config, StoreConfig};
pub use hub::{Audience, Hub, PublishError};
