//! Human-in-the-loop approvals (H4): `POST /api/v1/approvals`, the long-poll
//! `GET /api/v1/approvals/{id}?wait_ms=N`, `confirm` and `cancel` frames,
//! timeouts, the audit list, status and metrics, and durability across
//! `kill -9` with `--store sqlite:PATH`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use herald_tests::{Http, Hub, WsClient, eventually, frame_type, is_event_on, metric};
use serde_json::{Value, json};

use crate::{event, herald, str_field};

/// A long-poll comfortably inside the HTTP client's 5 s bound.
const WAIT_MS: u64 = 4000;

/// The seed's step result, every field set.
fn step_result() -> Value {
    json!({
        "step": "train",
        "result": {"epochs": 3},
        "completed": false,
        "message": "Model training failed, retry?",
        "status": "failed",
        "error_code": "E003",
        "error_message": "GPU memory insufficient"
    })
}

/// A `POST /api/v1/approvals` body for `user`/`task`, with `extra` merged in.
fn approval_body(user: &str, task: &str, extra: Value) -> Value {
    let mut body = json!({
        "user_id": user,
        "task_id": task,
        "step": 3,
        "step_result": step_result(),
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// Creates an approval (which must answer 201) and returns the record.
async fn create(http: &Http, user: &str, task: &str, extra: Value) -> Result<Value> {
    let reply = http
        .post("/api/v1/approvals", &approval_body(user, task, extra))
        .await?;
    ensure!(
        reply.status == 201,
        "POST /api/v1/approvals answered {}: {}",
        reply.status,
        reply.text
    );
    ensure!(
        reply.body["callback_id"].is_string(),
        "no callback_id: {}",
        reply.text
    );
    ensure!(reply.body["status"] == "pending", "{}", reply.text);
    Ok(reply.body)
}

/// The callback id of a record, decision or `approval.*` event data.
fn callback_id(value: &Value) -> String {
    str_field(value, "callback_id").to_owned()
}

/// `GET /api/v1/approvals/{id}?wait_ms=N`, which must answer 200.
async fn decision(http: &Http, id: &str, wait_ms: u64) -> Result<Value> {
    let reply = http
        .get(&format!("/api/v1/approvals/{id}?wait_ms={wait_ms}"))
        .await?;
    ensure!(
        reply.status == 200,
        "GET approval {id} answered {}: {}",
        reply.status,
        reply.text
    );
    Ok(reply.body)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `frame` is an `event` of `event_type` on `topic`.
fn is_approval_event(frame: &Value, topic: &str, event_type: &str) -> bool {
    is_event_on(frame, topic) && frame["event_type"] == event_type
}

/// Reads the `approval.requested` event for `id` on `topic`.
async fn recv_requested(client: &mut WsClient, topic: &str, id: &str) -> Result<Value> {
    client
        .recv_until(|f| {
            is_approval_event(f, topic, "approval.requested") && f["data"]["callback_id"] == id
        })
        .await
        .with_context(|| format!("waiting for approval.requested {id} on {topic}"))
}

/// Whether `frame` is the `approval.resolved` event for `id` on `topic`.
fn is_resolved(frame: &Value, topic: &str, id: &str) -> bool {
    is_approval_event(frame, topic, "approval.resolved") && frame["data"]["callback_id"] == id
}

/// Reads the `approval.resolved` event for `id` on `topic`.
async fn recv_resolved(client: &mut WsClient, topic: &str, id: &str) -> Result<Value> {
    client
        .recv_until(|f| is_resolved(f, topic, id))
        .await
        .with_context(|| format!("waiting for approval.resolved {id} on {topic}"))
}

/// Reads the `ack` or `error` whose `ref` is `reference`.
async fn recv_reply(client: &mut WsClient, reference: &str) -> Result<Value> {
    client
        .recv_until(|f| matches!(frame_type(f), "ack" | "error") && f["ref"] == json!(reference))
        .await
        .with_context(|| format!("waiting for the reply to {reference}"))
}

/// Sends `confirm` with `id` as the frame id and returns the reply.
async fn confirm(
    client: &mut WsClient,
    reference: &str,
    callback: &str,
    proceed: bool,
    feedback: &str,
) -> Result<Value> {
    client
        .send_json(&json!({
            "action": "confirm", "id": reference, "callback_id": callback,
            "proceed": proceed, "feedback": feedback
        }))
        .await?;
    recv_reply(client, reference).await
}

/// Asserts that `reply` is an `error` with `code` and `ref`.
fn expect_error(reply: &Value, code: &str, reference: &str) -> Result<()> {
    ensure!(frame_type(reply) == "error", "expected an error: {reply}");
    ensure!(reply["code"] == code, "expected code {code}: {reply}");
    ensure!(
        reply["ref"] == reference,
        "expected ref {reference}: {reply}"
    );
    ensure!(
        !str_field(reply, "message").is_empty(),
        "error without a message: {reply}"
    );
    Ok(())
}

/// A hub and a WebSocket client of user `u1` (connected with `?user_id=u1`).
async fn hub_with_user(args: &[&str]) -> Result<(Hub, WsClient)> {
    let hub = herald().start(args).await?;
    let client = hub.ws("/ws?user_id=u1").await?;
    Ok((hub, client))
}

#[tokio::test]
async fn approval_requested_reaches_the_users_connection_with_the_whole_request() -> Result<()> {
    let (hub, mut client) = hub_with_user(&[]).await?;
    let record = create(
        &hub.http(),
        "u1",
        "t1",
        json!({"timeout_ms": 60_000, "default_proceed": false}),
    )
    .await?;
    let id = callback_id(&record);
    let event = recv_requested(&mut client, "user:u1", &id).await?;
    let data = &event["data"];
    ensure!(data["task_id"] == "t1", "{event}");
    ensure!(data["step"] == 3, "{event}");
    ensure!(data["step_result"] == step_result(), "{event}");
    ensure!(data["timeout_ms"] == 60_000, "{event}");
    ensure!(data["default_proceed"] == false, "{event}");
    ensure!(event["priority"] == "high", "{event}");
    Ok(())
}

#[tokio::test]
async fn confirm_from_the_users_connection_answers_the_producers_long_poll() -> Result<()> {
    let (hub, mut client) = hub_with_user(&[]).await?;
    let http = hub.http();
    let before = now_ms();
    let id = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    recv_requested(&mut client, "user:u1", &id).await?;
    let pending = decision(&http, &id, 0).await?;
    ensure!(
        pending["status"] == "pending" && pending["proceed"].is_null(),
        "{pending}"
    );

    let started = std::time::Instant::now();
    let (polled, reply) = tokio::join!(
        decision(&http, &id, WAIT_MS),
        confirm(&mut client, "c1", &id, true, "retry")
    );
    let (polled, reply) = (polled?, reply?);
    ensure!(frame_type(&reply) == "ack", "confirm answered {reply}");
    ensure!(
        started.elapsed() < Duration::from_millis(WAIT_MS),
        "the long-poll waited out its wait_ms instead of returning on the decision"
    );
    ensure!(polled["callback_id"] == id.as_str(), "{polled}");
    ensure!(polled["status"] == "approved", "{polled}");
    ensure!(polled["proceed"] == true, "{polled}");
    ensure!(polled["feedback"] == "retry", "{polled}");
    ensure!(polled["decided_by"] == "u1", "{polled}");
    let decided_at = polled["decided_at"].as_u64().context("no decided_at")?;
    ensure!(
        decided_at >= before && decided_at <= now_ms(),
        "decided_at {decided_at} is not a time of the decision: {polled}"
    );
    Ok(())
}

#[tokio::test]
async fn reject_with_feedback_resolves_rejected_with_proceed_false() -> Result<()> {
    let (hub, mut client) = hub_with_user(&[]).await?;
    let http = hub.http();
    let id = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    recv_requested(&mut client, "user:u1", &id).await?;
    let (polled, reply) = tokio::join!(
        decision(&http, &id, WAIT_MS),
        confirm(&mut client, "r1", &id, false, "too risky")
    );
    let (polled, reply) = (polled?, reply?);
    ensure!(frame_type(&reply) == "ack", "confirm answered {reply}");
    ensure!(polled["status"] == "rejected", "{polled}");
    ensure!(polled["proceed"] == false, "{polled}");
    ensure!(polled["feedback"] == "too risky", "{polled}");
    ensure!(polled["decided_by"] == "u1", "{polled}");
    ensure!(polled["decided_at"].is_u64(), "{polled}");
    Ok(())
}

#[tokio::test]
async fn request_timeout_resolves_timed_out_with_the_requests_default() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    for default in [false, true] {
        let id = callback_id(
            &create(
                &http,
                "u1",
                "t1",
                json!({"timeout_ms": 500, "default_proceed": default}),
            )
            .await?,
        );
        let started = std::time::Instant::now();
        let polled = decision(&http, &id, WAIT_MS).await?;
        ensure!(polled["status"] == "timed_out", "{polled}");
        ensure!(polled["proceed"] == default, "{polled}");
        ensure!(polled["decided_by"].is_null(), "{polled}");
        ensure!(polled["feedback"].is_null(), "{polled}");
        ensure!(polled["decided_at"].is_u64(), "{polled}");
        ensure!(
            started.elapsed() < Duration::from_millis(WAIT_MS),
            "the long-poll did not return on the timeout"
        );
    }
    Ok(())
}

#[tokio::test]
async fn global_approval_timeout_and_default_apply_when_the_request_gives_neither() -> Result<()> {
    let hub = herald()
        .start(&[
            "--approval-timeout",
            "500ms",
            "--approval-default-proceed",
            "false",
        ])
        .await?;
    let http = hub.http();
    let record = create(&http, "u1", "t1", json!({})).await?;
    ensure!(record["timeout_ms"] == 500, "{record}");
    ensure!(record["default_proceed"] == false, "{record}");
    let polled = decision(&http, &callback_id(&record), WAIT_MS).await?;
    ensure!(polled["status"] == "timed_out", "{polled}");
    ensure!(polled["proceed"] == false, "{polled}");
    ensure!(polled["decided_by"].is_null(), "{polled}");
    Ok(())
}

#[tokio::test]
async fn two_racing_confirms_get_one_ack_and_one_conflict_and_the_winner_decides() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut a = hub.ws("/ws?user_id=u1").await?;
    let mut b = hub.ws("/ws?user_id=u1").await?;
    for round in 0..5 {
        let id = callback_id(&create(&http, "u1", &format!("t{round}"), json!({})).await?);
        recv_requested(&mut a, "user:u1", &id).await?;
        recv_requested(&mut b, "user:u1", &id).await?;
        let ra = format!("a{round}");
        let rb = format!("b{round}");
        let frame_a = json!({"action": "confirm", "id": ra, "callback_id": id,
            "proceed": true, "feedback": "from a"});
        let frame_b = json!({"action": "confirm", "id": rb, "callback_id": id,
            "proceed": false, "feedback": "from b"});
        let (sent_a, sent_b) = tokio::join!(a.send_json(&frame_a), b.send_json(&frame_b));
        sent_a?;
        sent_b?;
        let (reply_a, reply_b) = tokio::join!(recv_reply(&mut a, &ra), recv_reply(&mut b, &rb));
        let (reply_a, reply_b) = (reply_a?, reply_b?);
        let (winner, loser, loser_ref) = match (frame_type(&reply_a), frame_type(&reply_b)) {
            ("ack", "error") => ("a", &reply_b, &rb),
            ("error", "ack") => ("b", &reply_a, &ra),
            _ => {
                anyhow::bail!("round {round}: expected one ack and one error: {reply_a} {reply_b}")
            }
        };
        expect_error(loser, "conflict", loser_ref)?;
        let polled = decision(&http, &id, 0).await?;
        let (status, proceed) = if winner == "a" {
            ("approved", true)
        } else {
            ("rejected", false)
        };
        ensure!(
            polled["status"] == status
                && polled["proceed"] == proceed
                && polled["feedback"] == format!("from {winner}"),
            "round {round}: {winner} won but the decision is {polled}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_user_who_connects_after_the_request_gets_it_in_a_snapshot_on_connect() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    let mut late = hub.ws("/ws?user_id=u1").await?;
    let snapshot = late.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(snapshot["topic"] == "user:u1", "{snapshot}");
    let events = snapshot["events"].as_array().context("no events")?;
    ensure!(
        events
            .iter()
            .any(|e| e["event_type"] == "approval.requested" && e["data"]["callback_id"] == id),
        "the snapshot does not hold the pending request {id}: {snapshot}"
    );
    // And it can answer it.
    let reply = confirm(&mut late, "late", &id, true, "ok").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    Ok(())
}

#[tokio::test]
async fn a_pending_request_outlives_the_eviction_of_idle_topics_past_the_history_memory()
-> Result<()> {
    let hub = herald().start(&["--history-memory", "64KiB"]).await?;
    let http = hub.http();
    let id = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    // Much more than the cap, on topics newer than the user's: the oldest
    // idle streams, `user:u1` first, are what eviction would take.
    let pad = "x".repeat(1000);
    for batch in 0..10 {
        let events: Vec<Value> = (0..50)
            .map(|i| {
                event(
                    &format!("run:fill{batch}-{i}"),
                    "step.progress",
                    json!({ "pad": pad }),
                )
            })
            .collect();
        http.publish_batch(&events).await?;
    }
    eventually(Duration::from_secs(10), "idle topics evicted", || async {
        let status = http.get("/api/v1/status").await?;
        Ok((status.body["topics"].as_u64().is_some_and(|n| n < 500)).then_some(()))
    })
    .await?;
    let mut late = hub.ws("/ws?user_id=u1").await?;
    let snapshot = late.recv_until(|f| frame_type(f) == "snapshot").await?;
    let events = snapshot["events"].as_array().context("no events")?;
    ensure!(
        events
            .iter()
            .any(|e| e["event_type"] == "approval.requested" && e["data"]["callback_id"] == id),
        "the snapshot lost the pending request {id}: {snapshot}"
    );
    Ok(())
}

#[tokio::test]
async fn subscribing_to_the_user_topic_with_snapshot_shows_the_pending_request() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["user:u1"], "snapshot": true}))
        .await?;
    let snapshot = client
        .recv_until(|f| frame_type(f) == "snapshot" && f["topic"] == "user:u1")
        .await?;
    let events = snapshot["events"].as_array().context("no events")?;
    ensure!(
        events
            .iter()
            .any(|e| e["event_type"] == "approval.requested" && e["data"]["callback_id"] == id),
        "the snapshot does not hold the pending request {id}: {snapshot}"
    );
    Ok(())
}

