//! Snapshots: the latest event per key, on subscribe and on request.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use herald_tests::{Http, frame_type, seq_of};
use serde_json::{Value, json};

use crate::{herald, str_field};

/// Publishes k1=1, k2=1, k1=2 and one event without a key on `topic`
/// (seqs 1..=4).
async fn publish_keyed(http: &Http, topic: &str) -> Result<()> {
    for (key, version) in [(Some("k1"), 1), (Some("k2"), 1), (Some("k1"), 2), (None, 0)] {
        let mut body = json!({"topic": topic, "event_type": "state.changed",
            "data": {"version": version}});
        if let Some(key) = key {
            body["key"] = json!(key);
        }
        http.publish(&body).await?;
    }
    Ok(())
}

/// key → (seq, data): a snapshot's view.
type View = BTreeMap<String, (u64, Value)>;

/// key → (seq, data) of a snapshot frame's events.
pub fn by_key(snapshot: &Value) -> Result<View> {
    let events = snapshot["events"]
        .as_array()
        .context("snapshot events is not a list")?;
    Ok(events
        .iter()
        .map(|e| {
            (
                str_field(e, "key").to_owned(),
                (seq_of(e).unwrap_or(0), e["data"].clone()),
            )
        })
        .collect())
}

/// The snapshot of the four events [`publish_keyed`] sends.
fn expected_view() -> View {
    BTreeMap::from([
        ("k1".to_owned(), (3, json!({"version": 2}))),
        ("k2".to_owned(), (2, json!({"version": 1}))),
    ])
}

#[tokio::test]
async fn subscribe_with_snapshot_sends_the_latest_event_per_key() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_keyed(&hub.http(), "crew:snap").await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["crew:snap"], "snapshot": true}))
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(str_field(&snapshot, "topic") == "crew:snap", "{snapshot}");
    ensure!(
        snapshot["seq"] == json!(4) && snapshot["epoch"].is_string(),
        "{snapshot}"
    );
    ensure!(by_key(&snapshot)? == expected_view(), "{snapshot}");
    Ok(())
}

#[tokio::test]
async fn snapshot_comes_first_and_live_events_follow_its_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_keyed(&http, "crew:snap2").await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["crew:snap2"], "snapshot": true}))
        .await?;
    let (snapshot, before) = client
        .recv_collect_until(|f| frame_type(f) == "snapshot")
        .await?;
    ensure!(
        !before.iter().any(|f| frame_type(f) == "event"),
        "events before the snapshot: {before:?}"
    );
    http.publish(
        &json!({"topic": "crew:snap2", "event_type": "state.changed", "key": "k2",
        "data": {"version": 2}}),
    )
    .await?;
    let live = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(
        seq_of(&live) == Some(snapshot["seq"].as_u64().unwrap_or(0) + 1),
        "{snapshot} then {live}"
    );
    Ok(())
}

#[tokio::test]
async fn request_state_sends_a_snapshot_per_subscribed_topic() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_keyed(&http, "crew:rs1").await?;
    publish_keyed(&http, "crew:rs2").await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:rs1", "crew:rs2"]).await?;
    client
        .send_json(&json!({"action": "request_state"}))
        .await?;
    let mut topics = Vec::new();
    for _ in 0..2 {
        let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
        ensure!(by_key(&snapshot)? == expected_view(), "{snapshot}");
        topics.push(str_field(&snapshot, "topic").to_owned());
    }
    topics.sort();
    ensure!(topics == ["crew:rs1", "crew:rs2"], "{topics:?}");
    Ok(())
}

#[tokio::test]
async fn request_state_with_topics_sends_only_those() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_keyed(&http, "crew:rt1").await?;
    publish_keyed(&http, "crew:rt2").await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:rt1", "crew:rt2"]).await?;
    client
        .send_json(&json!({"action": "request_state", "topics": ["crew:rt2"]}))
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(str_field(&snapshot, "topic") == "crew:rt2", "{snapshot}");
    let after = client.barrier().await?;
    ensure!(
        !after.iter().any(|f| frame_type(f) == "snapshot"),
        "extra snapshots: {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn request_state_names_topics_with_the_subscriptions_alias_too() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_keyed(&hub.http(), "crew:ra2").await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:ra1"]).await?;
    client
        .send_json(&json!({"action": "refresh", "subscriptions": ["crew:ra2"]}))
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(str_field(&snapshot, "topic") == "crew:ra2", "{snapshot}");
    ensure!(by_key(&snapshot)? == expected_view(), "{snapshot}");
    Ok(())
}

#[tokio::test]
async fn a_snapshot_holds_only_what_the_subscription_filter_lets_through() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_keyed(&http, "crew:sf").await?;
    http.publish(
        &json!({"topic": "crew:sf", "event_type": "task.progress", "key": "t1",
        "data": {"version": 9}}),
    )
    .await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(
            &json!({"action": "subscribe", "topics": ["crew:sf"], "snapshot": true,
            "filter": {"types": ["task.*"]}}),
        )
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    let only_task = BTreeMap::from([("t1".to_owned(), (5, json!({"version": 9})))]);
    ensure!(by_key(&snapshot)? == only_task, "{snapshot}");
    // `request_state` goes through the same filter.
    client
        .send_json(&json!({"action": "request_state"}))
        .await?;
    let again = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(by_key(&again)? == only_task, "{again}");
    Ok(())
}

#[tokio::test]
async fn seed_style_refresh_frame_sends_snapshots() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_keyed(&hub.http(), "crew:refresh").await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:refresh"]).await?;
    client.send_json(&json!({"type": "refresh"})).await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(
        str_field(&snapshot, "topic") == "crew:refresh",
        "{snapshot}"
    );
    ensure!(by_key(&snapshot)? == expected_view(), "{snapshot}");
    Ok(())
}

