//! Seed 003 (state machine engine) under `/compat/statemachine`: machines
//! send their own datagrams to `--unix-socket`; dashboards on
//! `/ws/events` get `initial`, `state_change`, `ping`, and may `refresh`.

use std::path::Path;

use anyhow::{Result, ensure};
use herald_tests::{DEFAULT_TIMEOUT, Hub, WsClient, eventually};
use serde_json::{Value, json};

use super::{dial, next_with};
use crate::herald;
use crate::ingest::{hub_on, send, socket_in_tempdir};

/// The seed's `send_event('state_change', machine_id, ...)` datagram.
fn state_change(machine: &str, state: &str, previous: &str, timestamp: f64) -> Value {
    json!({"type": "state_change", "machine_id": machine, "state": state,
        "previous_state": previous, "timestamp": timestamp, "data": {"job_id": "task-456"}})
}

/// Sends a datagram and waits until the hub published it as the machine
/// topic's `seq`.
async fn machine_sends(hub: &Hub, path: &Path, datagram: &Value, seq: u64) -> Result<()> {
    send(path, datagram.to_string().as_bytes())?;
    let machine = datagram["machine_id"].as_str().unwrap_or_default();
    let topic_path = format!("/api/v1/topics/machine:{machine}/events");
    eventually(DEFAULT_TIMEOUT, "the datagram is published", || async {
        let history = hub.http().get(&topic_path).await?;
        Ok((history.body["seq"] == seq).then_some(()))
    })
    .await
}

/// A dashboard as the seed's client opens it; `ping`s are kept.
async fn dashboard(hub: &Hub) -> Result<WsClient> {
    let mut client = dial(hub, "/compat/statemachine/ws/events").await?;
    client.keep_pings = true;
    Ok(client)
}

#[tokio::test]
async fn a_dashboard_gets_every_machines_state_in_one_initial_then_state_changes() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    machine_sends(
        &hub,
        &path,
        &state_change("worker-2", "idle", "starting", 1729845670.5),
        1,
    )
    .await?;
    machine_sends(
        &hub,
        &path,
        &state_change("worker-1", "idle", "starting", 1729845671.25),
        1,
    )
    .await?;
    machine_sends(
        &hub,
        &path,
        &state_change("worker-1", "processing", "idle", 1729845678.123),
        2,
    )
    .await?;
    let mut dashboard = dashboard(&hub).await?;
    let initial = dashboard.recv_frame().await?;
    ensure!(initial["type"] == "initial", "first message: {initial}");
    ensure!(
        initial["machines"]
            == json!([
                {"id": "worker-1", "current_state": "processing", "last_activity": 1729845678.123},
                {"id": "worker-2", "current_state": "idle", "last_activity": 1729845670.5},
            ]),
        "{initial}"
    );
    super::is_now_in_seconds(&initial, "timestamp")?;
    send(
        &path,
        state_change("worker-2", "processing", "idle", 1729845680.75)
            .to_string()
            .as_bytes(),
    )?;
    let change = next_with(&mut dashboard, "type", "state_change").await?;
    ensure!(
        change
            == json!({"type": "state_change", "machine_id": "worker-2", "state": "processing",
                "previous_state": "idle", "timestamp": 1729845680.75,
                "data": {"job_id": "task-456"}}),
        "{change}"
    );
    // A machine's other datagrams come with their own type.
    send(
        &path,
        json!({"type": "job_done", "machine_id": "worker-2", "job": 7})
            .to_string()
            .as_bytes(),
    )?;
    let done = next_with(&mut dashboard, "type", "job_done").await?;
    ensure!(
        done["job"] == 7 && done["machine_id"] == "worker-2",
        "{done}"
    );
    Ok(())
}

#[tokio::test]
async fn refresh_sends_a_fresh_initial_and_pong_is_taken_silently() -> Result<()> {
    let (_dir, path) = socket_in_tempdir()?;
    let hub = hub_on(&path, &[]).await?;
    let mut dashboard = dashboard(&hub).await?;
    let initial = dashboard.recv_frame().await?;
    ensure!(
        initial == json!({"type": "initial", "machines": [], "timestamp": initial["timestamp"]}),
        "{initial}"
    );
    machine_sends(
        &hub,
        &path,
        &state_change("w1", "busy", "idle", 1729845678.5),
        1,
    )
    .await?;
    next_with(&mut dashboard, "type", "state_change").await?;
    dashboard.send_json(&json!({"type": "pong"})).await?;
    dashboard.send_text("pong").await?;
    dashboard.send_json(&json!({"type": "refresh"})).await?;
    let (fresh, before) = dashboard
        .recv_collect_until(|f| f["type"] == "initial")
        .await?;
    ensure!(before.is_empty(), "pongs were answered: {before:?}");
    ensure!(fresh["machines"][0]["current_state"] == "busy", "{fresh}");
    Ok(())
}

#[tokio::test]
async fn dashboards_are_pinged_in_seconds_at_least_every_ten_seconds() -> Result<()> {
    let hub = herald().start(&["--heartbeat-interval", "200ms"]).await?;
    let mut dashboard = dashboard(&hub).await?;
    let ping = next_with(&mut dashboard, "type", "ping").await?;
    super::is_now_in_seconds(&ping, "timestamp")?;
    dashboard.send_json(&json!({"type": "pong"})).await?;
    Ok(())
}

#[tokio::test]
async fn a_dashboard_message_that_is_not_pong_ping_or_refresh_gets_an_error_and_the_socket_carries_on()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut dashboard = dashboard(&hub).await?;
    let initial = dashboard.recv_frame().await?;
    ensure!(initial["type"] == "initial", "first message: {initial}");
    let refused = [
        ("{not json", "invalid_json"),
        (r#"{"type": "refesh"}"#, "unknown_action"),
        ("[1, 2, 3]", "invalid_request"),
    ];
    for (message, code) in refused {
        dashboard.send_text(message).await?;
        let error = next_with(&mut dashboard, "type", "error").await?;
        ensure!(error["code"] == code, "{message}: {error}");
    }
    dashboard.send_json(&json!({"type": "refresh"})).await?;
    next_with(&mut dashboard, "type", "initial").await?;
    Ok(())
}
