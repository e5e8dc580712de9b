//! The clients on several nodes of one hub (Redis): when their node dies,
//! they move to the next URL and resume there, losing nothing.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use herald_client::{
    PublishRequest, Publisher, RetryPolicy, SessionConfig, Subscriber, SubscriberItem,
};
use herald_protocol::Topic;
use herald_tests::Redis;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::{Hub, STEP, bounded, subscribed};

/// A subscriber of `run:first` whose first URL is `first` and whose
/// failover is `then`.
fn first_then(first: String, then: &Hub) -> herald_client::SubscriberBuilder {
    Subscriber::builder(first)
        .failover(then.url.clone())
        .topics(["run:first".parse::<Topic>().unwrap().into()])
}

#[tokio::test]
async fn a_subscribers_first_connection_goes_to_the_next_url_when_the_first_node_is_down() {
    let hub = Hub::start(&[]).await;
    // A port nothing listens on any more.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut subscriber = bounded("connect", first_then(down, &hub).connect())
        .await
        .unwrap();
    subscribed(&mut subscriber).await;
}

#[tokio::test]
async fn a_subscribers_first_connection_goes_to_the_next_url_when_the_first_node_never_answers() {
    let hub = Hub::start(&[]).await;
    // Takes connections and never answers the upgrade.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", silent.local_addr().unwrap());
    // Dropped at the end of the test, which stops it.
    let mut held = JoinSet::new();
    held.spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let mut subscriber = bounded(
        "connect",
        first_then(down, &hub)
            .connect_timeout(Duration::from_millis(500))
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
}

#[tokio::test]
async fn a_subscribers_first_connection_goes_past_a_node_at_its_connection_limit() {
    let full = Hub::start(&["--max-connections", "1"]).await;
    let hub = Hub::start(&[]).await;
    let _taking_the_slot = bounded(
        "the full node's one connection",
        Subscriber::builder(full.url.clone())
            .topics(["run:other".parse::<Topic>().unwrap().into()])
            .connect(),
    )
    .await
    .unwrap();
    let mut subscriber = bounded("connect", first_then(full.url.clone(), &hub).connect())
        .await
        .unwrap();
    subscribed(&mut subscriber).await;
}

#[tokio::test]
async fn a_token_one_node_refuses_fails_the_first_connection_without_trying_the_others() {
    let secret = "a secret of thirty-two bytes or more, for tests";
    let secured = Hub::start(&["--jwt-secret", secret]).await;
    let open = Hub::start(&[]).await;
    let refused = bounded(
        "connect",
        first_then(secured.url.clone(), &open)
            .token("not-a-token")
            .connect(),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(herald_client::SubscribeError::Rejected { status: 401, .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_subscriber_and_a_publisher_move_to_the_next_node_when_theirs_is_killed_and_lose_nothing()
{
    const EVENTS: u64 = 300;
    let redis = Redis::start().await.unwrap();
    let store = redis.store_arg();
    let node_a = Hub::start(&["--store", &store]).await;
    let node_b = Hub::start(&["--store", &store]).await;
    let topic: Topic = "run:failover".parse().unwrap();
    let config = SessionConfig {
        initial_reconnect_delay: Duration::from_millis(50),
        max_reconnect_delay: Duration::from_millis(300),
        heartbeat_interval: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(node_a.url.clone())
            .failover(node_b.url.clone())
            .topics([topic.clone().into()])
            .config(config)
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
    let publisher = Publisher::builder(node_a.url.clone())
        .failover(node_b.url.clone())
        .retry(RetryPolicy {
            max_attempts: 20,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
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
            receipts.push(
                publisher
                    .publish(request)
                    .await
                    .expect("publish with failover"),
            );
            progress.send_replace(n);
        }
        receipts
    });
    let mut node_a = Some(node_a);
    let mut seqs = Vec::new();
    let collect = async {
        while (seqs.len() as u64) < EVENTS {
            if node_a.is_some() && *published.borrow() >= EVENTS / 2 {
                if let Some(node) = node_a.take() {
                    node.kill().await;
                }
            }
            tokio::select! {
                item = subscriber.next() => match item.expect("the subscriber ended") {
                    SubscriberItem::Event(event) if event.topic == topic => seqs.push(event.seq),
                    SubscriberItem::Gap(gap) => panic!("unexpected gap: {gap:?}"),
                    _ => {}
                },
                _ = published.changed(), if node_a.is_some() => {}
            }
        }
    };
    tokio::time::timeout(STEP * 3, collect)
        .await
        .expect("the stream completes");
    let receipts = bounded("the producer", tasks.join_next())
        .await
        .unwrap()
        .unwrap();
    assert!(node_a.is_none(), "node A was killed mid-stream");
    assert_eq!(
        seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "every seq exactly once, in order"
    );
    let stored: HashSet<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(stored.len() as u64, EVENTS, "every publish stored once");
    bounded("close", subscriber.close()).await;
    drop(node_b);
}
