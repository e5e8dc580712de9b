//! Seed 004 (cmbagent) under `/compat/cmbagent/ws/{run_id}`: the run's
//! state on connect, events by the seed's names, missed events since a
//! timestamp, `ping`, `request_state`, `pause` and `resume`.

use anyhow::{Context as _, Result, ensure};
use herald_tests::{Http, Hub, WsClient, is_event_on};
use serde_json::{Value, json};

use super::{dial, next_with};
use crate::herald;

/// Publishes on `run:{run}` with an explicit time (ms) and, when given, a key.
async fn publish(
    http: &Http,
    run: &str,
    event_type: &str,
    key: Option<&str>,
    ms: u64,
    data: Value,
) -> Result<()> {
    let mut body = json!({"topic": format!("run:{run}"), "event_type": event_type,
        "timestamp": ms, "data": data});
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    http.publish(&body).await?;
    Ok(())
}

/// A UI's socket for `run`, with `query` (e.g. `?since=T`); reads `connected`.
async fn ui(hub: &Hub, run: &str, query: &str) -> Result<WsClient> {
    let mut client = dial(hub, &format!("/compat/cmbagent/ws/{run}{query}")).await?;
    let connected = client.recv_frame().await?;
    ensure!(
        connected["event_type"] == "connected",
        "first message: {connected}"
    );
    ensure!(connected["run_id"] == run, "{connected}");
    Ok(client)
}

/// The messages up to the `pong` that answers a `ping` sent now.
async fn until_pong(client: &mut WsClient) -> Result<Vec<Value>> {
    client.send_json(&json!({"type": "ping"})).await?;
    let (_, before) = client
        .recv_collect_until(|f| f["event_type"] == "pong")
        .await?;
    Ok(before)
}

/// Names of the messages up to the `pong` that answers a `ping` sent now,
/// but for heartbeats.
async fn names_until_pong(client: &mut WsClient) -> Result<Vec<String>> {
    Ok(until_pong(client)
        .await?
        .iter()
        .map(|f| f["event_type"].as_str().unwrap_or_default().to_owned())
        .filter(|name| name != "heartbeat")
        .collect())
}

/// The `data.n` of the messages up to the `pong` that answers a `ping` sent now.
async fn numbers_until_pong(client: &mut WsClient) -> Result<Vec<u64>> {
    Ok(until_pong(client)
        .await?
        .iter()
        .filter_map(|f| f["data"]["n"].as_u64())
        .collect())
}

const T0: u64 = 1_768_400_000_000;

#[tokio::test]
async fn a_run_socket_gets_the_runs_state_on_connect_then_live_events_by_the_seeds_names()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish(
        &http,
        "r1",
        "workflow.started",
        Some("workflow"),
        T0,
        json!({"status": "running"}),
    )
    .await?;
    publish(
        &http,
        "r1",
        "agent.message",
        None,
        T0 + 1,
        json!({"text": "hi"}),
    )
    .await?;
    publish(
        &http,
        "r1",
        "step.completed",
        Some("step:1"),
        T0 + 2,
        json!({"step": 1}),
    )
    .await?;
    let mut ui = ui(&hub, "r1", "").await?;
    // The state: the latest event of each key, in order; the unkeyed
    // message is history, not state.
    ensure!(
        names_until_pong(&mut ui).await? == ["workflow_started", "step_completed"],
        "state on connect"
    );
    publish(
        &http,
        "r1",
        "dag.node_status_changed",
        Some("dag"),
        T0 + 3,
        json!({"node_id": "n1", "old_status": "pending", "new_status": "running"}),
    )
    .await?;
    let live = next_with(&mut ui, "event_type", "dag_node_status_changed").await?;
    ensure!(live["run_id"] == "r1", "{live}");
    ensure!(live["timestamp"] == 1_768_400_000.003, "{live}");
    ensure!(live["data"]["new_status"] == "running", "{live}");
    ensure!(live["event_id"].is_string(), "{live}");
    // A hub-wide broadcast reaches the run's socket as the run's message.
    http.post(
        "/api/v1/broadcast",
        &json!({"event_type": "system.notification", "data": {"message": "hello"}}),
    )
    .await?;
    let notice = next_with(&mut ui, "event_type", "system_notification").await?;
    ensure!(notice["run_id"] == "r1", "{notice}");
    Ok(())
}

