//! Lossless delivery: seq, idempotent producer ids, `since`, gaps, the
//! `replay` action and history over HTTP.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use herald_tests::{Http, Hub, Rng, WsClient, frame_type, is_event_on, seq_of};
use serde_json::{Value, json};

use crate::{event, herald, seqs_on, str_field};

/// Sends `subscribe` for one topic with `since` (and `extra` fields) and
/// returns every frame up to and including its `replay_complete`.
async fn subscribe_since(
    client: &mut WsClient,
    topic: &str,
    since: Value,
    extra: Value,
) -> Result<Vec<Value>> {
    let mut frame = json!({"action": "subscribe", "topics": [topic], "since": {topic: since}});
    if let (Some(frame), Value::Object(extra)) = (frame.as_object_mut(), extra) {
        frame.extend(extra);
    }
    client.send_json(&frame).await?;
    let (done, mut before) = client
        .recv_collect_until(|f| {
            frame_type(f) == "replay_complete" && f.get("topic") == Some(&json!(topic))
        })
        .await?;
    before.push(done);
    Ok(before)
}

/// The one frame of type `kind` in `frames`.
fn only<'a>(frames: &'a [Value], kind: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = frames.iter().filter(|f| frame_type(f) == kind).collect();
    ensure!(found.len() == 1, "expected one {kind} frame in {frames:?}");
    Ok(found[0])
}

async fn publish_n(http: &Http, topic: &str, n: u64) -> Result<()> {
    for i in 0..n {
        http.publish(&event(topic, "execution.progress", json!({"i": i})))
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn seq_increases_by_exactly_one_per_topic() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let topics = ["execution:s1", "execution:s2", "crew:s3"];
    let mut rng = Rng::new(7);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..60 {
        let topic = topics[rng.range(0, 3) as usize];
        let seq = http
            .publish_simple(topic, "execution.progress", json!({}))
            .await?;
        let next = expected.entry(topic).or_insert(0);
        *next += 1;
        ensure!(seq == *next, "{topic}: got seq {seq}, expected {next}");
    }
    Ok(())
}

#[tokio::test]
async fn duplicate_producer_id_returns_the_same_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut body = event("execution:dup", "execution.started", json!({}));
    body["id"] = json!("retry-me");
    let first = http.publish(&body).await?;
    let second = http.publish(&body).await?;
    ensure!(
        first["seq"] == json!(1) && second["seq"] == json!(1),
        "{first} / {second}"
    );
    ensure!(second["id"] == json!("retry-me"), "{second}");
    let next = http
        .publish_simple("execution:dup", "execution.progress", json!({}))
        .await?;
    ensure!(next == 2, "the retry consumed a seq: next is {next}");
    Ok(())
}

#[tokio::test]
async fn duplicate_producer_id_is_delivered_and_stored_once() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:dup2"]).await?;
    let mut body = event("execution:dup2", "execution.started", json!({}));
    body["id"] = json!("once");
    http.publish(&body).await?;
    http.publish(&body).await?;
    http.publish_simple("execution:dup2", "execution.completed", json!({}))
        .await?;
    let (_, before) = client.recv_collect_until(|f| seq_of(f) == Some(2)).await?;
    ensure!(
        seqs_on(&before, "execution:dup2") == [1],
        "delivered twice: {before:?}"
    );
    let history = http
        .get("/api/v1/topics/execution:dup2/events?since=0")
        .await?;
    let ids: Vec<&str> = history.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| str_field(e, "id"))
        .collect();
    ensure!(
        ids.len() == 2 && ids[0] == "once",
        "stored: {}",
        history.text
    );
    Ok(())
}

