//! WebSocket basics: welcome, the ways to subscribe, patterns, filters,
//! replies to good and bad frames, control frames, ordering.

use anyhow::{Result, ensure};
use herald_tests::{WsClient, frame_type, is_event_on, seq_of};
use serde_json::{Value, json};

use crate::{event, herald, seqs_on, str_field};

#[tokio::test]
async fn welcome_carries_session_id_protocol_heartbeat_and_version() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let client = hub.ws("/ws").await?;
    let w = &client.welcome;
    ensure!(
        !client.session_id().is_empty(),
        "welcome has no session_id: {w}"
    );
    ensure!(w["protocol"] == json!(1), "protocol must be 1: {w}");
    ensure!(
        w["heartbeat_ms"].is_u64(),
        "heartbeat_ms must be a number: {w}"
    );
    ensure!(
        !str_field(w, "server_version").is_empty(),
        "server_version missing: {w}"
    );
    Ok(())
}

#[tokio::test]
async fn welcome_heartbeat_ms_is_the_configured_interval() -> Result<()> {
    let hub = herald().start(&["--heartbeat-interval", "1500ms"]).await?;
    let client = hub.ws("/ws").await?;
    ensure!(
        client.welcome["heartbeat_ms"] == json!(1500),
        "{}",
        client.welcome
    );
    Ok(())
}

#[tokio::test]
async fn each_connection_gets_its_own_session_id() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let a = hub.ws("/ws").await?;
    let b = hub.ws("/ws").await?;
    ensure!(
        a.session_id() != b.session_id(),
        "two connections share a session_id"
    );
    Ok(())
}

#[tokio::test]
async fn subscribe_frame_on_fresh_topic_answers_subscribed_with_epoch_and_seq_zero() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    let subscribed = client.subscribe(&["execution:fresh"]).await?;
    let s = &subscribed[0];
    ensure!(
        !str_field(s, "epoch").is_empty(),
        "an exact topic needs an epoch string: {s}"
    );
    ensure!(s["seq"] == json!(0), "a fresh topic has seq 0: {s}");
    Ok(())
}

#[tokio::test]
async fn subscribed_seq_is_the_topics_latest_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    for i in 0..3 {
        http.publish(&event(
            "execution:busy",
            "execution.progress",
            json!({"progress": i}),
        ))
        .await?;
    }
    let mut client = hub.ws("/ws").await?;
    let subscribed = client.subscribe(&["execution:busy"]).await?;
    ensure!(subscribed[0]["seq"] == json!(3), "{}", subscribed[0]);
    Ok(())
}

#[tokio::test]
async fn subscriptions_alias_of_topics_subscribes() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "subscriptions": ["crew:alias"]}))
        .await?;
    client.expect_subscribed(&["crew:alias"]).await?;
    Ok(())
}

#[tokio::test]
async fn type_tag_is_accepted_instead_of_action() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"type": "subscribe", "topics": ["crew:typed"]}))
        .await?;
    client.expect_subscribed(&["crew:typed"]).await?;
    Ok(())
}

#[tokio::test]
async fn query_topics_subscribe_on_connect() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws?topics=execution:q1,crew:q2").await?;
    let subscribed = client
        .expect_subscribed(&["execution:q1", "crew:q2"])
        .await?;
    for s in &subscribed {
        ensure!(s["seq"] == json!(0) && s["epoch"].is_string(), "{s}");
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_topic_in_the_url_is_refused_after_welcome_and_the_good_ones_subscribe() -> Result<()>
{
    let hub = herald().start(&[]).await?;
    // `hub.ws` insists that `welcome` is the first frame.
    let mut client = hub.ws("/ws?topics=execution:q1,BAD!").await?;
    let refused = client.recv_frame().await?;
    ensure!(
        frame_type(&refused) == "error" && str_field(&refused, "code") == "invalid_topic",
        "{refused}"
    );
    client.expect_subscribed(&["execution:q1"]).await?;
    let mut shortcut = hub.ws("/ws/executions/bad%20id").await?;
    let refused = shortcut.recv_frame().await?;
    ensure!(str_field(&refused, "code") == "invalid_topic", "{refused}");
    Ok(())
}

/// Connects to a shortcut path and checks the `subscribed` frame it yields.
async fn shortcut_subscribes(path: &str, topic: &str, pattern: bool) -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws(path).await?;
    let subscribed = client.expect_subscribed(&[topic]).await?;
    let s = &subscribed[0];
    if pattern {
        ensure!(
            s["epoch"].is_null() && s["seq"].is_null(),
            "a pattern has null epoch/seq: {s}"
        );
    } else {
        ensure!(s["epoch"].is_string() && s["seq"] == json!(0), "{s}");
    }
    Ok(())
}

