//! The rest of the producer's HTTP API through `Publisher`: broadcasts and
//! user messages reach connections that never subscribed to them, a topic's
//! history reads back what it retains, and the approval list filters.

use herald_client::{Notice, Publisher, Subscriber, SubscriberItem};
use herald_protocol::payload::ApprovalStatus;
use herald_protocol::{EventType, Priority, PublishRequest, Topic};
use serde_json::json;

use crate::approval::new_approval;
use crate::harness::{Hub, bounded, next_matching, subscribed};

/// A subscriber of `run:quiet` only, connected as `user_id`.
async fn bystander(hub: &Hub, user_id: &str) -> Subscriber {
    let quiet: Topic = "run:quiet".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .user_id(user_id)
            .topics([quiet.into()])
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
    subscriber
}

#[tokio::test]
async fn a_broadcast_and_a_user_message_reach_connections_that_never_subscribed_to_them() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let mut alice = bystander(&hub, "alice").await;
    let mut bob = bystander(&hub, "bob").await;

    let note = Notice::new(EventType::parse("deploy.started").unwrap(), json!({"v": 2}))
        .priority(Priority::High);
    let receipt = bounded("broadcast", publisher.broadcast(&note))
        .await
        .unwrap();
    assert_eq!(receipt.topic, Topic::global());
    for subscriber in [&mut alice, &mut bob] {
        let event = next_matching(subscriber, "the broadcast", |item| match item {
            SubscriberItem::Event(event) if event.topic == Topic::global() => Some(event),
            _ => None,
        })
        .await;
        assert_eq!(
            (event.priority, &event.data),
            (Priority::High, &json!({"v": 2}))
        );
    }

    let message = Notice::new(
        EventType::parse("note.posted").unwrap(),
        json!({"to": "bob"}),
    );
    let receipt = bounded("message", publisher.send_to_user("bob", &message))
        .await
        .unwrap();
    assert_eq!(receipt.topic.as_str(), "user:bob");
    let event = next_matching(&mut bob, "bob's message", |item| match item {
        SubscriberItem::Event(event) if event.topic.as_str() == "user:bob" => Some(event),
        _ => None,
    })
    .await;
    assert_eq!(event.data, json!({"to": "bob"}));
    // Alice is not bob: her next event is the next broadcast, not his message.
    bounded("broadcast", publisher.broadcast(&note))
        .await
        .unwrap();
    let next = next_matching(&mut alice, "alice's next event", |item| match item {
        SubscriberItem::Event(event) => Some(event),
        _ => None,
    })
    .await;
    assert_eq!(next.topic, Topic::global());

    let refused = bounded(
        "a bad user",
        publisher.send_to_user("not a user!", &message),
    )
    .await;
    let error = refused.unwrap_err();
    assert_eq!(
        error.hub_error().map(|e| e.code.as_str()),
        Some("invalid_topic"),
        "{error}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn history_reads_a_topics_retained_events_after_a_seq_up_to_a_limit() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:read".parse().unwrap();
    for n in 1..=5 {
        let event = PublishRequest::new(topic.clone(), EventType::StepCompleted, json!({"n": n}));
        bounded("publish", publisher.publish(event)).await.unwrap();
    }
    let page = bounded("history", publisher.history(&topic, 2, Some(2)))
        .await
        .unwrap();
    assert_eq!(page.seq, 5);
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4]);
    let rest = bounded("history", publisher.history(&topic, 4, None))
        .await
        .unwrap();
    assert_eq!(rest.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(rest.epoch, page.epoch);
    hub.stop().await;
}

#[tokio::test]
async fn the_approval_list_filters_by_task_and_status() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let first = bounded(
        "create",
        publisher.create_approval(&new_approval("alice", "t1")),
    )
    .await
    .unwrap();
    let second = bounded(
        "create",
        publisher.create_approval(&new_approval("alice", "t1")),
    )
    .await
    .unwrap();
    bounded(
        "create",
        publisher.create_approval(&new_approval("alice", "t2")),
    )
    .await
    .unwrap();
    let pending = bounded(
        "list",
        publisher.list_approvals(Some("t1"), Some(ApprovalStatus::Pending)),
    )
    .await
    .unwrap();
    let mut ids: Vec<_> = pending
        .iter()
        .map(|r| r.request.callback_id.clone())
        .collect();
    ids.sort();
    let mut expected = vec![
        first.request.callback_id.clone(),
        second.request.callback_id.clone(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    let everything = bounded("list", publisher.list_approvals(None, None))
        .await
        .unwrap();
    assert_eq!(everything.len(), 3);
    let approved = bounded(
        "list",
        publisher.list_approvals(None, Some(ApprovalStatus::Approved)),
    )
    .await
    .unwrap();
    assert!(approved.is_empty(), "{approved:?}");
    hub.stop().await;
}
