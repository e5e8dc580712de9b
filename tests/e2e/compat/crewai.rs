//! Seed 002 (CrewAI) under `/compat/crewai/api/v1/websocket`: its
//! WebSocket endpoints, `WebSocketEvent`s and admin routes.

use anyhow::{Result, ensure};
use herald_tests::{Hub, WsClient};
use reqwest::Method;
use serde_json::{Value, json};

use super::{dial, next_with};
use crate::security::{ADMIN_KEY, API_KEYS, PUBLISH_KEY, api};
use crate::{event, herald, str_field};

const PREFIX: &str = "/compat/crewai/api/v1/websocket";

fn at(path: &str) -> String {
    format!("{PREFIX}{path}")
}

/// Connects to a CrewAI endpoint and reads its `connection.established`.
async fn client(hub: &Hub, path: &str) -> Result<(WsClient, Value)> {
    let mut client = dial(hub, &at(path)).await?;
    let hello = client.recv_frame().await?;
    ensure!(
        hello["event_type"] == "connection.established",
        "first message: {hello}"
    );
    Ok((client, hello))
}

/// An ISO 8601 UTC time with milliseconds, as the seed's datetimes.
fn is_iso8601(value: &Value) -> bool {
    value.as_str().is_some_and(|t| {
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.'
    })
}

#[tokio::test]
async fn an_execution_socket_greets_then_reads_events_as_websocket_events() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let (mut client, hello) = client(&hub, "/ws/executions/exec_123").await?;
    ensure!(
        hello["data"]["subscriptions"] == json!(["execution_exec_123"]),
        "{hello}"
    );
    let client_id = str_field(&hello["data"], "client_id").to_owned();
    ensure!(!client_id.is_empty(), "{hello}");
    ensure!(is_iso8601(&hello["timestamp"]), "{hello}");
    next_with(&mut client, "type", "subscription_confirmed").await?;
    let mut published = event(
        "execution:exec_123",
        "execution.completed",
        json!({"status": "completed", "result": {"success": true}}),
    );
    published["priority"] = json!("high");
    hub.http().publish(&published).await?;
    let got = next_with(&mut client, "event_type", "execution.completed").await?;
    ensure!(got["priority"] == "HIGH", "{got}");
    ensure!(got["execution_id"] == "exec_123", "{got}");
    ensure!(got["subscription"] == "execution_exec_123", "{got}");
    ensure!(got["data"] == published["data"], "{got}");
    ensure!(is_iso8601(&got["timestamp"]), "{got}");
    ensure!(got["metadata"]["seq"] == 1, "{got}");
    Ok(())
}

#[tokio::test]
async fn the_seeds_subscription_names_follow_topics_and_unsubscribe_stops_them() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let (mut client, _) = client(&hub, "/ws/custom").await?;
    client
        .send_json(
            &json!({"action": "subscribe", "subscriptions": ["execution_123", "task_updates"]}),
        )
        .await?;
    for name in ["execution_123", "task_updates"] {
        let confirmed = next_with(&mut client, "type", "subscription_confirmed").await?;
        ensure!(confirmed["subscription"] == name, "{confirmed}");
    }
    http.publish_simple("task:t9", "task.assigned", json!({"agent": "a1"}))
        .await?;
    let task = next_with(&mut client, "event_type", "task.assigned").await?;
    ensure!(
        task["task_id"] == "t9" && task["subscription"] == "task_t9",
        "{task}"
    );
    client
        .send_json(&json!({"action": "unsubscribe", "subscriptions": ["task_updates"]}))
        .await?;
    // A ping after the unsubscribe is answered after it took effect.
    client.send_json(&json!({"action": "ping"})).await?;
    next_with(&mut client, "event_type", "connection.heartbeat").await?;
    http.publish_simple("task:t9", "task.completed", json!({}))
        .await?;
    http.publish_simple(
        "execution:123",
        "execution.progress",
        json!({"progress": 50}),
    )
    .await?;
    let (next, before) = client
        .recv_collect_until(|f| f["event_type"] == "execution.progress")
        .await?;
    ensure!(next["execution_id"] == "123", "{next}");
    ensure!(
        !before.iter().any(|f| f["event_type"] == "task.completed"),
        "unsubscribed events came: {before:?}"
    );
    // A name Herald cannot take is refused on its own; the others in the
    // same message are followed.
    client
        .send_json(&json!({"action": "subscribe", "subscriptions": ["Not Valid", "crew_456"]}))
        .await?;
    let error = next_with(&mut client, "event_type", "system.error").await?;
    ensure!(
        str_field(&error["data"], "code") == "invalid_topic",
        "{error}"
    );
    let confirmed = next_with(&mut client, "type", "subscription_confirmed").await?;
    ensure!(confirmed["subscription"] == "crew_456", "{confirmed}");
    Ok(())
}

