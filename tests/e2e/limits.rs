//! Limits: frame size, connection count, body size, slow consumers, churn.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use herald_tests::{Rng, WsClient, eventually, frame_type, is_event_on, metric, seq_of};
use serde_json::{Value, json};

use crate::http_api::{active_connections, connections_active};
use crate::{event, herald, str_field};

#[tokio::test]
async fn frame_over_max_frame_size_is_closed_with_1009() -> Result<()> {
    let hub = herald().start(&["--max-frame-size", "1KiB"]).await?;
    let mut client = hub.ws("/ws").await?;
    let padding = "x".repeat(4096);
    client
        .send_json(&json!({"action": "ping", "padding": padding}))
        .await?;
    let (code, _) = client.expect_close().await?;
    ensure!(code == 1009, "close code {code}");
    Ok(())
}

#[tokio::test]
async fn frame_under_max_frame_size_is_accepted() -> Result<()> {
    let hub = herald().start(&["--max-frame-size", "1KiB"]).await?;
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "ping", "padding": "x".repeat(512)}))
        .await?;
    client.recv_until(|f| frame_type(f) == "pong").await?;
    Ok(())
}

#[tokio::test]
async fn connection_over_max_connections_is_closed_with_1013() -> Result<()> {
    let hub = herald().start(&["--max-connections", "2"]).await?;
    let _a = hub.ws("/ws").await?;
    let _b = hub.ws("/ws").await?;
    let mut c = WsClient::connect_raw(&hub.ws_url("/ws")).await?;
    let (code, _) = c.expect_close().await?;
    ensure!(code == 1013, "close code {code}");
    Ok(())
}

/// One user may hold `--max-connections-per-user` connections; one more
/// is closed with 1013 while other users still connect, and a closed
/// connection frees its user's slot.
#[tokio::test]
async fn a_users_connection_over_max_connections_per_user_is_closed_with_1013() -> Result<()> {
    let hub = herald().start(&["--max-connections-per-user", "2"]).await?;
    let first = hub.ws("/ws?user_id=alice").await?;
    let _second = hub.ws("/ws?user_id=alice").await?;
    let mut third = WsClient::connect_raw(&hub.ws_url("/ws?user_id=alice")).await?;
    let refused = third.opening().await?;
    ensure!(
        refused == Err((1013, "user connection limit reached".to_owned())),
        "{refused:?}"
    );
    let _bob = hub.ws("/ws?user_id=bob").await?;
    let _anonymous = hub.ws("/ws").await?;
    first.close().await;
    eventually(
        Duration::from_secs(5),
        "alice's slot is free again",
        || async {
            let mut again = WsClient::connect_raw(&hub.ws_url("/ws?user_id=alice")).await?;
            Ok(again.opening().await?.is_ok().then_some(again))
        },
    )
    .await?;
    Ok(())
}

/// Connections opened all at once (a crowd reconnecting after a restart,
/// one user's script) are counted as they are admitted: no more than the
/// limits get in, however many arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_at_once_are_admitted_only_up_to_the_limits() -> Result<()> {
    const AT_ONCE: usize = 40;
    /// The connections admitted (kept open) and the refusals.
    async fn open_at_once(
        hub: &herald_tests::Hub,
        path: &str,
    ) -> Result<(Vec<WsClient>, Vec<(u16, String)>)> {
        let url = hub.ws_url(path);
        let clients =
            futures::future::try_join_all((0..AT_ONCE).map(|_| WsClient::connect_raw(&url)))
                .await?;
        let mut welcomed = Vec::new();
        let mut refusals = Vec::new();
        for mut client in clients {
            match client.opening().await? {
                Ok(greeting) if frame_type(&greeting) == "welcome" => welcomed.push(client),
                Ok(other) => bail!("a greeting that is not welcome: {other}"),
                Err(refusal) => refusals.push(refusal),
            }
        }
        Ok((welcomed, refusals))
    }
    let hub = herald()
        .start(&["--max-connections", "5", "--max-connections-per-user", "3"])
        .await?;
    let (alice, refusals) = open_at_once(&hub, "/ws?user_id=alice").await?;
    ensure!(
        alice.len() == 3,
        "{} of alice's connections admitted",
        alice.len()
    );
    ensure!(
        refusals
            .iter()
            .all(|r| *r == (1013, "user connection limit reached".to_owned())),
        "{refusals:?}"
    );
    let (anonymous, refusals) = open_at_once(&hub, "/ws").await?;
    ensure!(
        anonymous.len() == 2,
        "{} anonymous connections admitted beside alice's 3",
        anonymous.len()
    );
    ensure!(
        refusals
            .iter()
            .all(|r| *r == (1013, "server connection limit reached".to_owned())),
        "{refusals:?}"
    );
    Ok(())
}