#[tokio::test]
async fn a_user_with_no_pending_approval_gets_no_snapshot_on_connect() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws?user_id=u1").await?;
    let before = client.barrier().await?;
    ensure!(
        !before.iter().any(|f| frame_type(f) == "snapshot"),
        "{before:?}"
    );
    Ok(())
}

#[tokio::test]
async fn approval_resolved_is_published_on_the_user_and_task_topics() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let mut watcher = hub.ws("/ws").await?;
    watcher.subscribe(&["task:t7"]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t7", json!({})).await?);
    recv_requested(&mut user, "user:u1", &id).await?;
    recv_requested(&mut watcher, "task:t7", &id).await?;
    // The hub may publish `approval.resolved` before it acks the confirm, so
    // the user's event may come before the ack.
    user.send_json(&json!({"action": "confirm", "id": "c", "callback_id": id,
        "proceed": true, "feedback": "go"}))
        .await?;
    let (reply, before) = user
        .recv_collect_until(|f| matches!(frame_type(f), "ack" | "error") && f["ref"] == "c")
        .await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    let user_event = match before.into_iter().find(|f| is_resolved(f, "user:u1", &id)) {
        Some(event) => event,
        None => recv_resolved(&mut user, "user:u1", &id).await?,
    };
    let task_event = recv_resolved(&mut watcher, "task:t7", &id).await?;
    // One event, published on both topics under the id a hub assigns: a UUID.
    ensure!(
        user_event["id"] == task_event["id"],
        "{user_event} {task_event}"
    );
    let event_id = user_event["id"].as_str().context("no id")?;
    ensure!(
        uuid::Uuid::parse_str(event_id).is_ok(),
        "{event_id} is not a UUID"
    );
    for event in [user_event, task_event] {
        let data = &event["data"];
        ensure!(data["status"] == "approved", "{event}");
        ensure!(data["proceed"] == true, "{event}");
        ensure!(data["decided_by"] == "u1", "{event}");
        ensure!(data["feedback"] == "go", "{event}");
        ensure!(data["task_id"] == "t7", "{event}");
        ensure!(data["decided_at"].is_u64(), "{event}");
    }
    Ok(())
}