#[tokio::test]
async fn shortcut_ws_executions_subscribes_to_the_execution_topic() -> Result<()> {
    shortcut_subscribes("/ws/executions/exec_123", "execution:exec_123", false).await
}

#[tokio::test]
async fn shortcut_ws_crews_subscribes_to_the_crew_topic() -> Result<()> {
    shortcut_subscribes("/ws/crews/crew_456", "crew:crew_456", false).await
}

#[tokio::test]
async fn shortcut_ws_runs_subscribes_to_the_run_topic() -> Result<()> {
    shortcut_subscribes("/ws/runs/run-123", "run:run-123", false).await
}

#[tokio::test]
async fn shortcut_ws_global_subscribes_to_global() -> Result<()> {
    shortcut_subscribes("/ws/global", "global", false).await
}

#[tokio::test]
async fn shortcut_ws_metrics_subscribes_to_metrics() -> Result<()> {
    shortcut_subscribes("/ws/metrics", "metrics", false).await
}

#[tokio::test]
async fn ws_metrics_streams_the_hubs_figures_while_someone_watches() -> Result<()> {
    let hub = herald().start(&["--metrics-interval", "100ms"]).await?;
    let mut watcher = hub.ws("/ws/metrics").await?;
    let figures = watcher.recv_until(|f| is_event_on(f, "metrics")).await?;
    ensure!(
        figures["event_type"] == "metrics.updated"
            && figures["key"] == "hub"
            && figures["priority"] == "low",
        "{figures}"
    );
    let metrics = &figures["data"]["metrics"];
    ensure!(
        metrics["active_connections"].as_f64() >= Some(1.0) && metrics["events_per_s"].is_number(),
        "{figures}"
    );
    // Each node sharing a store publishes its own figures: they name it.
    let nodes = hub.http().get("/api/v1/nodes").await?.ok()?;
    ensure!(
        figures["data"]["node"] == nodes.body["node"],
        "{figures} {}",
        nodes.text
    );
    // And they keep coming.
    let next = watcher.recv_until(|f| is_event_on(f, "metrics")).await?;
    ensure!(seq_of(&next) > seq_of(&figures), "{next}");
    Ok(())
}

#[tokio::test]
async fn shortcut_ws_events_subscribes_to_the_firehose_pattern() -> Result<()> {
    shortcut_subscribes("/ws/events", "*", true).await
}

#[tokio::test]
async fn shortcut_ws_executions_delivers_that_executions_events() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws/executions/exec_9").await?;
    client.expect_subscribed(&["execution:exec_9"]).await?;
    hub.http()
        .publish(&event("execution:exec_9", "execution.started", json!({})))
        .await?;
    let e = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(is_event_on(&e, "execution:exec_9"), "{e}");
    Ok(())
}

#[tokio::test]
async fn pattern_subscription_answers_subscribed_with_null_epoch_and_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    let subscribed = client.subscribe(&["execution:*"]).await?;
    let s = &subscribed[0];
    ensure!(s["epoch"].is_null() && s["seq"].is_null(), "{s}");
    Ok(())
}

#[tokio::test]
async fn execution_pattern_receives_events_of_every_execution() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:*"]).await?;
    let http = hub.http();
    http.publish(&event("execution:a", "execution.started", json!({})))
        .await?;
    http.publish(&event("crew:not_me", "crew.created", json!({})))
        .await?;
    http.publish(&event("execution:b", "execution.started", json!({})))
        .await?;
    let events = client.recv_events(2).await?;
    let topics: Vec<&str> = events.iter().map(|e| str_field(e, "topic")).collect();
    ensure!(topics == ["execution:a", "execution:b"], "{events:?}");
    Ok(())
}

