//! Seed 000 (AIECS) under `/compat/aiecs`: the page's socket and the
//! manager's calls over HTTP, in the seed's messages and units.

use anyhow::{Result, ensure};
use herald_tests::{DEFAULT_TIMEOUT, Http, Hub, WsClient, frame_type, is_event_on};
use serde_json::{Value, json};

use super::{dial, is_now_in_seconds, next_with};
use crate::security::{SECRET, fresh, hs256, with_token};
use crate::{herald, str_field};
use herald_tests::metric;

/// The seed's failing step (section 4.2).
fn error_result() -> Value {
    json!({
        "step": "model_training",
        "result": null,
        "completed": false,
        "message": "Model training failed, retry?",
        "status": "failed",
        "error_code": "E003",
        "error_message": "GPU memory insufficient"
    })
}

/// `notify_user`'s body for `user`/`task`, waiting `timeout` seconds at most.
fn notify(user: &str, task: &str, timeout: f64) -> Value {
    json!({"step_result": error_result(), "user_id": user, "task_id": task, "step": 2,
        "timeout": timeout})
}

/// A page as Appendix C opens it: no user named. Reads its greeting.
async fn page(hub: &Hub) -> Result<WsClient> {
    let mut page = dial(hub, "/compat/aiecs").await?;
    let hello = page.recv_frame().await?;
    ensure!(
        frame_type(&hello) == "connection_established",
        "first message: {hello}"
    );
    Ok(page)
}

/// A barrier: the seed's ping, answered by its pong once the hub has done
/// everything the page sent before. Returns what came before it.
async fn barrier(page: &mut WsClient) -> Result<Vec<Value>> {
    page.send_json(&json!({"action": "ping", "timestamp": 1}))
        .await?;
    let (_, before) = page.recv_collect_until(|f| frame_type(f) == "pong").await?;
    Ok(before)
}

/// The producer's `notify_user`: blocks until the user decides or the
/// timeout's default applies, then answers the confirmation.
async fn notify_user(http: &Http, body: Value) -> Result<Value> {
    let reply = http.post("/compat/aiecs/notify_user", &body).await?;
    ensure!(
        reply.status == 200,
        "notify_user answered {}: {}",
        reply.status,
        reply.text
    );
    Ok(reply.body)
}

#[tokio::test]
async fn a_question_reaches_the_page_once_as_task_step_result_and_its_answer_reaches_the_producer()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut page = page(&hub).await?;
    let producer = notify_user(&http, notify("user_123", "task_789", 30.0));
    let user = async {
        let question = next_with(&mut page, "type", "task_step_result").await?;
        for (field, value) in [
            ("message", json!("Model training failed, retry?")),
            ("status", json!("failed")),
            ("error_code", json!("E003")),
            ("error_message", json!("GPU memory insufficient")),
            ("user_id", json!("user_123")),
            ("task_id", json!("task_789")),
            ("step", json!(2)),
            ("result", Value::Null),
            ("timeout", json!(30.0)),
            ("default_proceed", json!(true)),
        ] {
            ensure!(question[field] == value, "{field} in {question}");
        }
        is_now_in_seconds(&question, "timestamp")?;
        // It came on the user's topic and the task's: the page sees it once.
        let before = barrier(&mut page).await?;
        ensure!(
            !before.iter().any(|f| frame_type(f) == "task_step_result"),
            "shown twice: {before:?}"
        );
        // Feedback is bounded as on the native protocol.
        page.send_json(
            &json!({"action": "confirm", "callback_id": question["callback_id"],
            "proceed": true, "feedback": "x".repeat(5000)}),
        )
        .await?;
        let refused = next_with(&mut page, "type", "error").await?;
        ensure!(
            str_field(&refused, "message").contains("feedback must be at most"),
            "{refused}"
        );
        page.send_json(
            &json!({"action": "confirm", "callback_id": question["callback_id"],
            "proceed": false, "feedback": "Cancel execution"}),
        )
        .await
    };
    let (confirmation, answered) = tokio::join!(producer, user);
    answered?;
    let confirmation = confirmation?;
    ensure!(confirmation["proceed"] == false, "{confirmation}");
    ensure!(
        confirmation["feedback"] == "Cancel execution",
        "{confirmation}"
    );
    ensure!(confirmation["status"] == "rejected", "{confirmation}");
    ensure!(confirmation["timed_out"] == false, "{confirmation}");
    Ok(())
}

