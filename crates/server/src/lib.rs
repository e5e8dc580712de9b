//! `herald-server`: the Herald hub as a library.
//!
//! Embed it to publish in-process (build the runtime with
//! [`server::runtime`], which is tuned for fan-out):
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_server::{Config, Hub, PublishOptions, server};
//! use herald_protocol::{EventType, PublishRequest, Topic};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config::default();
//! let listeners = server::bind(&config).await?;
//! let hub = Hub::new(config, CancellationToken::new());
//! let (publisher, tasks) = (hub.clone(), hub.tasks().clone());
//! tasks.spawn(server::serve(listeners, hub, std::future::pending()));
//! let topic = Topic::parse("execution:exec_123")?;
//! let event = PublishRequest::new(topic, EventType::ExecutionStarted, serde_json::json!({}));
//! let published = publisher.publish(event, PublishOptions::default()).await?;
//! println!("seq {}", published.receipt.seq);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The folders are the layers; dependencies point down the list.
//!
//! - [`transport`]: HTTP (router, JSON API, who may call what), WebSocket
//!   (endpoints, per-connection reader, writer and commands), the Unix
//!   datagram socket.
//! - [`core`]: the hub without IO: [`Hub`], the [`Broker`](core::broker::Broker)
//!   boundary and its engines (memory; memory made durable by SQLite), the
//!   one publish path, this node's subscriber index and fan-out, outboxes,
//!   approvals.
//! - [`operations`]: configuration, authentication, limits, metrics.
//! - [`server`]: the runtime, binding, serving, and the ordered shutdown.

pub mod core;
pub mod operations;
pub mod server;
pub mod transport;

pub use crate::core::broker::{Audience, Published, Wait};
pub use crate::core::hub::Hub;
pub use crate::core::publish::{PublishError, PublishOptions};
pub use crate::operations::config::{Config, StoreConfig};
pub use crate::operations::{auth, config};