#[tokio::test]
async fn a_resolved_approval_no_longer_shows_as_requested_in_the_user_snapshot() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    recv_requested(&mut user, "user:u1", &id).await?;
    let reply = confirm(&mut user, "c", &id, true, "go").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    user.send_json(&json!({"action": "request_state", "topics": ["user:u1"]}))
        .await?;
    let snapshot = user
        .recv_until(|f| frame_type(f) == "snapshot" && f["topic"] == "user:u1")
        .await?;
    let events = snapshot["events"].as_array().context("no events")?;
    ensure!(
        !events
            .iter()
            .any(|e| e["event_type"] == "approval.requested" && e["data"]["callback_id"] == id),
        "a resolved approval is still shown as requested: {snapshot}"
    );
    Ok(())
}

#[tokio::test]
async fn pending_approval_survives_kill_9_and_a_confirm_after_restart_answers_the_long_poll()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let mut hub = herald().start(&["--store", &store]).await?;
    let id = callback_id(
        &create(
            &hub.http(),
            "u1",
            "t1",
            json!({"timeout_ms": 600_000, "default_proceed": false}),
        )
        .await?,
    );
    hub.kill9().await?;

    let hub = herald().start(&["--store", &store]).await?;
    let http = hub.http();
    let pending = decision(&http, &id, 0).await?;
    ensure!(
        pending["status"] == "pending" && pending["proceed"].is_null(),
        "after restart: {pending}"
    );
    let status = http.get("/api/v1/status").await?;
    ensure!(status.body["pending_approvals"] == 1, "{}", status.text);

    let mut user = hub.ws("/ws?user_id=u1").await?;
    let snapshot = user.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(
        snapshot["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["data"]["callback_id"] == id)),
        "the user's snapshot after restart lacks {id}: {snapshot}"
    );
    let (polled, reply) = tokio::join!(
        decision(&http, &id, WAIT_MS),
        confirm(&mut user, "after", &id, true, "resume")
    );
    let (polled, reply) = (polled?, reply?);
    ensure!(frame_type(&reply) == "ack", "{reply}");
    ensure!(polled["status"] == "approved", "{polled}");
    ensure!(polled["proceed"] == true, "{polled}");
    ensure!(polled["feedback"] == "resume", "{polled}");
    ensure!(polled["decided_by"] == "u1", "{polled}");
    Ok(())
}

