//! `herald-client`: the native Rust client of a Herald hub (tokio).
//!
//! - [`Publisher`] publishes over HTTP (`POST /api/v1/events`) with
//!   idempotent retries: every event gets an `id` before the first try, and
//!   every retry (connection error, 5xx, 429) reuses it, so the hub stores it
//!   once. [`Publisher::batching`] groups events into batches; the approval
//!   calls ([`Publisher::request_approval`]) ask a person and wait.
//! - [`Subscriber`] follows topics over WebSocket and is a
//!   [`Stream`](futures::Stream) of [`SubscriberItem`]s. Reconnection,
//!   heartbeat, resubscription with replay and de-duplication are not written
//!   here: it drives [`herald_protocol::session::Session`], the sans-IO core the
//!   browser client shares, so per topic events arrive in `seq` order, never
//!   twice, and anything missed is either replayed or reported as a `gap`.
//! - [`UnixPublisher`] sends fire-and-forget datagrams to the hub's
//!   `--unix-socket`: it never blocks and never fails; it counts what it drops.
//!
//! # Publish in three lines
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_client::{Publisher, PublishRequest};
//! let publisher = Publisher::new("http://127.0.0.1:8765")?;
//! let request = PublishRequest::new("run:r1".parse()?, "step.completed".parse()?, serde_json::json!({"step": 3}));
//! let receipt = publisher.publish(request).await?; // {id, topic, seq}
//! # let _ = receipt; Ok(()) }
//! ```
//!
//! # Subscribe in five
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use herald_client::{Subscriber, SubscriberItem};
//! let mut subscriber = Subscriber::builder("http://127.0.0.1:8765").topics(["run:r1".parse()?]).connect().await?;
//! while let Some(item) = subscriber.next().await {
//!     if let SubscriberItem::Event(event) = item { println!("{} #{} {}", event.topic, event.seq, event.event_type); }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`endpoint`]: [`HubUrl`], the hub's base URL and the `/ws` URL derived from it.
//! - [`error`]: [`HttpError`], [`PublishError`], [`ApprovalError`],
//!   [`SubscribeError`], and [`HubError`] (the hub's `{code, message}` body).
//! - [`retry`]: [`RetryPolicy`], exponential backoff with jitter.
//! - `task`: `OwnedTask`, a spawned task aborted when its owner drops it.
//! - [`publisher`]: [`Publisher`] (HTTP publish, with retries).
//! - [`batch`]: [`BatchingPublisher`], a bounded queue flushed by a task it owns.
//! - [`approval`]: the approval calls of [`Publisher`].
//! - [`notice`]: [`Publisher::broadcast`] and [`Publisher::send_to_user`].
//! - [`history`]: [`Publisher::history`], a topic's retained events.
//! - [`subscriber`]: [`Subscriber`], its builder and [`SubscriberItem`];
//!   `subscriber::driver` is the task that drives the session over a socket.
//! - [`unix`]: [`UnixPublisher`], fire-and-forget datagrams.
//! - [`tls`]: what an `https://` / `wss://` hub's certificate is checked
//!   against (Mozilla roots, plus `root_certificate_pem` on either builder).

pub mod approval;
pub mod batch;
pub mod endpoint;
pub mod error;
pub mod history;
pub mod notice;
pub mod publisher;
pub mod retry;
pub mod subscriber;
mod task;
pub mod tls;
pub mod unix;

pub use batch::{BatchingPublisher, MAX_BATCH, PendingReceipt};
pub use endpoint::HubUrl;
pub use error::{ApprovalError, HttpError, HubError, PublishError, SubscribeError};
pub use herald_protocol::payload::{ApprovalDecision, ApprovalRecord, NewApproval};
pub use herald_protocol::session::{Checkpoint, Checkpoints, ConnectionState, SessionConfig};
pub use herald_protocol::{Event, PublishReceipt, PublishRequest};
pub use notice::Notice;
pub use publisher::{Publisher, assign_id};
pub use retry::RetryPolicy;
pub use subscriber::{MAX_BUFFER, Subscriber, SubscriberBuilder, SubscriberItem};
pub use tls::TlsError;
pub use unix::UnixPublisher;

/// Where a hub listens when no URL is given: `http://127.0.0.1:8765`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8765";