#[tokio::test]
async fn a_reconnecting_ui_gets_every_event_newer_than_its_last_timestamp_exactly_once()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish(
        &http,
        "r2",
        "workflow.started",
        Some("workflow"),
        T0,
        json!({}),
    )
    .await?;
    publish(&http, "r2", "agent.message", None, T0 + 10, json!({"n": 1})).await?;
    // The UI saw everything up to here, then went away.
    publish(&http, "r2", "agent.message", None, T0 + 20, json!({"n": 2})).await?;
    publish(
        &http,
        "r2",
        "step.completed",
        Some("step:1"),
        T0 + 30,
        json!({"step": 1}),
    )
    .await?;
    publish(
        &http,
        "r2",
        "agent.thinking",
        None,
        T0 + 40,
        json!({"n": 3}),
    )
    .await?;
    let since = (T0 + 10) as f64 / 1000.0;
    let mut ui = ui(&hub, "r2", &format!("?since={since}")).await?;
    ensure!(
        names_until_pong(&mut ui).await?
            == [
                // The state, then what was missed that the state did not show.
                "workflow_started",
                "step_completed",
                "agent_message",
                "agent_thinking",
            ],
        "state and missed events"
    );
    // A cursor in milliseconds (JavaScript's Date.now()) reads the same.
    let mut ui = ui_with_ms(&hub).await?;
    ensure!(
        names_until_pong(&mut ui).await?
            == ["workflow_started", "step_completed", "agent_thinking"],
        "state and missed events since a millisecond cursor"
    );
    Ok(())
}

#[tokio::test]
async fn events_sharing_the_last_timestamps_millisecond_are_sent_again_not_lost() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish(&http, "r5", "agent.message", None, T0, json!({"n": 1})).await?;
    // A batch: two events in one millisecond; the UI saw the first, then
    // dropped before the second arrived.
    publish(&http, "r5", "agent.message", None, T0 + 10, json!({"n": 2})).await?;
    publish(&http, "r5", "agent.message", None, T0 + 10, json!({"n": 3})).await?;
    publish(
        &http,
        "r5",
        "agent.thinking",
        None,
        T0 + 20,
        json!({"n": 4}),
    )
    .await?;
    let since = |ms: u64| format!("?since={}", ms as f64 / 1000.0);
    let mut ui_after_n2 = ui(&hub, "r5", &since(T0 + 10)).await?;
    let seen = numbers_until_pong(&mut ui_after_n2).await?;
    ensure!(seen == [2, 3, 4], "events after the cursor: {seen:?}");
    // A millisecond of its own: that last event is not sent again.
    let mut ui_after_n4 = ui(&hub, "r5", &since(T0 + 20)).await?;
    let seen = numbers_until_pong(&mut ui_after_n4).await?;
    ensure!(seen.is_empty(), "events after the last one: {seen:?}");
    Ok(())
}

#[tokio::test]
async fn a_ui_resuming_from_its_last_message_after_a_reconnect_that_missed_nothing_gets_nothing_twice()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish(
        &http,
        "r6",
        "workflow.started",
        Some("workflow"),
        T0,
        json!({}),
    )
    .await?;
    publish(&http, "r6", "agent.message", None, T0 + 10, json!({"n": 1})).await?;
    publish(&http, "r6", "agent.message", None, T0 + 20, json!({"n": 2})).await?;
    // The UI had everything; it reconnects from its last message.
    let since = (T0 + 20) as f64 / 1000.0;
    let mut again = ui(&hub, "r6", &format!("?since={since}")).await?;
    let messages = until_pong(&mut again).await?;
    ensure!(
        messages
            .iter()
            .filter(|m| m["event_type"] == "agent_message")
            .count()
            == 0,
        "nothing was missed: {messages:?}"
    );
    // The state's events keep their older times, and a message after them
    // puts the UI back where it was.
    let last = messages.last().context("no message before the pong")?;
    ensure!(last["timestamp"] == json!(since), "last message: {last}");
    // So the next reconnect, from that last message, gets nothing twice.
    let cursor = last["timestamp"].as_f64().context("a timestamp")?;
    let mut third = ui(&hub, "r6", &format!("?since={cursor}")).await?;
    let numbers = numbers_until_pong(&mut third).await?;
    ensure!(numbers.is_empty(), "sent again: {numbers:?}");
    Ok(())
}