#[tokio::test]
async fn approval_whose_deadline_passed_during_downtime_times_out_after_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    let mut hub = herald().start(&["--store", &store]).await?;
    let record = create(
        &hub.http(),
        "u1",
        "t1",
        json!({"timeout_ms": 300, "default_proceed": true}),
    )
    .await?;
    let id = callback_id(&record);
    let expires_at = record["expires_at"].as_u64().context("no expires_at")?;
    hub.kill9().await?;
    // The deadline must pass while the hub is down: wait out what is left of
    // it (at most the 300 ms the request asked for).
    let left = expires_at.saturating_sub(now_ms()) + 50;
    tokio::time::sleep(Duration::from_millis(left.min(1000))).await;

    let hub = herald().start(&["--store", &store]).await?;
    let polled = decision(&hub.http(), &id, WAIT_MS).await?;
    ensure!(polled["status"] == "timed_out", "{polled}");
    ensure!(polled["proceed"] == true, "{polled}");
    ensure!(polled["decided_by"].is_null(), "{polled}");
    Ok(())
}

#[tokio::test]
async fn cancel_resolves_the_tasks_pending_approvals_as_cancelled_and_publishes_control_cancel()
-> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let http = hub.http();
    let mut producer = hub.ws("/ws").await?;
    producer.subscribe(&["task:t1"]).await?;
    let first = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    let second = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    let other = callback_id(&create(&http, "u1", "t2", json!({})).await?);

    user.send_json(&json!({"action": "cancel", "id": "k", "task_id": "t1", "reason": "stop"}))
        .await?;
    let reply = recv_reply(&mut user, "k").await?;
    ensure!(frame_type(&reply) == "ack", "cancel answered {reply}");

    for id in [&first, &second] {
        let polled = decision(&http, id, 0).await?;
        ensure!(polled["status"] == "cancelled", "{polled}");
        ensure!(polled["proceed"] == false, "{polled}");
        ensure!(polled["decided_by"].is_null(), "{polled}");
        ensure!(polled["decided_at"].is_u64(), "{polled}");
    }
    let untouched = decision(&http, &other, 0).await?;
    ensure!(
        untouched["status"] == "pending",
        "another task's approval was touched: {untouched}"
    );
    let control = producer
        .recv_until(|f| is_approval_event(f, "task:t1", "control.cancel"))
        .await?;
    ensure!(control["data"]["task_id"] == "t1", "{control}");
    ensure!(control["data"]["reason"] == "stop", "{control}");
    Ok(())
}