/// A retry that comes after its event was pushed out of a busy topic's
/// history still gets its first receipt and is not delivered again, and
/// another event under its id is still refused: ids outlive history (for
/// `--history-age`, at least a minute), on every store.
#[tokio::test]
async fn a_retry_after_its_event_left_history_is_not_published_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", dir.path().join("herald.db").display());
    let redis = herald_tests::Redis::start().await?;
    for store in ["memory", sqlite.as_str(), redis.store_arg().as_str()] {
        let hub = herald()
            .start(&["--store", store, "--history-size", "5"])
            .await?;
        let http = hub.http();
        let mut client = hub.ws("/ws").await?;
        client.subscribe(&["execution:busy"]).await?;
        let mut body = event("execution:busy", "execution.started", json!({}));
        body["id"] = json!("late-retry");
        let first = http.publish(&body).await?;
        for _ in 0..10 {
            http.publish_simple("execution:busy", "execution.progress", json!({}))
                .await?;
        }
        let retry = http.publish(&body).await?;
        ensure!(
            first["seq"] == json!(1) && retry["seq"] == json!(1),
            "{store}: {first} / {retry}"
        );
        let mut other = body.clone();
        other["data"] = json!({"another": "event"});
        let refused = http.post("/api/v1/events", &other).await?;
        ensure!(
            refused.status == 409 && str_field(&refused.body, "code") == "conflict",
            "{store}: {} {}",
            refused.status,
            refused.text
        );
        http.publish_simple("execution:busy", "execution.completed", json!({}))
            .await?;
        let (last, before) = client.recv_collect_until(|f| seq_of(f) == Some(12)).await?;
        let mut delivered = seqs_on(&before, "execution:busy");
        delivered.extend(seq_of(&last));
        ensure!(
            delivered == (1..=12).collect::<Vec<u64>>(),
            "{store}: delivered {delivered:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn since_replays_missed_events_then_replay_complete_then_live() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_n(&http, "execution:r1", 5).await?;
    let mut client = hub.ws("/ws").await?;
    let frames = subscribe_since(&mut client, "execution:r1", json!(2), json!({})).await?;
    ensure!(seqs_on(&frames, "execution:r1") == [3, 4, 5], "{frames:?}");
    let done = only(&frames, "replay_complete")?;
    ensure!(
        done["from_seq"] == json!(3) && done["to_seq"] == json!(5),
        "{done}"
    );
    ensure!(!frames.iter().any(|f| frame_type(f) == "gap"), "{frames:?}");
    http.publish_simple("execution:r1", "execution.progress", json!({}))
        .await?;
    let live = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(seq_of(&live) == Some(6), "{live}");
    Ok(())
}

#[tokio::test]
async fn since_with_nothing_missed_completes_with_to_seq_below_from_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_n(&http, "execution:r2", 3).await?;
    let mut client = hub.ws("/ws").await?;
    let frames = subscribe_since(&mut client, "execution:r2", json!(3), json!({})).await?;
    ensure!(seqs_on(&frames, "execution:r2").is_empty(), "{frames:?}");
    let done = only(&frames, "replay_complete")?;
    let (from, to) = (done["from_seq"].as_u64(), done["to_seq"].as_u64());
    ensure!(from.is_some() && to.is_some() && to < from, "{done}");
    Ok(())
}

#[tokio::test]
async fn since_with_the_current_epoch_replays_normally() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut first = hub.ws("/ws").await?;
    let epoch = first.subscribe(&["execution:r3"]).await?[0]["epoch"].clone();
    publish_n(&http, "execution:r3", 4).await?;
    let mut client = hub.ws("/ws").await?;
    let since = json!({"seq": 1, "epoch": epoch});
    let frames = subscribe_since(&mut client, "execution:r3", since, json!({})).await?;
    ensure!(seqs_on(&frames, "execution:r3") == [2, 3, 4], "{frames:?}");
    ensure!(!frames.iter().any(|f| frame_type(f) == "gap"), "{frames:?}");
    Ok(())
}

