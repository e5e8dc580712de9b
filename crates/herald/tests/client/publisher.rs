//! `Publisher` and `BatchingPublisher` against a real hub.

use std::time::Duration;

use herald_client::{HttpError, PublishError, PublishRequest, Publisher, RetryPolicy};
use herald_protocol::{ErrorCode, EventId, EventType, Topic};
use serde_json::json;
use tokio::task::JoinSet;

use crate::harness::{Hub, bounded};

fn request(topic: &Topic, n: u64) -> PublishRequest {
    PublishRequest::new(topic.clone(), EventType::StepCompleted, json!({"n": n}))
}

#[tokio::test]
async fn publishing_the_same_request_twice_is_stored_once() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:idempotent".parse().unwrap();
    let first = bounded("publish", publisher.publish(request(&topic, 1)))
        .await
        .unwrap();
    // The publisher gave the event a UUID before sending it.
    assert!(
        uuid::Uuid::parse_str(first.id.as_str()).is_ok(),
        "{:?}",
        first.id
    );

    let again = request(&topic, 1).id(first.id.clone());
    let second = bounded("publish again", publisher.publish(again))
        .await
        .unwrap();
    assert_eq!(second, first, "same id → same receipt, same seq");

    let next = bounded("publish another", publisher.publish(request(&topic, 2)))
        .await
        .unwrap();
    assert_eq!(next.seq, 2, "the duplicate did not take a seq");
}