#[tokio::test]
async fn approval_list_filters_by_task_and_status_and_records_delivery() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let http = hub.http();
    let decided = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    let pending = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    let elsewhere = callback_id(&create(&http, "u1", "t2", json!({})).await?);
    let unseen = callback_id(&create(&http, "nobody", "t3", json!({})).await?);
    recv_requested(&mut user, "user:u1", &decided).await?;
    let reply = confirm(&mut user, "c", &decided, true, "fine").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");

    let list = |query: &'static str| {
        let http = http.clone();
        async move {
            let reply = http.get(&format!("/api/v1/approvals{query}")).await?;
            ensure!(
                reply.status == 200,
                "{query}: {} {}",
                reply.status,
                reply.text
            );
            let ids: Vec<String> = reply.body["approvals"]
                .as_array()
                .with_context(|| format!("{query}: no approvals list: {}", reply.text))?
                .iter()
                .map(callback_id)
                .collect();
            Ok::<_, anyhow::Error>((ids, reply.body))
        }
    };
    let (mut ids, _) = list("?task_id=t1").await?;
    ids.sort();
    let mut expected = vec![decided.clone(), pending.clone()];
    expected.sort();
    ensure!(ids == expected, "task t1 lists {ids:?}");
    let (ids, _) = list("?task_id=t1&status=pending").await?;
    ensure!(ids == [pending.clone()], "t1 pending lists {ids:?}");
    let (ids, body) = list("?status=approved").await?;
    ensure!(ids == [decided.clone()], "approved lists {ids:?}");
    let record = &body["approvals"][0];
    ensure!(record["decided_by"] == "u1", "{record}");
    ensure!(record["feedback"] == "fine", "{record}");
    ensure!(record["task_id"] == "t1" && record["step"] == 3, "{record}");
    ensure!(record["created_at"].is_u64(), "{record}");
    ensure!(
        record["delivered_to"].as_u64().is_some_and(|n| n >= 1),
        "delivered_to with u1 connected: {record}"
    );
    let (ids, body) = list("?task_id=t3").await?;
    ensure!(ids == [unseen.clone()], "t3 lists {ids:?}");
    ensure!(
        body["approvals"][0]["delivered_to"] == 0,
        "nobody was connected: {body}"
    );
    let (mut ids, _) = list("").await?;
    ids.sort();
    let mut all = vec![decided, pending, elsewhere, unseen];
    all.sort();
    ensure!(ids == all, "the whole list is {ids:?}");
    Ok(())
}