#[tokio::test]
async fn crew_global_and_metrics_endpoints_follow_their_topics() -> Result<()> {
    let hub = herald().start(&["--metrics-interval", "100ms"]).await?;
    let http = hub.http();
    let (mut crew, _) = client(&hub, "/ws/crews/crew_456").await?;
    let (mut global, _) = client(&hub, "/ws/global").await?;
    let (mut metrics, _) = client(&hub, "/ws/metrics").await?;
    for client in [&mut crew, &mut global, &mut metrics] {
        next_with(client, "type", "subscription_confirmed").await?;
    }
    http.publish_simple("crew:crew_456", "crew.updated", json!({"agents": 3}))
        .await?;
    let updated = next_with(&mut crew, "event_type", "crew.updated").await?;
    ensure!(updated["crew_id"] == "crew_456", "{updated}");
    http.publish_simple("global", "system.health_check", json!({"ok": true}))
        .await?;
    let check = next_with(&mut global, "event_type", "system.health_check").await?;
    ensure!(check["subscription"] == "global", "{check}");
    let figures = next_with(&mut metrics, "event_type", "metrics.updated").await?;
    ensure!(figures["priority"] == "LOW", "{figures}");
    Ok(())
}

#[tokio::test]
async fn the_admin_routes_answer_in_the_seeds_shapes() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let (mut watcher, hello) = client(&hub, "/ws/executions/123").await?;
    next_with(&mut watcher, "type", "subscription_confirmed").await?;
    let (mut other, other_hello) = client(&hub, "/ws/global").await?;
    next_with(&mut other, "type", "subscription_confirmed").await?;
    let stats = http.get(&at("/connections")).await?;
    ensure!(stats.body["status"] == "success", "{}", stats.text);
    let data = &stats.body["data"];
    ensure!(data["active_connections"] == 2, "{}", stats.text);
    ensure!(
        data["subscription_counts"]["execution_123"] == 1,
        "{}",
        stats.text
    );
    ensure!(data["subscription_counts"]["global"] == 1, "{}", stats.text);
    ensure!(
        data["average_connection_duration"].is_f64(),
        "{}",
        stats.text
    );
    ensure!(
        data["uptime_statistics"]["connections"] == 2,
        "{}",
        stats.text
    );
    ensure!(
        data["uptime_statistics"]["average_duration_seconds"].is_f64(),
        "{}",
        stats.text
    );
    let id = str_field(&hello["data"], "client_id");
    let one = http.get(&at(&format!("/connections/{id}"))).await?;
    ensure!(one.body["status"] == "success", "{}", one.text);
    ensure!(
        one.body["data"]["subscriptions"] == json!(["execution_123"]),
        "{}",
        one.text
    );
    let missing = http.get(&at("/connections/nobody")).await?;
    ensure!(missing.status == 404, "{}", missing.text);
    ensure!(
        missing.body["detail"] == "Client nobody not found",
        "{}",
        missing.text
    );

    let to_all = http
        .post(
            &at("/broadcast"),
            &json!({"event_type": "system.notification", "data": {"message": "maintenance"},
                "priority": "CRITICAL"}),
        )
        .await?;
    ensure!(to_all.body["status"] == "success", "{}", to_all.text);
    ensure!(to_all.body["data"]["recipients"] == 2, "{}", to_all.text);
    for client in [&mut watcher, &mut other] {
        let got = next_with(client, "event_type", "system.notification").await?;
        ensure!(
            got["priority"] == "CRITICAL" && got["data"]["message"] == "maintenance",
            "{got}"
        );
    }
    let to_one = http
        .post(
            &at("/broadcast/execution_123"),
            &json!({"event_type": "execution.progress", "data": {"progress": 75}}),
        )
        .await?;
    ensure!(to_one.body["data"]["recipients"] == 1, "{}", to_one.text);
    let got = next_with(&mut watcher, "event_type", "execution.progress").await?;
    ensure!(got["data"]["progress"] == 75, "{got}");
    let pattern = http
        .post(&at("/broadcast/task_updates"), &json!({"message": "x"}))
        .await?;
    ensure!(pattern.status == 400, "{}", pattern.text);

    let other_id = str_field(&other_hello["data"], "client_id");
    let dropped = http
        .post(&at(&format!("/disconnect/{other_id}")), &json!({}))
        .await?;
    ensure!(dropped.body["status"] == "success", "{}", dropped.text);
    let (code, _) = other.expect_close().await?;
    ensure!(code == 4500, "closed with {code}");

    let health = http.get(&at("/health")).await?;
    ensure!(health.body["status"] == "healthy", "{}", health.text);
    ensure!(health.body["last_cleanup"].is_null(), "{}", health.text);
    ensure!(health.body["uptime_seconds"].is_u64(), "{}", health.text);
    ensure!(
        health.body["total_messages_sent"].as_u64() > Some(0),
        "{}",
        health.text
    );
    let cleaned = http.delete(&at("/connections")).await?;
    ensure!(cleaned.body["status"] == "success", "{}", cleaned.text);
    ensure!(
        cleaned.body["data"]["cleaned_up"] == 0,
        "a live client was cleaned: {}",
        cleaned.text
    );
    let health = http.get(&at("/health")).await?;
    ensure!(health.body["last_cleanup"].is_string(), "{}", health.text);
    Ok(())
}

