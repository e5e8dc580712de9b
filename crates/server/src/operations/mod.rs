//! Running the hub well: its configuration, what it lets in, and what it
//! tells its operators.
//!
//! # Layout
//!
//! - [`config`]: [`Config`](config::Config), its defaults, and the duration
//!   and size parsers.
//! - [`auth`]: API keys, JWT verification, per-topic access.
//! - `limits`: frame and publish rate limits (`governor`).
//! - [`metrics`]: counters, gauges and histograms (`prometheus-client`),
//!   rendered in the Prometheus text format.
//! - [`watchdog`]: a thread that notices, logs and counts runtime stalls.
//! - `figures`: the hub's headline figures as `metrics.updated` events on
//!   topic `metrics`, for `/ws/metrics`.

pub mod auth;
pub mod config;
pub(crate) mod figures;
pub(crate) mod limits;
pub mod metrics;
pub mod watchdog;