/// A shell or a service manager usually leaves a soft limit of 1024 open
/// files under a far higher hard one, and every connection is a file:
/// `herald serve` raises its soft limit to the hard one as it starts, so
/// it serves connections past the soft limit it was started with.
#[tokio::test]
async fn connections_past_the_soft_open_file_limit_the_hub_started_with_are_served() -> Result<()> {
    const SOFT: u64 = 64;
    const CLIENTS: usize = 100;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    ensure!(
        hard >= 2 * SOFT + CLIENTS as u64,
        "the hard open-file limit ({hard}) leaves no room above the soft one this test sets"
    );
    let hub = herald().start_with_open_files(&[], SOFT).await?;
    let pid = hub.pid().context("the hub has no pid")?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("no open-file limit in /proc/PID/limits")?;
    ensure!(
        open_files.split_whitespace().nth(3) == Some(hard.to_string().as_str()),
        "the hub's soft limit is not the hard one ({hard}): {open_files}"
    );
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = hub.ws("/ws").await?;
        client.subscribe(&["crew:files"]).await?;
        clients.push(client);
    }
    hub.http()
        .publish(&event("crew:files", "crew.updated", json!({})))
        .await?;
    for client in &mut clients {
        client.recv_until(|f| is_event_on(f, "crew:files")).await?;
    }
    Ok(())
}

#[tokio::test]
async fn closed_connection_frees_its_slot_under_max_connections() -> Result<()> {
    let hub = herald().start(&["--max-connections", "1"]).await?;
    let a = hub.ws("/ws").await?;
    a.close().await;
    eventually(Duration::from_secs(5), "the hub sees the close", || async {
        Ok((active_connections(&hub).await? == 0).then_some(()))
    })
    .await?;
    let b = hub.ws("/ws").await?;
    ensure!(!b.session_id().is_empty(), "{}", b.welcome);
    Ok(())
}

/// The contract does not name the HTTP body limit; the careful reading is that
/// `--max-frame-size` bounds what a peer may send in one piece, HTTP bodies
/// included. The body here is 16× that limit.
#[tokio::test]
async fn publish_body_over_the_limit_is_413() -> Result<()> {
    let hub = herald().start(&["--max-frame-size", "64KiB"]).await?;
    let big = event(
        "crew:big",
        "crew.updated",
        json!({"blob": "y".repeat(1 << 20)}),
    );
    let reply = hub.http().post("/api/v1/events", &big).await?;
    ensure!(reply.status == 413, "{} {}", reply.status, reply.text);
    if reply.body.is_object() {
        ensure!(
            str_field(&reply.body, "code") == "too_large",
            "{}",
            reply.text
        );
    }
    Ok(())
}

