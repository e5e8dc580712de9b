//! The HTTP API: publishing, broadcast, direct messages, connections, status,
//! health and metrics.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use herald_tests::{Hub, WsClient, eventually, frame_type, is_event_on, metric, seq_of};
use serde_json::{Value, json};

use crate::{event, herald, str_field};

#[tokio::test]
async fn publish_one_event_answers_id_topic_and_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let receipt = hub
        .http()
        .publish(&event("execution:p1", "execution.started", json!({})))
        .await?;
    ensure!(str_field(&receipt, "topic") == "execution:p1", "{receipt}");
    ensure!(receipt["seq"] == json!(1), "{receipt}");
    ensure!(!str_field(&receipt, "id").is_empty(), "{receipt}");
    Ok(())
}

#[tokio::test]
async fn publish_keeps_a_producer_chosen_id() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut body = event("execution:p2", "execution.started", json!({}));
    body["id"] = json!("producer-id-1");
    let receipt = hub.http().publish(&body).await?;
    ensure!(receipt["id"] == json!("producer-id-1"), "{receipt}");
    Ok(())
}

#[tokio::test]
async fn publish_batch_answers_receipts_in_the_same_order() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let batch = [
        event("execution:b1", "execution.started", json!({})),
        event("crew:b2", "crew.created", json!({})),
        event(
            "execution:b1",
            "execution.progress",
            json!({"progress": 10}),
        ),
    ];
    let receipts = hub.http().publish_batch(&batch).await?;
    let got: Vec<(&str, Option<u64>)> = receipts
        .iter()
        .map(|r| (str_field(r, "topic"), r["seq"].as_u64()))
        .collect();
    ensure!(
        got == [
            ("execution:b1", Some(1)),
            ("crew:b2", Some(1)),
            ("execution:b1", Some(2))
        ],
        "{receipts:?}"
    );
    ensure!(
        receipts.iter().all(|r| !str_field(r, "id").is_empty()),
        "{receipts:?}"
    );
    Ok(())
}

#[tokio::test]
async fn batch_with_one_bad_event_is_rejected_whole_with_its_index() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let batch = json!([
        event("execution:whole", "execution.started", json!({})),
        {"topic": "Not A Topic", "event_type": "execution.progress", "data": {}},
        event("execution:whole", "execution.completed", json!({})),
    ]);
    let reply = http.post("/api/v1/events", &batch).await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "invalid_request",
        "{}",
        reply.text
    );
    ensure!(
        !str_field(&reply.body, "message").is_empty(),
        "{}",
        reply.text
    );
    ensure!(reply.body["index"] == json!(1), "{}", reply.text);
    // Nothing was published: the next event on the topic is its first.
    let seq = http
        .publish_simple("execution:whole", "execution.started", json!({}))
        .await?;
    ensure!(
        seq == 1,
        "the rejected batch published something: next seq is {seq}"
    );
    Ok(())
}

#[tokio::test]
async fn a_batch_reusing_one_of_its_own_ids_with_other_content_is_refused_whole_at_that_event()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut first = event("run:twice", "step.completed", json!({"n": 1}));
    first["id"] = json!("step-1");
    let mut again = first.clone();
    again["data"] = json!({"n": 2});
    let batch = json!([
        event("run:twice", "step.started", json!({})),
        first,
        event("run:twice", "step.started", json!({})),
        again,
    ]);
    let reply = http.post("/api/v1/events", &batch).await?;
    ensure!(reply.status == 409, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "conflict",
        "{}",
        reply.text
    );
    // The event that conflicts, not the first use of its id.
    ensure!(reply.body["index"] == json!(3), "{}", reply.text);
    let seq = http
        .publish_simple("run:twice", "step.started", json!({}))
        .await?;
    ensure!(
        seq == 1,
        "the refused batch published something: next seq is {seq}"
    );
    Ok(())
}