#[tokio::test]
async fn status_counts_pending_approvals() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let http = hub.http();
    let pending_count = || async {
        let reply = http.get("/api/v1/status").await?;
        ensure!(reply.status == 200, "{}", reply.text);
        reply.body["pending_approvals"]
            .as_u64()
            .with_context(|| format!("no pending_approvals: {}", reply.text))
    };
    ensure!(pending_count().await? == 0);
    let first = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    create(&http, "u1", "t2", json!({})).await?;
    ensure!(pending_count().await? == 2);
    recv_requested(&mut user, "user:u1", &first).await?;
    let reply = confirm(&mut user, "c", &first, false, "no").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    ensure!(pending_count().await? == 1);
    Ok(())
}

#[tokio::test]
async fn metrics_report_pending_approvals_decisions_by_outcome_and_time_to_decision() -> Result<()>
{
    let (hub, mut user) = hub_with_user(&[]).await?;
    let http = hub.http();
    let approve = callback_id(&create(&http, "u1", "t1", json!({})).await?);
    let reject = callback_id(&create(&http, "u1", "t2", json!({})).await?);
    let cancel = callback_id(&create(&http, "u1", "t3", json!({})).await?);
    let expire = callback_id(&create(&http, "u1", "t4", json!({"timeout_ms": 300})).await?);
    create(&http, "u1", "t5", json!({})).await?;
    ensure!(frame_type(&confirm(&mut user, "a", &approve, true, "").await?) == "ack");
    ensure!(frame_type(&confirm(&mut user, "r", &reject, false, "").await?) == "ack");
    user.send_json(&json!({"action": "cancel", "id": "k", "task_id": "t3"}))
        .await?;
    ensure!(frame_type(&recv_reply(&mut user, "k").await?) == "ack");
    ensure!(decision(&http, &cancel, 0).await?["status"] == "cancelled");
    ensure!(decision(&http, &expire, WAIT_MS).await?["status"] == "timed_out");

    let reply = http.get("/metrics").await?;
    ensure!(reply.status == 200, "{}", reply.text);
    let text = &reply.text;
    let expect = |name: &str, value: f64| -> Result<()> {
        let got = metric(text, name).with_context(|| format!("no sample {name} in:\n{text}"))?;
        ensure!(got == value, "{name} is {got}, expected {value}:\n{text}");
        Ok(())
    };
    expect("herald_approvals_pending", 1.0)?;
    for outcome in ["approved", "rejected", "timed_out", "cancelled"] {
        expect(
            &format!("herald_approval_decisions_total{{outcome=\"{outcome}\"}}"),
            1.0,
        )?;
    }
    expect("herald_approval_time_to_decision_seconds_count", 4.0)?;
    ensure!(
        metric(text, "herald_approval_time_to_decision_seconds_sum").is_some(),
        "no time-to-decision sum:\n{text}"
    );
    ensure!(
        text.contains("# TYPE herald_approval_time_to_decision_seconds histogram"),
        "time-to-decision is not a histogram:\n{text}"
    );
    Ok(())
}