/// Checks the `epoch_changed` answer: a gap 1..=current, then `replay_complete`
/// with nothing replayed, then live.
async fn expect_epoch_changed(hub: &Hub, topic: &str, since: Value) -> Result<()> {
    let http = hub.http();
    publish_n(&http, topic, 3).await?;
    let mut client = hub.ws("/ws").await?;
    let frames = subscribe_since(&mut client, topic, since, json!({})).await?;
    let gap = only(&frames, "gap")?;
    ensure!(str_field(gap, "reason") == "epoch_changed", "{gap}");
    ensure!(
        gap["from_seq"] == json!(1) && gap["to_seq"] == json!(3),
        "{gap}"
    );
    ensure!(str_field(gap, "topic") == topic, "{gap}");
    ensure!(
        seqs_on(&frames, topic).is_empty(),
        "replayed despite the epoch change: {frames:?}"
    );
    let gap_at = frames.iter().position(|f| frame_type(f) == "gap");
    ensure!(
        gap_at
            < frames
                .iter()
                .position(|f| frame_type(f) == "replay_complete"),
        "{frames:?}"
    );
    http.publish_simple(topic, "execution.progress", json!({}))
        .await?;
    let live = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(seq_of(&live) == Some(4), "{live}");
    Ok(())
}

#[tokio::test]
async fn since_with_another_epoch_gives_gap_epoch_changed_then_live() -> Result<()> {
    let hub = herald().start(&[]).await?;
    expect_epoch_changed(
        &hub,
        "execution:e1",
        json!({"seq": 2, "epoch": "some-older-stream"}),
    )
    .await
}

#[tokio::test]
async fn since_beyond_the_latest_seq_gives_gap_epoch_changed_then_live() -> Result<()> {
    let hub = herald().start(&[]).await?;
    expect_epoch_changed(&hub, "execution:e2", json!(10)).await
}

#[tokio::test]
async fn a_checkpoint_into_a_stream_with_no_event_yet_still_gets_the_epoch_changed_gap()
-> Result<()> {
    // As after a restart of a memory hub: the client had seq 4 of the old
    // stream; the new one has nothing. The gap is what tells a client that
    // ignores epochs to drop its checkpoint and state.
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    let frames = subscribe_since(&mut client, "execution:e3", json!(4), json!({})).await?;
    let gap = only(&frames, "gap")?;
    ensure!(
        str_field(gap, "reason") == "epoch_changed"
            && gap["from_seq"] == json!(1)
            && gap["to_seq"] == json!(0),
        "{gap}"
    );
    let done = only(&frames, "replay_complete")?;
    ensure!(
        done["from_seq"] == json!(1) && done["to_seq"] == json!(0),
        "{done}"
    );
    Ok(())
}

#[tokio::test]
async fn history_size_trims_oldest_events_and_replay_reports_a_trimmed_gap() -> Result<()> {
    let hub = herald().start(&["--history-size", "10"]).await?;
    let http = hub.http();
    publish_n(&http, "execution:trim", 30).await?;
    let mut client = hub.ws("/ws").await?;
    let frames = subscribe_since(&mut client, "execution:trim", json!(0), json!({})).await?;
    let gap = only(&frames, "gap")?;
    ensure!(str_field(gap, "reason") == "trimmed", "{gap}");
    ensure!(
        gap["from_seq"] == json!(1) && gap["to_seq"] == json!(20),
        "{gap}"
    );
    ensure!(
        seqs_on(&frames, "execution:trim") == (21..=30).collect::<Vec<_>>(),
        "{frames:?}"
    );
    let gap_at = frames.iter().position(|f| frame_type(f) == "gap");
    ensure!(
        gap_at < frames.iter().position(|f| frame_type(f) == "event"),
        "gap after events"
    );
    let done = only(&frames, "replay_complete")?;
    ensure!(
        done["from_seq"] == json!(21) && done["to_seq"] == json!(30),
        "{done}"
    );
    Ok(())
}

#[tokio::test]
async fn filters_apply_to_replayed_events() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    for i in 0..6 {
        let kind = if i % 2 == 0 {
            "task.progress"
        } else {
            "execution.progress"
        };
        http.publish(&event("run:rf", kind, json!({"i": i})))
            .await?;
    }
    let mut client = hub.ws("/ws").await?;
    let filter = json!({"filter": {"types": ["task.*"]}});
    let frames = subscribe_since(&mut client, "run:rf", json!(0), filter).await?;
    ensure!(seqs_on(&frames, "run:rf") == [1, 3, 5], "{frames:?}");
    Ok(())
}