/// One connection subscribes and never reads; fifty others must still get
/// every event, in order, while the publisher is not held up.
///
/// Events are published one per request: a burst larger than the queue could
/// legitimately shed even a reader that keeps up (the queue is that small on
/// purpose), which is not what this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_hold_back_fifty_others() -> Result<()> {
    const EVENTS: u64 = 600;
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let mut slow = hub.ws("/ws").await?;
    slow.subscribe(&["execution:fan"]).await?;
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut client = hub.ws("/ws").await?;
        client.subscribe(&["execution:fan"]).await?;
        readers.push(client);
    }
    // `slow` is never read again from here on; 600 KiB overflow its queue
    // and, most likely, the socket buffers too.
    let http = hub.http();
    let blob = "z".repeat(1024);
    let publish = async {
        for i in 0..EVENTS {
            let body = event(
                "execution:fan",
                "execution.progress",
                json!({"i": i, "blob": blob}),
            );
            http.publish(&body).await?;
        }
        anyhow::Ok(())
    };
    let read_all = futures::future::try_join_all(readers.iter_mut().map(|client| async move {
        client.timeout = Duration::from_secs(20);
        let mut seqs = Vec::new();
        while seqs.len() < EVENTS as usize {
            let frame = client
                .recv_frame()
                .await
                .with_context(|| format!("a fast reader stalled after seq {:?}", seqs.last()))?;
            match frame_type(&frame) {
                "event" => seqs.extend(seq_of(&frame)),
                "gap" => bail!(
                    "a fast reader was shed after seq {:?}: {frame}",
                    seqs.last()
                ),
                _ => {}
            }
        }
        ensure!(
            seqs == (1..=EVENTS).collect::<Vec<_>>(),
            "a fast reader missed events: {seqs:?}"
        );
        anyhow::Ok(())
    }));
    let (published, read) = tokio::join!(publish, read_all);
    published?;
    read?;
    drop(slow);
    Ok(())
}

/// A subscriber that stopped reading holds up the hub's write to it (its TCP
/// window is full). Once its queue is full too and an event it must not lose
/// arrives, the hub closes it as a slow consumer (1013); the close frame
/// cannot go out behind the held-up write, so the socket is dropped within
/// a second or so, not after the heartbeat timeout (70 s here), and the
/// close is counted as a slow consumer's.
#[tokio::test]
async fn a_subscriber_that_stopped_reading_is_dropped_as_a_slow_consumer_without_waiting_for_the_heartbeat()
-> Result<()> {
    let hub = herald().start(&["--queue-size", "8"]).await?;
    let mut stalled = hub.ws("/ws").await?;
    stalled.subscribe(&["execution:stalled"]).await?;
    // Never read from here on. 400 events of 32 KiB fill the socket buffers
    // of both ends and the queue; low ones are shed as they come.
    let http = hub.http();
    let blob = "b".repeat(32 * 1024);
    for i in 0..400 {
        let mut body = event(
            "execution:stalled",
            "execution.progress",
            json!({"i": i, "blob": blob}),
        );
        body["priority"] = json!("low");
        http.publish(&body).await?;
    }
    // Each displaces a low one from the queue, until the queue holds only
    // critical events and the next one cannot queue.
    for i in 0..20 {
        let mut body = event("execution:stalled", "execution.failed", json!({"i": i}));
        body["priority"] = json!("critical");
        http.publish(&body).await?;
    }
    eventually(
        Duration::from_secs(10),
        "the stalled slow consumer is dropped, and counted",
        || async {
            let metrics = http.get("/metrics").await?.text;
            let closed = metric(
                &metrics,
                "herald_connections_closed_total{reason=\"slow_consumer\"}",
            );
            Ok((closed == Some(1.0)).then_some(metrics))
        },
    )
    .await
    .and_then(|metrics| {
        let closes = metric(&metrics, "herald_slow_consumer_closes_total");
        ensure!(closes == Some(1.0), "slow consumer closes {closes:?}");
        let active = metric(&metrics, "herald_connections_active");
        ensure!(active == Some(0.0), "connections still active {active:?}");
        Ok(())
    })?;
    drop(stalled);
    Ok(())
}