#[tokio::test]
async fn delivered_event_carries_the_full_envelope() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:env"]).await?;
    let receipt = hub
        .http()
        .publish(&json!({
            "topic": "execution:env", "event_type": "execution.progress",
            "data": {"progress": 75}, "priority": "high", "key": "exec_env",
            "source": "worker-7", "timestamp": 1_729_845_678_123_u64
        }))
        .await?;
    let e = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(str_field(&e, "topic") == "execution:env", "{e}");
    ensure!(
        e["seq"] == json!(1) && e["seq"] == receipt["seq"],
        "{e} vs {receipt}"
    );
    ensure!(
        e["id"] == receipt["id"] && !str_field(&e, "id").is_empty(),
        "{e} vs {receipt}"
    );
    ensure!(str_field(&e, "event_type") == "execution.progress", "{e}");
    ensure!(str_field(&e, "priority") == "high", "{e}");
    ensure!(e["timestamp"] == json!(1_729_845_678_123_u64), "{e}");
    ensure!(
        str_field(&e, "source") == "worker-7" && str_field(&e, "key") == "exec_env",
        "{e}"
    );
    ensure!(e["data"] == json!({"progress": 75}), "{e}");
    Ok(())
}

#[tokio::test]
async fn hub_sets_normal_priority_and_a_timestamp_when_absent() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:defaults"]).await?;
    hub.http()
        .publish(&event("execution:defaults", "execution.started", json!({})))
        .await?;
    let e = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(str_field(&e, "priority") == "normal", "{e}");
    // Any time after 2020 in milliseconds.
    ensure!(
        e["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_577_836_800_000),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn custom_event_type_passes_through_unchanged() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["machine:worker-1"]).await?;
    hub.http()
        .publish(&event(
            "machine:worker-1",
            "billing.invoice_sent",
            json!({"n": 1}),
        ))
        .await?;
    let e = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(str_field(&e, "event_type") == "billing.invoice_sent", "{e}");
    Ok(())
}

#[tokio::test]
async fn type_filter_delivers_only_matching_types() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .subscribe_with(&["run:f1"], json!({"filter": {"types": ["execution.*"]}}))
        .await?;
    let http = hub.http();
    http.publish(&event("run:f1", "task.progress", json!({})))
        .await?;
    http.publish(&event("run:f1", "execution.started", json!({})))
        .await?;
    http.publish(&event("run:f1", "workflow.started", json!({})))
        .await?;
    http.publish(&event("run:f1", "execution.completed", json!({})))
        .await?;
    let events = client.recv_events(2).await?;
    let types: Vec<&str> = events.iter().map(|e| str_field(e, "event_type")).collect();
    ensure!(
        types == ["execution.started", "execution.completed"],
        "{events:?}"
    );
    ensure!(
        seqs_on(&events, "run:f1") == [2, 4],
        "seqs are the topic's, not renumbered: {events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn min_priority_filter_drops_lower_priorities() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .subscribe_with(&["run:f2"], json!({"filter": {"min_priority": "high"}}))
        .await?;
    let http = hub.http();
    for priority in ["low", "normal", "high", "critical", "normal"] {
        http.publish(&json!({"topic": "run:f2", "event_type": "step.progress",
            "data": {}, "priority": priority}))
            .await?;
    }
    // A marker that passes the filter proves nothing else is on its way.
    http.publish(&json!({"topic": "run:f2", "event_type": "step.completed",
        "data": {}, "priority": "critical"}))
        .await?;
    let events = client.recv_events(3).await?;
    let priorities: Vec<&str> = events.iter().map(|e| str_field(e, "priority")).collect();
    ensure!(priorities == ["high", "critical", "critical"], "{events:?}");
    Ok(())
}

#[tokio::test]
async fn unsubscribe_stops_delivery() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:u1", "crew:marker"]).await?;
    client
        .send_json(&json!({"action": "unsubscribe", "topics": ["crew:u1"]}))
        .await?;
    client.barrier().await?;
    let http = hub.http();
    http.publish(&event("crew:u1", "crew.updated", json!({})))
        .await?;
    // Assumes the hub queues a connection's frames in publish order across
    // topics; if it does not, this test can only pass, never fail wrongly.
    http.publish(&event("crew:marker", "crew.updated", json!({})))
        .await?;
    let (marker, before) = client
        .recv_collect_until(|f| is_event_on(f, "crew:marker"))
        .await?;
    ensure!(
        !before.iter().any(|f| is_event_on(f, "crew:u1")),
        "{before:?} then {marker}"
    );
    Ok(())
}

