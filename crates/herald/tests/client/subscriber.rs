//! `Subscriber` against a real hub.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use herald_client::{
    ConnectionState, PublishRequest, Publisher, RetryPolicy, SessionConfig, Subscriber,
    SubscriberItem,
};
use herald_protocol::{CloseReason, EventType, Label, Priority, Topic};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::{Hub, Relay, STEP, bounded, next_matching, subscribed};

fn fast_reconnects() -> SessionConfig {
    SessionConfig {
        initial_reconnect_delay: Duration::from_millis(50),
        max_reconnect_delay: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(2),
        ..SessionConfig::default()
    }
}

#[tokio::test]
async fn subscriber_receives_typed_events_in_seq_order() {
    let hub = Hub::start(&[]).await;
    let topic: Topic = "run:typed".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(subscriber.state(), ConnectionState::Open);
    assert!(subscriber.session_id().is_some());
    let subscribed = subscribed(&mut subscriber).await;
    assert_eq!(subscribed.seq, Some(0));

    let publisher = Publisher::new(&hub.url).unwrap();
    for step in 1..=5 {
        let request = PublishRequest::new(
            topic.clone(),
            EventType::StepCompleted,
            json!({"step": step}),
        )
        .priority(Priority::High);
        let receipt = bounded("publish", publisher.publish(request))
            .await
            .unwrap();
        assert_eq!(receipt.seq, step);
    }
    for step in 1..=5u64 {
        let event = next_matching(&mut subscriber, "an event", |item| match item {
            SubscriberItem::Event(event) => Some(event),
            _ => None,
        })
        .await;
        assert_eq!(event.topic, topic);
        assert_eq!(event.seq, step);
        assert_eq!(event.event_type, EventType::StepCompleted);
        assert_eq!(event.priority, Priority::High);
        assert_eq!(event.data, json!({"step": step}));
    }
    assert_eq!(subscriber.checkpoints().get(&topic).map(|c| c.seq), Some(5));
    bounded("close", subscriber.close()).await;
}

#[tokio::test]
async fn subscriber_waits_the_retry_after_ms_of_a_draining_hubs_notice_before_reconnecting() {
    let hub = Hub::start(&["--drain-window", "1s"]).await;
    let config = SessionConfig {
        initial_reconnect_delay: Duration::from_millis(50),
        max_reconnect_delay: Duration::from_secs(30),
        ..SessionConfig::default()
    };
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics(["run:drained".parse::<Topic>().unwrap().into()])
            .config(config)
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
    hub.sigterm();
    let notice = next_matching(&mut subscriber, "the shutdown notice", |item| match item {
        SubscriberItem::Event(event) if event.event_type == EventType::SystemShutdown => {
            Some(event)
        }
        _ => None,
    })
    .await;
    let hint = notice.data["retry_after_ms"]
        .as_u64()
        .expect("a retry hint");
    assert!(hint <= 1000, "{hint} ms is beyond the 1 s window");
    let waiting = next_matching(&mut subscriber, "reconnecting", |item| match item {
        SubscriberItem::State(state @ ConnectionState::Reconnecting { .. }) => Some(state),
        _ => None,
    })
    .await;
    // Not the backoff's first delay (uniform in [0, 50] ms): the hub's hint.
    assert_eq!(
        waiting,
        ConnectionState::Reconnecting {
            attempt: 1,
            delay_ms: hint,
            code: Some(CloseReason::GOING_AWAY),
        }
    );
    hub.stop().await;
}

