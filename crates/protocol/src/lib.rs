//! `herald-protocol`: Herald's wire contract, shared by the hub, the native
//! client and the browser client. No IO, no runtime; builds for
//! `wasm32-unknown-unknown`.
//!
//! # Layout
//!
//! - [`event_type`]: the dotted event type names (every one the contract
//!   lists, plus custom ones).
//! - [`priority`]: `low < normal < high < critical`.
//! - [`topic`]: [`Topic`] and [`TopicPattern`], which enforce the grammar.
//! - [`filter`]: [`EventFilter`] (type patterns, minimum priority).
//! - [`event`]: the [`Event`] envelope, [`PublishRequest`], ids and labels.
//! - [`frame`]: client → server ([`ClientFrame`]) and server → client
//!   ([`ServerMessage`]) frames.
//! - [`error`]: [`ErrorCode`], [`DecodeError`] and [`CloseReason`].
//! - [`payload`]: typed `data` for the common events, and which event
//!   types carry which ([`payload::PayloadKind`]).
//! - [`api`]: the answers of the admin HTTP API (topics, connections, status).
//! - [`session`]: the sans-IO client session (reconnect, heartbeat, replay,
//!   de-duplication), driven by the native and browser clients.
//! - [`bindings`]: the list of TypeScript declarations `cargo xtask bindings` writes.
//! - [`schema`]: the JSON Schema of the wire types, which `cargo xtask bindings`
//!   writes and generates the Python models from.
//!
//! # Forward compatibility
//!
//! Clients ignore frame types and event types they do not know, and the hub
//! ignores unknown fields in client frames.

#[macro_use]
mod wire_types;

pub mod api;
pub mod bindings;
pub mod error;
pub mod event;
pub mod event_type;
pub mod filter;
pub mod frame;
pub mod payload;
pub mod priority;
pub mod schema;
pub mod session;
pub mod topic;

pub use error::{CloseReason, DecodeError, ErrorCode};
pub use event::{
    CallbackId, Epoch, Event, EventId, Label, PublishBody, PublishReceipt, PublishRequest,
};
pub use event_type::{EventType, EventTypeError};
pub use filter::{EventFilter, TypePattern};
pub use frame::{ClientFrame, ClientMessage, FrameError, RequestId, ServerMessage};
pub use priority::Priority;
pub use topic::{Topic, TopicError, TopicPattern};
