//! Several nodes on one Redis (`--store redis://…`): every promise of one
//! node holds across nodes, through killed nodes, killed pub/sub
//! connections and a Redis restart.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt as _;
use herald_tests::{Hub, Redis, WsClient, eventually, frame_type, metric, seq_of};
use serde_json::{Value, json};

use crate::{event, herald, seqs_on, str_field};

/// Nodes on `redis`, with fast heartbeats so a dead link shows quickly.
async fn nodes(redis: &Redis, n: usize) -> Result<Vec<Hub>> {
    let store = redis.store_arg();
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(herald().start(&["--store", &store]).await?);
    }
    Ok(nodes)
}

/// Publishes `n` events numbered `from..from+n` to `topic` through `hub`,
/// one request each.
async fn publish_numbered(hub: &Hub, topic: &str, from: u64, n: u64) -> Result<()> {
    let http = hub.http();
    for i in from..from + n {
        http.publish(&event(topic, "step.progress", json!({ "n": i })))
            .await?;
    }
    Ok(())
}

/// Publishes event `n` on `topic` through `hub` once it answers 200 again
/// (its Redis is coming back), within `limit`; each refused try stored
/// nothing (a refused connection).
async fn publish_when_back(hub: &Hub, topic: &str, n: u64, limit: Duration) -> Result<()> {
    let body = event(topic, "step.progress", json!({ "n": n }));
    post_when_back(hub, "/api/v1/events", &body, limit).await
}

/// Posts `body` to `path` through `hub` once it answers 200 again (its
/// Redis is coming back), within `limit`.
async fn post_when_back(hub: &Hub, path: &str, body: &Value, limit: Duration) -> Result<()> {
    eventually(limit, "posting once Redis is back", || async {
        let reply = hub.http().post(path, body).await?;
        Ok((reply.status == 200).then_some(()))
    })
    .await
}

/// Every `n` in the events received, in arrival order.
fn numbers(frames: &[Value], topic: &str) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| herald_tests::is_event_on(f, topic))
        .filter_map(|f| f["data"]["n"].as_u64())
        .collect()
}

/// Reads events of `topic` until `count` have arrived (other frames kept too).
/// How many times `node` has connected to Redis again.
async fn store_reconnects(node: &Hub) -> Result<f64> {
    let text = node.http().get("/metrics").await?.text;
    metric(&text, "herald_store_reconnects_total").context("herald_store_reconnects_total")
}

/// Waits (bounded) until `node` says it is ready and, with `reconnects`,
/// has connected to Redis again more times than that.
async fn ready_again(node: &Hub, reconnects: Option<f64>) -> Result<()> {
    eventually(Duration::from_secs(20), "the node ready again", || async {
        let ready = node.http().get("/health/ready").await?.status == 200;
        let reconnected = match reconnects {
            Some(before) => store_reconnects(node).await? > before,
            None => true,
        };
        Ok((ready && reconnected).then_some(()))
    })
    .await
}

async fn collect_events(client: &mut WsClient, topic: &str, count: usize) -> Result<Vec<Value>> {
    let mut frames = Vec::new();
    while seqs_on(&frames, topic).len() < count {
        frames.push(client.recv_frame().await.with_context(|| {
            format!(
                "waiting for event {} of {count} on {topic}",
                seqs_on(&frames, topic).len() + 1
            )
        })?);
    }
    Ok(frames)
}

#[tokio::test]
async fn a_client_on_one_node_gets_in_seq_order_what_every_node_published() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let mut client = nodes[0].ws("/ws").await?;
    client.subscribe(&["run:shared"]).await?;
    let per_node = 20;
    let (a, b, c) = tokio::join!(
        publish_numbered(&nodes[0], "run:shared", 0, per_node),
        publish_numbered(&nodes[1], "run:shared", 100, per_node),
        publish_numbered(&nodes[2], "run:shared", 200, per_node),
    );
    a?;
    b?;
    c?;
    let frames = collect_events(&mut client, "run:shared", 3 * per_node as usize).await?;
    let seqs = seqs_on(&frames, "run:shared");
    ensure!(
        seqs == (1..=3 * per_node).collect::<Vec<_>>(),
        "seqs out of order or missing: {seqs:?}"
    );
    let got: BTreeSet<u64> = numbers(&frames, "run:shared").into_iter().collect();
    ensure!(
        got.len() == 3 * per_node as usize,
        "an event came twice or not at all"
    );
    Ok(())
}

/// The `data` of the events `node` retains on `topic` after seq `since`.
async fn stored_data(node: &Hub, topic: &str, since: u64) -> Result<Vec<Value>> {
    let read = node
        .http()
        .get(&format!("/api/v1/topics/{topic}/events?since={since}"))
        .await?;
    let events = read.body["events"]
        .as_array()
        .with_context(|| format!("no events in {}", read.text))?;
    Ok(events.iter().map(|e| e["data"].clone()).collect())
}

#[tokio::test]
async fn the_same_event_id_published_on_two_nodes_at_once_is_stored_once() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[1].ws("/ws").await?;
    client.subscribe(&["run:once"]).await?;
    let mut body = event("run:once", "step.completed", json!({"step": 3}));
    body["id"] = json!("step-3-done");
    let (http_a, http_b) = (nodes[0].http(), nodes[1].http());
    let (first, second) = tokio::join!(http_a.publish(&body), http_b.publish(&body));
    let (first, second) = (first?, second?);
    ensure!(
        first["seq"] == second["seq"],
        "two receipts: {first} {second}"
    );
    // A marker after it: everything before the marker has arrived.
    nodes[0]
        .http()
        .publish(&event("run:once", "step.started", json!({"marker": true})))
        .await?;
    let frames = collect_events(&mut client, "run:once", 2).await?;
    ensure!(seqs_on(&frames, "run:once") == [1, 2], "{frames:?}");
    // The same id with other content is refused, from any node.
    body["data"] = json!({"step": 4});
    let other = nodes[1].http().post("/api/v1/events", &body).await?;
    ensure!(other.status == 409, "{} {}", other.status, other.body);
    // In a batch, the events before it are published, it and those after
    // it are not.
    let batch = json!([
        event("run:once", "step.started", json!({"before": true})),
        body,
        event("run:once", "step.started", json!({"after": true})),
    ]);
    let refused = nodes[0].http().post("/api/v1/events", &batch).await?;
    ensure!(refused.status == 409, "{} {}", refused.status, refused.body);
    ensure!(refused.body["index"] == json!(1), "{}", refused.body);
    let data = stored_data(&nodes[1], "run:once", 2).await?;
    ensure!(data == [json!({"before": true})], "{data:?}");
    // Another topic's events in the batch are published, before the
    // conflict or after it: each topic is its own script.
    let batch = json!([
        event("run:once", "step.started", json!({"before": 2})),
        event("run:twice", "step.started", json!({"before": 2})),
        body,
        event("run:twice", "step.started", json!({"after": 2})),
    ]);
    let refused = nodes[0].http().post("/api/v1/events", &batch).await?;
    ensure!(refused.status == 409, "{} {}", refused.status, refused.body);
    ensure!(refused.body["index"] == json!(2), "{}", refused.body);
    let data = stored_data(&nodes[1], "run:twice", 0).await?;
    ensure!(
        data == [json!({"before": 2}), json!({"after": 2})],
        "{data:?}"
    );
    Ok(())
}

#[tokio::test]
async fn user_messages_and_broadcasts_reach_every_node() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let mut on_a = nodes[0].ws("/ws?user_id=u1").await?;
    let mut on_b = nodes[1].ws("/ws?user_id=u1").await?;
    let mut other = nodes[1].ws("/ws?user_id=u2").await?;
    let message = json!({"event_type": "system.notification", "data": {"text": "hi u1"}});
    nodes[2]
        .http()
        .post("/api/v1/users/u1/messages", &message)
        .await?
        .ok()?;
    for client in [&mut on_a, &mut on_b] {
        let frame = client.recv_until(|f| frame_type(f) == "event").await?;
        ensure!(str_field(&frame, "topic") == "user:u1", "{frame}");
    }
    let broadcast = json!({"event_type": "system.notification", "data": {"text": "all"}});
    nodes[0]
        .http()
        .post("/api/v1/broadcast", &broadcast)
        .await?
        .ok()?;
    for client in [&mut on_a, &mut on_b, &mut other] {
        let frame = client
            .recv_until(|f| frame_type(f) == "event" && str_field(f, "topic") == "global")
            .await?;
        ensure!(frame["data"]["text"] == "all", "{frame}");
    }
    Ok(())
}