#[tokio::test]
async fn confirm_accepts_approval_id_as_an_alias_of_callback_id() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    user.send_json(
        &json!({"action": "confirm", "id": "alias", "approval_id": id, "proceed": true}),
    )
    .await?;
    let reply = recv_reply(&mut user, "alias").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    let polled = decision(&hub.http(), &id, 0).await?;
    ensure!(polled["status"] == "approved", "{polled}");
    Ok(())
}

#[tokio::test]
async fn confirm_with_an_unknown_callback_id_is_not_found_with_ref() -> Result<()> {
    let (_hub, mut user) = hub_with_user(&[]).await?;
    let reply = confirm(&mut user, "u", "no-such-approval", true, "").await?;
    expect_error(&reply, "not_found", "u")
}

#[tokio::test]
async fn malformed_confirm_is_invalid_request_with_ref() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    let frames = [
        (
            "missing",
            json!({"action": "confirm", "id": "missing", "callback_id": id}),
        ),
        (
            "string",
            json!({"action": "confirm", "id": "string", "callback_id": id, "proceed": "yes"}),
        ),
        (
            "no-id",
            json!({"action": "confirm", "id": "no-id", "proceed": true}),
        ),
    ];
    for (reference, frame) in frames {
        user.send_json(&frame).await?;
        let reply = recv_reply(&mut user, reference).await?;
        expect_error(&reply, "invalid_request", reference)?;
    }
    let polled = decision(&hub.http(), &id, 0).await?;
    ensure!(
        polled["status"] == "pending",
        "a malformed confirm decided: {polled}"
    );
    Ok(())
}

