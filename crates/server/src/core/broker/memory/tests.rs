//! The memory engine's publish path with a durable journal whose writes end
//! as each test says, idempotency, and eviction.

use std::sync::Weak;

use herald_protocol::{EventId, EventType, PublishRequest};
use serde_json::json;

use super::*;

/// The node side, reduced to the seqs it was handed, and the runs of
/// several it was handed at once (topic and seqs).
#[derive(Debug, Default)]
struct Recorder {
    delivered: Mutex<Vec<u64>>,
    runs: Mutex<Vec<(String, Vec<u64>)>>,
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, publication: &Publication<'_>) -> u32 {
        self.delivered.lock().push(publication.event.event.seq);
        1
    }

    fn on_publications(&self, publications: &[Publication<'_>]) -> Vec<u32> {
        let topic = publications[0].event.event.topic.to_string();
        let seqs = publications.iter().map(|p| p.event.event.seq).collect();
        self.runs.lock().push((topic, seqs));
        publications
            .iter()
            .map(|p| self.on_publication(p))
            .collect()
    }

    fn on_approval(&self, _record: &ApprovalRecord) {}

    fn on_gap(&self, _gap: &herald_protocol::frame::Gap) {}
}

fn retention() -> Retention {
    Retention {
        history_size: 100,
        history_age: Duration::from_secs(60),
        history_memory: 1 << 20,
    }
}

/// A durable engine whose writes end as the test says, one verdict per
/// write (`false`: the write fails, as on a full disk), and not before.
fn scripted() -> (MemoryBroker, Arc<Recorder>, std::sync::mpsc::Sender<bool>) {
    let (journal, mut writes) = mpsc::channel::<Write>(16);
    let recorder = Arc::new(Recorder::default());
    let durable = Durable {
        journal: Mutex::new(Some(journal)),
        sqlite: None,
    };
    let broker = MemoryBroker::with_durable(
        retention(),
        recorder.clone(),
        Some(durable),
        super::super::new_epoch(),
    );
    let (verdict, verdicts) = std::sync::mpsc::channel::<bool>();
    let engine: Weak<Shared> = Arc::downgrade(&broker.shared);
    // Ends when the engine or the test's verdict sender is dropped; a
    // write in hand then is dropped unfinished.
    std::thread::spawn(move || {
        while let Some(write) = writes.blocking_recv() {
            let Ok(stored) = verdicts.recv() else { return };
            let result = if stored {
                Ok(())
            } else {
                Err(BrokerError::Write("disk full".into()))
            };
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match write {
                Write::Event(write) => engine.event_written(write, &result),
                Write::Approval(write) => {
                    let _ = write.done.send(result);
                }
            }
        }
    });
    (broker, recorder, verdict)
}

/// An event with a producer-chosen id, as every attempt of it sends.
fn with_id(data: serde_json::Value) -> Draft {
    let request = PublishRequest::new(
        Topic::parse("run:1").unwrap(),
        EventType::StepProgress,
        data,
    )
    .id(EventId::new("step-3").unwrap());
    Draft::new(request, || unreachable!("the id is given"), 0)
}

async fn publish(broker: &MemoryBroker, draft: Draft) -> Result<Published, BrokerError> {
    let mut published = broker
        .publish(vec![draft], Audience::Subscribers, Wait::Stored)
        .await?;
    Ok(published.remove(0))
}

#[tokio::test]
async fn a_retry_after_a_failed_durable_write_is_published_again_not_taken_for_a_duplicate() {
    let (broker, recorder, verdict) = scripted();
    for attempt in 1..=2 {
        verdict.send(false).unwrap();
        let result = publish(&broker, with_id(json!(1))).await;
        assert!(
            matches!(result, Err(BrokerError::Write(_))),
            "attempt {attempt}: {result:?}"
        );
    }
    // The third attempt is stored, at the seq nobody was ever told of.
    verdict.send(true).unwrap();
    let published = publish(&broker, with_id(json!(1))).await.unwrap();
    assert_eq!((published.receipt.seq, published.duplicate), (1, false));
    assert_eq!(*recorder.delivered.lock(), [1]);
    broker.close().await;
}