#[tokio::test]
async fn frame_with_id_is_acked_with_ref() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:acked"]).await?;
    client
        .send_json(&json!({"action": "unsubscribe", "topics": ["crew:acked"], "id": "u-1"}))
        .await?;
    let ack = client
        .recv_until(|f| matches!(frame_type(f), "ack" | "error"))
        .await?;
    ensure!(
        frame_type(&ack) == "ack" && ack["ref"] == json!("u-1"),
        "{ack}"
    );
    Ok(())
}

/// The contract says every frame's `id` comes back as `ref` in "the reply (ack
/// or error)"; read carefully, a `subscribe` with an id gets its `subscribed`
/// frames and an `ack` too.
#[tokio::test]
async fn subscribe_with_numeric_id_is_acked_with_the_same_ref() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["crew:n"], "id": 42}))
        .await?;
    let ack = client
        .recv_until(|f| matches!(frame_type(f), "ack" | "error"))
        .await?;
    ensure!(
        frame_type(&ack) == "ack" && ack["ref"] == json!(42),
        "{ack}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_frame_with_id_gets_error_with_ref() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    // `topics` must be a list.
    client
        .send_json(&json!({"action": "subscribe", "topics": 5, "id": "bad-1"}))
        .await?;
    let err = client
        .recv_until(|f| matches!(frame_type(f), "ack" | "error"))
        .await?;
    ensure!(frame_type(&err) == "error", "{err}");
    ensure!(
        err["ref"] == json!("bad-1") && str_field(&err, "code") == "invalid_request",
        "{err}"
    );
    ensure!(!str_field(&err, "message").is_empty(), "{err}");
    Ok(())
}

#[tokio::test]
async fn invalid_json_gets_invalid_json_error_and_connection_stays_open() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.send_text("{not json").await?;
    let err = client.recv_until(|f| frame_type(f) == "error").await?;
    ensure!(str_field(&err, "code") == "invalid_json", "{err}");
    client.barrier().await?;
    client.subscribe(&["crew:still_here"]).await?;
    Ok(())
}

#[tokio::test]
async fn unknown_action_gets_unknown_action_error() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "teleport", "id": "t"}))
        .await?;
    let err = client.recv_until(|f| frame_type(f) == "error").await?;
    ensure!(
        str_field(&err, "code") == "unknown_action" && err["ref"] == json!("t"),
        "{err}"
    );
    client.barrier().await?;
    Ok(())
}

#[tokio::test]
async fn bad_topic_gets_invalid_topic_error() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    for bad in [
        "Execution:x",
        "execution:has space",
        "exec*ution",
        "execution:a*",
    ] {
        client
            .send_json(&json!({"action": "subscribe", "topics": [bad], "id": bad}))
            .await?;
        let err = client
            .recv_until(|f| matches!(frame_type(f), "error" | "subscribed"))
            .await?;
        ensure!(frame_type(&err) == "error", "{bad:?} was accepted: {err}");
        ensure!(
            str_field(&err, "code") == "invalid_topic" && err["ref"] == json!(bad),
            "{err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn client_ping_gets_pong() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "ping", "timestamp": 1_729_845_678_123_u64}))
        .await?;
    client.recv_until(|f| frame_type(f) == "pong").await?;
    Ok(())
}

#[tokio::test]
async fn seed_style_type_ping_gets_pong() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.send_json(&json!({"type": "ping"})).await?;
    client.recv_until(|f| frame_type(f) == "pong").await?;
    Ok(())
}