#[tokio::test]
async fn snapshot_of_a_topic_without_keys_is_empty_at_its_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    http.publish_simple("crew:nokeys", "crew.updated", json!({}))
        .await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["crew:nokeys"]).await?;
    client
        .send_json(&json!({"action": "request_state", "topics": ["crew:nokeys"]}))
        .await?;
    let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
    ensure!(
        snapshot["seq"] == json!(1) && snapshot["events"] == json!([]),
        "{snapshot}"
    );
    Ok(())
}

/// The snapshot frames among `frames`, by topic.
fn snapshots_by_topic(frames: &[Value]) -> Result<BTreeMap<String, View>> {
    frames
        .iter()
        .filter(|f| frame_type(f) == "snapshot")
        .map(|f| Ok((str_field(f, "topic").to_owned(), by_key(f)?)))
        .collect()
}

/// Publishes keyed state on crew:p1 and crew:p2, an unkeyed event on crew:p3
/// and keyed state outside the pattern, on run:p4.
async fn publish_for_patterns(http: &Http) -> Result<()> {
    publish_keyed(http, "crew:p1").await?;
    publish_keyed(http, "crew:p2").await?;
    http.publish_simple("crew:p3", "crew.updated", json!({}))
        .await?;
    publish_keyed(http, "run:p4").await?;
    Ok(())
}

#[tokio::test]
async fn a_pattern_subscription_with_snapshot_gets_one_per_covered_topic_with_state() -> Result<()>
{
    let hub = herald().start(&[]).await?;
    publish_for_patterns(&hub.http()).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "id": 1, "topics": ["crew:*"], "snapshot": true}))
        .await?;
    let (_ack, before) = client
        .recv_collect_until(|f| frame_type(f) == "ack")
        .await?;
    let snapshots = snapshots_by_topic(&before)?;
    let expected = BTreeMap::from([
        ("crew:p1".to_owned(), expected_view()),
        ("crew:p2".to_owned(), expected_view()),
    ]);
    ensure!(snapshots == expected, "{before:?}");
    // `request_state` with no topics covers the pattern's topics too.
    client
        .send_json(&json!({"action": "request_state", "id": 2}))
        .await?;
    let (_ack, again) = client
        .recv_collect_until(|f| frame_type(f) == "ack")
        .await?;
    ensure!(snapshots_by_topic(&again)? == expected, "{again:?}");
    Ok(())
}

#[tokio::test]
async fn snapshot_in_the_url_sends_the_state_on_connect() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_for_patterns(&hub.http()).await?;
    // The seed's "initial state on connect", for the firehose.
    let mut firehose = hub.ws("/ws/events?snapshot=true").await?;
    let before = firehose.barrier().await?;
    let topics: Vec<String> = snapshots_by_topic(&before)?.into_keys().collect();
    ensure!(topics == ["crew:p1", "crew:p2", "run:p4"], "{before:?}");
    let mut exact = hub.ws("/ws?topics=crew:p2&snapshot=true").await?;
    let before = exact.barrier().await?;
    let snapshots = snapshots_by_topic(&before)?;
    ensure!(
        snapshots == BTreeMap::from([("crew:p2".to_owned(), expected_view())]),
        "{before:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pattern_covering_more_state_than_the_queue_holds_gets_what_fits_and_an_error()
-> Result<()> {
    // A queue of 16 frames: at most 8 snapshots a request.
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let http = hub.http();
    for n in [6, 2, 10, 5, 1, 9, 4, 8, 3, 7] {
        publish_keyed(&http, &format!("crew:q{n:02}")).await?;
    }
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "id": 1, "topics": ["crew:*"], "snapshot": true}))
        .await?;
    let (_ack, before) = client
        .recv_collect_until(|f| frame_type(f) == "ack")
        .await?;
    let topics: Vec<&str> = before
        .iter()
        .filter(|f| frame_type(f) == "snapshot")
        .map(|f| str_field(f, "topic"))
        .collect();
    let first_eight: Vec<String> = (1..=8).map(|n| format!("crew:q{n:02}")).collect();
    ensure!(topics == first_eight, "{before:?}");
    let error = before
        .iter()
        .find(|f| frame_type(f) == "error")
        .with_context(|| format!("no error: {before:?}"))?;
    ensure!(str_field(error, "code") == "too_large", "{error}");
    // Still open, not closed with 1013; the rest can be asked for by name.
    client
        .send_json(&json!({"action": "request_state", "topics": ["crew:q09", "crew:q10"]}))
        .await?;
    for topic in ["crew:q09", "crew:q10"] {
        let snapshot = client.recv_until(|f| frame_type(f) == "snapshot").await?;
        ensure!(str_field(&snapshot, "topic") == topic, "{snapshot}");
    }
    // The budget is the request's, whatever it names: an exact topic and
    // two patterns share the same 8.
    publish_keyed(&http, "run:q7").await?;
    let mut both = hub.ws("/ws").await?;
    both.send_json(&json!({"action": "subscribe", "id": 1, "snapshot": true,
        "topics": ["run:q7", "crew:*", "run:*"]}))
        .await?;
    let (_ack, before) = both.recv_collect_until(|f| frame_type(f) == "ack").await?;
    let sent = before
        .iter()
        .filter(|f| frame_type(f) == "snapshot")
        .count();
    let errors = before.iter().filter(|f| frame_type(f) == "error").count();
    ensure!(sent == 8 && errors == 1, "{before:?}");
    Ok(())
}