#[tokio::test]
async fn a_retry_that_overtakes_a_pending_write_gets_its_failure_not_a_receipt() {
    let (broker, _, verdict) = scripted();
    let audience = Audience::Subscribers;
    let first = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    let retry = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    let mut retry = Box::pin(retry.finish(Wait::Stored));
    assert!(futures::poll!(&mut retry).is_pending());
    verdict.send(false).unwrap();
    assert!(matches!(
        first.finish(Wait::Stored).await,
        Err(BrokerError::Write(_))
    ));
    assert_eq!(retry.await, Err(BrokerError::EarlierAttemptFailed));
    verdict.send(true).unwrap();
    assert_eq!(
        publish(&broker, with_id(json!(1)))
            .await
            .unwrap()
            .receipt
            .seq,
        1
    );
    broker.close().await;
}

#[tokio::test]
async fn a_retry_waiting_on_a_write_its_store_dropped_is_answered_not_left_hanging() {
    let (broker, _, verdict) = scripted();
    let audience = Audience::Subscribers;
    let first = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    let retry = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    // The store's writer stops with the write in hand, never finishing it.
    drop(verdict);
    let answers = async {
        (
            first.finish(Wait::Stored).await,
            retry.finish(Wait::Stored).await,
        )
    };
    let (first, retry) = tokio::time::timeout(Duration::from_secs(10), answers)
        .await
        .expect("the retry was left waiting");
    assert_eq!(first, Err(BrokerError::Closed));
    assert_eq!(retry, Err(BrokerError::Closed));
    broker.close().await;
}

#[tokio::test]
async fn a_retry_that_overtakes_a_pending_write_gets_the_first_receipt_once_it_is_stored() {
    let (broker, recorder, verdict) = scripted();
    let audience = Audience::Subscribers;
    let first = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    let retry = broker
        .shared
        .enqueue(with_id(json!(1)), audience, false)
        .await
        .unwrap();
    let mut retry = Box::pin(retry.finish(Wait::Stored));
    assert!(futures::poll!(&mut retry).is_pending());
    verdict.send(true).unwrap();
    let stored = first.finish(Wait::Stored).await.unwrap();
    let answered = retry.await.unwrap();
    assert_eq!(answered.receipt, stored.receipt);
    assert!(answered.duplicate && !stored.duplicate);
    assert_eq!(answered.reached, 0, "a duplicate is delivered to nobody");
    assert_eq!(*recorder.delivered.lock(), [1]);
    broker.close().await;
}

#[tokio::test]
async fn an_id_reused_with_other_content_is_a_conflict_and_a_true_retry_a_duplicate() {
    let recorder = Arc::new(Recorder::default());
    let broker = MemoryBroker::new(retention(), recorder.clone());
    let stored = publish(&broker, with_id(json!({"step": 3}))).await.unwrap();
    let retry = publish(&broker, with_id(json!({"step": 3}))).await.unwrap();
    assert_eq!(retry.receipt, stored.receipt);
    assert!(retry.duplicate);
    let other = publish(&broker, with_id(json!({"step": 4}))).await;
    assert_eq!(
        other,
        Err(BrokerError::Conflict {
            topic: "run:1".parse().unwrap(),
            id: "step-3".to_owned()
        })
    );
    assert_eq!(
        *recorder.delivered.lock(),
        [1],
        "delivered once, nothing else"
    );
}

/// An event on `topic` whose id is `id`.
fn event_on(topic: &str, id: &str, data: serde_json::Value) -> Draft {
    let request = PublishRequest::new(Topic::parse(topic).unwrap(), EventType::StepProgress, data)
        .id(EventId::new(id).unwrap());
    Draft::new(request, || unreachable!("the id is given"), 0)
}

/// An engine in memory only, and what its node was handed.
fn in_memory() -> (MemoryBroker, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    (MemoryBroker::new(retention(), recorder.clone()), recorder)
}

async fn publish_all(
    broker: &MemoryBroker,
    batch: Vec<Draft>,
) -> Result<Vec<Published>, BrokerError> {
    broker
        .publish(batch, Audience::Subscribers, Wait::Stored)
        .await
}

#[tokio::test]
async fn a_batch_reaches_the_node_as_runs_of_consecutive_events_of_one_topic() {
    let (broker, recorder) = in_memory();
    let batch = vec![
        event_on("run:a", "a1", json!(1)),
        event_on("run:a", "a2", json!(2)),
        event_on("run:b", "b1", json!(3)),
        event_on("run:a", "a3", json!(4)),
    ];
    let published = publish_all(&broker, batch).await.unwrap();
    let seqs: Vec<u64> = published.iter().map(|p| p.receipt.seq).collect();
    assert_eq!(seqs, [1, 2, 1, 3]);
    assert_eq!(
        *recorder.runs.lock(),
        [
            ("run:a".to_owned(), vec![1, 2]),
            ("run:b".to_owned(), vec![1]),
            ("run:a".to_owned(), vec![3]),
        ]
    );
}

