//! End-to-end tests: the real `herald` binary against the contract in
//! `DESIGN.md`. One test binary, one module per area; each test checks one
//! property and is named for it.
//!
//! This is the `e2e` test target of the `herald` package (`cargo test -p
//! herald --test e2e`), so Cargo builds the binary first, in the same profile
//! and target directory, and names it in `CARGO_BIN_EXE_herald`; [`herald`]
//! hands that path to the harness (`herald-tests`, in `tests/src/`), or
//! `HERALD_BIN` to test another build.
//!
//! # Layout
//!
//! - `hub`: WebSocket basics (welcome, subscriptions, shortcuts, filters,
//!   errors, control frames, ordering).
//! - `http_api`: publishing, broadcast, direct messages, admin and status
//!   endpoints, health and metrics.
//! - `limits`: frame size, connection limit, body size, slow consumers, churn.
//! - `heartbeat`: app-level pings and the heartbeat timeout.
//! - `shutdown`: SIGTERM and the command line's `--help`.
//! - `compression`: `permessage-deflate` negotiation, compressed events,
//!   a deflate bomb closed with 1009.
//! - `config_file`: `serve --config FILE` and `config print`.
//! - `dashboards`: the Grafana dashboard queries only exported metrics.
//! - `deploy`: the Dockerfile, compose file and systemd unit hold valid
//!   `herald serve` command lines.
//! - `drain`: deploys without reconnect storms (readiness first, refused
//!   upgrades, per-connection retry hints, closes spread over the window)
//!   and the health endpoints.
//! - `openapi`: the served OpenAPI document is the committed one; every
//!   documented operation is routed.
//! - `replay`: seq, idempotent ids, `since`, gaps, history over HTTP.
//! - `snapshot`: keyed snapshots, `request_state` and `refresh`.
//! - `sqlite`: the durable store across `kill -9`.
//! - `approvals`: human-in-the-loop approvals (long-poll, `confirm`, `cancel`,
//!   timeouts, audit list, metrics, durability across `kill -9`).
//! - `ingest`: the Unix datagram socket (`--unix-socket`).
//! - `security`: tokens, API keys, origins, rate limits and the bind guard.
//! - `redis`: several nodes on one Redis (`redis-server` started per test).
//! - `compat`: the dialects of the replaced systems (`/compat/…`), one
//!   module per system.
//! - `watchdog`: a stall (the process paused) is logged and counted.

mod approvals;
mod compat;
mod compression;
mod config_file;
mod dashboards;
mod deploy;
mod drain;
mod heartbeat;
mod http_api;
mod hub;
mod ingest;
mod limits;
mod openapi;
mod redis;
mod replay;
mod security;
mod shutdown;
mod snapshot;
mod sqlite;
mod watchdog;

use std::sync::LazyLock;

use herald_tests::Herald;
use serde_json::{Value, json};

/// The `herald` binary under test.
pub fn herald() -> &'static Herald {
    static HERALD: LazyLock<Herald> =
        LazyLock::new(|| Herald::under_test(env!("CARGO_BIN_EXE_herald")));
    &HERALD
}

/// A publish body `{topic, event_type, data}`.
pub fn event(topic: &str, event_type: &str, data: Value) -> Value {
    let mut body = json!({"topic": topic, "event_type": event_type});
    body["data"] = data;
    body
}

/// The `seq`s of `event` frames on `topic`, in the order they came.
pub fn seqs_on(frames: &[Value], topic: &str) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| herald_tests::is_event_on(f, topic))
        .filter_map(herald_tests::seq_of)
        .collect()
}

/// A string field of a frame, or `""`.
pub fn str_field<'a>(frame: &'a Value, field: &str) -> &'a str {
    frame.get(field).and_then(Value::as_str).unwrap_or_default()
}