#[tokio::test]
async fn subscriber_keeps_a_complete_ordered_stream_across_two_hub_restarts_under_load() {
    const EVENTS: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("herald.db").display());
    // Restarts here are about recovery, not about spreading closes: no
    // drain window, so each restart disrupts the stream while it is read.
    let args = ["--store", store.as_str(), "--drain-window", "0s"];
    let mut hub = Hub::start(&args).await;
    let bind = format!("127.0.0.1:{}", hub.port());
    let topic: Topic = "run:restarts".parse().unwrap();

    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .config(fast_reconnects())
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;

    // The producer publishes without pause; its retries carry it through the restarts.
    let publisher = Publisher::builder(hub.url.clone())
        .retry(RetryPolicy {
            max_attempts: 60,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
        })
        .build()
        .unwrap();
    let (progress, mut published) = watch::channel(0u64);
    let mut tasks = JoinSet::new();
    let producer_topic = topic.clone();
    tasks.spawn(async move {
        let mut receipts = Vec::new();
        for n in 1..=EVENTS {
            let request = PublishRequest::new(
                producer_topic.clone(),
                "load.tick".parse().unwrap(),
                json!({"n": n}),
            );
            let receipt = publisher
                .publish(request)
                .await
                .expect("publish with retries");
            receipts.push(receipt);
            progress.send_replace(n);
        }
        receipts
    });

    let mut seqs = Vec::new();
    let mut ids = HashSet::new();
    let mut restarts = 0;
    let mut states = Vec::new();
    let collect = async {
        while (seqs.len() as u64) < EVENTS {
            let restart_at = (restarts + 1) * EVENTS / 3;
            if restarts < 2 && *published.borrow() >= restart_at {
                hub.stop().await;
                hub = Hub::start_on(&bind, &args).await;
                restarts += 1;
            }
            tokio::select! {
                item = subscriber.next() => match item.expect("the subscriber ended") {
                    // The hub's own `system.*` events on `global` reach every connection.
                    SubscriberItem::Event(event) if event.topic == topic => {
                        seqs.push(event.seq);
                        ids.insert(event.id.clone());
                    }
                    SubscriberItem::Gap(gap) => panic!("unexpected gap: {gap:?}"),
                    SubscriberItem::State(state) => states.push(state),
                    _ => {}
                },
                _ = published.changed(), if restarts < 2 => {}
            }
        }
        // `stop` took the hub by value, so the block owns the last one: hand it back.
        hub
    };
    let _hub = tokio::time::timeout(STEP * 3, collect)
        .await
        .expect("the stream completes within a minute");
    let receipts = bounded("the producer", tasks.join_next())
        .await
        .unwrap()
        .unwrap();

    assert_eq!(restarts, 2);
    assert_eq!(
        seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "exactly seqs 1..N, in order"
    );
    assert_eq!(ids.len() as u64, EVENTS);
    let receipt_seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(
        receipt_seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "every publish stored once"
    );
    let reconnects = states
        .iter()
        .filter(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .count();
    assert!(
        reconnects >= 2,
        "the subscriber saw both restarts: {states:?}"
    );
    bounded("close", subscriber.close()).await;
}

#[tokio::test]
async fn subscriber_resumes_from_checkpoints_given_to_the_builder() {
    let hub = Hub::start(&[]).await;
    let topic: Topic = "run:resume".parse().unwrap();
    let publisher = Publisher::new(&hub.url).unwrap();
    let events = (1..=4)
        .map(|n| PublishRequest::new(topic.clone(), EventType::StepCompleted, json!({"n": n})))
        .collect();
    bounded("publish a batch", publisher.publish_batch(events))
        .await
        .unwrap();

    let mut since = herald_client::Checkpoints::new();
    since.insert(
        topic.clone(),
        herald_client::Checkpoint {
            seq: 2,
            epoch: None,
        },
    );
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .since(since)
            .connect(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = next_matching(&mut subscriber, "a replayed event", |item| match item {
            SubscriberItem::Event(event) => Some(event.seq),
            _ => None,
        })
        .await;
        seen.push(event);
    }
    assert_eq!(seen, [3, 4]);
}