#[tokio::test]
async fn an_id_repeated_within_a_batch_is_judged_against_the_event_stored_before_it() {
    let (broker, recorder) = in_memory();
    let batch = vec![
        event_on("run:a", "a1", json!(1)),
        event_on("run:a", "a2", json!(2)),
        event_on("run:a", "a1", json!(1)),
        event_on("run:a", "a3", json!(3)),
    ];
    let published = publish_all(&broker, batch).await.unwrap();
    let answers: Vec<(u64, bool)> = published
        .iter()
        .map(|p| (p.receipt.seq, p.duplicate))
        .collect();
    assert_eq!(answers, [(1, false), (2, false), (1, true), (3, false)]);
    assert_eq!(*recorder.delivered.lock(), [1, 2, 3]);
    // The same id with other content: the events before it are stored and
    // delivered, and the publish fails there.
    let batch = vec![
        event_on("run:a", "a4", json!(4)),
        event_on("run:a", "a4", json!("not 4")),
        event_on("run:a", "a5", json!(5)),
    ];
    let failed = publish_all(&broker, batch).await;
    assert_eq!(
        failed,
        Err(BrokerError::Conflict {
            topic: "run:a".parse().unwrap(),
            id: "a4".to_owned()
        })
    );
    assert_eq!(*recorder.delivered.lock(), [1, 2, 3, 4]);
}

#[test]
fn a_stream_someone_holds_is_not_evicted_under_them() {
    let retention = Retention {
        history_age: Duration::ZERO,
        ..retention()
    };
    let broker = MemoryBroker::new(retention, Arc::new(Recorder::default()));
    let topic = Topic::parse("run:idle").unwrap();
    // Idle for long past the (zero) history age, and held, as by a
    // publisher between taking the stream and locking it.
    let long_ago = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
    let held = broker.shared.log(&topic);
    held.lock().last_activity = long_ago;
    broker.sweep();
    assert_eq!(broker.stats().topics, 1);
    held.lock().assign(&EventId::new("e1").unwrap());
    drop(held);
    // Idle again only once its seq is delivered; then it may go, and it
    // comes back at the seq it had.
    {
        let log = broker.shared.log(&topic);
        let mut log = log.lock();
        log.delivered_seq = 1;
        log.last_activity = long_ago;
    }
    broker.sweep();
    assert_eq!(broker.stats().topics, 0);
    assert_eq!(broker.shared.log(&topic).lock().assigned_seq, 1);
}

#[tokio::test]
async fn a_decision_the_store_could_not_keep_leaves_the_approval_pending_for_another_answer() {
    use herald_protocol::CallbackId;
    use herald_protocol::payload::ApprovalStatus;

    use super::approval_book::tests::{decision, pending};
    use crate::core::broker::ApprovalStoreError;

    let (broker, _, verdict) = scripted();
    let id = CallbackId::new("a1").unwrap();
    verdict.send(true).unwrap();
    broker
        .create_approval(pending("a1", "u1", u64::MAX))
        .await
        .unwrap();
    verdict.send(false).unwrap();
    let refused = broker
        .decide_approval(&id, decision(ApprovalStatus::Approved, Some("u1")))
        .await;
    assert!(
        matches!(
            refused,
            Err(ApprovalStoreError::Broker(BrokerError::Write(_)))
        ),
        "{refused:?}"
    );
    let record = broker.approval(&id).await.unwrap().unwrap();
    assert_eq!(record.status, ApprovalStatus::Pending);
    verdict.send(true).unwrap();
    let decided = broker
        .decide_approval(&id, decision(ApprovalStatus::Rejected, Some("u1")))
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Rejected);
    broker.close().await;
}