#[tokio::test]
async fn an_unanswerable_question_is_counted_logged_and_resolves_to_the_configured_default()
-> Result<()> {
    let hub = herald()
        .start(&["--approval-default-proceed", "false"])
        .await?;
    let http = hub.http();
    let confirmation = notify_user(&http, notify("nobody", "task_1", 0.3)).await?;
    ensure!(confirmation["proceed"] == false, "{confirmation}");
    ensure!(confirmation["timed_out"] == true, "{confirmation}");
    ensure!(confirmation["status"] == "timed_out", "{confirmation}");
    let metrics = http.get("/metrics").await?;
    ensure!(
        metric(&metrics.text, "herald_approvals_unreached_total") == Some(1.0),
        "{}",
        metrics.text
    );
    let audit = http.get("/api/v1/approvals?task_id=task_1").await?;
    ensure!(
        audit.body["approvals"][0]["delivered_to"] == 0,
        "{}",
        audit.text
    );
    ensure!(
        hub.stderr().contains("no connection can answer it yet"),
        "no warning logged:\n{}",
        hub.stderr()
    );
    Ok(())
}

#[tokio::test]
async fn a_page_that_connects_later_is_shown_the_pending_question_first() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let producer = notify_user(&http, notify("u1", "t1", 30.0));
    let user = async {
        // Asked while no page is open: the producer's call is waiting.
        herald_tests::eventually(DEFAULT_TIMEOUT, "the approval is pending", || async {
            let status = http.get("/compat/aiecs/status").await?;
            Ok((status.body["pending_callbacks"] == 1).then_some(()))
        })
        .await?;
        let mut page = page(&hub).await?;
        let question = page.recv_frame().await?;
        ensure!(
            frame_type(&question) == "task_step_result",
            "the pending question is not first: {question}"
        );
        page.send_json(
            &json!({"action": "confirm", "callback_id": question["callback_id"],
            "proceed": true, "feedback": "Agree to continue"}),
        )
        .await
    };
    let (confirmation, answered) = tokio::join!(producer, user);
    answered?;
    let confirmation = confirmation?;
    ensure!(confirmation["proceed"] == true, "{confirmation}");
    ensure!(
        confirmation["feedback"] == "Agree to continue",
        "{confirmation}"
    );
    Ok(())
}

#[tokio::test]
async fn broadcasts_user_messages_and_heartbeats_reach_pages_exactly_as_sent() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut page = page(&hub).await?;
    let notification = json!({"type": "system_notification",
        "message": "System will undergo maintenance in 5 minutes",
        "timestamp": 1729845678.123456, "severity": "warning"});
    let sent = http
        .post("/compat/aiecs/broadcast_message", &notification)
        .await?;
    ensure!(
        sent.status == 200 && sent.body["recipients"] == 1,
        "{}",
        sent.text
    );
    ensure!(
        page.recv_frame().await? == notification,
        "broadcast changed"
    );
    let progress = json!({"type": "task_progress", "task_id": "task_123", "progress": 75,
        "message": "Task execution progress 75%", "timestamp": 1729845679.000001});
    http.post("/compat/aiecs/broadcast_message", &progress)
        .await?;
    ensure!(page.recv_frame().await? == progress, "broadcast changed");
    let personal = json!({"type": "personal_notification",
        "message": "Your task has been completed", "task_id": "task_456"});
    http.post("/compat/aiecs/send_to_user/user_123", &personal)
        .await?;
    let got = page.recv_frame().await?;
    ensure!(got["type"] == "personal_notification", "{got}");
    ensure!(got["target_user_id"] == "user_123", "{got}");
    ensure!(got["message"] == personal["message"], "{got}");
    is_now_in_seconds(&got, "timestamp")?;
    http.post(
        "/compat/aiecs/send_heartbeat",
        &json!({"user_id": "user_123", "task_id": "task_456"}),
    )
    .await?;
    let beat = page.recv_frame().await?;
    ensure!(
        beat["type"] == "heartbeat" && beat["status"] == "heartbeat",
        "{beat}"
    );
    ensure!(beat["message"] == "Task is still executing...", "{beat}");
    ensure!(
        beat["user_id"] == "user_123" && beat["task_id"] == "task_456",
        "{beat}"
    );
    let refused = http
        .post(
            "/compat/aiecs/broadcast_message",
            &json!({"message": "no type"}),
        )
        .await?;
    ensure!(refused.status == 400, "{}", refused.text);
    Ok(())
}