/// A seeded random schedule of reconnects while a producer publishes without
/// pause: each subscriber must end with exactly 1..=N, no duplicate at any
/// seam and no hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_has_no_duplicate_or_hole_under_live_publishing() -> Result<()> {
    const N: u64 = 400;
    const TOPIC: &str = "execution:seam";
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let url = hub.ws_url("/ws");
    // Take the epoch before the first event so every checkpoint carries it.
    let mut probe = hub.ws("/ws").await?;
    let epoch = probe.subscribe(&[TOPIC]).await?[0]["epoch"].clone();
    probe.close().await;

    let producer = async {
        for i in 0..N {
            http.publish(&event(TOPIC, "execution.progress", json!({"i": i})))
                .await?;
        }
        anyhow::Ok(())
    };
    let subscribers = futures::future::try_join_all((1..=3u64).map(|seed| {
        let url = url.clone();
        let epoch = epoch.clone();
        async move {
            let mut rng = Rng::new(seed * 7919);
            let mut seen: Vec<u64> = Vec::new();
            let mut reconnects = 0;
            while seen.last().copied().unwrap_or(0) < N {
                let mut client = WsClient::connect(&url).await?;
                let last = seen.last().copied().unwrap_or(0);
                let since = json!({"seq": last, "epoch": epoch});
                let frames = subscribe_since(&mut client, TOPIC, since, json!({})).await?;
                if let Some(gap) = frames.iter().find(|f| frame_type(f) == "gap") {
                    bail!("seed {seed}: gap with everything retained: {gap}");
                }
                seen.extend(seqs_on(&frames, TOPIC));
                // Then live for a random number of events (or to the end).
                let take = rng.range(5, 80);
                let mut taken = 0;
                while taken < take && seen.last().copied().unwrap_or(0) < N {
                    let frame = client.recv_frame().await.with_context(|| {
                        format!(
                            "seed {seed}: waiting for live events after {:?}",
                            seen.last()
                        )
                    })?;
                    match frame_type(&frame) {
                        "event" if is_event_on(&frame, TOPIC) => {
                            seen.extend(seq_of(&frame));
                            taken += 1;
                        }
                        "gap" => bail!("seed {seed}: live gap: {frame}"),
                        _ => {}
                    }
                }
                // Half the time a polite close, half the time an abrupt drop.
                if rng.range(0, 2) == 0 {
                    client.close().await;
                } else {
                    drop(client);
                }
                reconnects += 1;
            }
            ensure!(
                seen == (1..=N).collect::<Vec<_>>(),
                "seed {seed} after {reconnects} reconnects: duplicates or holes in {seen:?}"
            );
            anyhow::Ok(reconnects)
        }
    }));
    let (produced, reconnects) = tokio::join!(producer, subscribers);
    produced?;
    let reconnects = reconnects?;
    ensure!(
        reconnects.iter().all(|r| *r >= 3),
        "too few reconnects to test seams: {reconnects:?}"
    );
    Ok(())
}

#[tokio::test]
async fn replay_action_reads_retained_events_then_replay_complete() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_n(&hub.http(), "execution:ra", 5).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "replay", "topic": "execution:ra", "since_seq": 2}))
        .await?;
    let (done, before) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    ensure!(seqs_on(&before, "execution:ra") == [3, 4, 5], "{before:?}");
    ensure!(
        done["from_seq"] == json!(3) && done["to_seq"] == json!(5),
        "{done}"
    );
    Ok(())
}

#[tokio::test]
async fn replay_action_honours_limit() -> Result<()> {
    let hub = herald().start(&[]).await?;
    publish_n(&hub.http(), "execution:rl", 5).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(
            &json!({"action": "replay", "topic": "execution:rl", "since_seq": 1, "limit": 2}),
        )
        .await?;
    let (done, before) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    ensure!(seqs_on(&before, "execution:rl") == [2, 3], "{before:?}");
    ensure!(
        done["from_seq"] == json!(2) && done["to_seq"] == json!(3),
        "{done}"
    );
    Ok(())
}

