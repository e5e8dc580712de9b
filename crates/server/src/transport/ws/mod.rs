//! WebSocket: the endpoints and their admission, and per connection a
//! reader, a writer, and what each client frame does.
//!
//! # Layout
//!
//! - `upgrade`: the endpoints (`/ws`, the seed shortcuts), token and origin
//!   checks before the upgrade, the connection limit.
//! - `handshake`: the opening handshake, answered by the hub, and the
//!   socket it builds (with the inflating reader of
//!   [`deflate`](crate::transport::deflate) when agreed).
//! - `coalesce`: the socket's writes gathered until a flush, held only
//!   until written.
//! - `frames`: the frames the hub writes itself (headers, close payloads).
//! - `direct`: event frames the fan-out writes straight to a quiet
//!   connection's socket.
//! - `dialect`: what an endpoint speaks: the trait the connection, reader
//!   and writer are generic over.
//! - `native`: Herald's own protocol as a dialect (welcome, the URL's
//!   subscriptions, frames through `commands`, frames out as they are).
//! - `connection`: one connection's life (greeting, opening, reader and
//!   writer, removal).
//! - `reader`: frames in, rate-limited, handed to the dialect.
//! - `commands`: what each of Herald's client frames does, and who may
//!   steer a task or run (shared with the dialects that can).
//! - `writer`: frames out as the dialect renders them, heartbeats, closes.

mod coalesce;
pub(crate) mod commands;
pub(crate) mod connection;
pub(crate) mod dialect;
mod direct;
mod frames;
pub(crate) mod handshake;
pub(crate) mod native;
mod reader;
pub(crate) mod upgrade;
mod writer;