#[tokio::test]
async fn answering_a_resolved_approval_is_a_conflict_saying_it_is_already_resolved() -> Result<()> {
    let (hub, mut user) = hub_with_user(&[]).await?;
    let id = callback_id(&create(&hub.http(), "u1", "t1", json!({})).await?);
    let first = confirm(&mut user, "first", &id, true, "yes").await?;
    ensure!(frame_type(&first) == "ack", "{first}");
    let second = confirm(&mut user, "second", &id, false, "no").await?;
    expect_error(&second, "conflict", "second")?;
    let message = str_field(&second, "message").to_lowercase();
    ensure!(
        message.contains("already resolved"),
        "the conflict does not say it is already resolved: {second}"
    );
    let polled = decision(&hub.http(), &id, 0).await?;
    ensure!(
        polled["status"] == "approved" && polled["feedback"] == "yes",
        "the second answer changed the decision: {polled}"
    );
    Ok(())
}

#[tokio::test]
async fn get_of_an_unknown_approval_is_404() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    for path in [
        "/api/v1/approvals/no-such-approval",
        "/api/v1/approvals/no-such-approval?wait_ms=2000",
    ] {
        let reply = http.get(path).await?;
        ensure!(
            reply.status == 404,
            "{path}: {} {}",
            reply.status,
            reply.text
        );
        ensure!(reply.body["code"] == "not_found", "{path}: {}", reply.text);
    }
    Ok(())
}

#[tokio::test]
async fn post_of_a_bad_approval_body_is_400() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let raw = http.post_raw("/api/v1/approvals", "{not json").await?;
    ensure!(raw.status == 400, "not JSON: {} {}", raw.status, raw.text);
    let mut without_user = approval_body("u1", "t1", json!({}));
    if let Some(body) = without_user.as_object_mut() {
        body.remove("user_id");
    }
    let mut without_step_result = approval_body("u1", "t1", json!({}));
    if let Some(body) = without_step_result.as_object_mut() {
        body.remove("step_result");
    }
    let bodies = [
        ("no user_id", without_user),
        ("no step_result", without_step_result),
        (
            "step as a string",
            approval_body("u1", "t1", json!({"step": "three"})),
        ),
        (
            "user_id not a topic id",
            approval_body("u 1", "t1", json!({})),
        ),
        (
            "task_id not a topic id",
            approval_body("u1", "t/1", json!({})),
        ),
        (
            "timeout_ms 0",
            approval_body("u1", "t1", json!({"timeout_ms": 0})),
        ),
        ("an array", json!([approval_body("u1", "t1", json!({}))])),
    ];
    for (what, body) in bodies {
        let reply = http.post("/api/v1/approvals", &body).await?;
        ensure!(
            reply.status == 400,
            "{what}: {} {}",
            reply.status,
            reply.text
        );
        ensure!(
            reply.body["code"].is_string() && reply.body["message"].is_string(),
            "{what}: the 400 does not say why: {}",
            reply.text
        );
        // An id that cannot make a topic is named as the field it came in.
        if let Some(field) = what.strip_suffix(" not a topic id") {
            let message = reply.body["message"].as_str().unwrap_or_default();
            ensure!(message.starts_with(field), "{what}: {message}");
        }
    }
    let status = http.get("/api/v1/status").await?;
    ensure!(
        status.body["pending_approvals"] == 0,
        "a refused request was registered: {}",
        status.text
    );
    Ok(())
}