#[tokio::test]
async fn a_silent_client_is_stale_and_the_cleanup_closes_it() -> Result<()> {
    let hub = herald()
        .start(&[
            "--heartbeat-interval",
            "100ms",
            "--heartbeat-timeout",
            "30s",
        ])
        .await?;
    // A client whose WebSocket stack never answers: a raw upgrade that is
    // never read, so protocol pings go unanswered.
    let _frozen = herald_tests::raw_ws_upgrade(hub.addr(), &at("/ws/global")).await?;
    let cleaned = herald_tests::eventually(
        herald_tests::DEFAULT_TIMEOUT,
        "the silent client is stale",
        || async {
            let reply = hub.http().delete(&at("/connections")).await?;
            Ok((reply.body["data"]["cleaned_up"] == 1).then_some(reply.body))
        },
    )
    .await?;
    ensure!(
        cleaned["message"] == "Cleaned up 1 stale connections",
        "{cleaned}"
    );
    Ok(())
}

#[tokio::test]
async fn with_api_keys_the_admin_routes_need_admin_and_broadcasts_need_publish() -> Result<()> {
    let hub = herald().start(&["--api-keys", API_KEYS]).await?;
    let connections = at("/connections");
    assert_eq!(
        api(&hub, Method::GET, &connections, None, None).await?.0,
        401
    );
    assert_eq!(
        api(&hub, Method::GET, &connections, Some(PUBLISH_KEY), None)
            .await?
            .0,
        403
    );
    assert_eq!(
        api(&hub, Method::GET, &connections, Some(ADMIN_KEY), None)
            .await?
            .0,
        200
    );
    let body = json!({"message": "hello"});
    let broadcast = at("/broadcast");
    assert_eq!(
        api(&hub, Method::POST, &broadcast, None, Some(&body))
            .await?
            .0,
        401
    );
    assert_eq!(
        api(
            &hub,
            Method::POST,
            &broadcast,
            Some(PUBLISH_KEY),
            Some(&body)
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        api(&hub, Method::DELETE, &connections, Some(PUBLISH_KEY), None)
            .await?
            .0,
        403
    );
    assert_eq!(
        api(&hub, Method::GET, &at("/health"), None, None).await?.0,
        200
    );
    Ok(())
}

/// Every event type the seed's "Event Types Supported" lists.
const SEED_EVENT_TYPES: [&str; 31] = [
    "execution.started",
    "execution.completed",
    "execution.failed",
    "execution.progress",
    "task.assigned",
    "task.completed",
    "task.failed",
    "task.progress",
    "manager.delegation_started",
    "manager.coordination_update",
    "manager.decision_made",
    "queue.task_added",
    "queue.task_processed",
    "queue.task_failed",
    "queue.cleared",
    "memory.stored",
    "memory.retrieved",
    "memory.updated",
    "memory.cleared",
    "system.startup",
    "system.shutdown",
    "system.error",
    "system.health_check",
    "connection.established",
    "connection.lost",
    "connection.heartbeat",
    "crew.created",
    "crew.updated",
    "crew.deleted",
    "agent.created",
    "agent.updated",
];

#[tokio::test]
async fn every_event_type_the_seed_lists_reaches_a_client_by_its_own_name() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let (mut client, _) = client(&hub, "/ws/executions/all_types").await?;
    next_with(&mut client, "type", "subscription_confirmed").await?;
    let mut batch: Vec<Value> = SEED_EVENT_TYPES
        .iter()
        .map(|t| event("execution:all_types", t, json!({"type": t})))
        .collect();
    batch.push(event(
        "execution:all_types",
        "agent.deleted",
        json!({"type": "agent.deleted"}),
    ));
    hub.http().publish_batch(&batch).await?;
    for expected in SEED_EVENT_TYPES.iter().chain(["agent.deleted"].iter()) {
        let got = client.recv_until(|f| f.get("event_type").is_some()).await?;
        ensure!(
            got["event_type"] == *expected && got["data"]["type"] == *expected,
            "{got}"
        );
    }
    Ok(())
}