/// A consumer that falls behind by far more than its queue and the socket
/// buffers can hold: every seq is either delivered, in order, or covered by a
/// `gap` (reason `shed`) before the next delivered event; or the connection is
/// closed with 1013. Never a silent hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_every_seq_or_a_gap_never_a_silent_hole() -> Result<()> {
    const EVENTS: u64 = 2000;
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let mut slow = hub.ws("/ws").await?;
    slow.subscribe(&["execution:shed"]).await?;
    let http = hub.http();
    let blob = "s".repeat(4096);
    for chunk in 0..EVENTS / 10 {
        let batch: Vec<Value> = (0..10)
            .map(|i| {
                event(
                    "execution:shed",
                    "execution.progress",
                    json!({"i": chunk * 10 + i, "blob": blob}),
                )
            })
            .collect();
        http.publish_batch(&batch).await?;
    }
    // Now read everything.
    let mut expected_next = 1;
    let mut shed_seen = false;
    while expected_next <= EVENTS {
        let frame = match slow.recv_frame().await {
            Ok(frame) => frame,
            Err(e) => {
                // The only acceptable end is a 1013 close; recv_frame reports
                // the close frame in its message.
                let message = format!("{e:#}");
                ensure!(
                    message.contains("1013") || message.contains("Again"),
                    "ended: {message}"
                );
                return Ok(());
            }
        };
        match frame_type(&frame) {
            "event" => {
                let seq = seq_of(&frame).unwrap_or(0);
                ensure!(
                    seq == expected_next,
                    "expected seq {expected_next}, got {seq} (no gap before)"
                );
                expected_next += 1;
            }
            "gap" => {
                let from = frame["from_seq"].as_u64().unwrap_or(0);
                let to = frame["to_seq"].as_u64().unwrap_or(0);
                ensure!(
                    from == expected_next && to >= from,
                    "gap {frame} at {expected_next}"
                );
                ensure!(str_field(&frame, "reason") == "shed", "{frame}");
                shed_seen = true;
                expected_next = to + 1;
            }
            _ => {}
        }
    }
    // Told honestly about everything. Shedding is expected with these sizes,
    // but a hub with bigger buffers than assumed may legitimately deliver all.
    let _ = shed_seen;
    Ok(())
}

/// Connects and disconnects clients at random while events are published;
/// afterwards no connection is left over and the hub still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_storm_during_churn_leaves_no_connections_and_hub_alive() -> Result<()> {
    let hub = herald().start(&["--queue-size", "16"]).await?;
    let http = hub.http();
    let url = hub.ws_url("/ws?topics=execution:storm,global");
    let storm = async {
        for i in 0..100 {
            let batch: Vec<Value> = (0..10)
                .map(|j| {
                    event(
                        "execution:storm",
                        "execution.progress",
                        json!({"i": i * 10 + j}),
                    )
                })
                .collect();
            http.publish_batch(&batch).await?;
        }
        anyhow::Ok(())
    };
    let churn = futures::future::try_join_all((0..8u64).map(|worker| {
        let url = url.clone();
        async move {
            let mut rng = Rng::new(0x5EED + worker);
            for _ in 0..10 {
                // Read a few frames if any come; the storm may be over
                // already. A subscription that meets more live events than
                // the 16-frame queue while it is read is closed with "try
                // again later", a legitimate end for a churned connection.
                let mut client = WsClient::connect_raw(&url).await?;
                client.timeout = Duration::from_millis(100);
                for _ in 0..rng.range(0, 20) {
                    if client.recv_frame().await.is_err() {
                        break;
                    }
                }
                if rng.range(0, 2) == 0 {
                    client.close().await;
                } else {
                    drop(client); // abrupt: no close handshake
                }
            }
            anyhow::Ok(())
        }
    }));
    let (stormed, churned) = tokio::join!(storm, churn);
    stormed?;
    churned?;
    eventually(
        Duration::from_secs(10),
        "every connection is gone",
        || async { Ok((active_connections(&hub).await? == 0).then_some(())) },
    )
    .await?;
    let via_connections = connections_active(&hub).await?;
    ensure!(
        via_connections == 0,
        "GET /api/v1/connections still counts {via_connections}"
    );
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:storm"]).await?;
    let health = hub.http().get("/health").await?;
    if health.status != 200 {
        bail!("the hub is not healthy after the storm: {}", health.text);
    }
    Ok(())
}

