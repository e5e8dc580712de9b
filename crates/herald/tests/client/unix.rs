//! `UnixPublisher`: never blocks, never fails, counts drops; delivers to a
//! hub started with `--unix-socket`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use herald_client::{PublishRequest, Subscriber, SubscriberItem, UnixPublisher};
use herald_protocol::{EventType, Topic};
use serde_json::json;

use crate::harness::{Hub, bounded, next_matching, subscribed};

fn request(n: u64) -> PublishRequest {
    PublishRequest::new(
        "machine:m1".parse().unwrap(),
        EventType::StateChanged,
        json!({"state": "running", "n": n}),
    )
}

#[test]
fn with_the_hub_down_publish_returns_at_once_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    // No socket file at all (ENOENT).
    let missing = UnixPublisher::new(dir.path().join("absent.sock")).unwrap();
    // A socket file nobody reads any more (ECONNREFUSED).
    let stale_path = dir.path().join("stale.sock");
    drop(UnixDatagram::bind(&stale_path).unwrap());
    let stale = UnixPublisher::new(&stale_path).unwrap();

    let started = Instant::now();
    for n in 0..200 {
        assert!(!missing.publish(&request(n)));
        assert!(!stale.publish(&request(n)));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!((missing.dropped(), missing.sent()), (200, 0));
    assert_eq!((stale.dropped(), stale.sent()), (200, 0));
}

#[test]
fn a_full_receive_buffer_and_an_oversized_event_are_dropped_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    // Bound but never read: the queue fills up (EAGAIN), and publish must not block.
    let _receiver = UnixDatagram::bind(&path).unwrap();
    let publisher = UnixPublisher::new(&path).unwrap();
    let started = Instant::now();
    for n in 0..5_000 {
        publisher.publish(&request(n));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(publisher.sent() > 0);
    assert!(publisher.dropped() > 0, "the receiver's queue never filled");
    assert_eq!(publisher.sent() + publisher.dropped(), 5_000);

    let dropped = publisher.dropped();
    let huge = PublishRequest::new(
        "machine:m1".parse().unwrap(),
        EventType::StateChanged,
        json!("x".repeat(70_000)),
    );
    assert!(!publisher.publish(&huge));
    assert_eq!(publisher.dropped(), dropped + 1);
}

#[tokio::test]
async fn events_sent_to_the_hubs_unix_socket_reach_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.sock");
    let hub = Hub::start(&["--unix-socket", path.to_str().unwrap()]).await;
    let topic: Topic = "machine:m1".parse().unwrap();
    let mut subscriber = bounded(
        "connect",
        Subscriber::builder(hub.url.clone())
            .topics([topic.into()])
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut subscriber).await;
    let publisher = UnixPublisher::new(&path).unwrap();
    for n in 1..=3 {
        assert!(publisher.publish(&request(n)));
    }
    for n in 1..=3u64 {
        let event = next_matching(&mut subscriber, "a datagram's event", |item| match item {
            SubscriberItem::Event(event) => Some(event),
            _ => None,
        })
        .await;
        assert_eq!(event.seq, n);
        assert_eq!(event.data["n"], json!(n));
    }
    assert_eq!(publisher.dropped(), 0);
}