#[tokio::test]
async fn a_conflict_is_named_by_its_topic_and_id_and_the_events_before_it_are_published()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut stored = event("run:b", "step.completed", json!({"n": 1}));
    stored["id"] = json!("s1");
    http.publish(&stored).await?;
    // The same id on another topic is another event; on run:b it conflicts.
    let mut elsewhere = stored.clone();
    elsewhere["topic"] = json!("run:a");
    let mut conflicting = stored.clone();
    conflicting["data"] = json!({"n": 2});
    let reply = http
        .post("/api/v1/events", &json!([elsewhere, conflicting]))
        .await?;
    ensure!(reply.status == 409, "{} {}", reply.status, reply.text);
    ensure!(reply.body["index"] == json!(1), "{}", reply.text);
    let before = http.get("/api/v1/topics/run:a/events?since=0").await?;
    ensure!(
        before.body["events"][0]["id"] == "s1",
        "the event before the conflict: {}",
        before.text
    );
    Ok(())
}

#[tokio::test]
async fn a_batch_larger_than_a_subscribers_queue_is_413_and_one_that_fits_reaches_a_reader_whole()
-> Result<()> {
    let hub = herald().start(&["--queue-size", "64"]).await?;
    let http = hub.http();
    let mut reader = hub.ws("/ws").await?;
    reader.subscribe(&["run:big"]).await?;
    let batch = |n: u64| -> Vec<Value> {
        (1..=n)
            .map(|i| event("run:big", "step.progress", json!({ "n": i })))
            .collect()
    };
    let reply = http.post("/api/v1/events", &json!(batch(65))).await?;
    ensure!(reply.status == 413, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "too_large"
            && str_field(&reply.body, "message").contains("--queue-size"),
        "{}",
        reply.text
    );
    // Nothing was published; a batch of a queue's worth arrives whole.
    http.publish_batch(&batch(64)).await?;
    let mut seqs = Vec::new();
    while seqs.len() < 64 {
        let frame = reader.recv_frame().await?;
        ensure!(frame_type(&frame) == "event", "{frame}");
        seqs.extend(seq_of(&frame));
    }
    ensure!(seqs == (1..=64).collect::<Vec<_>>(), "{seqs:?}");
    Ok(())
}

#[tokio::test]
async fn malformed_json_body_is_400_invalid_json_with_message() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub
        .http()
        .post_raw("/api/v1/events", "{\"topic\": ")
        .await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "invalid_json",
        "{}",
        reply.text
    );
    ensure!(
        !str_field(&reply.body, "message").is_empty(),
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn a_field_the_hub_does_not_know_is_still_checked_as_json() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    // Well-formed JSON in a field no event has is published, ignored.
    let ignored = http
        .post_raw(
            "/api/v1/events",
            r#"{"topic": "run:1", "event_type": "step.completed", "extra": [1, {"a": null}]}"#,
        )
        .await?;
    ensure!(ignored.status == 200, "{} {}", ignored.status, ignored.text);
    // What is not JSON is refused there as anywhere: a number out of
    // range, a lone surrogate.
    for extra in ["1e400", r#""\ud800""#] {
        let body =
            format!(r#"{{"topic": "run:1", "event_type": "step.completed", "extra": {extra}}}"#);
        let reply = http.post_raw("/api/v1/events", body.clone()).await?;
        ensure!(
            reply.status == 400 && str_field(&reply.body, "code") == "invalid_json",
            "{body}: {} {}",
            reply.status,
            reply.text
        );
    }
    Ok(())
}

#[tokio::test]
async fn event_without_event_type_is_400_invalid_request() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub
        .http()
        .post("/api/v1/events", &json!({"topic": "crew:x", "data": {}}))
        .await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "invalid_request",
        "{}",
        reply.text
    );
    ensure!(
        !str_field(&reply.body, "message").is_empty(),
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn an_event_is_an_object_not_a_list_of_its_fields() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let batch = json!([
        event("execution:shape", "execution.started", json!({})),
        [
            "execution:shape",
            "execution.progress",
            {},
            "high",
            null,
            null,
            null,
            null
        ],
    ]);
    let reply = hub.http().post("/api/v1/events", &batch).await?;
    ensure!(
        reply.status == 400
            && reply.body["index"] == json!(1)
            && str_field(&reply.body, "code") == "invalid_request",
        "{} {}",
        reply.status,
        reply.text
    );
    // Validated whole: the good first event was not published either.
    let seq = hub
        .http()
        .publish_simple("execution:shape", "execution.started", json!({}))
        .await?;
    ensure!(
        seq == 1,
        "the batch's first event was published (next seq {seq})"
    );
    Ok(())
}