#[tokio::test]
async fn replay_action_does_not_subscribe() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_n(&http, "execution:rn", 2).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "replay", "topic": "execution:rn", "since_seq": 0}))
        .await?;
    client
        .recv_until(|f| frame_type(f) == "replay_complete")
        .await?;
    http.publish_simple("execution:rn", "execution.progress", json!({}))
        .await?;
    // A broadcast marker (reaches every connection) after the live event.
    http.post(
        "/api/v1/broadcast",
        &json!({"event_type": "system.notification", "data": {}}),
    )
    .await?;
    let (_, before) = client
        .recv_collect_until(|f| is_event_on(f, "global"))
        .await?;
    ensure!(
        seqs_on(&before, "execution:rn").is_empty(),
        "replay subscribed: {before:?}"
    );
    Ok(())
}

#[tokio::test]
async fn http_history_answers_topic_epoch_seq_and_events_after_since() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_n(&http, "execution:hh", 5).await?;
    let mut client = hub.ws("/ws").await?;
    let epoch = client.subscribe(&["execution:hh"]).await?[0]["epoch"].clone();
    let reply = http
        .get("/api/v1/topics/execution:hh/events?since=2&limit=2")
        .await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    let body = &reply.body;
    ensure!(str_field(body, "topic") == "execution:hh", "{body}");
    ensure!(
        body["epoch"] == epoch,
        "epoch differs from subscribed's {epoch}: {body}"
    );
    ensure!(body["seq"] == json!(5), "seq must be the latest: {body}");
    let events = body["events"].as_array().context("events is not a list")?;
    let seqs: Vec<u64> = events.iter().filter_map(seq_of).collect();
    ensure!(seqs == [3, 4], "{body}");
    ensure!(
        events
            .iter()
            .all(|e| str_field(e, "event_type") == "execution.progress"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn http_history_without_parameters_returns_every_retained_event() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_n(&http, "execution:hall", 4).await?;
    let reply = http.get("/api/v1/topics/execution:hall/events").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    let seqs: Vec<u64> = reply.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(seq_of)
        .collect();
    ensure!(seqs == [1, 2, 3, 4], "{}", reply.text);
    Ok(())
}

#[tokio::test]
async fn http_history_of_a_bad_topic_is_400() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let reply = hub.http().get("/api/v1/topics/Bad%20Topic/events").await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text);
    Ok(())
}

// ---- Time cursors ----

/// Publishes on `topic` with producer timestamps `times` (ms), in order.
async fn publish_at(http: &Http, topic: &str, times: &[u64]) -> Result<()> {
    let batch: Vec<Value> = times
        .iter()
        .map(|ms| json!({"topic": topic, "event_type": "step.progress", "timestamp": ms, "data": {"at": ms}}))
        .collect();
    http.publish_batch(&batch).await?;
    Ok(())
}

#[tokio::test]
async fn since_by_time_replays_every_retained_event_newer_than_it_then_goes_live() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    // Producer timestamps need not follow the seq.
    publish_at(&http, "run:t1", &[1000, 3000, 2000, 4000]).await?;
    let mut client = hub.ws("/ws").await?;
    let frames =
        subscribe_since(&mut client, "run:t1", json!({"time_ms": 2000}), json!({})).await?;
    ensure!(seqs_on(&frames, "run:t1") == [2, 4], "{frames:?}");
    let complete = only(&frames, "replay_complete")?;
    ensure!(
        (complete["from_seq"].clone(), complete["to_seq"].clone()) == (json!(2), json!(4)),
        "{complete}"
    );
    ensure!(!frames.iter().any(|f| frame_type(f) == "gap"), "{frames:?}");
    http.publish_simple("run:t1", "step.progress", json!({}))
        .await?;
    ensure!(
        seqs_on(&client.recv_events(1).await?, "run:t1") == [5],
        "live"
    );
    Ok(())
}

