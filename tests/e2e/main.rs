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
use std::time::Duration;

use anyhow::{Result, ensure};
use herald_tests::{Herald, Hub, Reply};
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

/// Publishes to `run:c`, `run:a`, `crew:z`, `run:b` and `run:d` (this one
/// with a producer's timestamp of long ago), in that order, through
/// `publisher`, and checks how `reader` lists them: under a pattern, by
/// name or the most recently published to first (when it was published,
/// not the time its producer wrote), `limit` leaving the rest out; a bad
/// pattern or order is refused.
pub async fn topics_are_listed_under_a_pattern_by_name_or_most_recent_first(
    publisher: &Hub,
    reader: &Hub,
) -> Result<()> {
    for topic in ["run:c", "run:a", "crew:z", "run:b", "run:d"] {
        let mut body = event(topic, "step.started", json!({}));
        if topic == "run:d" {
            body["timestamp"] = json!(1_000);
        }
        publisher.http().publish(&body).await?;
        // What is checked is an order by time: each publish gets a
        // millisecond of its own.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let names = |reply: &Reply| -> Vec<String> {
        reply.body["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| str_field(t, "topic").to_owned())
            .collect()
    };
    let listed = |query: &'static str| async move {
        let reply = reader
            .http()
            .get(&format!("/api/v1/topics?{query}"))
            .await?;
        reply.ok()
    };

    let recent = listed("pattern=run:*&order=recent").await?;
    ensure!(
        names(&recent) == ["run:d", "run:b", "run:a", "run:c"],
        "{}",
        recent.text
    );
    ensure!(recent.body["truncated"] == false, "{}", recent.text);
    let latest = listed("pattern=run:*&order=recent&limit=2").await?;
    ensure!(names(&latest) == ["run:d", "run:b"], "{}", latest.text);
    ensure!(latest.body["truncated"] == true, "{}", latest.text);
    let by_name = listed("pattern=run:*").await?;
    ensure!(
        names(&by_name) == ["run:a", "run:b", "run:c", "run:d"],
        "{}",
        by_name.text
    );
    let all_recent = listed("order=recent").await?;
    ensure!(
        names(&all_recent) == ["run:d", "run:b", "crew:z", "run:a", "run:c"],
        "{}",
        all_recent.text
    );
    let one = listed("pattern=crew:z").await?;
    ensure!(names(&one) == ["crew:z"], "{}", one.text);
    // An exact topic is found however many of its kind are newer.
    let oldest = listed("pattern=run:c&order=recent&limit=1").await?;
    ensure!(names(&oldest) == ["run:c"], "{}", oldest.text);
    ensure!(oldest.body["truncated"] == false, "{}", oldest.text);

    let bad_pattern = reader.http().get("/api/v1/topics?pattern=run:a:*").await?;
    ensure!(
        bad_pattern.status == 400 && bad_pattern.body["code"] == "invalid_topic",
        "{}",
        bad_pattern.text
    );
    let bad_order = reader.http().get("/api/v1/topics?order=oldest").await?;
    ensure!(
        bad_order.status == 400 && bad_order.body["code"] == "invalid_request",
        "{}",
        bad_order.text
    );
    Ok(())
}