#[tokio::test]
async fn a_ui_resuming_on_a_hub_that_lost_the_runs_history_is_told_and_gets_the_stream_there_is()
-> Result<()> {
    let before = herald().start(&[]).await?;
    before
        .http()
        .publish_simple("run:r7", "agent.message", json!({"n": 1}))
        .await?;
    let mut ui_before = ui(&before, "r7", "?since=0").await?;
    let seen = next_with(&mut ui_before, "event_type", "agent_message").await?;
    let cursor = seen["timestamp"].as_f64().context("a timestamp")?;
    // A memory hub started afresh (as after a restart) holds another stream
    // of the run, begun after the UI's last message.
    let after = herald().start(&[]).await?;
    after
        .http()
        .publish_simple("run:r7", "agent.message", json!({"n": 2}))
        .await?;
    let mut ui_after = ui(&after, "r7", &format!("?since={cursor}")).await?;
    let messages = until_pong(&mut ui_after).await?;
    let told = messages
        .iter()
        .find(|m| m["event_type"] == "error_occurred")
        .context(format!("not told: {messages:?}"))?;
    ensure!(
        told["data"]["code"] == "events_missed" && told["data"]["reason"] == "epoch_changed",
        "{told}"
    );
    let numbers: Vec<u64> = messages
        .iter()
        .filter_map(|m| m["data"]["n"].as_u64())
        .collect();
    ensure!(numbers == [2], "the stream there is: {messages:?}");
    Ok(())
}

async fn ui_with_ms(hub: &Hub) -> Result<WsClient> {
    ui(hub, "r2", &format!("?since={}", T0 + 30)).await
}

#[tokio::test]
async fn pause_and_resume_on_the_run_socket_reach_the_workflow() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut workflow = hub.ws("/ws").await?;
    workflow.subscribe(&["run:r3"]).await?;
    let mut ui = ui(&hub, "r3", "").await?;
    ui.send_json(&json!({"type": "pause"})).await?;
    let pause = workflow.recv_until(|f| is_event_on(f, "run:r3")).await?;
    ensure!(pause["event_type"] == "control.pause", "{pause}");
    ensure!(pause["data"]["run_id"] == "r3", "{pause}");
    ui.send_json(&json!({"type": "resume", "reason": "continue"}))
        .await?;
    let resume = workflow.recv_until(|f| is_event_on(f, "run:r3")).await?;
    ensure!(resume["event_type"] == "control.resume", "{resume}");
    // The workflow reports back; the UI reads it by its name.
    hub.http()
        .publish_simple("run:r3", "workflow.resumed", json!({}))
        .await?;
    next_with(&mut ui, "event_type", "workflow_resumed").await?;
    // A reason that is not text is refused, not dropped.
    ui.send_json(&json!({"type": "pause", "reason": 123}))
        .await?;
    let refused = next_with(&mut ui, "event_type", "error_occurred").await?;
    ensure!(refused["data"]["code"] == "invalid_request", "{refused}");
    Ok(())
}