#[tokio::test]
async fn an_event_published_on_global_through_the_api_reaches_pages_once() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut page = page(&hub).await?;
    // Subscribed by the time its first ping is answered.
    barrier(&mut page).await?;
    http.publish_simple(
        "global",
        "system.notification",
        json!({"message": "maintenance at noon"}),
    )
    .await?;
    let got = page.recv_frame().await?;
    ensure!(got["type"] == "system_notification", "{got}");
    ensure!(got["message"] == "maintenance at noon", "{got}");
    // A broadcast, which reaches every connection, still comes once.
    let notice =
        json!({"type": "system_notification", "message": "once", "timestamp": 1729845678.5});
    http.post("/compat/aiecs/broadcast_message", &notice)
        .await?;
    ensure!(page.recv_frame().await? == notice, "broadcast changed");
    let after = barrier(&mut page).await?;
    ensure!(after.is_empty(), "came again: {after:?}");
    Ok(())
}

#[tokio::test]
async fn ping_cancel_subscribe_and_unknown_actions_are_answered_as_the_seed_did() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut page = page(&hub).await?;
    let mut producer = hub.ws("/ws").await?;
    producer.subscribe(&["task:task_456"]).await?;
    page.send_json(&json!({"action": "ping", "timestamp": 1729845678123u64}))
        .await?;
    let pong = next_with(&mut page, "type", "pong").await?;
    ensure!(
        pong["original_data"] == json!({"action": "ping", "timestamp": 1729845678123u64}),
        "{pong}"
    );
    // Each pong echoes its ping as sent, whatever it carries.
    let pings = [
        json!({"action": "ping", "timestamp": 1729845678.123, "id": "a"}),
        json!({"action": "ping", "rtt_probe": 7}),
    ];
    for ping in &pings {
        page.send_json(ping).await?;
    }
    for ping in &pings {
        let pong = next_with(&mut page, "type", "pong").await?;
        ensure!(pong["original_data"] == *ping, "{pong} for {ping}");
    }
    is_now_in_seconds(&pong, "timestamp")?;
    page.send_json(&json!({"action": "cancel", "user_id": "user_123", "task_id": "task_456"}))
        .await?;
    let cancelled = next_with(&mut page, "type", "task_cancelled").await?;
    ensure!(
        cancelled["user_id"] == "user_123" && cancelled["task_id"] == "task_456",
        "{cancelled}"
    );
    let control = producer
        .recv_until(|f| is_event_on(f, "task:task_456"))
        .await?;
    ensure!(control["event_type"] == "control.cancel", "{control}");
    page.send_json(&json!({"action": "subscribe", "user_id": "user_123"}))
        .await?;
    let confirmed = next_with(&mut page, "type", "subscription_confirmed").await?;
    ensure!(confirmed["user_id"] == "user_123", "{confirmed}");
    page.send_json(&json!({"action": "dance"})).await?;
    let error = next_with(&mut page, "type", "error").await?;
    ensure!(error["message"] == "Unknown action: dance", "{error}");
    page.send_text("not json").await?;
    let error = next_with(&mut page, "type", "error").await?;
    ensure!(error["message"] == "Invalid JSON format", "{error}");
    page.send_json(&json!({"action": "confirm", "callback_id": "nope", "proceed": true}))
        .await?;
    let error = next_with(&mut page, "type", "error").await?;
    ensure!(str_field(&error, "message").contains("nope"), "{error}");
    Ok(())
}