#[tokio::test]
async fn since_by_time_past_trimmed_history_reports_the_trimmed_seqs() -> Result<()> {
    let hub = herald().start(&["--history-size", "2"]).await?;
    publish_at(&hub.http(), "run:t2", &[1000, 2000, 3000, 4000]).await?;
    let mut client = hub.ws("/ws").await?;
    let frames =
        subscribe_since(&mut client, "run:t2", json!({"time_ms": 1500}), json!({})).await?;
    let gap = only(&frames, "gap")?;
    ensure!(
        gap["reason"] == "trimmed" && gap["from_seq"] == 1 && gap["to_seq"] == 2,
        "{gap}"
    );
    ensure!(seqs_on(&frames, "run:t2") == [3, 4], "{frames:?}");
    Ok(())
}

#[tokio::test]
async fn http_history_takes_a_time_instead_of_a_seq() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    publish_at(&http, "run:t3", &[1000, 3000, 2000]).await?;
    let history = http
        .get("/api/v1/topics/run:t3/events?time_ms=1500")
        .await?;
    let seqs: Vec<u64> = history.body["events"]
        .as_array()
        .context("no events")?
        .iter()
        .filter_map(seq_of)
        .collect();
    ensure!(seqs == [2, 3], "{}", history.text);
    let both = http
        .get("/api/v1/topics/run:t3/events?time_ms=1500&since=1")
        .await?;
    ensure!(both.status == 400, "{}", both.text);
    Ok(())
}

// ---- Floats ----

#[tokio::test]
async fn floats_in_data_survive_publish_delivery_and_history_bit_for_bit() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let http = hub.http();
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["run:floats"]).await?;
    let mut rng = Rng::new(13);
    // `time.time()` values (seconds with microseconds) and arbitrary finite
    // doubles, written as a producer would: the shortest form that reads
    // back as the same double (Python's repr, Rust's Debug).
    let values: Vec<f64> = (0..400)
        .map(|i| {
            if i % 2 == 0 {
                1.7e9 + rng.range(0, 300_000_000) as f64 + rng.range(0, 1_000_000) as f64 / 1e6
            } else {
                let bits = rng.next_u64();
                let value = f64::from_bits(bits);
                if value.is_finite() {
                    value
                } else {
                    f64::from_bits(bits >> 12)
                }
            }
        })
        .collect();
    let texts: Vec<String> = values
        .chunks(20)
        .map(|chunk| {
            let listed: Vec<String> = chunk.iter().map(|v| format!("{v:?}")).collect();
            format!(
                r#"{{"topic":"run:floats","event_type":"step.progress","data":{{"values":[{}]}}}}"#,
                listed.join(",")
            )
        })
        .collect();
    for text in &texts {
        let reply = http.post_raw("/api/v1/events", text.clone()).await?;
        ensure!(reply.status == 200, "{}", reply.text);
    }
    let bits = |data: &Value| -> Vec<u64> {
        data["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(f64::to_bits)
                    .collect()
            })
            .unwrap_or_default()
    };
    let sent: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    let delivered: Vec<u64> = client
        .recv_events(texts.len())
        .await?
        .iter()
        .flat_map(|event| bits(&event["data"]))
        .collect();
    ensure!(
        delivered == sent,
        "a float changed on its way to a subscriber"
    );
    let history = http.get("/api/v1/topics/run:floats/events").await?;
    let stored: Vec<u64> = history.body["events"]
        .as_array()
        .context("no events")?
        .iter()
        .flat_map(|event| bits(&event["data"]))
        .collect();
    ensure!(stored == sent, "a float changed in the history");
    Ok(())
}