/// The contract does not say whether a single event's bad topic is
/// `invalid_request` (a bad field) or `invalid_topic`; both are accepted.
#[tokio::test]
async fn event_with_bad_topic_is_400() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub
        .http()
        .post(
            "/api/v1/events",
            &json!({"topic": "bad topic", "event_type": "crew.created"}),
        )
        .await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text);
    let code = str_field(&reply.body, "code");
    ensure!(
        matches!(code, "invalid_request" | "invalid_topic"),
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn broadcast_reaches_every_connection_even_unsubscribed_ones() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut idle = hub.ws("/ws").await?;
    let mut elsewhere = hub.ws("/ws?topics=crew:other").await?;
    elsewhere.expect_subscribed(&["crew:other"]).await?;
    let mut global = hub.ws("/ws/global").await?;
    global.expect_subscribed(&["global"]).await?;
    let reply = hub
        .http()
        .post(
            "/api/v1/broadcast",
            &json!({"event_type": "system.notification",
            "data": {"text": "hello"}, "priority": "high"}),
        )
        .await?;
    ensure!(
        (200..300).contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text
    );
    for client in [&mut idle, &mut elsewhere, &mut global] {
        let e = client.recv_until(|f| frame_type(f) == "event").await?;
        ensure!(is_event_on(&e, "global"), "{e}");
        ensure!(str_field(&e, "event_type") == "system.notification", "{e}");
        ensure!(
            e["data"] == json!({"text": "hello"}) && str_field(&e, "priority") == "high",
            "{e}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn user_message_reaches_every_connection_of_that_user_and_nobody_else() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut mine = vec![
        hub.ws("/ws?user_id=u1").await?,
        hub.ws("/ws?user_id=u1").await?,
    ];
    let mut others = vec![hub.ws("/ws?user_id=u2").await?, hub.ws("/ws").await?];
    let http = hub.http();
    let reply = http
        .post(
            "/api/v1/users/u1/messages",
            &json!({"event_type": "system.notification",
            "data": {"text": "for u1"}}),
        )
        .await?;
    ensure!(
        (200..300).contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text
    );
    for client in &mut mine {
        let e = client.recv_until(|f| frame_type(f) == "event").await?;
        ensure!(
            is_event_on(&e, "user:u1") && e["data"] == json!({"text": "for u1"}),
            "{e}"
        );
    }
    // A broadcast afterwards is the marker: nobody else got u1's message first.
    // (Assumes a connection's frames are queued in publish order across topics;
    // if not, this can only pass, never fail wrongly.)
    http.post(
        "/api/v1/broadcast",
        &json!({"event_type": "system.notification", "data": {}}),
    )
    .await?;
    for client in &mut others {
        let (_, before) = client
            .recv_collect_until(|f| is_event_on(f, "global"))
            .await?;
        ensure!(
            !before.iter().any(|f| is_event_on(f, "user:u1")),
            "leaked: {before:?}"
        );
    }
    Ok(())
}

/// Finds `key` at the top level or under `data` (the seed wraps stats in
/// `{status, data}`; the contract does not fix the shape of this endpoint).
fn stat<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    body.get(key)
        .or_else(|| body.get("data").and_then(|d| d.get(key)))
}

/// Whether some numeric field anywhere in `body` has a name containing `part`.
fn has_numeric_field_like(body: &Value, part: &str) -> bool {
    match body {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k.contains(part) && v.is_number()) || has_numeric_field_like(v, part)),
        Value::Array(items) => items.iter().any(|v| has_numeric_field_like(v, part)),
        _ => false,
    }
}