#[tokio::test]
async fn subscribing_to_topics_nobody_publishes_to_leaves_nothing_behind() -> Result<()> {
    for store in ["memory", "sqlite"] {
        let dir = tempfile::tempdir()?;
        let path = format!("sqlite:{}", dir.path().join("herald.db").display());
        let args: &[&str] = if store == "memory" {
            &[]
        } else {
            &["--store", &path]
        };
        let hub = herald().start(args).await?;
        let mut client = hub.ws("/ws").await?;
        for round in 0..20 {
            let topics: Vec<String> = (0..100).map(|n| format!("run:churn-{round}-{n}")).collect();
            client
                .send_json(&json!({"action": "subscribe", "id": round, "topics": topics}))
                .await?;
            client
                .recv_until(|f| frame_type(f) == "ack" && f["ref"] == json!(round))
                .await?;
            client
                .send_json(&json!({"action": "unsubscribe", "topics": topics}))
                .await?;
        }
        let listed = hub.http().get("/api/v1/topics").await?;
        ensure!(
            listed.body["topics"] == json!([]),
            "{store}: 2000 topics read and left still held: {}",
            listed.text
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_subscribe_resuming_more_topics_than_the_queue_holds_gets_every_event_and_no_gap()
-> Result<()> {
    const TOPICS: usize = 300;
    let hub = herald().start(&["--queue-size", "64"]).await?;
    let topics: Vec<String> = (0..TOPICS).map(|n| format!("run:resume-{n}")).collect();
    let batch: Vec<Value> = topics
        .iter()
        .map(|topic| event(topic, "step.completed", json!({})))
        .collect();
    for chunk in batch.chunks(60) {
        let reply = hub
            .http()
            .post("/api/v1/events", &Value::from(chunk.to_vec()))
            .await?;
        ensure!(reply.status == 200, "{}", reply.text);
    }
    let mut client = hub.ws("/ws").await?;
    // The same topic twice is one subscription, answered once.
    let mut asked = topics.clone();
    asked.push(topics[0].clone());
    let since: serde_json::Map<String, Value> = topics
        .iter()
        .map(|topic| (topic.clone(), json!(0)))
        .collect();
    client
        .send_json(&json!({"action": "subscribe", "topics": asked, "since": since}))
        .await?;
    let (mut subscribed, mut events, mut complete) = (0, 0, 0);
    while complete < TOPICS {
        let frame = client.recv_frame().await?;
        match frame_type(&frame) {
            "subscribed" => subscribed += 1,
            "event" => events += 1,
            "replay_complete" => complete += 1,
            other => bail!(
                "{other} after {subscribed} subscribed, {events} events, {complete} complete: {frame}"
            ),
        }
    }
    ensure!(
        (subscribed, events) == (TOPICS, TOPICS),
        "{subscribed} subscribed, {events} events"
    );
    Ok(())
}

#[tokio::test]
async fn state_requests_back_to_back_get_every_snapshot_and_keep_the_connection() -> Result<()> {
    const TOPICS: usize = 30;
    const REQUESTS: usize = 12;
    let hub = herald().start(&["--queue-size", "64"]).await?;
    let topics: Vec<String> = (0..TOPICS).map(|n| format!("run:state-{n}")).collect();
    let batch: Vec<Value> = topics
        .iter()
        .map(|topic| {
            let mut body = event(topic, "state.changed", json!({}));
            body["key"] = json!("state");
            body
        })
        .collect();
    let reply = hub
        .http()
        .post("/api/v1/events", &Value::from(batch))
        .await?;
    ensure!(reply.status == 200, "{}", reply.text);
    let mut client = hub.ws("/ws").await?;
    client
        .send_json(&json!({"action": "subscribe", "id": "s", "topics": topics}))
        .await?;
    client
        .recv_until(|f| frame_type(f) == "ack" && f["ref"] == json!("s"))
        .await?;
    // Each asks for every subscribed topic's snapshot: a queue's worth and
    // more in all, which goes out as the client reads.
    for _ in 0..REQUESTS {
        client
            .send_json(&json!({"action": "request_state"}))
            .await?;
    }
    let mut snapshots = 0;
    while snapshots < TOPICS * REQUESTS {
        let frame = client.recv_frame().await?;
        match frame_type(&frame) {
            "snapshot" => snapshots += 1,
            "ack" => {}
            other => bail!("{other} after {snapshots} snapshots: {frame}"),
        }
    }
    Ok(())
}
