//! The transports: how connections, requests and datagrams reach the core.
//!
//! # Layout
//!
//! - [`http`]: the router, the JSON API, who may call what.
//! - `compat`: the dialects of the systems Herald replaces, each under its
//!   own prefix, translated at the edge over the same hub.
//! - [`deflate`]: `permessage-deflate` for the WebSockets (`--compression`).
//! - `ws`: WebSocket endpoints; per connection a reader, a writer and the
//!   commands of client frames.
//! - [`unix`]: the Unix datagram socket producers publish to.

pub(crate) mod compat;
pub mod deflate;
pub mod http;
pub mod unix;
pub(crate) mod ws;