#[tokio::test]
async fn request_state_resends_the_state_and_unknown_messages_are_error_occurred() -> Result<()> {
    let hub = herald().start(&["--heartbeat-interval", "300ms"]).await?;
    publish(
        &hub.http(),
        "r4",
        "workflow.started",
        Some("workflow"),
        T0,
        json!({}),
    )
    .await?;
    let mut ui = ui(&hub, "r4", "").await?;
    ensure!(
        names_until_pong(&mut ui).await? == ["workflow_started"],
        "state"
    );
    ui.send_json(&json!({"type": "request_state"})).await?;
    ensure!(
        names_until_pong(&mut ui).await? == ["workflow_started"],
        "state again"
    );
    ui.send_json(&json!({"type": "dance"})).await?;
    let error = next_with(&mut ui, "event_type", "error_occurred").await?;
    ensure!(error["data"]["code"] == "unknown_action", "{error}");
    let beat = next_with(&mut ui, "event_type", "heartbeat").await?;
    ensure!(
        beat["run_id"] == "r4" && beat["timestamp"].is_f64(),
        "{beat}"
    );
    Ok(())
}

#[tokio::test]
async fn every_event_type_stage_5_lists_arrives_by_its_stage_5_name() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut ui = ui(&hub, "all", "").await?;
    let names = [
        ("connection.lost", "disconnected"),
        ("connection.reconnected", "reconnected"),
        ("workflow.started", "workflow_started"),
        ("workflow.paused", "workflow_paused"),
        ("workflow.resumed", "workflow_resumed"),
        ("workflow.completed", "workflow_completed"),
        ("workflow.failed", "workflow_failed"),
        ("step.started", "step_started"),
        ("step.progress", "step_progress"),
        ("step.completed", "step_completed"),
        ("step.failed", "step_failed"),
        ("dag.created", "dag_created"),
        ("dag.updated", "dag_updated"),
        ("dag.node_status_changed", "dag_node_status_changed"),
        ("agent.message", "agent_message"),
        ("agent.thinking", "agent_thinking"),
        ("agent.tool_call", "agent_tool_call"),
        ("approval.requested", "approval_requested"),
        ("approval.resolved", "approval_received"),
        ("cost.updated", "cost_update"),
        ("metrics.updated", "metric_update"),
        ("file.created", "file_created"),
        ("file.updated", "file_updated"),
        ("system.error", "error_occurred"),
        ("connection.heartbeat", "heartbeat"),
    ];
    let batch: Vec<Value> = names
        .iter()
        .map(|(herald, _)| json!({"topic": "run:all", "event_type": herald, "data": {}}))
        .collect();
    // The (empty) state first.
    until_pong(&mut ui).await?;
    hub.http().publish_batch(&batch).await?;
    for (herald, name) in names {
        let got = ui.recv_frame().await?;
        ensure!(got["event_type"] == name, "{herald} arrived as {got}");
        ensure!(got["run_id"] == "all", "{got}");
    }
    Ok(())
}

/// With tokens, a run's socket opens only for a UI whose token lets it
/// watch the run, which it then steers: another user's token is refused at
/// the upgrade (403 `forbidden`), so it can neither pause the run nor read
/// its state.
#[tokio::test]
async fn with_tokens_only_a_ui_allowed_the_run_opens_its_socket_and_pauses_it() -> Result<()> {
    use crate::security::{SECRET, expect_refused, fresh, hs256, with_token};

    let hub = herald().start(&["--jwt-secret", SECRET]).await?;
    let admin = hs256(&fresh("ops", &["*"]))?;
    let mut workflow = hub.ws(&with_token("/ws", &admin)).await?;
    workflow.subscribe(&["run:r9"]).await?;
    let intruder = hs256(&fresh("u2", &["run:mine"]))?;
    let url = hub.ws_url(&with_token("/compat/cmbagent/ws/r9", &intruder));
    expect_refused(&url, &[], 403, "forbidden").await?;
    let owner = hs256(&fresh("u1", &["run:r9"]))?;
    let mut own = ui(&hub, "r9", &format!("?token={owner}")).await?;
    own.send_json(&json!({"type": "pause"})).await?;
    let pause = workflow.recv_until(|f| is_event_on(f, "run:r9")).await?;
    ensure!(
        pause["event_type"] == "control.pause" && pause["data"]["requested_by"] == "u1",
        "the first control request on run:r9: {pause}"
    );
    Ok(())
}