#[tokio::test]
async fn a_stalled_subscriber_neither_slows_the_publisher_nor_loses_events_silently() {
    let hub = Hub::start(&[]).await;
    let topic: Topic = "run:slow".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .buffer(4)
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
    // From here on nobody reads the subscriber: its task stops reading the
    // socket once its small buffer is full, and the hub must shed, not wait.
    let publisher = Publisher::new(&hub.url).unwrap();
    for n in 0..3_000u64 {
        let request = PublishRequest::new(
            topic.clone(),
            "load.tick".parse().unwrap(),
            json!({"n": n, "pad": "x".repeat(200)}),
        )
        .priority(Priority::Low);
        bounded(
            "a publish next to a stalled subscriber",
            publisher.publish(request),
        )
        .await
        .unwrap();
    }
    // Now read: per topic, every seq is either delivered, in order, or
    // reported by a gap (the hub sheds low-priority events to a full queue).
    let mut covered = Vec::new();
    while covered.last().copied() != Some(3_000) {
        let (from, to) = next_matching(
            &mut subscriber,
            "the rest of the stream",
            |item| match item {
                SubscriberItem::Event(event) if event.topic == topic => {
                    Some((event.seq, event.seq))
                }
                SubscriberItem::Gap(gap) if gap.topic == topic => Some((gap.from_seq, gap.to_seq)),
                _ => None,
            },
        )
        .await;
        covered.extend(from..=to);
    }
    assert_eq!(covered, (1..=3_000).collect::<Vec<_>>());
}

/// An HS256 token for user `sub`, allowed every `run:` topic, signed with
/// `secret` and expiring in `seconds`.
pub(crate) fn token(secret: &str, sub: &str, seconds: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + seconds;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "topics": ["run:*"], "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_set_before_the_old_one_expires_keeps_the_subscriber_connected_and_no_error_shows_it()
 {
    let secret = "client-test-secret-0123456789abcdef";
    let hub = Hub::start(&["--jwt-secret", secret]).await;
    let first = token(secret, "u1", 2);
    let topic: Topic = "run:token".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .token(first.clone())
            .connect(),
    )
    .await
    .unwrap();
    bounded("set_token", subscriber.set_token(token(secret, "u1", 600)))
        .await
        .unwrap();
    // Past the first token's expiry (whole seconds, checked without leeway).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let request = PublishRequest::new(topic.clone(), EventType::StepCompleted, json!({}));
    bounded("publish", publisher.publish(request))
        .await
        .unwrap();
    let mut states = Vec::new();
    next_matching(
        &mut subscriber,
        "the event after the first expiry",
        |item| {
            match item {
                SubscriberItem::Event(event) => return Some(event),
                SubscriberItem::State(state) => states.push(state),
                _ => {}
            }
            None
        },
    )
    .await;
    // Only the first connection's opening: never a reconnect.
    assert_eq!(
        states,
        [ConnectionState::Connecting, ConnectionState::Open],
        "the connection changed"
    );
    assert_eq!(subscriber.state(), ConnectionState::Open);
    // A failed connection says where it went, not with which credential.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let refused = Subscriber::builder(format!("http://127.0.0.1:{port}"))
        .token(first.clone())
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    let said = format!("{refused} {refused:?}");
    assert!(!said.contains(&first), "{said}");
    hub.stop().await;
}

#[tokio::test]
async fn while_reconnects_with_an_expired_token_fail_the_state_still_says_4001() {
    let secret = "client-test-secret-0123456789abcdef";
    let hub = Hub::start(&["--jwt-secret", secret]).await;
    let topic: Topic = "run:expired".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.into()])
            .token(token(secret, "u1", 2))
            .config(fast_reconnects())
            .connect(),
    )
    .await
    .unwrap();
    // The hub closes at the token's expiry (4001), then refuses the
    // reconnections it makes with the same token (401 at the upgrade).
    let mut codes = Vec::new();
    next_matching(&mut subscriber, "three reconnection attempts", |item| {
        if let SubscriberItem::State(ConnectionState::Reconnecting { code, .. }) = item {
            codes.push(code);
        }
        (codes.len() == 3).then_some(())
    })
    .await;
    assert_eq!(codes, [Some(CloseReason(4001)); 3]);
    hub.stop().await;
}