#[tokio::test]
async fn a_publish_started_before_the_hub_is_up_is_retried_until_it_lands() {
    // A free port, released for the hub to take later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let publisher = Publisher::builder(url.clone())
        .retry(RetryPolicy {
            max_attempts: 100,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    let topic: Topic = "run:retry".parse().unwrap();
    let id = EventId::new("retry-event-1").unwrap();
    let mut tasks = JoinSet::new();
    let retried = request(&topic, 1).id(id.clone());
    let retrying = publisher.clone();
    tasks.spawn(async move { retrying.publish(retried).await });

    let _hub = Hub::start_on(&format!("127.0.0.1:{port}"), &[]).await;
    let receipt = bounded("the retried publish", tasks.join_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(receipt.id, id);
    assert_eq!(receipt.seq, 1);
}

#[tokio::test]
async fn an_unreachable_hub_is_a_transport_error_after_the_last_attempt() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publisher = Publisher::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .build()
        .unwrap();
    let error = bounded(
        "publish",
        publisher.publish(request(&"run:x".parse().unwrap(), 1)),
    )
    .await
    .unwrap_err();
    // Its message says what kind of failure it was; the chain says each
    // layer once, down to the cause.
    let mut chain = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(error) = cause {
        chain.push(error.to_string());
        cause = error.source();
    }
    assert!(
        chain[0].ends_with("after 3 attempt(s) (could not connect)"),
        "{chain:?}"
    );
    for (i, text) in chain.iter().enumerate() {
        for later in &chain[i + 1..] {
            assert!(!text.contains(later.as_str()), "{text:?} repeats {later:?}");
        }
    }
    assert!(chain.last().unwrap().contains("refused"), "{chain:?}");
    match error {
        PublishError::Http(HttpError::Transport { attempts, .. }) => {
            assert_eq!(attempts, 3);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_gets_receipts_in_order_and_an_oversized_one_is_refused_at_once() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:batch".parse().unwrap();
    let receipts = bounded(
        "batch",
        publisher.publish_batch((1..=3).map(|n| request(&topic, n)).collect()),
    )
    .await
    .unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // A typed request cannot hold an invalid event, so the 4xx checked here
    // is an oversized body: answered with the hub's `{code, message}`, not retried.
    let huge = PublishRequest::new(
        topic.clone(),
        EventType::StepCompleted,
        json!({"blob": "x".repeat(2 << 20)}),
    );
    let error = bounded(
        "oversized",
        publisher.publish_batch(vec![request(&topic, 4), huge]),
    )
    .await
    .unwrap_err();
    let hub_error = error
        .hub_error()
        .unwrap_or_else(|| panic!("no hub error body: {error:?}"));
    assert_eq!(hub_error.code, ErrorCode::TooLarge, "{error}");
    match &error {
        PublishError::Http(http) => assert_eq!(http.status(), Some(413)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_batch_refused_as_a_conflict_is_finished_under_the_ids_assigned_before_it_was_sent() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:conflict".parse().unwrap();
    let taken = request(&topic, 0).id("taken".parse::<EventId>().unwrap());
    bounded("the first use of an id", publisher.publish(taken))
        .await
        .unwrap();
    // The second event reuses that id with other content.
    let mut batch = vec![
        request(&topic, 1),
        request(&topic, 2).id("taken".parse::<EventId>().unwrap()),
        request(&topic, 3),
    ];
    batch.iter_mut().for_each(herald_client::assign_id);
    let error = bounded(
        "the conflicting batch",
        publisher.publish_batch(batch.clone()),
    )
    .await
    .unwrap_err();
    let refused = error.hub_error().unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(
        (refused.code, refused.index),
        (ErrorCode::Conflict, Some(1))
    );
    // The events before the conflict were published: sent again under
    // their ids, they are not stored twice.
    batch[1] = request(&topic, 2);
    let receipts = bounded("the batch again", publisher.publish_batch(batch))
        .await
        .unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3, 4],
        "the first event keeps its seq; the others follow it"
    );
}

#[tokio::test]
async fn the_batching_publisher_groups_events_and_flushes_on_close() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:batching".parse().unwrap();
    let batching = publisher.batching(10, Duration::from_millis(50));
    let mut pending = Vec::new();
    for n in 1..=25 {
        pending.push(
            bounded("queue", batching.publish(request(&topic, n)))
                .await
                .unwrap(),
        );
    }
    bounded("flush", batching.flush()).await.unwrap();
    let mut seqs = Vec::new();
    for receipt in pending {
        seqs.push(bounded("receipt", receipt).await.unwrap().seq);
    }
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

    let last = bounded("queue", batching.publish(request(&topic, 26)))
        .await
        .unwrap();
    bounded("close", batching.close()).await;
    assert_eq!(bounded("receipt after close", last).await.unwrap().seq, 26);
}

#[tokio::test]
async fn the_batching_publisher_fails_only_the_events_the_hub_refuses_and_splits_what_is_too_large()
{
    // A subscriber's queue holds 8 events, so the hub refuses larger batches.
    let hub = Hub::start(&["--queue-size", "8"]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:refusals".parse().unwrap();
    let taken = EventId::new("taken").unwrap();
    bounded(
        "the event whose id is then reused",
        publisher.publish(request(&topic, 0).id(taken.clone())),
    )
    .await
    .unwrap();

    // 20 events in one batch: n = 5 reuses an id with other content (409),
    // n = 12 is over the hub's body limit (413).
    let batching = publisher.batching(20, Duration::from_secs(1));
    let mut pending = Vec::new();
    for n in 1..=20 {
        let request = match n {
            5 => request(&topic, n).id(taken.clone()),
            12 => PublishRequest::new(
                topic.clone(),
                EventType::StepCompleted,
                json!({"blob": "x".repeat(2 << 20)}),
            ),
            _ => request(&topic, n),
        };
        pending.push((
            n,
            bounded("queue", batching.publish(request)).await.unwrap(),
        ));
    }
    bounded("close", batching.close()).await;

    let mut seqs = Vec::new();
    for (n, receipt) in pending {
        match (n, bounded("receipt", receipt).await) {
            (5, Err(error)) => {
                let code = error.hub_error().map(|e| e.code);
                assert_eq!(code, Some(ErrorCode::Conflict), "{error}");
            }
            (12, Err(error)) => {
                let code = error.hub_error().map(|e| e.code);
                assert_eq!(code, Some(ErrorCode::TooLarge), "{error}");
            }
            (_, Ok(receipt)) => seqs.push(receipt.seq),
            (n, outcome) => panic!("event {n}: {outcome:?}"),
        }
    }
    // The other 18 are stored once each, in the order they were queued.
    assert_eq!(seqs, (2..=19).collect::<Vec<_>>());
    hub.stop().await;
}

#[tokio::test]
async fn sizes_past_the_limits_are_clamped_instead_of_panicking() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:clamped".parse().unwrap();
    // "Batch by time only": a size no batch reaches.
    let batching = publisher.batching(usize::MAX, Duration::from_millis(20));
    let queued = bounded("queue", batching.publish(request(&topic, 1)))
        .await
        .unwrap();
    assert_eq!(bounded("receipt", queued).await.unwrap().seq, 1);
    bounded("close", batching.close()).await;
    let mut subscriber = bounded(
        "connect",
        herald_client::Subscriber::builder(hub.url.clone())
            .topics([topic.clone().into()])
            .buffer(usize::MAX)
            .connect(),
    )
    .await
    .unwrap();
    crate::harness::subscribed(&mut subscriber).await;
    bounded("publish", publisher.publish(request(&topic, 2)))
        .await
        .unwrap();
    crate::harness::next_matching(&mut subscriber, "the event", |item| match item {
        herald_client::SubscriberItem::Event(event) if event.seq == 2 => Some(()),
        _ => None,
    })
    .await;
    hub.stop().await;
}

/// Answers every request with a 200 that claims 100 MiB and sends 32 MiB of it.
async fn answer_endlessly(listener: tokio::net::TcpListener) -> std::convert::Infallible {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let chunk = vec![b' '; 1 << 20];
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let mut request = [0; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n";
        let _ = socket.write_all(head.as_bytes()).await;
        for _ in 0..32 {
            if socket.write_all(&chunk).await.is_err() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn an_answer_larger_than_any_hubs_is_refused_not_read_whole() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let publisher = Publisher::new(&url).unwrap();
    let topic: Topic = "run:huge-answer".parse().unwrap();
    let outcome = tokio::select! {
        outcome = bounded("publish", publisher.publish(request(&topic, 1))) => outcome,
        never = answer_endlessly(listener) => match never {},
    };
    match outcome {
        Err(PublishError::Http(HttpError::AnswerTooLarge { limit })) => {
            assert_eq!(limit, 16 << 20);
        }
        other => panic!("expected the answer to be refused as too large, got {other:?}"),
    }
}

/// Answers every request with a 200 and a receipt for an event on `run:other`.
async fn answer_with_another_receipt(
    listener: tokio::net::TcpListener,
) -> std::convert::Infallible {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = r#"{"id":"00000000-0000-4000-8000-000000000000","topic":"run:other","seq":1}"#;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let mut request = [0; 4096];
        let _ = socket.read(&mut request).await;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(answer.as_bytes()).await;
    }
}

#[tokio::test]
async fn a_receipt_for_another_event_is_refused_not_reported_as_published() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let publisher = Publisher::new(&url).unwrap();
    let topic: Topic = "run:mine".parse().unwrap();
    let outcome = tokio::select! {
        outcome = bounded("publish", publisher.publish(request(&topic, 1))) => outcome,
        never = answer_with_another_receipt(listener) => match never {},
    };
    match outcome {
        Err(PublishError::ReceiptMismatch { sent, receipt }) => {
            assert!(sent.ends_with("on run:mine"), "{sent}");
            assert!(receipt.ends_with("on run:other"), "{receipt}");
        }
        other => panic!("expected the receipt to be refused, got {other:?}"),
    }
}

// Several workers: the flush task runs beside the test, as in a producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_batching_publisher_never_publishes_what_it_had_not_sent() {
    let hub = Hub::start(&[]).await;
    let publisher = Publisher::new(&hub.url).unwrap();
    let topic: Topic = "run:dropped".parse().unwrap();
    // Rounds, because whether the dropped queue is taken for a `close`
    // (and flushed) depends on which side of the drop the task runs.
    for round in 0..20 {
        let batching = publisher.batching(1000, Duration::from_secs(30));
        let queued = bounded("queue", batching.publish(request(&topic, round)))
            .await
            .unwrap();
        drop(batching);
        match bounded("receipt", queued).await {
            Err(PublishError::Stopped) => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
    // A flush would have been sent as the handle dropped: 200 ms is ample
    // for it to reach a hub on loopback, and a publish behind it takes seq
    // 1 only if none did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = bounded("publish", publisher.publish(request(&topic, 99)))
        .await
        .unwrap();
    assert_eq!(next.seq, 1, "a dropped queue was published");
    hub.stop().await;
}

#[tokio::test]
async fn a_batching_publisher_dropped_mid_request_says_the_event_may_be_published_and_names_its_id()
{
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let publisher = Publisher::new(&url).unwrap();
    let topic: Topic = "run:in-flight".parse().unwrap();
    let batching = publisher.batching(1, Duration::from_millis(1));
    let id = EventId::new("in-flight-1").unwrap();
    let queued = bounded("queue", batching.publish(request(&topic, 1).id(id.clone())))
        .await
        .unwrap();
    assert_eq!(queued.id(), Some(&id));
    // The request reached the "hub", which never answers it.
    let (mut socket, _) = bounded("the request", listener.accept()).await.unwrap();
    let mut head = [0; 64];
    let read = bounded("its first bytes", socket.read(&mut head))
        .await
        .unwrap();
    assert!(head[..read].starts_with(b"POST "), "{:?}", &head[..read]);
    drop(batching);
    match bounded("receipt", queued).await {
        Err(PublishError::StoppedWhileSending) => {}
        other => panic!("{other:?}"),
    }
}