/// The contract only says "stats". This test follows the seed's field names
/// (`active_connections`, `subscription_counts` topic → count) and looks for an
/// average age and a count of messages sent by name.
/// Producers' keep-alive connections are open files the WebSocket limit does
/// not count: `herald_http_connections_active` shows them while they are open.
#[tokio::test]
async fn open_http_connections_are_counted_until_they_close() -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let open = || async {
        let text = http.get("/metrics").await?.text;
        metric(&text, "herald_http_connections_active").context("no herald_http_connections_active")
    };
    let before = open().await?;
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(hub.addr()).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await?;
        ensure!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        kept.push(stream);
    }
    let during = open().await?;
    ensure!(
        during == before + 3.0,
        "{before} before, {during} with three more open"
    );
    drop(kept);
    eventually(
        Duration::from_secs(5),
        "the closed connections are no longer counted",
        || async { Ok((open().await? == before).then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn connections_stats_count_connections_and_subscribers_per_topic() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut a = hub.ws("/ws?topics=crew:s1").await?;
    a.expect_subscribed(&["crew:s1"]).await?;
    let mut b = hub.ws("/ws?topics=crew:s1,crew:s2").await?;
    b.expect_subscribed(&["crew:s1", "crew:s2"]).await?;
    let _c = hub.ws("/ws").await?;
    let reply = hub.http().get("/api/v1/connections").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    let body = &reply.body;
    ensure!(
        stat(body, "active_connections") == Some(&json!(3)),
        "{body}"
    );
    let counts = stat(body, "subscription_counts").context("no subscription_counts")?;
    ensure!(
        counts["crew:s1"] == json!(2) && counts["crew:s2"] == json!(1),
        "{body}"
    );
    ensure!(
        has_numeric_field_like(body, "average"),
        "no average connection age: {body}"
    );
    ensure!(
        has_numeric_field_like(body, "messages"),
        "no messages-sent count: {body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_connections_list_with_a_limit_names_the_oldest_and_still_counts_them_all() -> Result<()>
{
    let hub = herald().start(&[]).await?;
    let clients = [
        hub.ws("/ws").await?,
        hub.ws("/ws").await?,
        hub.ws("/ws").await?,
    ];
    let ids = |reply: &Value| -> Vec<(u64, String)> {
        reply["connections"].as_array().map_or(Vec::new(), |all| {
            all.iter()
                .map(|c| {
                    (
                        c["connected_at"].as_u64().unwrap_or(0),
                        str_field(c, "id").to_owned(),
                    )
                })
                .collect()
        })
    };
    let all = hub.http().get("/api/v1/connections").await?.ok()?;
    let every = ids(&all.body);
    let mut opened: Vec<String> = clients.iter().map(WsClient::session_id).collect();
    let mut listed: Vec<String> = every.iter().map(|(_, id)| id.clone()).collect();
    opened.sort();
    listed.sort();
    ensure!(
        listed == opened && every.is_sorted() && all.body["truncated"] == false,
        "every connection, the oldest first (ties by id): {}",
        all.text
    );
    let two = hub.http().get("/api/v1/connections?limit=2").await?.ok()?;
    ensure!(
        ids(&two.body) == every[..2]
            && two.body["active_connections"] == 3
            && two.body["truncated"] == true,
        "{}",
        two.text
    );
    let none = hub.http().get("/api/v1/connections?limit=0").await?.ok()?;
    ensure!(
        none.body["connections"] == json!([])
            && none.body["active_connections"] == 3
            && none.body["truncated"] == true,
        "{}",
        none.text
    );
    let refused = hub.http().get("/api/v1/connections?limit=many").await?;
    ensure!(refused.status == 400, "{} {}", refused.status, refused.text);
    Ok(())
}

#[tokio::test]
async fn connection_is_found_by_its_session_id() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let client = hub.ws("/ws").await?;
    let id = client.session_id();
    let reply = hub.http().get(&format!("/api/v1/connections/{id}")).await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    ensure!(
        reply.text.contains(&id),
        "the answer does not name the session: {}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn unknown_connection_is_404_not_found() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub
        .http()
        .get("/api/v1/connections/no-such-session")
        .await?;
    ensure!(reply.status == 404, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "not_found",
        "{}",
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn a_method_a_route_does_not_take_is_405_with_the_json_error_body() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    for reply in [
        http.get("/api/v1/events").await?,
        http.delete("/api/v1/status").await?,
        http.post("/api/v1/approvals/some-id", &json!({})).await?,
    ] {
        ensure!(reply.status == 405, "{} {}", reply.status, reply.text);
        ensure!(
            str_field(&reply.body, "code") == "invalid_request"
                && !str_field(&reply.body, "message").is_empty(),
            "{}",
            reply.text
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_field_deep_in_a_body_is_named_by_its_path() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub
        .http()
        .post(
            "/api/v1/approvals",
            &json!({"user_id": "u1", "task_id": "t1", "step": 3,
                "step_result": {"step": 3, "message": "retry?", "status": "failed"}}),
        )
        .await?;
    ensure!(
        reply.status == 400 && str_field(&reply.body, "message").starts_with("step_result.step: "),
        "{} {}",
        reply.status,
        reply.text
    );
    Ok(())
}

#[tokio::test]
async fn every_http_error_answer_is_counted_once_by_its_code() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let answers = [
        http.post_raw("/api/v1/events", "{not json").await?,
        http.post(
            "/api/v1/events",
            &json!({"topic": "run:bad id", "event_type": "step.progress", "data": {}}),
        )
        .await?,
        http.get("/api/v1/nowhere").await?,
        http.delete("/api/v1/status").await?,
        http.get("/api/v1/approvals/unknown").await?,
    ];
    let statuses: Vec<u16> = answers.iter().map(|reply| reply.status).collect();
    ensure!(statuses == [400, 400, 404, 405, 404], "{statuses:?}");
    let text = http.get("/metrics").await?.text;
    let counted = |code: &str| metric(&text, &format!("herald_errors_total{{code=\"{code}\"}}"));
    ensure!(
        counted("invalid_json") == Some(1.0)
            && counted("invalid_request") == Some(2.0)
            && counted("not_found") == Some(2.0),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_connection_closes_its_socket_with_4500() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    let id = client.session_id();
    let reply = hub
        .http()
        .delete(&format!("/api/v1/connections/{id}"))
        .await?;
    ensure!(
        (200..300).contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text
    );
    let (code, _reason) = client.expect_close().await?;
    ensure!(code == 4500, "close code {code}");
    Ok(())
}

#[tokio::test]
async fn status_reports_running_connections_approvals_and_uptime() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let _a = hub.ws("/ws").await?;
    let _b = hub.ws("/ws").await?;
    let reply = hub.http().get("/api/v1/status").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    let body = &reply.body;
    ensure!(body["running"] == json!(true), "{body}");
    ensure!(body["active_connections"] == json!(2), "{body}");
    ensure!(body["pending_approvals"] == json!(0), "{body}");
    ensure!(body["uptime_s"].is_number(), "{body}");
    Ok(())
}

#[tokio::test]
async fn health_answers_200() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub.http().get("/health").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    Ok(())
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_herald_metrics() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let _client = hub.ws("/ws").await?;
    hub.http()
        .publish(&event("metrics", "metrics.updated", json!({})))
        .await?;
    let reply = hub.http().get("/metrics").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    ensure!(
        reply.content_type.starts_with("text/plain"),
        "content type {}",
        reply.content_type
    );
    let samples: Vec<&str> = reply
        .text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    ensure!(!samples.is_empty(), "no samples: {}", reply.text);
    ensure!(
        samples.iter().any(|l| l.starts_with("herald_")),
        "no herald_ metric: {}",
        reply.text
    );
    for line in &samples {
        let value = line.rsplit(' ').next().unwrap_or_default();
        ensure!(
            value.parse::<f64>().is_ok(),
            "not `name{{labels}} value`: {line:?}"
        );
    }
    ensure!(
        reply.text.contains("# TYPE herald_"),
        "no # TYPE lines: {}",
        reply.text
    );
    Ok(())
}

/// A helper used by other modules: the active connection count from
/// `GET /api/v1/status`.
pub async fn active_connections(hub: &Hub) -> Result<u64> {
    let reply = hub.http().get("/api/v1/status").await?;
    reply.body["active_connections"]
        .as_u64()
        .with_context(|| format!("status without active_connections: {}", reply.text))
}

/// The active connection count from `GET /api/v1/connections` (seed field
/// names, see above).
pub async fn connections_active(hub: &Hub) -> Result<u64> {
    let reply = hub.http().get("/api/v1/connections").await?;
    stat(&reply.body, "active_connections")
        .and_then(Value::as_u64)
        .with_context(|| format!("connections without active_connections: {}", reply.text))
}

#[tokio::test]
async fn a_node_on_a_store_of_its_own_lists_itself_as_the_only_node() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub.http().get("/api/v1/nodes").await?.ok()?;
    let nodes = reply.body["nodes"].as_array().context("no nodes")?;
    ensure!(nodes.len() == 1, "{}", reply.body);
    ensure!(nodes[0]["node"] == reply.body["node"], "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn topics_lists_each_stream_with_seq_retained_snapshot_and_last_event() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut first = event("run:list-a", "step.started", json!({"step": "a"}));
    first["key"] = json!("a");
    hub.http().publish(&first).await?;
    let mut second = event("run:list-a", "step.completed", json!({"step": "a"}));
    second["key"] = json!("a");
    hub.http().publish(&second).await?;
    hub.http()
        .publish(&event("crew:list-b", "crew.created", json!({})))
        .await?;
    let mut subscriber = hub.ws("/ws?topics=run:list-a").await?;
    subscriber.recv_frame().await?; // subscribed

    let reply = hub.http().get("/api/v1/topics").await?;
    ensure!(reply.status == 200, "{}", reply.text);
    let topics = reply.body["topics"].as_array().context("topics")?;
    let names: Vec<&str> = topics.iter().map(|t| str_field(t, "topic")).collect();
    ensure!(names == ["crew:list-b", "run:list-a"], "{names:?}");
    let run = &topics[1];
    ensure!(
        run["seq"] == json!(2) && run["retained"] == json!(2),
        "{run}"
    );
    ensure!(run["snapshot_keys"] == json!(1), "{run}");
    ensure!(run["subscribers"] == json!(1), "{run}");
    ensure!(run["last_event"]["seq"] == json!(2), "{run}");
    ensure!(
        run["last_event"]["event_type"] == json!("step.completed"),
        "{run}"
    );
    ensure!(reply.body["truncated"] == json!(false), "{}", reply.text);

    let limited = hub.http().get("/api/v1/topics?limit=1").await?;
    ensure!(
        limited.body["topics"].as_array().map(Vec::len) == Some(1)
            && limited.body["truncated"] == json!(true),
        "{}",
        limited.text
    );

    let snapshot = hub.http().get("/api/v1/topics/run:list-a/snapshot").await?;
    ensure!(snapshot.status == 200, "{}", snapshot.text);
    let events = snapshot.body["events"].as_array().context("events")?;
    ensure!(
        events.len() == 1 && events[0]["event_type"] == json!("step.completed"),
        "{}",
        snapshot.text
    );
    Ok(())
}

#[tokio::test]
async fn topics_are_listed_under_a_pattern_and_most_recently_published_first_when_asked()
-> Result<()> {
    let hub = herald().start(&[]).await?;
    crate::topics_are_listed_under_a_pattern_by_name_or_most_recent_first(&hub, &hub).await
}

#[tokio::test]
async fn the_console_is_served_at_the_root_and_dashboard_redirects_there() -> Result<()> {
    let hub = herald()
        .start(&["--api-keys", "console-admin-key-0123:admin"])
        .await?;
    // Built or not, `/` answers HTML without a key: the console, or how to build it.
    let page = hub.http().get("/").await?;
    ensure!(
        page.content_type.starts_with("text/html") && matches!(page.status, 200 | 503),
        "{} {}",
        page.status,
        page.content_type
    );
    let old = hub.http().get("/dashboard").await?;
    ensure!(
        old.status == page.status && old.text == page.text,
        "/dashboard leads to the console"
    );
    let config = hub.http().get("/console/config").await?;
    ensure!(
        config.body["api_key_required"] == json!(true)
            && config.body["token_required"] == json!(false),
        "{}",
        config.text
    );
    let topics = hub.http().get("/api/v1/topics").await?;
    ensure!(topics.status == 401, "the topic list needs the admin key");
    let missing = hub.http().get("/console/no-such-file.js").await?;
    ensure!(missing.status == 404, "{}", missing.status);
    Ok(())
}