/// Sends a control frame from one client and checks that a subscriber of the
/// target topic gets `control.{action}`.
async fn control_is_published(action: &str, target: Value, topic: &str) -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut worker = hub.ws("/ws").await?;
    worker.subscribe(&[topic]).await?;
    let mut ui = hub.ws("/ws").await?;
    let mut frame = json!({"action": action, "reason": "user asked", "id": "c1"});
    if let (Some(frame), Value::Object(target)) = (frame.as_object_mut(), target) {
        frame.extend(target);
    }
    ui.send_json(&frame).await?;
    let reply = ui
        .recv_until(|f| matches!(frame_type(f), "ack" | "error"))
        .await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    let e = worker.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(is_event_on(&e, topic), "{e}");
    ensure!(
        str_field(&e, "event_type") == format!("control.{action}"),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn cancel_frame_is_published_as_control_cancel_on_the_task_topic() -> Result<()> {
    control_is_published("cancel", json!({"task_id": "task_1"}), "task:task_1").await
}

#[tokio::test]
async fn pause_frame_is_published_as_control_pause_on_the_run_topic() -> Result<()> {
    control_is_published("pause", json!({"run_id": "run-1"}), "run:run-1").await
}

#[tokio::test]
async fn resume_frame_is_published_as_control_resume_on_the_task_topic() -> Result<()> {
    control_is_published("resume", json!({"task_id": "task_2"}), "task:task_2").await
}

#[tokio::test]
async fn control_frame_without_task_or_run_is_invalid_request() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "cancel", "id": "c"}))
        .await?;
    let err = client
        .recv_until(|f| matches!(frame_type(f), "ack" | "error"))
        .await?;
    ensure!(
        str_field(&err, "code") == "invalid_request" && err["ref"] == json!("c"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_publishers_are_delivered_in_seq_order() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:order"]).await?;
    let http = hub.http();
    let producers = (0..4).map(|p| {
        let http = http.clone();
        async move {
            for i in 0..50 {
                http.publish(&event(
                    "execution:order",
                    "execution.progress",
                    json!({"p": p, "i": i}),
                ))
                .await?;
            }
            anyhow::Ok(())
        }
    });
    let (published, events) = tokio::join!(
        futures::future::try_join_all(producers),
        client.recv_events(200)
    );
    published?;
    let seqs: Vec<u64> = events?.iter().filter_map(seq_of).collect();
    ensure!(
        seqs == (1..=200).collect::<Vec<_>>(),
        "out of order or missing: {seqs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn batches_reach_every_live_subscriber_whole_and_in_seq_order_among_single_events()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut first = hub.ws("/ws").await?;
    first.subscribe(&["execution:runs"]).await?;
    let mut second = hub.ws("/ws").await?;
    second.subscribe(&["execution:runs"]).await?;
    let http = hub.http();
    let batch = |from: u64| -> Vec<Value> {
        (from..from + 20)
            .map(|i| event("execution:runs", "execution.progress", json!({ "i": i })))
            .collect()
    };
    let publish = async {
        for round in 0..5u64 {
            http.publish_batch(&batch(round * 21)).await?;
            http.publish(&event(
                "execution:runs",
                "execution.progress",
                json!({ "i": round * 21 + 20 }),
            ))
            .await?;
        }
        anyhow::Ok(())
    };
    let (published, got_first, got_second) =
        tokio::join!(publish, first.recv_events(105), second.recv_events(105));
    published?;
    for events in [got_first?, got_second?] {
        let seqs: Vec<u64> = events.iter().filter_map(seq_of).collect();
        ensure!(seqs == (1..=105).collect::<Vec<_>>(), "{seqs:?}");
        let data: Vec<u64> = events
            .iter()
            .filter_map(|e| e["data"]["i"].as_u64())
            .collect();
        ensure!(data == (0..105).collect::<Vec<_>>(), "{data:?}");
    }
    Ok(())
}

/// A client that closes is answered with a close frame echoing its code,
/// so browsers and libraries see a clean close rather than a dropped
/// connection (1006).
#[tokio::test]
async fn a_client_that_closes_gets_its_close_frame_echoed() -> Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let hub = herald().start(&[]).await?;
    for path in ["/ws", "/compat/aiecs", "/ws/executions/exec_1"] {
        let mut client = WsClient::connect_raw(&hub.ws_url(path)).await?;
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "leaving".into(),
        };
        client.send_message(Message::Close(Some(close))).await?;
        let (code, _) = client.expect_close().await?;
        ensure!(
            code == 1001,
            "{path}: the hub answered the close with {code}"
        );
    }
    Ok(())
}