#[tokio::test]
async fn a_timeout_the_store_could_not_keep_is_applied_again_shortly() {
    use herald_protocol::payload::{ApprovalStatus, NewApproval};
    use tokio_util::sync::CancellationToken;

    use crate::core::approvals::Approvals;
    use crate::core::publish::Publisher;
    use crate::operations::metrics::Metrics;

    let (broker, recorder, verdict) = scripted();
    let broker: Arc<dyn Broker> = Arc::new(broker);
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let publisher = Publisher::new(broker.clone(), CancellationToken::new(), metrics.clone());
    let approvals = Approvals::new(
        broker.clone(),
        publisher,
        Arc::default(),
        Duration::from_secs(60),
        false,
        metrics,
    );
    // The approval, its two requests and that they were published are
    // stored; its timeout is not, then is; then the two decisions' events
    // are, and that they were published.
    for stored in [true, true, true, true, false, true, true, true, true] {
        verdict.send(stored).unwrap();
    }
    let asked = approvals
        .create(NewApproval {
            user_id: "u1".to_owned(),
            task_id: "t1".to_owned(),
            step: 1,
            step_result: approval_book::tests::step_result(),
            timeout_ms: Some(1),
            default_proceed: Some(false),
        })
        .await
        .unwrap();
    let id = asked.request.callback_id.to_string();
    // Kept at last: its `approval.resolved` events follow the two requests.
    let timed_out = async {
        while recorder.delivered.lock().len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            () = approvals.run_timeouts(stop.clone()) => false,
            () = timed_out => true,
        }
    })
    .await;
    assert_eq!(outcome, Ok(true), "the timeout was not applied again");
    let record = approvals.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, ApprovalStatus::TimedOut);
}

#[tokio::test]
async fn approval_changes_stored_but_not_published_are_still_owed_after_a_restart() {
    use herald_protocol::payload::ApprovalStatus;

    use crate::core::broker::Decision;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let far = u64::MAX / 2;
    let asked = approval_book::tests::pending("asked", "u1", far);
    let answered = approval_book::tests::pending("answered", "u1", far);
    let settled = approval_book::tests::pending("settled", "u1", far);
    let id = |record: &ApprovalRecord| record.request.callback_id.clone();
    {
        let broker =
            MemoryBroker::open_sqlite(&path, retention(), Arc::new(Recorder::default())).unwrap();
        for record in [&asked, &answered, &settled] {
            broker.create_approval(record.clone()).await.unwrap();
        }
        broker.announced(&id(&answered), true).await.unwrap();
        broker.announced(&id(&settled), true).await.unwrap();
        // Decided, then the hub stopped before publishing the decision;
        // the request's publication, said after the decision was stored,
        // does not settle the decision.
        let decision = Decision::by_hub(ApprovalStatus::Cancelled, false, None);
        broker
            .decide_approval(&id(&answered), decision)
            .await
            .unwrap();
        broker.announced(&id(&answered), true).await.unwrap();
        let owed: Vec<String> = broker
            .unannounced(Duration::ZERO)
            .await
            .unwrap()
            .iter()
            .map(|record| record.request.callback_id.to_string())
            .collect();
        assert!(owed.contains(&"answered".to_owned()), "{owed:?}");
        broker.close().await;
    }
    let broker =
        MemoryBroker::open_sqlite(&path, retention(), Arc::new(Recorder::default())).unwrap();
    // Due at once, however long a pass waits before taking one over.
    let mut owed: Vec<(String, ApprovalStatus)> = broker
        .unannounced(Duration::from_secs(3600))
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.request.callback_id.to_string(), record.status))
        .collect();
    owed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        owed,
        [
            ("answered".to_owned(), ApprovalStatus::Cancelled),
            ("asked".to_owned(), ApprovalStatus::Pending),
        ]
    );
    broker.announced(&id(&asked), true).await.unwrap();
    broker.announced(&id(&answered), false).await.unwrap();
    broker.close().await;
    let broker =
        MemoryBroker::open_sqlite(&path, retention(), Arc::new(Recorder::default())).unwrap();
    assert!(broker.unannounced(Duration::ZERO).await.unwrap().is_empty());
    broker.close().await;
}

#[tokio::test]
async fn reading_topics_nobody_published_to_keeps_nothing_and_their_first_event_keeps_the_epoch_read()
 {
    let (broker, _) = in_memory();
    let nothing = ReadRequest {
        snapshot: None,
        history: None,
    };
    let mut read = Vec::new();
    for n in 0..1000 {
        let topic = Topic::parse(&format!("run:quiet-{n}")).unwrap();
        read.push(broker.read(&topic, nothing).await.unwrap().position);
    }
    assert!(broker.shared.logs.read().is_empty());
    assert!(broker.shared.dormant.lock().is_empty());
    assert!(read.iter().all(|position| position.seq == 0));
    let published = publish_all(&broker, vec![event_on("run:quiet-7", "first", json!({}))])
        .await
        .unwrap();
    assert_eq!(published[0].receipt.seq, 1);
    let topic = Topic::parse("run:quiet-7").unwrap();
    let now = broker.read(&topic, nothing).await.unwrap().position;
    assert_eq!((now.epoch, now.seq), (read[7].epoch.clone(), 1));
}