#[tokio::test]
async fn status_and_connection_count_answer_with_the_seeds_names() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let _page = page(&hub).await?;
    let status = hub.http().get("/compat/aiecs/status").await?;
    ensure!(status.body["running"] == true, "{}", status.text);
    ensure!(status.body["active_connections"] == 1, "{}", status.text);
    ensure!(status.body["pending_callbacks"] == 0, "{}", status.text);
    let port: u64 = hub.addr().rsplit(':').next().unwrap_or_default().parse()?;
    ensure!(status.body["port"] == port, "{}", status.text);
    let count = hub.http().get("/compat/aiecs/connection_count").await?;
    ensure!(count.body == 1, "{}", count.text);
    Ok(())
}

#[tokio::test]
async fn with_tokens_a_page_gets_its_own_users_questions_and_no_one_elses() -> Result<()> {
    let hub = herald().start(&["--jwt-secret", SECRET]).await?;
    let refused = WsClient::connect_raw(&hub.ws_url("/compat/aiecs")).await;
    ensure!(refused.is_err(), "a page without a token was admitted");
    let token = hs256(&fresh("u1", &[]))?;
    let mut page = dial(&hub, &with_token("/compat/aiecs", &token)).await?;
    next_with(&mut page, "type", "connection_established").await?;
    let http = hub.http();
    let other = notify_user(&http, notify("u2", "t2", 0.5));
    let own = notify_user(&http, notify("u1", "t1", 30.0));
    let user = async {
        let question = next_with(&mut page, "type", "task_step_result").await?;
        ensure!(
            question["user_id"] == "u1",
            "another user's question: {question}"
        );
        page.send_json(
            &json!({"action": "confirm", "callback_id": question["callback_id"],
            "proceed": true}),
        )
        .await
    };
    let (unanswered, own, answered) = tokio::join!(other, own, user);
    answered?;
    ensure!(own?["proceed"] == true, "u1's answer lost");
    // u2 has no connection: its question reached no one able to answer it.
    let unanswered = unanswered?;
    ensure!(unanswered["timed_out"] == true, "{unanswered}");
    let audit = http.get("/api/v1/approvals?task_id=t2").await?;
    ensure!(
        audit.body["approvals"][0]["delivered_to"] == 0,
        "{}",
        audit.text
    );
    Ok(())
}

/// With tokens a page cancels only a task its user was asked about (or
/// may watch): another user's task is refused with an error, and that
/// user's question stays pending.
#[tokio::test]
async fn with_tokens_a_page_cancels_its_own_users_tasks_and_no_one_elses() -> Result<()> {
    let hub = herald().start(&["--jwt-secret", SECRET]).await?;
    let token = hs256(&fresh("u1", &[]))?;
    let mut page = dial(&hub, &with_token("/compat/aiecs", &token)).await?;
    next_with(&mut page, "type", "connection_established").await?;
    let http = hub.http();
    let mut asked = Vec::new();
    for (user, task) in [("u1", "t1"), ("u2", "t2")] {
        let request = json!({"user_id": user, "task_id": task, "step": 1,
            "step_result": error_result()});
        let reply = http.post("/api/v1/approvals", &request).await?;
        ensure!(reply.status == 201, "{} {}", reply.status, reply.text);
        asked.push(str_field(&reply.body, "callback_id").to_owned());
    }
    let status = |id: &str| {
        let http = hub.http();
        let path = format!("/api/v1/approvals/{id}");
        async move { anyhow::Ok(http.get(&path).await?.body["status"].clone()) }
    };

    page.send_json(&json!({"action": "cancel", "task_id": "t2"}))
        .await?;
    let error = next_with(&mut page, "type", "error").await?;
    ensure!(str_field(&error, "message").contains("task:t2"), "{error}");
    ensure!(
        status(&asked[1]).await? == "pending",
        "u2's question was cancelled"
    );

    page.send_json(&json!({"action": "cancel", "task_id": "t1"}))
        .await?;
    // The page's user is told as their question is: resolved, cancelled.
    let resolved = next_with(&mut page, "type", "approval_resolved").await?;
    ensure!(
        resolved["task_id"] == "t1" && resolved["status"] == "cancelled",
        "{resolved}"
    );
    ensure!(
        status(&asked[0]).await? == "cancelled",
        "u1's question was not cancelled"
    );
    Ok(())
}