#[tokio::test]
async fn checkpoints_stand_at_what_the_application_read_so_a_resume_skips_nothing_still_queued() {
    let hub = Hub::start(&[]).await;
    let topic: Topic = "run:unread".parse().unwrap();
    let connect = |since| {
        Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .since(since)
            .buffer(4)
            .connect()
    };
    let mut subscriber = bounded("connect", connect(Default::default()))
        .await
        .unwrap();
    subscribed(&mut subscriber).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    for n in 1..=40 {
        let request = PublishRequest::new(topic.clone(), EventType::StepCompleted, json!({"n": n}));
        bounded("publish", publisher.publish(request))
            .await
            .unwrap();
    }
    next_matching(&mut subscriber, "event 5", |item| match item {
        SubscriberItem::Event(event) if event.seq == 5 => Some(()),
        _ => None,
    })
    .await;
    // The connection task has queued as many more as the buffers hold.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = subscriber.checkpoints();
    assert_eq!(saved.get(&topic).map(|c| c.seq), Some(5));
    drop(subscriber);
    let mut resumed = bounded("connect again", connect(saved)).await.unwrap();
    let mut seqs = Vec::new();
    next_matching(&mut resumed, "events 6 to 40", |item| {
        if let SubscriberItem::Event(event) = item {
            seqs.push(event.seq);
        }
        (seqs.last() == Some(&40)).then_some(())
    })
    .await;
    assert_eq!(seqs, (6..=40).collect::<Vec<u64>>());
    hub.stop().await;
}

#[tokio::test]
async fn connect_says_why_the_hub_closed_the_first_connection_instead_of_timing_out() {
    let hub = Hub::start(&["--max-connections", "1"]).await;
    let connect = || {
        Subscriber::builder(hub.url.clone())
            .topics(["run:full".parse().unwrap()])
            .connect_timeout(Duration::from_secs(10))
            .connect()
    };
    let first = bounded("connect", connect()).await.unwrap();
    let started = std::time::Instant::now();
    let refused = bounded("connect over the limit", connect())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            herald_client::SubscribeError::Refused { code: 1013, .. }
        ),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(first);
    hub.stop().await;
}

#[tokio::test]
async fn a_snapshot_subscription_gets_what_it_missed_that_its_snapshot_does_not_hold() {
    let hub = Hub::start(&[]).await;
    let relay = Relay::start(&hub.addr).await;
    let topic: Topic = "run:snap".parse().unwrap();
    let status = Label::new("status").unwrap();
    let publisher = Publisher::new(&hub.url).unwrap();
    let publish = |key: Option<&Label>, data: serde_json::Value| {
        let mut request = PublishRequest::new(topic.clone(), "run.updated".parse().unwrap(), data);
        if let Some(key) = key {
            request = request.key(key.clone());
        }
        let publisher = publisher.clone();
        async move { publisher.publish(request).await.unwrap().seq }
    };
    assert_eq!(
        publish(Some(&status), json!({"status": "running"})).await,
        1
    );

    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(relay.url.clone())
            .topics([topic.clone().into()])
            .snapshot(true)
            .config(fast_reconnects())
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;

    // Away while a log line and the new status are published.
    relay.close();
    next_matching(&mut subscriber, "reconnecting", |item| match item {
        SubscriberItem::State(ConnectionState::Reconnecting { .. }) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(publish(None, json!({"line": "retrying step 3"})).await, 2);
    assert_eq!(publish(Some(&status), json!({"status": "done"})).await, 3);
    relay.reopen();

    let mut snapshots = Vec::new();
    let mut events = Vec::new();
    let mut replayed = false;
    while events.last() != Some(&4) {
        let item = bounded("the items after the reconnect", subscriber.next())
            .await
            .expect("the subscriber ended");
        match item {
            SubscriberItem::Snapshot(snapshot) => snapshots.push(snapshot.seq),
            SubscriberItem::Event(event) if event.topic == topic => events.push(event.seq),
            SubscriberItem::Gap(gap) => panic!("unexpected gap: {gap:?}"),
            SubscriberItem::ReplayComplete(_) if !replayed => {
                replayed = true;
                publish(None, json!({"line": "step 4"})).await;
            }
            _ => {}
        }
    }
    // The second connection's snapshot holds seq 3 (status done). Behind
    // it, the unkeyed line the snapshot cannot hold is delivered; the
    // status it shows already is not.
    assert_eq!(snapshots, [3]);
    assert_eq!(events, [2, 4]);
    hub.stop().await;
}
