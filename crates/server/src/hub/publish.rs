//! The publish path: assign the seq under the topic's lock, serialize once,
//! then deliver (memory store) or hand the event to the store's journal and
//! deliver once it is durable.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use herald_protocol::{ErrorCode, Event, EventId, PublishReceipt, PublishRequest};

use super::{Hub, now_ms};
use crate::connection::ConnHandle;
use crate::outbox::{EventMeta, OutFrame, Pushed};
use crate::store::{Append, StoreError, Write};
use crate::stream::{Retained, Settle, Stream};

/// Where a publish stands once its seq is assigned.
enum Delivery {
    /// Delivered (memory store), to this many connections; or a duplicate (0).
    Done(u32),
    /// Handed to the durable store: delivered once `committed` resolves, and
    /// `settle.reached` then holds how many connections it was queued to.
    AwaitingStore {
        committed: tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
        settle: Arc<Settle>,
    },
    /// A retry of an event the durable store is still writing: it has the
    /// first attempt's outcome, once that is known.
    AwaitingFirstAttempt(tokio::sync::oneshot::Receiver<bool>),
}

/// A publish whose seq is assigned; with a durable store, not yet confirmed.
struct Enqueued {
    receipt: PublishReceipt,
    delivery: Delivery,
}

impl Enqueued {
    /// Waits until the event is durable (and so delivered).
    async fn finish(self, hub: &Hub) -> Result<(PublishReceipt, u32), PublishError> {
        match self.delivery {
            Delivery::Done(reached) => Ok((self.receipt, reached)),
            Delivery::AwaitingStore { committed, settle } => {
                committed
                    .await
                    .map_err(|_| PublishError::Store("the store stopped".into()))?
                    .map_err(|e| PublishError::Store(e.to_string()))?;
                Ok((self.receipt, settle.reached.load(Relaxed)))
            }
            Delivery::AwaitingFirstAttempt(settled) => match settled.await {
                Ok(true) => {
                    hub.inner.metrics.events_duplicate.fetch_add(1, Relaxed);
                    Ok((self.receipt, 0))
                }
                Ok(false) => Err(PublishError::Store(
                    "an earlier attempt with this id could not be stored; retry it".into(),
                )),
                Err(_) => Err(PublishError::Store("the store stopped".into())),
            },
        }
    }
}

/// Who an event is delivered to, besides the topic's subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The topic's subscribers (and matching pattern subscribers).
    Subscribers,
    /// Every connection, subscribed or not (broadcasts).
    Everyone,
    /// Every connection of this user, subscribed or not, plus the topic's subscribers.
    User(String),
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("the store failed: {0}")]
    Store(String),
}

impl PublishError {
    /// The code reported to the producer.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl Hub {
    /// Publishes an event to the topic's subscribers.
    pub async fn publish(&self, request: PublishRequest) -> Result<PublishReceipt, PublishError> {
        self.publish_to(request, Audience::Subscribers).await
    }

    /// Publishes an event and delivers it to `audience`.
    pub async fn publish_to(
        &self,
        request: PublishRequest,
        audience: Audience,
    ) -> Result<PublishReceipt, PublishError> {
        self.publish_counted(request, audience)
            .await
            .map(|(receipt, _)| receipt)
    }

    /// Publishes, and tells how many connections the event was queued to
    /// (0 for a duplicate).
    pub(super) async fn publish_counted(
        &self,
        request: PublishRequest,
        audience: Audience,
    ) -> Result<(PublishReceipt, u32), PublishError> {
        self.enqueue(request, audience).await?.finish(self).await
    }