#[tokio::test]
async fn sockets_whose_dialect_cannot_answer_do_not_count_as_reached() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    // A CrewAI client following every task sees the question but has no
    // way to answer it.
    let mut crewai = dial(
        &hub,
        "/compat/crewai/api/v1/websocket/ws/custom?subscriptions=task_updates",
    )
    .await?;
    next_with(&mut crewai, "type", "subscription_confirmed").await?;
    let created = http
        .post(
            "/api/v1/approvals",
            &json!({"user_id": "u9", "task_id": "t9", "step": 1, "step_result": error_result()}),
        )
        .await?;
    ensure!(created.status == 201, "{}", created.text);
    ensure!(created.body["delivered_to"] == 0, "{}", created.text);
    let seen = next_with(&mut crewai, "event_type", "approval.requested").await?;
    ensure!(seen["task_id"] == "t9", "{seen}");
    let metrics = http.get("/metrics").await?;
    ensure!(
        metric(&metrics.text, "herald_approvals_unreached_total") == Some(1.0),
        "{}",
        metrics.text
    );
    // An AIECS page can answer: the next question counts it (once per
    // topic it came through: the user's and the task's).
    let _page = page(&hub).await?;
    let created = http
        .post(
            "/api/v1/approvals",
            &json!({"user_id": "u9", "task_id": "t10", "step": 1, "step_result": error_result()}),
        )
        .await?;
    ensure!(
        created.body["delivered_to"].as_u64() >= Some(1),
        "{}",
        created.text
    );
    Ok(())
}

#[tokio::test]
async fn a_draining_hub_asks_no_one_and_tells_the_producer_to_ask_again() -> Result<()> {
    let hub = herald()
        .start(&["--drain-window", "5s", "--shutdown-grace", "1s"])
        .await?;
    let mut watcher = hub.ws("/ws").await?;
    watcher.barrier().await?;
    hub.sigterm().await?;
    // The drain has begun once a connection is told.
    watcher
        .recv_until(|f| str_field(f, "event_type") == "system.shutdown")
        .await?;
    let reply = hub
        .http()
        .post(
            "/compat/aiecs/notify_user",
            &notify("user_123", "task_789", 30.0),
        )
        .await?;
    ensure!(
        reply.status == 503 && reply.retry_after.is_some(),
        "{} {}",
        reply.status,
        reply.text
    );
    let listed = hub.http().get("/api/v1/approvals").await?;
    ensure!(
        listed.body["approvals"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "asked during the drain: {}",
        listed.text
    );
    Ok(())
}

#[tokio::test]
async fn a_question_still_waiting_when_the_hub_stops_is_answered_503_with_its_id() -> Result<()> {
    let hub = herald()
        .start(&["--drain-window", "500ms", "--shutdown-grace", "2s"])
        .await?;
    let http = hub.http();
    let mut page = page(&hub).await?;
    let asked = notify("user_123", "task_789", 60.0);
    let producer = http.post("/compat/aiecs/notify_user", &asked);
    let stop = async {
        let question = next_with(&mut page, "type", "task_step_result").await?;
        hub.sigterm().await?;
        Ok::<_, anyhow::Error>(question)
    };
    let (reply, question) = tokio::join!(producer, stop);
    let (reply, question) = (reply?, question?);
    // Answered before the grace ran out, not dropped without an answer.
    ensure!(
        reply.status == 503 && reply.retry_after.is_some(),
        "{} {}",
        reply.status,
        reply.text
    );
    let id = str_field(&question, "callback_id");
    ensure!(!id.is_empty() && reply.text.contains(id), "{}", reply.text);
    Ok(())
}