#[tokio::test]
async fn a_client_moved_to_another_node_with_since_ends_with_every_seq_exactly_once() -> Result<()>
{
    let redis = Redis::start().await?;
    let mut nodes = nodes(&redis, 2).await?;
    let mut client = nodes[0].ws("/ws").await?;
    client.subscribe(&["run:moving"]).await?;
    publish_numbered(&nodes[1], "run:moving", 0, 10).await?;
    let frames = collect_events(&mut client, "run:moving", 10).await?;
    let mut seen = seqs_on(&frames, "run:moving");
    let checkpoint = *seen.last().context("no event")?;
    nodes[0].kill9().await?;
    // Published while the client has no node.
    publish_numbered(&nodes[1], "run:moving", 10, 10).await?;
    let mut client = nodes[1].ws("/ws").await?;
    let replies = client
        .subscribe_with(
            &["run:moving"],
            json!({"since": {"run:moving": checkpoint}}),
        )
        .await?;
    let mut frames = replies;
    let (complete, before) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    frames.extend(before);
    frames.push(complete);
    publish_numbered(&nodes[1], "run:moving", 20, 5).await?;
    frames.extend(collect_events(&mut client, "run:moving", 5).await?);
    seen.extend(seqs_on(&frames, "run:moving"));
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    ensure!(unique.len() == seen.len(), "a seq came twice: {seen:?}");
    ensure!(
        seen == (1..=25).collect::<Vec<_>>(),
        "not every seq exactly once, in order: {seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_topic_a_node_stopped_following_is_taken_up_afresh_with_no_gap_for_what_it_missed()
-> Result<()> {
    let redis = Redis::start().await?;
    let store = redis.store_arg();
    let args = ["--store", store.as_str(), "--history-size", "5"];
    let (a, b) = (herald().start(&args).await?, herald().start(&args).await?);
    // A delivers run:p under a pattern, then nobody on A follows it any more.
    let mut watcher = a.ws("/ws").await?;
    watcher.subscribe(&["run:*"]).await?;
    publish_numbered(&b, "run:p", 0, 3).await?;
    collect_events(&mut watcher, "run:p", 3).await?;
    watcher.close().await;
    eventually(
        Duration::from_secs(5),
        "A has no connection left",
        || async {
            let reply = a.http().get("/metrics").await?;
            Ok((metric(&reply.text, "herald_connections_active") == Some(0.0)).then_some(()))
        },
    )
    .await?;
    // Meanwhile the history moves on, past what A last delivered.
    publish_numbered(&b, "run:p", 3, 20).await?;
    let mut client = a.ws("/ws").await?;
    let replies = client
        .subscribe_with(&["run:p"], json!({"since": {"run:p": 23}}))
        .await?;
    let (complete, before) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    publish_numbered(&b, "run:p", 23, 1).await?;
    let mut frames: Vec<Value> = replies.into_iter().chain(before).collect();
    frames.push(complete);
    frames.extend(collect_events(&mut client, "run:p", 1).await?);
    let gaps: Vec<&Value> = frames.iter().filter(|f| frame_type(f) == "gap").collect();
    ensure!(gaps.is_empty(), "a gap for seqs the client had: {gaps:?}");
    ensure!(seqs_on(&frames, "run:p") == [24], "{frames:?}");
    Ok(())
}

#[tokio::test]
async fn killed_pubsub_connections_lose_nothing_on_any_node() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.ws("/ws").await?;
        client.subscribe(&["run:kill"]).await?;
        clients.push(client);
    }
    publish_numbered(&nodes[0], "run:kill", 0, 10).await?;
    redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .context("CLIENT KILL")?;
    // Published while the nodes' feeds reconnect.
    publish_numbered(&nodes[1], "run:kill", 10, 20).await?;
    for client in &mut clients {
        let frames = collect_events(client, "run:kill", 30).await?;
        let seqs = seqs_on(&frames, "run:kill");
        ensure!(seqs == (1..=30).collect::<Vec<_>>(), "{seqs:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_redis_restart_without_its_data_is_an_epoch_change_that_clients_are_told() -> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[0].ws("/ws").await?;
    let subscribed = client.subscribe(&["run:restart"]).await?;
    let old_epoch = subscribed[0]["epoch"].clone();
    publish_numbered(&nodes[1], "run:restart", 0, 5).await?;
    collect_events(&mut client, "run:restart", 5).await?;
    redis.restart().await?;
    // Once the nodes are back, publishing starts a new stream.
    publish_when_back(&nodes[1], "run:restart", 100, Duration::from_secs(20)).await?;
    let gap = client
        .recv_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == "run:restart")
        .await?;
    ensure!(
        gap["reason"] == "epoch_changed"
            && gap["to_seq"] == 0
            && gap["epoch"].is_string()
            && gap["epoch"] != old_epoch,
        "the live gap names the new stream: {gap}"
    );
    let next = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(
        seq_of(&next) == Some(1),
        "the new stream starts at 1: {next}"
    );
    // A client resuming with the old stream's checkpoint is told too.
    let mut late = nodes[1].ws("/ws").await?;
    let since = json!({"run:restart": {"seq": 5, "epoch": old_epoch}});
    let frames = late
        .subscribe_with(&["run:restart"], json!({ "since": since }))
        .await?;
    let mut frames = frames;
    let (complete, before) = late
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    frames.extend(before);
    frames.push(complete);
    ensure!(
        frames
            .iter()
            .any(|f| frame_type(f) == "gap" && f["reason"] == "epoch_changed"),
        "{frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn after_a_redis_restart_without_its_data_each_dialect_says_the_history_was_reset()
-> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut aiecs = WsClient::connect_raw(&nodes[0].ws_url("/compat/aiecs")).await?;
    let mut crewai =
        WsClient::connect_raw(&nodes[0].ws_url("/compat/crewai/api/v1/websocket/ws/executions/e1"))
            .await?;
    let mut cmbagent = WsClient::connect_raw(&nodes[0].ws_url("/compat/cmbagent/ws/r1")).await?;
    let topics = ["task:t1", "execution:e1", "run:r1"];
    for topic in topics {
        publish_numbered(&nodes[1], topic, 0, 2).await?;
    }
    redis.restart().await?;
    for topic in topics {
        publish_when_back(&nodes[1], topic, 100, Duration::from_secs(20)).await?;
    }
    let reset = "was reset: its events start again from 1";
    let notices = [
        (&mut aiecs, "error", "message"),
        (&mut crewai, "system.error", "data.message"),
        (&mut cmbagent, "error_occurred", "data.message"),
    ];
    for (client, kind, field) in notices {
        let notice = client
            .recv_until(|f| {
                let kind_of = f.get("type").or_else(|| f.get("event_type"));
                kind_of.and_then(Value::as_str) == Some(kind)
            })
            .await
            .with_context(|| format!("no {kind}"))?;
        let message = field
            .split('.')
            .fold(&notice, |value, key| &value[key])
            .as_str()
            .unwrap_or_default();
        ensure!(
            message.contains(reset) && !message.contains("1..0"),
            "a wiped store is a reset, not events lost on the way: {notice}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_subscribe_redis_cannot_serve_closes_the_connection_1013_and_a_resubscribe_after_it_is_back_resumes()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    publish_numbered(&nodes[0], "run:stalled", 0, 3).await?;
    redis.pause(true).await?;
    let mut client = nodes[0].ws("/ws").await?;
    let since = json!({"run:stalled": {"seq": 1}});
    client
        .send_json(
            &json!({"action": "subscribe", "id": "s1", "topics": ["run:stalled"], "since": since}),
        )
        .await?;
    // Left open, the connection would be subscribed to nothing, and stay so
    // once Redis is back: closed, the client reconnects and resubscribes.
    let closed = client.expect_close().await;
    redis.pause(false).await?;
    let (code, reason) = closed?;
    ensure!(code == 1013, "closed with {code} {reason}");
    let mut again = eventually(
        Duration::from_secs(20),
        "a node that serves the subscribe",
        || async {
            let mut client = nodes[0].ws("/ws").await?;
            let frames = client
                .subscribe_with(&["run:stalled"], json!({ "since": since }))
                .await;
            Ok(frames.is_ok().then_some(client))
        },
    )
    .await?;
    let events = collect_events(&mut again, "run:stalled", 2).await?;
    ensure!(seqs_on(&events, "run:stalled") == [2, 3], "{events:?}");
    Ok(())
}

#[tokio::test]
async fn a_publish_answered_503_while_redis_stalls_is_not_stored_when_it_wakes_up() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let http = nodes[0].http();
    publish_numbered(&nodes[0], "run:stall", 1, 1).await?;
    redis.pause(true).await?;
    let stalled = http
        .post(
            "/api/v1/events",
            &event("run:stall", "step.progress", json!({"n": 2})),
        )
        .await;
    // The node says so at once, not at its next probe.
    let ready = http.get("/health/ready").await;
    redis.pause(false).await?;
    let stalled = stalled?;
    let ready = ready?;
    ensure!(
        ready.status == 503,
        "ready while Redis stalls: {}",
        ready.text
    );
    ensure!(
        stalled.status == 503 && stalled.retry_after.is_some(),
        "{} {}",
        stalled.status,
        stalled.text
    );
    // Redis runs the script queued while it stalled (already in its socket
    // buffer) before a command sent now: past its deadline, it stores
    // nothing, and the producer's retry is the only copy.
    redis.command(&["PING"]).await?;
    publish_numbered(&nodes[0], "run:stall", 2, 1).await?;
    let history = http.get("/api/v1/topics/run:stall/events?since=0").await?;
    let events = history.body["events"].as_array().context("no events")?;
    let ns: Vec<u64> = events
        .iter()
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    ensure!(ns == [1, 2], "{}", history.text);
    Ok(())
}

#[tokio::test]
async fn an_approval_asked_while_redis_stalls_is_answered_503_and_not_stored_when_it_wakes_up()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let http = nodes[0].http();
    // One approval first: Redis then knows the script, and runs it by its
    // hash once it wakes.
    ask(&nodes[0], "u1", "t-before", 600_000).await?;
    redis.pause(true).await?;
    let body = json!({
        "user_id": "u1", "task_id": "t-stall", "step": 1, "timeout_ms": 600_000,
        "step_result": {"step": "s", "message": "retry?", "status": "failed"}
    });
    let stalled = http.post("/api/v1/approvals", &body).await;
    redis.pause(false).await?;
    let stalled = stalled?;
    ensure!(stalled.status == 503, "{} {}", stalled.status, stalled.text);
    // Redis runs the script queued while it stalled before a command sent
    // now: past its deadline, it stores nothing, so a producer that looks
    // before asking again finds nothing to wait for.
    redis.command(&["PING"]).await?;
    let listed = http.get("/api/v1/approvals?task_id=t-stall").await?.ok()?;
    ensure!(
        listed.body["approvals"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{}",
        listed.text
    );
    Ok(())
}

/// What a Herald client (here the Rust one) delivers from `subscriber`:
/// events as `(seq, n)` and gaps as `(0, reason)`, until `done` holds.
async fn client_items_until(
    subscriber: &mut herald_client::Subscriber,
    done: impl Fn(&[(u64, String)]) -> bool,
) -> Result<Vec<(u64, String)>> {
    let mut items = Vec::new();
    let read = async {
        while !done(&items) {
            match subscriber.next().await.context("the subscriber ended")? {
                herald_client::SubscriberItem::Event(event) => {
                    items.push((event.seq, event.data["n"].to_string()));
                }
                herald_client::SubscriberItem::Gap(gap) => {
                    items.push((0, format!("{:?}", gap.reason)));
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .with_context(|| format!("the client delivered only {items:?}"))??;
    Ok(items)
}

#[tokio::test]
async fn a_herald_client_delivers_a_new_stream_from_its_first_seq_after_a_redis_restart_without_its_data()
-> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let mut subscriber = herald_client::Subscriber::builder(nodes[0].ws_url("/ws"))
        .topics(["run:renewed".parse()?])
        .connect()
        .await?;
    let subscribed = async {
        loop {
            match subscriber.next().await {
                Some(herald_client::SubscriberItem::Subscribed(_)) => return Ok(()),
                Some(_) => {}
                None => anyhow::bail!("the subscriber ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .context("no subscribed")??;
    publish_numbered(&nodes[0], "run:renewed", 0, 5).await?;
    client_items_until(&mut subscriber, |items| items.len() == 5).await?;
    redis.restart().await?;
    publish_when_back(&nodes[0], "run:renewed", 100, Duration::from_secs(20)).await?;
    publish_numbered(&nodes[0], "run:renewed", 101, 2).await?;
    // The new stream's seqs 1..=3 are below the old checkpoint (5): kept
    // against it, they would pass for duplicates and never arrive.
    let items = client_items_until(&mut subscriber, |items| items.len() == 4).await?;
    ensure!(
        items
            == [
                (0, "EpochChanged".to_owned()),
                (1, "100".to_owned()),
                (2, "101".to_owned()),
                (3, "102".to_owned()),
            ],
        "{items:?}"
    );
    Ok(())
}

#[tokio::test]
async fn with_redis_stopped_publishes_fail_fast_with_503_and_sockets_stay_open() -> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let node = &nodes[0];
    let mut client = node.ws("/ws").await?;
    client.subscribe(&["run:outage"]).await?;
    redis.stop().await?;
    let started = tokio::time::Instant::now();
    let reply = node
        .http()
        .post(
            "/api/v1/events",
            &event("run:outage", "step.progress", json!({"n": 1})),
        )
        .await?;
    ensure!(reply.status == 503, "{} {}", reply.status, reply.body);
    ensure!(reply.body["code"] == "internal", "{}", reply.body);
    ensure!(reply.retry_after.is_some(), "no Retry-After header");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(10),
        "/health says not ready",
        || async { Ok((node.http().get("/health").await?.status == 503).then_some(())) },
    )
    .await?;
    let ready = node.http().get("/health/ready").await?;
    ensure!(
        ready.status == 503 && str_field(&ready.body, "status") == "store_unavailable",
        "{} {}",
        ready.status,
        ready.text
    );
    ensure!(node.http().get("/health/live").await?.status == 200);
    // The topics it cannot read are not said to be none.
    let topics = node.http().get("/api/v1/topics").await?;
    ensure!(
        topics.status == 503 && topics.body["code"] == "internal",
        "{} {}",
        topics.status,
        topics.text
    );
    let metrics = node.http().get("/metrics").await?.text;
    ensure!(
        metric(&metrics, "herald_engine_up") == Some(0.0),
        "herald_engine_up is not 0 with Redis down"
    );
    // The socket is still there and answering.
    client
        .send_json(&json!({"action": "ping", "id": 1}))
        .await?;
    client.recv_until(|f| frame_type(f) == "pong").await?;
    redis.restart().await?;
    eventually(Duration::from_secs(20), "publishing resumes", || async {
        let reply = node
            .http()
            .post(
                "/api/v1/events",
                &event("run:outage", "step.progress", json!({"n": 2})),
            )
            .await?;
        Ok((reply.status == 200).then_some(()))
    })
    .await?;
    let frame = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(frame["data"]["n"] == 2, "{frame}");
    // Ready again once the node's feed hears everything again.
    eventually(Duration::from_secs(10), "/health says ready", || async {
        Ok((node.http().get("/health").await?.status == 200).then_some(()))
    })
    .await?;
    Ok(())
}

/// Publishes through `node` while Redis takes no write (`refuse` made it
/// so, `accept` undoes it): 503 with `Retry-After` and Redis's reason
/// without the script's insides, the node unready, and both back after.
async fn refused_writes_are_503_and_unready_until_redis_takes_them(
    redis: &Redis,
    node: &Hub,
    refuse: &[&str],
    accept: &[&str],
) -> Result<()> {
    redis.command(refuse).await?;
    // An idle node: its own periodic write finds out.
    eventually(
        Duration::from_secs(10),
        "/health/ready says not ready",
        || async { Ok((node.http().get("/health/ready").await?.status == 503).then_some(())) },
    )
    .await?;
    // Redis may let a script's first run through before it refuses.
    let reply = eventually(Duration::from_secs(5), "a publish refused", || async {
        let reply = node
            .http()
            .post(
                "/api/v1/events",
                &event("run:refused", "step.progress", json!({})),
            )
            .await?;
        Ok((reply.status != 200).then_some(reply))
    })
    .await?;
    ensure!(
        reply.status == 503 && reply.retry_after.is_some() && reply.body["code"] == "internal",
        "{refuse:?}: {} {}",
        reply.status,
        reply.text
    );
    ensure!(!reply.text.contains("script"), "{}", reply.text);
    redis.command(accept).await?;
    publish_when_back(node, "run:refused", 1, Duration::from_secs(10)).await?;
    eventually(
        Duration::from_secs(10),
        "/health/ready says ready",
        || async { Ok((node.http().get("/health/ready").await?.status == 200).then_some(())) },
    )
    .await
}

#[tokio::test]
async fn a_redis_that_takes_no_writes_answers_publishes_503_and_leaves_the_node_unready()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    // At its memory limit (with the noeviction policy the README asks for).
    refused_writes_are_503_and_unready_until_redis_takes_them(
        &redis,
        &nodes[0],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["CONFIG", "SET", "maxmemory", "0"],
    )
    .await?;
    // A replica of a primary it cannot reach, serving its stale data.
    refused_writes_are_503_and_unready_until_redis_takes_them(
        &redis,
        &nodes[0],
        &["REPLICAOF", "127.0.0.1", "1"],
        &["REPLICAOF", "NO", "ONE"],
    )
    .await
}

/// Asks user `user` about task `task` through `hub`; the callback id.
async fn ask(hub: &Hub, user: &str, task: &str, timeout_ms: u64) -> Result<String> {
    let body = json!({
        "user_id": user, "task_id": task, "step": 3, "timeout_ms": timeout_ms,
        "default_proceed": false,
        "step_result": {"step": "train", "message": "retry?", "status": "failed"}
    });
    let reply = hub.http().post("/api/v1/approvals", &body).await?.ok()?;
    Ok(str_field(&reply.body, "callback_id").to_owned())
}

#[tokio::test]
async fn of_two_decisions_on_two_nodes_exactly_one_wins_and_a_waiter_on_a_third_hears_it()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let id = ask(&nodes[0], "u1", "t1", 60_000).await?;
    let waiter_http = nodes[2].http();
    let waiting = format!("/api/v1/approvals/{id}?wait_ms=10000");
    let waiter = waiter_http.get(&waiting);
    let mut deciders = Vec::new();
    for node in &nodes[..2] {
        deciders.push(node.ws("/ws?user_id=u1").await?);
    }
    let confirm = |proceed: bool| json!({"action": "confirm", "id": 9, "callback_id": id, "proceed": proceed});
    let decide = async {
        let (a, b) = deciders.split_at_mut(1);
        let (first, second) = tokio::join!(
            async {
                a[0].send_json(&confirm(true)).await?;
                a[0].recv_until(|f| matches!(frame_type(f), "ack" | "error"))
                    .await
            },
            async {
                b[0].send_json(&confirm(false)).await?;
                b[0].recv_until(|f| matches!(frame_type(f), "ack" | "error"))
                    .await
            },
        );
        Ok::<_, anyhow::Error>((first?, second?))
    };
    let (waited, decided) = tokio::join!(waiter, decide);
    let (first, second) = decided?;
    let kinds = [frame_type(&first), frame_type(&second)];
    ensure!(
        kinds.contains(&"ack") && kinds.contains(&"error"),
        "not exactly one winner: {first} {second}"
    );
    let loser = if frame_type(&first) == "error" {
        &first
    } else {
        &second
    };
    ensure!(loser["code"] == "conflict", "{loser}");
    let winner_proceeds = frame_type(&first) == "ack";
    let waited = waited?.ok()?;
    ensure!(
        waited.body["proceed"] == json!(winner_proceeds),
        "the waiter heard another decision than the winner's: {}",
        waited.body
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_approval_times_out_once_across_nodes() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let mut watcher = nodes[1].ws("/ws").await?;
    watcher.subscribe(&["task:t2"]).await?;
    let id = ask(&nodes[0], "u2", "t2", 300).await?;
    let status = eventually(
        Duration::from_secs(10),
        "the approval times out",
        || async {
            let reply = nodes[2]
                .http()
                .get(&format!("/api/v1/approvals/{id}"))
                .await?;
            let status = str_field(&reply.body, "status").to_owned();
            Ok((status != "pending").then_some(status))
        },
    )
    .await?;
    ensure!(status == "timed_out", "{status}");
    // The decision is stored before it is announced: wait for the
    // announcement, then for a marker published after it, so that a
    // second announcement from another node would be in between.
    watcher
        .recv_collect_until(|f| str_field(f, "event_type") == "approval.resolved")
        .await?;
    nodes[2]
        .http()
        .publish(&event("task:t2", "task.progress", json!({"marker": true})))
        .await?;
    let (_, frames) = watcher
        .recv_collect_until(|f| f["data"]["marker"] == true)
        .await?;
    let again = frames
        .iter()
        .filter(|f| str_field(f, "event_type") == "approval.resolved")
        .count();
    ensure!(again == 0, "approval.resolved again: {frames:?}");
    Ok(())
}

/// `delivered_to` counts the connections able to answer on every node:
/// each node adds its own as it delivers the request. One that reached no
/// one is counted in `herald_approvals_unreached_total` once, when it
/// times out (the node that asked cannot know what the others reach).
#[tokio::test]
async fn every_node_counts_an_approvals_deliveries_and_an_unreached_one_counts_once_at_its_timeout()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut users = Vec::new();
    for node in &nodes {
        users.push(node.ws("/ws?user_id=u1").await?);
    }
    let asked = ask(&nodes[0], "u1", "t1", 60_000).await?;
    for user in &mut users {
        user.recv_until(|f| str_field(f, "event_type") == "approval.requested")
            .await?;
    }
    let delivered_to = || async {
        let reply = nodes[1].http().get("/api/v1/approvals?task_id=t1").await?;
        let record = &reply.body["approvals"][0];
        ensure!(record["callback_id"] == asked.as_str(), "{}", reply.text);
        Ok(record["delivered_to"].as_u64())
    };
    eventually(
        Duration::from_secs(10),
        "both nodes count their delivery",
        || async { Ok(delivered_to().await?.filter(|n| *n >= 2)) },
    )
    .await?;
    ensure!(delivered_to().await? == Some(2), "counted twice");

    let unreached = || async {
        let mut total = 0.0;
        for node in &nodes {
            let text = node.http().get("/metrics").await?.text;
            total += metric(&text, "herald_approvals_unreached_total").unwrap_or(0.0);
        }
        anyhow::Ok(total)
    };
    ensure!(
        unreached().await? == 0.0,
        "an answered approval counted as unreached"
    );
    let lonely = ask(&nodes[0], "u9", "t9", 300).await?;
    eventually(
        Duration::from_secs(10),
        "the unreached approval times out",
        || async {
            let reply = nodes[1]
                .http()
                .get(&format!("/api/v1/approvals/{lonely}"))
                .await?;
            Ok((reply.body["status"] == "timed_out").then_some(()))
        },
    )
    .await?;
    eventually(
        Duration::from_secs(10),
        "it is counted as unreached",
        || async { Ok((unreached().await? >= 1.0).then_some(())) },
    )
    .await?;
    ensure!(unreached().await? == 1.0, "counted more than once");
    Ok(())
}

#[tokio::test]
async fn connections_that_get_broadcasts_and_their_users_messages_without_subscribing_are_told_when_redis_restarts_without_its_data()
-> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut plain = nodes[0].ws("/ws").await?;
    let mut user = nodes[1].ws("/ws?user_id=u1").await?;
    let broadcast = |n: u64| json!({"event_type": "system.notification", "data": {"n": n}});
    for n in 1..=3 {
        nodes[0]
            .http()
            .post("/api/v1/broadcast", &broadcast(n))
            .await?
            .ok()?;
        nodes[1]
            .http()
            .post("/api/v1/users/u1/messages", &broadcast(n))
            .await?
            .ok()?;
    }
    collect_events(&mut plain, "global", 3).await?;
    let mut frames = Vec::new();
    while seqs_on(&frames, "global").len() < 3 || seqs_on(&frames, "user:u1").len() < 3 {
        frames.push(user.recv_frame().await?);
    }
    redis.restart().await?;
    post_when_back(
        &nodes[1],
        "/api/v1/broadcast",
        &broadcast(100),
        Duration::from_secs(20),
    )
    .await?;
    post_when_back(
        &nodes[0],
        "/api/v1/users/u1/messages",
        &broadcast(100),
        Duration::from_secs(20),
    )
    .await?;
    // Each holds seq 3 of both streams it gets (the plain connection only
    // `global`): told of each new stream before its seq 1, once.
    let expected: [(&mut WsClient, &[&str]); 2] = [
        (&mut plain, &["global"]),
        (&mut user, &["global", "user:u1"]),
    ];
    for (client, topics) in expected {
        let new_event =
            |f: &Value, topic: &str| herald_tests::is_event_on(f, topic) && f["data"]["n"] == 100;
        let mut frames = Vec::new();
        while !topics
            .iter()
            .all(|topic| frames.iter().any(|f| new_event(f, topic)))
        {
            frames.push(client.recv_frame().await?);
        }
        for topic in topics {
            let at = frames
                .iter()
                .position(|f| herald_tests::is_event_on(f, topic) && seq_of(f) == Some(1))
                .with_context(|| format!("{topic}: no seq 1 in {frames:?}"))?;
            let gaps: Vec<&Value> = frames[..at]
                .iter()
                .filter(|f| frame_type(f) == "gap" && str_field(f, "topic") == *topic)
                .collect();
            ensure!(
                gaps.len() == 1
                    && gaps[0]["reason"] == "epoch_changed"
                    && gaps[0]["epoch"].is_string()
                    && new_event(&frames[at], topic),
                "{topic}: one epoch_changed gap before the new stream's seq 1: {frames:?}"
            );
        }
    }
    Ok(())
}

/// A subscriber of `topic` on `node` that replayed it from the start up to
/// `last`, and its epoch: its node delivers it nothing live, so its
/// checkpoint comes from `subscribed` and the replay.
async fn replayed_to(node: &Hub, topic: &str, last: u64) -> Result<(WsClient, Value)> {
    let mut client = node.ws("/ws").await?;
    let subscribed = client
        .subscribe_with(&[topic], json!({"since": {topic: 0}}))
        .await?;
    let epoch = subscribed[0]["epoch"].clone();
    let (_, replayed) = client
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    ensure!(
        seqs_on(&replayed, topic) == (1..=last).collect::<Vec<_>>(),
        "{replayed:?}"
    );
    Ok((client, epoch))
}

#[tokio::test]
async fn a_subscriber_whose_checkpoint_came_from_its_replay_is_told_of_the_new_stream_when_redis_restarts_without_its_data()
-> Result<()> {
    let mut redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    publish_numbered(&nodes[1], "run:idle", 0, 3).await?;
    let (mut client, old_epoch) = replayed_to(&nodes[0], "run:idle", 3).await?;
    redis.restart().await?;
    publish_when_back(&nodes[1], "run:idle", 100, Duration::from_secs(20)).await?;
    publish_numbered(&nodes[1], "run:idle", 101, 1).await?;
    let (gap, before) = client
        .recv_collect_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == "run:idle")
        .await?;
    ensure!(
        seqs_on(&before, "run:idle").is_empty()
            && gap["reason"] == "epoch_changed"
            && gap["to_seq"] == 0
            && gap["epoch"].is_string()
            && gap["epoch"] != old_epoch,
        "told of the new stream before any of its events: {gap} after {before:?}"
    );
    let frames = collect_events(&mut client, "run:idle", 2).await?;
    ensure!(
        seqs_on(&frames, "run:idle") == [1, 2] && numbers(&frames, "run:idle") == [100, 101],
        "the new stream from its first seq: {frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_subscriber_whose_checkpoint_came_from_its_replay_is_told_of_an_older_snapshot_and_misses_no_event_stored_since()
-> Result<()> {
    let mut redis = Redis::start_persistent().await?;
    let nodes = nodes(&redis, 2).await?;
    publish_numbered(&nodes[1], "run:idle", 0, 5).await?;
    redis.save().await?;
    publish_numbered(&nodes[1], "run:idle", 5, 5).await?;
    let (mut client, _) = replayed_to(&nodes[0], "run:idle", 10).await?;
    // Back with seqs 1..5 only, from a snapshot more than 2 s older than
    // the restart (see the loading test).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    redis.restart().await?;
    // Every node ready again (the check is done) before the publishes, all
    // of which the subscriber must get.
    for node in &nodes {
        ready_again(node, None).await?;
    }
    publish_numbered(&nodes[1], "run:idle", 100, 7).await?;
    let (gap, before) = client
        .recv_collect_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == "run:idle")
        .await?;
    ensure!(
        seqs_on(&before, "run:idle").is_empty()
            && gap["reason"] == "epoch_changed"
            && gap["to_seq"] == 5
            && gap["epoch"].is_string(),
        "the restored copy of what it had is named by the gap: {gap} after {before:?}"
    );
    let frames = collect_events(&mut client, "run:idle", 7).await?;
    ensure!(
        seqs_on(&frames, "run:idle") == (6..13).collect::<Vec<_>>()
            && numbers(&frames, "run:idle") == (100..107).collect::<Vec<_>>(),
        "every event stored since, past the restored copy: {frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_redis_restored_from_an_older_snapshot_hands_out_no_seq_twice_under_one_epoch()
-> Result<()> {
    let mut redis = Redis::start_persistent().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[0].ws("/ws").await?;
    let subscribed = client.subscribe(&["run:older", "run:steady"]).await?;
    let epoch = subscribed[0]["epoch"].clone();
    publish_numbered(&nodes[1], "run:older", 0, 5).await?;
    // A stream the snapshot holds whole is checked in the same round trip
    // and keeps its epoch.
    publish_numbered(&nodes[1], "run:steady", 0, 3).await?;
    redis.save().await?;
    publish_numbered(&nodes[1], "run:older", 5, 5).await?;
    collect_events(&mut client, "run:older", 10).await?;
    // Back with seqs 1..5 only, from a snapshot more than 2 s older than
    // the restart (see the loading test above).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    redis.restart().await?;
    // The live subscriber is told, and then gets the new stream past the
    // copy of what it had.
    past_the_restored_copy(&nodes[1], &mut client, "run:older").await?;
    publish_numbered(&nodes[1], "run:steady", 3, 1).await?;
    let (steady, before) = client
        .recv_collect_until(|f| frame_type(f) == "event" && str_field(f, "topic") == "run:steady")
        .await?;
    ensure!(
        seq_of(&steady) == Some(4)
            && !before
                .iter()
                .any(|f| frame_type(f) == "gap" && str_field(f, "topic") == "run:steady"),
        "the whole stream goes on under its epoch: {steady} after {before:?}"
    );
    // A client resuming from seq 10 of the first epoch is told too.
    let mut late = nodes[1].ws("/ws").await?;
    let since = json!({"run:older": {"seq": 10, "epoch": epoch}});
    let mut frames = late
        .subscribe_with(&["run:older"], json!({ "since": since }))
        .await?;
    let (complete, before) = late
        .recv_collect_until(|f| frame_type(f) == "replay_complete")
        .await?;
    frames.extend(before);
    frames.push(complete);
    ensure!(
        frames
            .iter()
            .any(|f| frame_type(f) == "gap" && f["reason"] == "epoch_changed"),
        "{frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_node_is_not_ready_while_redis_loads_its_data_and_then_tells_clients_of_the_older_copy()
-> Result<()> {
    let mut redis = Redis::start_persistent().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[0].ws("/ws").await?;
    client.subscribe(&["run:loading"]).await?;
    publish_numbered(&nodes[1], "run:loading", 0, 5).await?;
    redis.fill(3000).await?;
    redis.save().await?;
    publish_numbered(&nodes[1], "run:loading", 5, 5).await?;
    collect_events(&mut client, "run:loading", 10).await?;
    let http = nodes[0].http();
    ensure!(http.get("/health/ready").await?.status == 200);
    // The snapshot is more than 2 s older than the restart, as a periodic
    // one is: the nodes tell its events apart from later ones by the time
    // they were stored (Redis's uptime is in whole seconds).
    tokio::time::sleep(Duration::from_millis(3000)).await;

    // Back with seqs 1..5, which it takes seconds to load: the node's feed
    // reconnects meanwhile (Redis answers TIME and PUBLISH, not reads).
    redis.restart_loading_slowly().await?;
    eventually(Duration::from_secs(10), "the node unready", || async {
        Ok((http.get("/health/ready").await?.status == 503).then_some(()))
    })
    .await?;
    let mut checked_while_loading = 0;
    while redis.loading().await? {
        let ready = http.get("/health/ready").await?.status;
        if redis.loading().await? {
            ensure!(ready == 503, "ready ({ready}) while Redis loads its data");
            checked_while_loading += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        checked_while_loading > 0,
        "Redis loaded before it was checked"
    );
    ready_again(&nodes[0], None).await?;

    // The older copy was compared once loaded: the subscriber is told, and
    // gets the new stream past the copy of what it had, not seqs 6.. under
    // the epoch it holds.
    past_the_restored_copy(&nodes[1], &mut client, "run:loading").await
}

/// After Redis came back with a copy of `topic` holding seqs 1..=5 of the
/// 10 `client` had: publishes event 100 through `node` once Redis takes
/// it, and checks that `client` is told `epoch_changed` `1..5` naming the
/// new stream, then gets seq 6 (event 100), not the copy's events again.
async fn past_the_restored_copy(node: &Hub, client: &mut WsClient, topic: &str) -> Result<()> {
    publish_when_back(node, topic, 100, Duration::from_secs(20)).await?;
    let gap = client
        .recv_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == topic)
        .await?;
    ensure!(
        gap["reason"] == "epoch_changed" && gap["to_seq"] == 5 && gap["epoch"].is_string(),
        "the restored copy of what it had is named by the gap: {gap}"
    );
    let next = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(
        seq_of(&next) == Some(6) && next["data"]["n"] == 100,
        "the new stream past the restored copy: {next}"
    );
    Ok(())
}

#[tokio::test]
async fn a_node_that_learns_from_another_node_of_a_stream_rebased_after_an_older_snapshot_does_not_deliver_the_restored_copy_again()
-> Result<()> {
    let topic = "run:rebased";
    let mut redis = Redis::start_persistent().await?;
    let nodes = nodes(&redis, 2).await?;
    let (x, y) = (&nodes[0], &nodes[1]);
    let mut on_x = x.ws("/ws").await?;
    on_x.subscribe(&[topic]).await?;
    let mut on_y = y.ws("/ws").await?;
    on_y.subscribe(&[topic]).await?;
    publish_numbered(y, topic, 0, 5).await?;
    collect_events(&mut on_x, topic, 5).await?;
    collect_events(&mut on_y, topic, 5).await?;
    redis.save().await?;
    // X stops hearing Redis (paused, its feed's connection killed) and
    // never hears of seq 6, which Y delivers: X last delivered exactly
    // what the snapshot holds, Y one more.
    let x_reconnects = store_reconnects(x).await?;
    x.signal("STOP").await?;
    let resumed = async {
        redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .await
            .context("CLIENT KILL")?;
        publish_numbered(y, topic, 5, 1).await?;
        collect_events(&mut on_y, topic, 1).await?;
        // The snapshot is more than 2 s older than the restart (see the
        // loading test).
        tokio::time::sleep(Duration::from_millis(3000)).await;
        // Y paused across the restart: X compares first and finds the
        // copy it delivered, under the same epoch, and Y then rebases it.
        y.signal("STOP").await?;
        let restarted = redis.restart().await;
        x.signal("CONT").await?;
        restarted?;
        ready_again(x, Some(x_reconnects)).await?;
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, neither node is left paused.
    let _ = x.signal("CONT").await;
    y.signal("CONT").await?;
    resumed?;
    let gap = on_y
        .recv_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == topic)
        .await?;
    ensure!(
        gap["reason"] == "epoch_changed" && gap["to_seq"] == 5,
        "Y rebases the stream: {gap}"
    );
    // X hears of the new stream from its next announcement: the restored
    // copy of what it had (1..5, the same events) is named, not sent again.
    past_the_restored_copy(y, &mut on_x, topic).await
}

#[tokio::test]
async fn events_published_right_after_a_restore_from_an_older_snapshot_are_not_taken_for_the_old_stream()
-> Result<()> {
    let mut redis = Redis::start_persistent().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[0].ws("/ws").await?;
    client.subscribe(&["run:restored"]).await?;
    publish_numbered(&nodes[1], "run:restored", 0, 5).await?;
    // The snapshot holds seqs 1..=5; the nodes deliver up to 10.
    redis.save().await?;
    publish_numbered(&nodes[1], "run:restored", 5, 5).await?;
    collect_events(&mut client, "run:restored", 10).await?;
    redis.stop().await?;
    // The feeds' reconnection backoff grows to its cap meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.restart().await?;
    // At once, before the feeds are back: more events than the 5 seqs lost,
    // so the restored stream passes the seq the nodes delivered.
    for n in 100..110 {
        publish_when_back(&nodes[1], "run:restored", n, Duration::from_secs(5)).await?;
    }
    let gap = client
        .recv_until(|f| frame_type(f) == "gap" && str_field(f, "topic") == "run:restored")
        .await?;
    ensure!(gap["reason"] == "epoch_changed", "{gap}");
    // The new stream's first seqs are the restored copy of events 0..5,
    // which the subscriber had: it gets what was published since, from seq 6.
    let frames = collect_events(&mut client, "run:restored", 10).await?;
    ensure!(
        numbers(&frames, "run:restored") == (100..110).collect::<Vec<_>>()
            && seqs_on(&frames, "run:restored") == (6..16).collect::<Vec<_>>(),
        "the new stream past the restored copy: {frames:?}"
    );
    Ok(())
}

#[tokio::test]
async fn every_node_lists_the_nodes_sharing_its_redis() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let listed = eventually(Duration::from_secs(10), "three nodes listed", || async {
        let reply = nodes[2].http().get("/api/v1/nodes").await?.ok()?;
        let listed = reply.body["nodes"].as_array().map_or(0, Vec::len);
        Ok((listed == 3).then_some(reply.body))
    })
    .await?;
    let me = str_field(&listed, "node");
    ensure!(
        listed["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["node"] == me)),
        "the answering node lists itself: {listed}"
    );
    Ok(())
}

#[tokio::test]
async fn every_nodes_status_counts_an_approval_asked_on_any_node_at_once() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    ask(&nodes[0], "u1", "t1", 600_000).await?;
    // Read right away: the nodes' periodic look at Redis (every 2 s) has
    // not come yet.
    for node in &nodes {
        let status = node.http().get("/api/v1/status").await?.ok()?;
        ensure!(status.body["pending_approvals"] == 1, "{}", status.text);
        let aiecs = node.http().get("/compat/aiecs/status").await?.ok()?;
        ensure!(aiecs.body["pending_callbacks"] == 1, "{}", aiecs.text);
    }
    Ok(())
}

/// The id `node` gives itself in `GET /api/v1/nodes`.
async fn node_id(node: &Hub) -> Result<String> {
    let reply = node.http().get("/api/v1/nodes").await?.ok()?;
    Ok(str_field(&reply.body, "node").to_owned())
}

#[tokio::test]
async fn any_node_lists_finds_and_disconnects_a_connection_another_node_holds() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 3).await?;
    let holder = node_id(&nodes[1]).await?;
    let mut client = nodes[1].ws("/ws").await?;
    client.subscribe(&["run:held"]).await?;
    let id = client.session_id();
    let http = nodes[0].http();

    let list = http.get("/api/v1/connections").await?.ok()?;
    let listed = list.body["connections"]
        .as_array()
        .and_then(|all| all.iter().find(|c| str_field(c, "id") == id))
        .with_context(|| format!("not listed: {}", list.text))?;
    ensure!(str_field(listed, "node") == holder, "{listed}");
    ensure!(
        list.body["active_connections"] == 1
            && list.body["subscription_counts"]["run:held"] == 1
            && list.body["partial"] == false,
        "{}",
        list.text
    );
    let status = http.get("/api/v1/status").await?.ok()?;
    ensure!(
        status.body["active_connections"] == 1 && status.body["partial"] == false,
        "{}",
        status.text
    );
    let one = nodes[2]
        .http()
        .get(&format!("/api/v1/connections/{id}"))
        .await?
        .ok()?;
    ensure!(str_field(&one.body, "node") == holder, "{}", one.text);

    http.delete(&format!("/api/v1/connections/{id}"))
        .await?
        .ok()?;
    let (code, _) = client.expect_close().await?;
    ensure!(code == 4500, "closed with {code}");
    let missing = http.get("/api/v1/connections/no-such-connection").await?;
    ensure!(missing.status == 404, "{}", missing.text);
    Ok(())
}

#[tokio::test]
async fn with_a_node_that_does_not_answer_the_admin_api_says_its_answer_is_partial_within_a_second_or_so()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let _client = nodes[0].ws("/ws").await?;
    nodes[1].signal("STOP").await?;
    let http = nodes[0].http();
    let started = std::time::Instant::now();
    let list = http.get("/api/v1/connections").await;
    let elsewhere = http
        .get("/api/v1/connections/held-by-the-stopped-node")
        .await;
    let status = http.get("/api/v1/status").await;
    let took = started.elapsed();
    nodes[1].signal("CONT").await?;
    let (list, elsewhere, status) = (list?, elsewhere?, status?);
    // The node's own connections, and a word that others may be missing.
    ensure!(
        list.body["partial"] == true && list.body["active_connections"] == 1,
        "{}",
        list.text
    );
    // Not found where it looked, but it could not look everywhere: not a 404.
    ensure!(
        elsewhere.status == 503,
        "{} {}",
        elsewhere.status,
        elsewhere.text
    );
    ensure!(
        status.body["active_connections"] == 1 && status.body["partial"] == true,
        "{}",
        status.text
    );
    ensure!(
        took < Duration::from_secs(5),
        "three admin calls took {took:?}"
    );
    Ok(())
}

/// `herald_events_published_total` of `node`.
async fn published_count(node: &Hub) -> Result<f64> {
    let text = node.http().get("/metrics").await?.ok()?.text;
    metric(&text, "herald_events_published_total").context("no herald_events_published_total")
}

#[tokio::test]
async fn an_event_counts_as_published_on_the_node_it_was_published_through_only() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut watchers = vec![nodes[0].ws("/ws").await?, nodes[1].ws("/ws").await?];
    for watcher in &mut watchers {
        watcher.subscribe(&["run:counted"]).await?;
    }
    let before = [
        published_count(&nodes[0]).await?,
        published_count(&nodes[1]).await?,
    ];
    publish_numbered(&nodes[0], "run:counted", 0, 5).await?;
    for watcher in &mut watchers {
        collect_events(watcher, "run:counted", 5).await?;
    }
    let after = [
        published_count(&nodes[0]).await?,
        published_count(&nodes[1]).await?,
    ];
    // Summed over the nodes, the counts are what was published.
    ensure!(
        after[0] - before[0] == 5.0 && after[1] - before[1] == 0.0,
        "before {before:?}, after {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_disconnect_answered_503_because_its_node_was_stopped_is_not_carried_out_when_it_wakes()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client = nodes[1].ws("/ws").await?;
    let id = client.session_id().to_owned();
    nodes[1].signal("STOP").await?;
    let refused = nodes[0]
        .http()
        .delete(&format!("/api/v1/connections/{id}"))
        .await;
    // Woken once the asker has answered: the question is heard late.
    nodes[1].signal("CONT").await?;
    let refused = refused?;
    ensure!(refused.status == 503, "{} {}", refused.status, refused.text);

    // Questions are answered in the order heard: once a later one is
    // answered, the stale disconnect has been heard and dropped.
    eventually(
        Duration::from_secs(10),
        "a complete connections list",
        || async {
            let list = nodes[0].http().get("/api/v1/connections").await?.ok()?;
            Ok((list.body["partial"] == false).then_some(list))
        },
    )
    .await
    .and_then(|list| {
        let listed = list.body["connections"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| str_field(c, "id") == id));
        ensure!(listed, "{}", list.text);
        Ok(())
    })?;
    // Still open: it answers a subscribe, where a closed one would read 4500.
    client.subscribe(&["run:still-open"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_crewai_client_on_one_node_is_found_and_disconnected_through_another() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut client =
        WsClient::connect_raw(&nodes[1].ws_url("/compat/crewai/api/v1/websocket/ws/executions/e1"))
            .await?;
    let hello = client
        .recv_until(|f| f["event_type"] == "connection.established")
        .await?;
    let id = str_field(&hello["data"], "client_id").to_owned();
    let admin = "/compat/crewai/api/v1/websocket";
    let http = nodes[0].http();
    let found = http.get(&format!("{admin}/connections/{id}")).await?;
    ensure!(found.status == 200, "{}", found.text);
    let all = http.get(&format!("{admin}/connections")).await?.ok()?;
    ensure!(all.body["data"]["active_connections"] == 1, "{}", all.text);
    let count = http.get("/compat/aiecs/connection_count").await?.ok()?;
    ensure!(count.body == 1, "{}", count.text);
    http.post(&format!("{admin}/disconnect/{id}"), &json!({}))
        .await?
        .ok()?;
    let (code, _) = client.expect_close().await?;
    ensure!(code == 4500, "closed with {code}");
    Ok(())
}

#[tokio::test]
async fn every_node_lists_the_topics_published_on_any_node() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let mut keyed = event("run:listed", "step.completed", json!({"step": 1}));
    keyed["key"] = json!("step-1");
    nodes[0].http().publish(&keyed).await?;
    publish_numbered(&nodes[0], "run:listed", 0, 2).await?;
    let reply = nodes[1].http().get("/api/v1/topics").await?.ok()?;
    let topics = reply.body["topics"].as_array().context("topics")?;
    let listed = topics
        .iter()
        .find(|t| str_field(t, "topic") == "run:listed")
        .with_context(|| format!("not listed: {}", reply.text))?;
    ensure!(listed["seq"] == 3 && listed["retained"] == 3, "{listed}");
    ensure!(listed["snapshot_keys"] == 1, "{listed}");
    ensure!(listed["last_event"]["seq"] == 3, "{listed}");
    Ok(())
}

#[tokio::test]
async fn any_node_lists_topics_under_a_pattern_most_recently_published_first() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    crate::topics_are_listed_under_a_pattern_by_name_or_most_recent_first(&nodes[0], &nodes[1])
        .await
}

#[tokio::test]
async fn topics_whose_keys_expired_leave_the_topic_index_and_their_kind_the_kinds() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    publish_numbered(&nodes[0], "run:live", 0, 1).await?;
    // What a topic last published on long ago leaves behind once its keys
    // expired: an index entry, and its kind.
    redis
        .command(&["ZADD", "herald:topics:run", "1", "run:expired"])
        .await?;
    redis
        .command(&["ZADD", "herald:topics:old", "1", "old:expired"])
        .await?;
    redis.command(&["SADD", "herald:kinds", "old"]).await?;
    eventually(Duration::from_secs(10), "the index pruned", || async {
        let expired = redis
            .number(&["ZSCORE", "herald:topics:run", "run:expired"])
            .await?;
        let kind = redis.number(&["SISMEMBER", "herald:kinds", "old"]).await?;
        Ok((expired.is_none() && kind == Some(0.0)).then_some(()))
    })
    .await?;
    let live = redis
        .number(&["ZSCORE", "herald:topics:run", "run:live"])
        .await?;
    ensure!(live.is_some(), "the live topic left the index");
    let status = nodes[0].http().get("/api/v1/status").await?;
    ensure!(status.body["topics"] == 1, "{}", status.text);
    Ok(())
}

#[tokio::test]
async fn a_draining_nodes_clients_get_a_retry_hint_the_others_only_the_notice_and_they_resume_on_another_node()
-> Result<()> {
    let redis = Redis::start().await?;
    let store = redis.store_arg();
    let leaving = herald()
        .start(&["--store", &store, "--drain-window", "1s"])
        .await?;
    let staying = herald().start(&["--store", &store]).await?;
    let mut here = leaving.ws("/ws").await?;
    let epoch = here.subscribe(&["run:move"]).await?[0]["epoch"].clone();
    let mut there = staying.ws("/ws").await?;
    there.subscribe(&["global"]).await?;
    publish_numbered(&staying, "run:move", 1, 3).await?;
    let before = collect_events(&mut here, "run:move", 3).await?;
    let last = seq_of(before.last().context("no event")?);

    leaving.sigterm().await?;
    here.timeout = Duration::from_secs(10);
    let notice = here
        .recv_until(|f| herald_tests::is_event_on(f, "global"))
        .await?;
    ensure!(
        str_field(&notice, "event_type") == "system.shutdown"
            && notice["data"]["retry_after_ms"].is_u64(),
        "{notice}"
    );
    let (code, _) = here.expect_close().await?;
    ensure!(code == 1001, "closed with {code}");
    // The other node's client gets the notice as stored, without a hint,
    // so `global` has no hole there, and it stays connected.
    let told = there
        .recv_until(|f| herald_tests::is_event_on(f, "global"))
        .await?;
    ensure!(
        str_field(&told, "event_type") == "system.shutdown"
            && seq_of(&told) == seq_of(&notice)
            && told["data"].get("retry_after_ms").is_none(),
        "the node that stays sent {told}"
    );
    there
        .send_json(&json!({"action": "ping", "id": "still"}))
        .await?;
    there.recv_until(|f| frame_type(f) == "pong").await?;
    // The notice is in the shared history once, without anyone's hint, so
    // a replay of `global` sends nobody away.
    let history = staying
        .http()
        .get("/api/v1/topics/global/events?since=0")
        .await?;
    let stored: Vec<&Value> = history.body["events"]
        .as_array()
        .context("no events")?
        .iter()
        .filter(|e| e["event_type"] == "system.shutdown")
        .collect();
    ensure!(stored.len() == 1, "{}", history.text);
    ensure!(
        stored[0]["data"].get("retry_after_ms").is_none(),
        "{}",
        history.text
    );

    // What it missed meanwhile comes on the node that stays, from `since`.
    publish_numbered(&staying, "run:move", 4, 2).await?;
    let mut moved = staying.ws("/ws").await?;
    moved
        .subscribe_with(
            &["run:move"],
            json!({"since": {"run:move": {"seq": last, "epoch": epoch}}}),
        )
        .await?;
    let after = collect_events(&mut moved, "run:move", 2).await?;
    ensure!(numbers(&after, "run:move") == [4, 5], "{after:?}");
    Ok(())
}

/// The status of approval `id` as `hub` reports it.
async fn approval_status(hub: &Hub, id: &str) -> Result<String> {
    let reply = hub.http().get(&format!("/api/v1/approvals/{id}")).await?;
    Ok(str_field(&reply.body, "status").to_owned())
}

#[tokio::test]
async fn approvals_due_while_redis_stalled_time_out_once_it_is_back_and_a_late_answer_loses()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let mut user = nodes[0].ws("/ws?user_id=u1").await?;
    let answered = ask(&nodes[0], "u1", "t1", 1000).await?;
    let unanswered = ask(&nodes[0], "u1", "t2", 1000).await?;
    redis.pause(true).await?;
    // At their deadline the node's claim goes unanswered.
    eventually(
        Duration::from_secs(15),
        "the claim of the expired approvals fails",
        || {
            let log = nodes[0].stderr();
            async move {
                Ok(log
                    .contains("could not read expired approvals")
                    .then_some(()))
            }
        },
    )
    .await?;
    redis.pause(false).await?;
    // An answer after the deadline loses to the timeout.
    let confirm =
        json!({"action": "confirm", "id": "late", "callback_id": answered, "proceed": true});
    user.send_json(&confirm).await?;
    let reply = user.recv_until(|f| str_field(f, "ref") == "late").await?;
    ensure!(
        frame_type(&reply) == "error" && reply["code"] == "conflict",
        "a late answer: {reply}"
    );
    for id in [&answered, &unanswered] {
        eventually(
            Duration::from_secs(15),
            "the approval times out",
            || async { Ok((approval_status(&nodes[0], id).await? == "timed_out").then_some(())) },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_approval_stored_before_the_task_sets_is_cancelled_with_its_task() -> Result<()> {
    let redis = Redis::start().await?;
    let earlier = nodes(&redis, 1).await?;
    let id = ask(&earlier[0], "u1", "t7", 60_000).await?;
    // As a release without the tasks' sets left it.
    redis
        .command(&["DEL", "herald:{approvals}:task:t7"])
        .await?;
    drop(earlier);
    let nodes = nodes(&redis, 1).await?;
    let mut user = nodes[0].ws("/ws?user_id=u1").await?;
    user.send_json(&json!({"action": "cancel", "id": "c", "task_id": "t7"}))
        .await?;
    let reply = user.recv_until(|f| str_field(f, "ref") == "c").await?;
    ensure!(frame_type(&reply) == "ack", "{reply}");
    ensure!(
        approval_status(&nodes[0], &id).await? == "cancelled",
        "the earlier approval was not cancelled with its task"
    );
    Ok(())
}

/// The event types stored on `topic`, oldest first.
async fn event_types_on(hub: &Hub, topic: &str) -> Result<Vec<String>> {
    let history = hub
        .http()
        .get(&format!("/api/v1/topics/{topic}/events?since=0"))
        .await?;
    let events = history.body["events"].as_array().context("no events")?;
    Ok(events
        .iter()
        .map(|e| str_field(e, "event_type").to_owned())
        .collect())
}

#[tokio::test]
async fn a_decision_a_node_stored_but_did_not_publish_is_published_by_a_node_once() -> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let id = ask(&nodes[0], "u1", "t1", 60_000).await?;
    // As a node that stored the decision and stopped before publishing it
    // leaves it.
    let key = format!("herald:{{approvals}}:a:{id}");
    redis
        .command(&[
            "HSET",
            &key,
            "status",
            "approved",
            "proceed",
            "1",
            "feedback",
            "",
            "decided_by",
            "=u1",
            "decided_at",
            "1",
        ])
        .await?;
    redis
        .command(&["ZREM", "herald:{approvals}:pending", &id])
        .await?;
    redis
        .command(&["ZADD", "herald:{approvals}:unannounced", "0", &id])
        .await?;
    for topic in ["task:t1", "user:u1"] {
        eventually(
            Duration::from_secs(15),
            "the stored decision is published",
            || async {
                let types = event_types_on(&nodes[0], topic).await?;
                Ok((types == ["approval.requested", "approval.resolved"]).then_some(()))
            },
        )
        .await?;
    }
    let owed = redis
        .command(&["ZSCORE", "herald:{approvals}:unannounced", &id])
        .await?;
    ensure!(format!("{owed:?}") == "nil", "still owed: {owed:?}");
    ensure!(approval_status(&nodes[0], &id).await? == "approved");
    Ok(())
}

/// Stores in Redis, as a node's create script does, a copy of approval
/// `like` under the id `id` on task `task`, whose question no node
/// publishes: what a node leaves behind when it dies (or Redis's reply to
/// it is lost) between storing a request and publishing its question. The
/// keys are those of `core/broker/redis/keys.rs`.
async fn store_unpublished_copy(redis: &Redis, like: &str, id: &str, task: &str) -> Result<()> {
    let stored = redis
        .text(&["HGET", &format!("herald:{{approvals}}:a:{like}"), "req"])
        .await?
        .context("no stored request")?;
    let mut request: Value = serde_json::from_str(&stored)?;
    request["callback_id"] = json!(id);
    request["task_id"] = json!(task);
    let expires_at = request["expires_at"].as_u64().context("no expires_at")?;
    let created_at = expires_at.saturating_sub(600_000);
    let script = include_str!("../../crates/server/src/core/broker/redis/lua/approval_create.lua");
    let (approval, task_set) = (
        format!("herald:{{approvals}}:a:{id}"),
        format!("herald:{{approvals}}:task:{task}"),
    );
    let (body, created_at, expires_at) = (
        request.to_string(),
        created_at.to_string(),
        expires_at.to_string(),
    );
    redis
        .command(&[
            "EVAL",
            script,
            "6",
            &approval,
            "herald:{approvals}:pending",
            "herald:{approvals}:claimed",
            "herald:{approvals}:created",
            &task_set,
            "herald:{approvals}:unannounced",
            id,
            &body,
            "u1",
            task,
            &created_at,
            &expires_at,
            "10000",
            "herald:approvals",
            "0",
        ])
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_approval_stored_in_redis_whose_question_was_never_published_is_withdrawn() -> Result<()>
{
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 1).await?;
    let asked = ask(&nodes[0], "u1", "t8", 600_000).await?;
    let orphan = "0f8a7c2e-5d1b-4c3a-9e6f-2b7d4a1c8e90";
    store_unpublished_copy(&redis, &asked, orphan, "t9").await?;
    ensure!(approval_status(&nodes[0], orphan).await? == "pending");
    // Nobody was asked, so nobody waits on it: it is withdrawn, not left to
    // time out to its default.
    eventually(
        Duration::from_secs(60),
        "the approval nobody was asked is withdrawn",
        || async { Ok((approval_status(&nodes[0], orphan).await? == "cancelled").then_some(())) },
    )
    .await?;
    ensure!(event_types_on(&nodes[0], "task:t9").await? == ["approval.resolved"]);
    // A request asked and published as usual owes nothing: it is left alone.
    ensure!(approval_status(&nodes[0], &asked).await? == "pending");
    Ok(())
}

#[tokio::test]
async fn subscribing_to_topics_nobody_publishes_to_stores_nothing_in_redis_and_their_first_event_keeps_the_epoch_read()
-> Result<()> {
    let redis = Redis::start().await?;
    let hub = herald().start(&["--store", &redis.store_arg()]).await?;
    let mut client = hub.ws("/ws").await?;
    let topics: Vec<String> = (0..200).map(|n| format!("run:quiet-{n}")).collect();
    client
        .send_json(&json!({"action": "subscribe", "id": 1, "topics": topics}))
        .await?;
    let mut given = None;
    loop {
        let frame = client.recv_frame().await?;
        if frame_type(&frame) == "subscribed" && frame["topic"] == json!("run:quiet-7") {
            given = Some(frame["epoch"].clone());
        }
        if frame_type(&frame) == "ack" {
            break;
        }
    }
    let given = given.context("no subscribed frame for run:quiet-7")?;
    let stored = redis
        .number(&["EVAL", "return #redis.call('KEYS', '*quiet*')", "0"])
        .await?;
    ensure!(stored == Some(0.0), "keys of topics only read: {stored:?}");
    let seq = hub
        .http()
        .publish_simple("run:quiet-7", "state.changed", json!({}))
        .await?;
    let event = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(seq == 1 && event["seq"] == json!(1), "{event}");
    let read = hub
        .http()
        .get("/api/v1/topics/run:quiet-7/events?since=0")
        .await?;
    ensure!(read.body["epoch"] == given, "{} after {given}", read.text);
    Ok(())
}

#[tokio::test]
async fn a_subscriber_read_under_a_genesis_that_expired_hears_of_the_new_stream_before_its_first_event()
-> Result<()> {
    let redis = Redis::start().await?;
    let hub = herald().start(&["--store", &redis.store_arg()]).await?;
    let mut client = hub.ws("/ws?topics=run:quiet").await?;
    let subscribed = client.recv_until(|f| frame_type(f) == "subscribed").await?;
    let given = subscribed["epoch"].clone();
    // What the genesis key's expiry does, 12 × the history age later.
    redis.command(&["DEL", "herald:genesis"]).await?;
    hub.http()
        .publish_simple("run:quiet", "state.changed", json!({}))
        .await?;
    let gap = client.recv_frame().await?;
    ensure!(
        frame_type(&gap) == "gap"
            && gap["reason"] == json!("epoch_changed")
            && gap["from_seq"] == json!(1)
            && gap["to_seq"] == json!(0)
            && gap["epoch"].is_string()
            && gap["epoch"] != given,
        "{gap} after the epoch {given}"
    );
    let event = client.recv_frame().await?;
    ensure!(
        frame_type(&event) == "event" && event["seq"] == json!(1),
        "{event}"
    );
    let read = hub
        .http()
        .get("/api/v1/topics/run:quiet/events?since=0")
        .await?;
    ensure!(
        read.body["epoch"] == gap["epoch"],
        "{} after {gap}",
        read.text
    );
    Ok(())
}

#[tokio::test]
async fn a_feed_that_reconnects_sends_a_late_subscriber_nothing_stored_before_it_subscribed()
-> Result<()> {
    let redis = Redis::start().await?;
    let nodes = nodes(&redis, 2).await?;
    let (quiet, busy) = (&nodes[0], &nodes[1]);
    // Stored through the other node before anyone on `quiet` subscribed:
    // `quiet` delivered none of it and holds no position of these topics.
    publish_numbered(busy, "run:early", 0, 3).await?;
    busy.http()
        .post(
            "/api/v1/users/u1/messages",
            &json!({"event_type": "system.notification", "data": {"n": 0}}),
        )
        .await?;
    let mut everything = quiet.ws("/ws").await?;
    everything.subscribe(&["*"]).await?;
    let mut user = quiet.ws("/ws?user_id=u1").await?;
    user.barrier().await?;
    // The feed's connection drops and comes back: it catches up from a
    // little before what it last heard, which these events are within.
    let before = store_reconnects(quiet).await?;
    redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .context("CLIENT KILL")?;
    ready_again(quiet, Some(before)).await?;
    publish_numbered(busy, "run:early", 3, 1).await?;
    let frames = collect_events(&mut everything, "run:early", 1).await?;
    ensure!(
        seqs_on(&frames, "run:early") == [4],
        "only what came after it subscribed: {frames:?}"
    );
    let seen = user.barrier().await?;
    ensure!(
        !seen.iter().any(|f| herald_tests::is_event_on(f, "user:u1")),
        "an older message of its user: {seen:?}"
    );
    Ok(())
}