    /// Publishes a batch in order: every event is assigned its seq and handed
    /// to the store first, then the whole batch is awaited, so a durable store
    /// commits it together instead of once per event.
    pub async fn publish_many(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishReceipt>, PublishError> {
        let mut pending = Vec::with_capacity(requests.len());
        for request in requests {
            pending.push(self.enqueue(request, Audience::Subscribers).await?);
        }
        let mut receipts = Vec::with_capacity(pending.len());
        for enqueued in pending {
            receipts.push(enqueued.finish(self).await?.0);
        }
        Ok(receipts)
    }

    /// Publishes without waiting for a durable store to confirm the write
    /// (fire-and-forget producers: nobody is waiting for an acknowledgement).
    /// The event is still delivered only once it is durable.
    pub async fn publish_detached(
        &self,
        request: PublishRequest,
    ) -> Result<PublishReceipt, PublishError> {
        Ok(self.enqueue(request, Audience::Subscribers).await?.receipt)
    }

    /// Assigns the seq and delivers (memory store) or hands the event to the
    /// store's journal (durable store), in seq order per topic.
    async fn enqueue(
        &self,
        request: PublishRequest,
        audience: Audience,
    ) -> Result<Enqueued, PublishError> {
        if self.inner.shutdown.is_cancelled() && audience != Audience::Everyone {
            return Err(PublishError::ShuttingDown);
        }
        // With a durable store, room in its journal is taken before the topic's
        // lock, so the lock is never held across a wait.
        let permit = match &self.inner.store {
            None => None,
            Some(store) => {
                let journal = store.journal().ok_or(PublishError::ShuttingDown)?;
                Some(
                    journal
                        .reserve_owned()
                        .await
                        .map_err(|_| PublishError::ShuttingDown)?,
                )
            }
        };
        let stream_ref = self.stream(&request.topic);
        let (receipt, delivery) = {
            let mut stream = stream_ref.lock();
            let id = match request.id {
                Some(id) => {
                    if let Some(seq) = stream.seq_of(&id) {
                        // A retry that overtakes the first attempt's durable
                        // write is answered with that write's outcome: a
                        // receipt now would vouch for an event the store
                        // may still fail to keep.
                        let delivery = if !stream.is_pending(seq) {
                            self.inner.metrics.events_duplicate.fetch_add(1, Relaxed);
                            Delivery::Done(0)
                        } else if let Some(settled) = stream.when_settled(seq) {
                            Delivery::AwaitingFirstAttempt(settled)
                        } else {
                            return Err(PublishError::Store("the store stopped".into()));
                        };
                        let receipt = PublishReceipt {
                            id,
                            topic: request.topic,
                            seq,
                        };
                        return Ok(Enqueued { receipt, delivery });
                    }
                    id
                }
                None => new_event_id(),
            };
            let seq = stream.assign(&id);
            let event = Event {
                topic: request.topic,
                seq,
                id,
                event_type: request.event_type,
                priority: request.priority,
                timestamp: request.timestamp.unwrap_or_else(now_ms),
                source: request.source,
                key: request.key,
                data: request.data,
            };
            let receipt = PublishReceipt {
                id: event.id.clone(),
                topic: event.topic.clone(),
                seq,
            };
            let retained = Retained::new(event);
            match permit {
                None => {
                    let reached = self.deliver(&mut stream, retained, &audience);
                    (receipt, Delivery::Done(reached))
                }
                Some(permit) => {
                    let (done, committed) = tokio::sync::oneshot::channel();
                    let settle = Arc::new(Settle::default());
                    stream.writing(seq, &settle);
                    let hub = self.clone();
                    let target = stream_ref.clone();
                    let event = retained.event.clone();
                    let outcome = settle.clone();
                    permit.send(Write::Event(Append {
                        event,
                        epoch: stream.epoch.clone(),
                        then: Box::new(move |committed| {
                            let mut stream = target.lock();
                            if committed {
                                // It enters history (and its age starts) now,
                                // not when its seq was assigned.
                                let mut retained = retained;
                                retained.retained_at = Instant::now();
                                let n = hub.deliver(&mut stream, retained, &audience);
                                outcome.reached.store(n, Relaxed);
                            } else {
                                // Never stored, never delivered: a later retry
                                // with this id must be published, not answered
                                // as a duplicate of an event nobody will get.
                                stream.give_up(&retained.event.id, seq);
                            }
                            stream.settled(seq);
                            drop(stream);
                            outcome.tell(committed);
                        }),
                        done,
                    }));
                    (receipt, Delivery::AwaitingStore { committed, settle })
                }
            }
        };
        Ok(Enqueued { receipt, delivery })
    }

    /// Retains an event whose seq was assigned, and fans it out.
    fn deliver(&self, stream: &mut Stream, retained: Retained, audience: &Audience) -> u32 {
        // Counted here, where every published event passes exactly once
        // (duplicates never do), whichever store and entry point it came from.
        self.inner.metrics.events_published.fetch_add(1, Relaxed);
        let event = retained.event.clone();
        let frame = OutFrame {
            text: retained.frame.clone(),
            event: Some(EventMeta {
                topic: event.topic.clone(),
                seq: event.seq,
                priority: event.priority,
                // Now, give or take the encoding: `retained_at` is when the
                // event enters history, which is when it is delivered.
                published: retained.retained_at,
            }),
        };
        let delta = stream.retain(retained, self.inner.config.history_size);
        self.inner.retained_bytes.fetch_add(delta, Relaxed);
        // Counted locally and added once: no shared atomic per recipient.
        let (mut reached, mut shed) = (0u32, 0u64);
        self.each_recipient(stream, &event, audience, |conn| {
            match conn.outbox.push(frame.clone()) {
                Pushed::Queued => reached += 1,
                Pushed::Shed => {
                    reached += 1;
                    shed += 1;
                }
                Pushed::Closed => {}
            }
        });
        let metrics = &self.inner.metrics;
        metrics
            .events_delivered
            .fetch_add(u64::from(reached), Relaxed);
        if shed > 0 {
            metrics.events_shed.fetch_add(shed, Relaxed);
        }
        reached
    }

    /// Calls `push` once for every connection `event` goes to: the
    /// audience's, then the topic's exact subscribers, `kind:*` and `*`
    /// subscribers whose filter matches, each connection at most once.
    fn each_recipient(
        &self,
        stream: &Stream,
        event: &Event,
        audience: &Audience,
        mut push: impl FnMut(&ConnHandle),
    ) {
        let user: Option<&str> = match audience {
            Audience::Subscribers => None,
            Audience::Everyone => {
                for conn in self.inner.connections.read().values() {
                    push(conn);
                }
                return;
            }
            Audience::User(user) => {
                let connections = self.inner.connections.read();
                if let Some(ids) = self.inner.users.read().get(user.as_str()) {
                    for conn in ids.iter().filter_map(|id| connections.get(id)) {
                        push(conn);
                    }
                }
                Some(user)
            }
        };
        let reached_user =
            |conn: &ConnHandle| user.is_some_and(|u| conn.user_id.as_deref() == Some(u));
        let exact_matched = |id: &str| {
            stream
                .subscribers
                .get(id)
                .is_some_and(|s| s.filter.matches(event))
        };
        for sub in stream.subscribers.values() {
            if !reached_user(&sub.conn) && sub.filter.matches(event) {
                push(&sub.conn);
            }
        }
        let patterns = self.inner.patterns.read();
        let by_kind = event
            .topic
            .id()
            .and_then(|_| patterns.kinds.get(event.topic.kind()));
        if let Some(by_kind) = by_kind {
            for (id, sub) in by_kind {
                if !reached_user(&sub.conn) && !exact_matched(id) && sub.filter.matches(event) {
                    push(&sub.conn);
                }
            }
        }
        for (id, sub) in &patterns.all {
            let kind_matched = by_kind
                .and_then(|k| k.get(id))
                .is_some_and(|s| s.filter.matches(event));
            if !reached_user(&sub.conn)
                && !exact_matched(id)
                && !kind_matched
                && sub.filter.matches(event)
            {
                push(&sub.conn);
            }
        }
    }
}

#[allow(
    clippy::expect_used,
    reason = "a hyphenated UUID is 36 printable bytes: always a valid id"
)]
fn new_event_id() -> EventId {
    EventId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid event id")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use herald_protocol::{EventId, EventType, PublishRequest, Topic};
    use parking_lot::Mutex;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{Audience, PublishError};
    use crate::config::Config;
    use crate::hub::Hub;
    use crate::store::{RecoveredTopic, Store, StoreError, Write};

    /// A durable store whose writes end as the test says, one verdict per
    /// write (`false`: the write fails, as on a full disk), and not before.
    #[derive(Debug)]
    struct ScriptedStore {
        journal: Mutex<Option<mpsc::Sender<Write>>>,
    }

    impl ScriptedStore {
        /// The store, and where the test sends each write's verdict.
        fn start() -> (Arc<ScriptedStore>, std::sync::mpsc::Sender<bool>) {
            let (journal, mut writes) = mpsc::channel::<Write>(16);
            let (verdict, verdicts) = std::sync::mpsc::channel::<bool>();
            // Ends when the hub (and with it the journal's sender) or the
            // test's verdict sender is dropped.
            std::thread::spawn(move || {
                while let Some(write) = writes.blocking_recv() {
                    let Ok(stored) = verdicts.recv() else { return };
                    write.finish(&if stored {
                        Ok(())
                    } else {
                        Err(StoreError::Write("disk full".into()))
                    });
                }
            });
            let store = Arc::new(ScriptedStore {
                journal: Mutex::new(Some(journal)),
            });
            (store, verdict)
        }
    }

    impl Store for ScriptedStore {
        fn recover(&self) -> Result<Vec<RecoveredTopic>, StoreError> {
            Ok(Vec::new())
        }

        fn recover_approvals(&self) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }

        fn journal(&self) -> Option<mpsc::Sender<Write>> {
            self.journal.lock().clone()
        }

        fn close(&self) {
            self.journal.lock().take();
        }
    }

    fn hub_with_scripted_store() -> (Hub, std::sync::mpsc::Sender<bool>) {
        let (store, verdict) = ScriptedStore::start();
        let hub = Hub::with_store(Config::default(), CancellationToken::new(), Some(store));
        (hub, verdict)
    }

    /// An event with a producer-chosen id, as every attempt of it sends.
    fn with_id() -> PublishRequest {
        let mut request = PublishRequest::new(
            Topic::parse("run:1").unwrap(),
            EventType::StepProgress,
            serde_json::Value::Null,
        );
        request.id = Some(EventId::new("step-3").unwrap());
        request
    }

    #[tokio::test]
    async fn a_retry_after_a_failed_durable_write_is_published_again_not_taken_for_a_duplicate() {
        let (hub, verdict) = hub_with_scripted_store();
        // Before the fix, the retry got a success receipt for the first
        // attempt's seq: an event that was never stored nor delivered.
        for attempt in 1..=2 {
            verdict.send(false).unwrap();
            let result = hub.publish(with_id()).await;
            assert!(
                matches!(result, Err(PublishError::Store(_))),
                "attempt {attempt}: {result:?}"
            );
        }
        assert_eq!(hub.metrics().events_duplicate.load(Relaxed), 0);
        // The third attempt is stored, at the seq nobody was ever told of.
        verdict.send(true).unwrap();
        assert_eq!(hub.publish(with_id()).await.unwrap().seq, 1);
        hub.close_store();
    }

    #[tokio::test]
    async fn a_retry_that_overtakes_a_pending_write_gets_its_failure_not_a_receipt() {
        let (hub, verdict) = hub_with_scripted_store();
        let first = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        let retry = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        let mut retry = Box::pin(retry.finish(&hub));
        // Before the fix, the retry was answered at once with a receipt.
        assert!(futures::poll!(&mut retry).is_pending());
        verdict.send(false).unwrap();
        assert!(matches!(
            first.finish(&hub).await,
            Err(PublishError::Store(_))
        ));
        assert!(matches!(retry.await, Err(PublishError::Store(_))));
        assert_eq!(hub.metrics().events_duplicate.load(Relaxed), 0);
        verdict.send(true).unwrap();
        assert_eq!(hub.publish(with_id()).await.unwrap().seq, 1);
        hub.close_store();
    }

    #[tokio::test]
    async fn a_retry_waiting_on_a_write_its_store_dropped_is_answered_not_left_hanging() {
        let (hub, verdict) = hub_with_scripted_store();
        let first = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        let retry = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        // The store's writer stops with the write in hand, never finishing it.
        drop(verdict);
        let answers = async { (first.finish(&hub).await, retry.finish(&hub).await) };
        let (first, retry) = tokio::time::timeout(std::time::Duration::from_secs(10), answers)
            .await
            .expect("the retry was left waiting");
        assert!(matches!(first, Err(PublishError::Store(_))), "{first:?}");
        assert!(matches!(retry, Err(PublishError::Store(_))), "{retry:?}");
        hub.close_store();
    }

    #[tokio::test]
    async fn a_retry_that_overtakes_a_pending_write_gets_the_first_receipt_once_it_is_stored() {
        let (hub, verdict) = hub_with_scripted_store();
        let first = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        let retry = hub.enqueue(with_id(), Audience::Subscribers).await.unwrap();
        let mut retry = Box::pin(retry.finish(&hub));
        assert!(futures::poll!(&mut retry).is_pending());
        verdict.send(true).unwrap();
        let (stored, _) = first.finish(&hub).await.unwrap();
        let (answered, reached) = retry.await.unwrap();
        assert_eq!(answered, stored);
        assert_eq!(reached, 0, "a duplicate is delivered to nobody");
        assert_eq!(hub.metrics().events_duplicate.load(Relaxed), 1);
        hub.close_store();
    }
}
