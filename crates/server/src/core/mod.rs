//! The core: topics, this node's subscribers and connections, approvals, and
//! the [`broker::Broker`] boundary with its engines. It knows nothing of
//! sockets or HTTP: it hands encoded frames (`Bytes`) to each connection's
//! bounded `outbox`, which a transport drains.
//!
//! # Layout
//!
//! - [`hub`]: [`Hub`](hub::Hub), the facade over the parts below.
//! - [`broker`]: the [`Broker`](broker::Broker) trait (seqs, history,
//!   snapshots, idempotency, approvals: what several nodes would share) and
//!   its engines (`memory`, made durable by `sqlite`).
//! - [`publish`]: [`Publisher`](publish::Publisher), the one way in for
//!   events, with [`PublishOptions`](publish::PublishOptions).
//! - [`subscriptions`]: subscribing with snapshot and replay, seamlessly
//!   joined to live delivery; unsubscribing; state requests.
//! - `fanout`: this node's subscriber index and the delivery of every
//!   publication the broker hands over.
//! - [`connections`]: this node's open connections, by id and by user.
//! - [`connection`]: [`ConnHandle`](connection::ConnHandle), one connection
//!   as the core sees it.
//! - [`cluster`]: the admin API's questions about connections, answered by
//!   every node sharing the store.
//! - `outbox`: a connection's bounded queue: priority shedding with exact
//!   `gap` markers, 1013 on overload.
//! - [`approvals`]: asking, deciding, waiting, timing out.
//! - [`clock`]: milliseconds since the Unix epoch.

pub mod approvals;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod connection;
pub mod connections;
mod fanout;
pub mod hub;
pub(crate) mod outbox;
pub mod publish;
pub mod subscriptions;