/// A replay longer than the connection's queue arrives whole, in order and
/// without a `gap`, under one pattern's subscription and under exact ones
/// alike: it goes in parts, each once the writer took the one before, so
/// its events never push each other out, not even high-priority ones,
/// which cannot be shed.
#[tokio::test]
async fn a_replay_longer_than_the_queue_arrives_whole_without_a_gap() -> Result<()> {
    const EVENTS: u64 = 100;
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let http = hub.http();
    for (topic, priority) in [("run:normal", "normal"), ("run:high", "high")] {
        let events: Vec<Value> = (0..EVENTS)
            .map(|i| {
                let mut event = event(topic, "execution.progress", json!({"i": i}));
                event["priority"] = json!(priority);
                event
            })
            .collect();
        // In batches a queue holds (a larger one is refused).
        for batch in events.chunks(16) {
            let reply = http.post("/api/v1/events", &json!(batch)).await?;
            ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
        }
    }
    for topics in [vec!["run:normal", "run:high"], vec!["run:*"]] {
        let mut client = hub.ws("/ws").await?;
        client
            .send_json(&json!({"action": "subscribe", "topics": topics,
                "since": {"run:normal": 0, "run:high": 0}}))
            .await?;
        let mut frames = Vec::new();
        let mut complete = 0;
        while complete < 2 {
            let frame = client.recv_frame().await?;
            match frame_type(&frame) {
                "replay_complete" => complete += 1,
                "gap" | "error" => bail!("{topics:?}: {frame}"),
                _ => frames.push(frame),
            }
        }
        for topic in ["run:normal", "run:high"] {
            ensure!(
                seqs_on(&frames, topic) == (1..=EVENTS).collect::<Vec<_>>(),
                "{topics:?}, {topic}: {:?}",
                seqs_on(&frames, topic)
            );
        }
    }
    Ok(())
}

/// A `since` for a topic the same `subscribe` does not cover is refused
/// (nothing would ever answer it with `replay_complete`), and nothing is
/// subscribed.
#[tokio::test]
async fn since_for_a_topic_the_subscribe_does_not_cover_is_refused() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(
            &json!({"action": "subscribe", "id": "s", "topics": ["run:a", "crew:*"],
            "since": {"run:a": 0, "run:b": 3}}),
        )
        .await?;
    let answer = client
        .recv_until(|f| matches!(frame_type(f), "error" | "ack" | "subscribed"))
        .await?;
    ensure!(
        frame_type(&answer) == "error"
            && str_field(&answer, "code") == "invalid_request"
            && str_field(&answer, "message").contains("run:b"),
        "{answer}"
    );
    let http = hub.http();
    publish_n(&http, "run:a", 1).await?;
    client
        .send_json(&json!({"action": "ping", "id": "p"}))
        .await?;
    let (_, before) = client
        .recv_collect_until(|f| frame_type(f) == "pong")
        .await?;
    ensure!(
        !before.iter().any(|f| frame_type(f) == "event"),
        "subscribed after all: {before:?}"
    );
    Ok(())
}

/// A message for the user, which reaches every connection of that user
/// whatever it subscribed to, still waits behind the replay of a
/// subscription to the user's topic: it comes after the replay, in seq
/// order, even while that replay goes out in parts because the client reads
/// slowly.
#[tokio::test]
async fn a_users_message_during_a_replay_of_their_topic_comes_after_it_in_order() -> Result<()> {
    const RETAINED: u64 = 100;
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let http = hub.http();
    // Large enough that the replay fills the sockets' buffers and waits for
    // the client to read.
    let blob = "u".repeat(60_000);
    for i in 0..RETAINED {
        let message = json!({"event_type": "user.notice", "data": {"i": i, "blob": blob}});
        http.post("/api/v1/users/u1/messages", &message)
            .await?
            .ok()?;
    }
    let mut client = hub.ws("/ws?user_id=u1").await?;
    client
        .send_json(&json!({"action": "subscribe", "topics": ["user:u1"], "since": {"user:u1": 0}}))
        .await?;
    client.recv_until(|f| frame_type(f) == "subscribed").await?;
    let live = json!({"event_type": "user.notice", "data": {"i": RETAINED}});
    http.post("/api/v1/users/u1/messages", &live).await?.ok()?;
    let mut seqs = Vec::new();
    while seqs.len() < RETAINED as usize + 1 {
        let frame = client.recv_frame().await?;
        match frame_type(&frame) {
            "event" => seqs.extend(seq_of(&frame)),
            "gap" => bail!("a gap after {seqs:?}: {frame}"),
            _ => {}
        }
    }
    ensure!(
        seqs == (1..=RETAINED + 1).collect::<Vec<_>>(),
        "out of order or missing: {seqs:?}"
    );
    Ok(())
}
