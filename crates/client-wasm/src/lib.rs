//! `herald-client-wasm`: Herald's browser client. It drives the sans-IO
//! `herald_protocol::session::Session` (reconnect with backoff and jitter,
//! heartbeat, checkpoints, resubscribe with `since`, de-duplication) over a
//! browser `WebSocket`, `setTimeout` and the page's `online` and
//! `visibilitychange` events, and exports a small class, `WasmClient`, that
//! the TypeScript wrapper in `web-client/` builds on. None of the session's
//! policy is written here: this crate only carries out what the session asks.
//!
//! Everything is compiled for `wasm32` only; on any other target this crate
//! is an empty library, so workspace-wide host builds skip it cheaply.
//!
//! # Ownership of JS callbacks
//!
//! Every `Closure` handed to the browser is owned by a Rust value (the
//! socket, a timer, the page listeners) whose `Drop` unregisters it (handlers
//! set to `null`, `clearTimeout`, `removeEventListener`) and then frees it.
//! Nothing is leaked with `Closure::forget`. Closures hold a `Weak` reference
//! to the driver, so they never keep it alive.
//!
//! # Layout
//!
//! - `client`: `WasmClient`, the exported API (JSON strings in and out).
//! - `driver`: one turn of the session loop: actions, frames, the timer,
//!   and events handed to the JS callback.
//! - `socket`: the `WebSocket` and its handlers.
//! - `timer`: a `setTimeout` that is cancelled when dropped.
//! - `page`: `online` and `visibilitychange` listeners.
//! - `options`: the JS options object mapped onto `SessionConfig`.
//! - `output`: session events encoded for JS.
//! - `payload`: the protocol's typed payloads for JS (`payloadType`,
//!   `payloadExample`, `checkEvent`).

#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod driver;
#[cfg(target_arch = "wasm32")]
mod options;
#[cfg(target_arch = "wasm32")]
mod output;
#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod payload;
#[cfg(target_arch = "wasm32")]
mod socket;
#[cfg(target_arch = "wasm32")]
mod timer;

#[cfg(target_arch = "wasm32")]
pub use client::WasmClient;
#[cfg(target_arch = "wasm32")]
pub use payload::{check_event, payload_example, payload_type};
