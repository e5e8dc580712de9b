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
//! - `connection`: one connection's life (welcome, opening subscriptions,
//!   reader and writer, removal).
//! - `reader`: frames in, rate-limited and decoded.
//! - `commands`: what each client frame does.
//! - `writer`: frames out, heartbeats, closes.

mod commands;
mod connection;
mod handshake;
mod reader;
pub(crate) mod upgrade;
mod writer;
