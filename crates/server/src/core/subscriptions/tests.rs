//! The seam between a replay and live delivery, with events published while
//! the broker is being read: before the read's position (they are in the
//! replay, and must not come twice) and after it (they are held, and must
//! come once, after the replay); and with a store that runs ahead of this
//! node's deliveries (as a shared store does): events the read already
//! gave, delivered to the node afterwards, must not come twice either.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_protocol::frame::{Gap, Since, Subscribe};
use herald_protocol::payload::ApprovalRecord;
use herald_protocol::{
    CallbackId, Epoch, EventFilter, EventType, Priority, PublishRequest, Topic, TopicPattern,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Subscriptions;
use crate::core::approvals::Decisions;
use crate::core::broker::memory::MemoryBroker;
use crate::core::broker::{
    ApprovalQuery, ApprovalStoreError, Audience, Broker, BrokerError, BrokerHandler, BrokerStats,
    Decision, Draft, EncodedEvent, Expired, PatternSnapshots, Publication, Published, ReadRequest,
    Retention, TopicRead, Wait,
};
use crate::core::connection::ConnHandle;
use crate::core::connections::Connections;
use crate::core::fanout::{Fanout, NodeHandler};
use crate::core::outbox::{Direct, DirectWrite, Entry, OutFrame, Pace, Queued, Wrote};
use crate::operations::metrics::Metrics;

/// A memory broker whose reads are raced: `before` events are published
/// just before a read (so the read includes them), `after` events just
/// after it (so it does not); and `restart`, after the events of its side
/// of the read, makes the engine forget every stream and publishes its
/// events, which start new streams.
#[derive(Debug)]
struct RacedReads {
    inner: MemoryBroker,
    before: Mutex<Vec<Draft>>,
    after: Mutex<Vec<Draft>>,
    restart: Mutex<Option<Restart>>,
}

/// Streams started again on one side of a read (see [`RacedReads`]).
#[derive(Debug)]
struct Restart {
    before_the_read: bool,
    events: Vec<Draft>,
}

impl RacedReads {
    async fn publish_now(&self, drafts: Vec<Draft>) {
        if !drafts.is_empty() {
            self.inner
                .publish(drafts, Audience::Subscribers, Wait::Stored)
                .await
                .unwrap();
        }
    }

    /// Evicts every stream, then fills what a [`forgetful_node`]'s engine
    /// remembers with two more evicted streams, so that it forgets them.
    async fn forget_every_stream(&self) {
        self.inner.sweep();
        for topic in ["run:2", "run:3"] {
            self.publish_now(vec![draft(topic, 1)]).await;
            self.inner.sweep();
        }
    }

    /// Runs the restart meant for this side of the read, if any.
    async fn restart_if(&self, before_the_read: bool) {
        let restart = {
            let mut restart = self.restart.lock();
            match &*restart {
                Some(r) if r.before_the_read == before_the_read => restart.take(),
                _ => None,
            }
        };
        if let Some(restart) = restart {
            self.forget_every_stream().await;
            self.publish_now(restart.events).await;
        }
    }
}

#[async_trait]
impl Broker for RacedReads {
    async fn publish(
        &self,
        batch: Vec<Draft>,
        audience: Audience,
        wait: Wait,
    ) -> Result<Vec<Published>, BrokerError> {
        self.inner.publish(batch, audience, wait).await
    }

    async fn read(
        &self,
        topic: &Topic,
        request: ReadRequest<'_>,
    ) -> Result<TopicRead, BrokerError> {
        let before = std::mem::take(&mut *self.before.lock());
        self.publish_now(before).await;
        self.restart_if(true).await;
        let read = self.inner.read(topic, request).await;
        let after = std::mem::take(&mut *self.after.lock());
        self.publish_now(after).await;
        self.restart_if(false).await;
        read
    }

    async fn snapshots(
        &self,
        pattern: &TopicPattern,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<PatternSnapshots, BrokerError> {
        self.inner.snapshots(pattern, filter, limit).await
    }

    async fn subscribe(&self, pattern: &TopicPattern) -> Result<(), BrokerError> {
        self.inner.subscribe(pattern).await
    }

    async fn unsubscribe(&self, pattern: &TopicPattern) {
        self.inner.unsubscribe(pattern).await;
    }

    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), ApprovalStoreError> {
        self.inner.create_approval(record).await
    }

    async fn decide_approval(
        &self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError> {
        self.inner.decide_approval(id, decision).await
    }

    async fn record_delivery(&self, id: &CallbackId, connections: u32) -> Result<(), BrokerError> {
        self.inner.record_delivery(id, connections).await
    }

    async fn announced(&self, id: &CallbackId, pending: bool) -> Result<bool, BrokerError> {
        self.inner.announced(id, pending).await
    }

    async fn unannounced(&self, older_than: Duration) -> Result<Vec<ApprovalRecord>, BrokerError> {
        self.inner.unannounced(older_than).await
    }

    async fn approval(&self, id: &CallbackId) -> Result<Option<ApprovalRecord>, BrokerError> {
        self.inner.approval(id).await
    }

    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, BrokerError> {
        self.inner.approvals(query).await
    }

    async fn claim_expired(&self, now_ms: u64) -> Result<Expired, BrokerError> {
        self.inner.claim_expired(now_ms).await
    }

    fn stats(&self) -> BrokerStats {
        self.inner.stats()
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

/// The node's handler, which can fall behind the store: while `behind` is
/// set, publications wait in `late` until [`Lagging::catch_up`].
#[derive(Debug)]
struct Lagging {
    inner: NodeHandler,
    behind: Mutex<bool>,
    late: Mutex<Vec<(EncodedEvent, Epoch, Audience)>>,
}

impl Lagging {
    /// Delivers what waited, each stretch of one topic's events as one run.
    fn catch_up(&self) {
        *self.behind.lock() = false;
        let late = std::mem::take(&mut *self.late.lock());
        let publications: Vec<Publication<'_>> = late
            .iter()
            .map(|(event, epoch, audience)| Publication {
                event,
                epoch,
                audience: *audience,
                stored_at: std::time::Instant::now(),
                together: true,
            })
            .collect();
        for run in publications.chunk_by(|a, b| a.event.event.topic == b.event.event.topic) {
            self.inner.on_publications(run);
        }
    }
}

impl BrokerHandler for Lagging {
    fn on_publication(&self, publication: &Publication<'_>) -> u32 {
        if *self.behind.lock() {
            let late = (
                publication.event.clone(),
                publication.epoch.clone(),
                publication.audience,
            );
            self.late.lock().push(late);
            return 0;
        }
        self.inner.on_publication(publication)
    }

    fn on_publications(&self, publications: &[Publication<'_>]) -> Vec<u32> {
        if *self.behind.lock() {
            return publications
                .iter()
                .map(|publication| self.on_publication(publication))
                .collect();
        }
        self.inner.on_publications(publications)
    }

    fn on_approval(&self, record: &ApprovalRecord) {
        self.inner.on_approval(record);
    }

    fn on_gap(&self, gap: &Gap) {
        self.inner.on_gap(gap);
    }

    fn on_stream_started(&self, topic: &Topic, epoch: &Epoch, forgotten: bool) {
        self.inner.on_stream_started(topic, epoch, forgotten);
    }
}

struct Node {
    broker: Arc<RacedReads>,
    handler: Arc<Lagging>,
    subscriptions: Subscriptions,
    conn: Arc<ConnHandle>,
    pace: Pace,
}

/// One node on a raced memory broker, holding at most `hold_limit` live
/// events per subscription during a read, and one connection.
fn node(hold_limit: usize) -> Node {
    node_on(hold_limit, |retention, handler| {
        MemoryBroker::new(retention, handler)
    })
}

/// One node whose memory engine evicts every idle stream when swept (its
/// memory cap is one byte) and remembers at most two evicted streams.
fn forgetful_node() -> Node {
    node_on(64, |mut retention, handler| {
        retention.history_memory = 1;
        MemoryBroker::remembering(retention, handler, 2)
    })
}

/// A [`forgetful_node`] whose `run:1` has three events.
async fn forgetful_node_with_run_1() -> Node {
    let node = forgetful_node();
    node.broker
        .publish_now((1..=3).map(|n| draft("run:1", n)).collect())
        .await;
    node
}

impl Node {
    /// Subscribes the node's connection to `topics`, from `since`.
    async fn subscribe(&self, topics: &[&str], since: &[(&str, u64)]) {
        self.subscriptions
            .subscribe(&self.conn, &subscribe(topics, since))
            .await
            .unwrap();
    }

    /// Starts a new stream of `run:1` with `events` on one side of the
    /// next read ([`Restart`]).
    fn restart_run_1(&self, before_the_read: bool, events: RangeInclusive<u64>) {
        *self.broker.restart.lock() = Some(Restart {
            before_the_read,
            events: events.map(|n| draft("run:1", n)).collect(),
        });
    }
}

fn node_on(
    hold_limit: usize,
    engine: impl FnOnce(Retention, Arc<dyn BrokerHandler>) -> MemoryBroker,
) -> Node {
    let metrics = Arc::new(Metrics::default());
    let connections = Arc::new(Connections::default());
    let fanout = Arc::new(Fanout::new(
        connections.clone(),
        metrics.clone(),
        hold_limit,
    ));
    let handler = Arc::new(Lagging {
        inner: NodeHandler {
            node: "n1".to_owned(),
            fanout: fanout.clone(),
            decisions: Arc::new(Decisions::default()),
        },
        behind: Mutex::new(false),
        late: Mutex::default(),
    });
    let retention = Retention {
        history_size: 100,
        history_age: Duration::from_secs(60),
        history_memory: 1 << 20,
    };
    let broker = Arc::new(RacedReads {
        inner: engine(retention, handler.clone()),
        before: Mutex::default(),
        after: Mutex::default(),
        restart: Mutex::default(),
    });
    let pace = connections.pace().clone();
    let subscriptions = Subscriptions::new(broker.clone(), fanout, connections, 10, 1024, metrics);
    let conn = Arc::new(ConnHandle::new(None, None, None, None, 1024));
    Node {
        broker,
        handler,
        subscriptions,
        conn,
        pace,
    }
}

fn draft(topic: &str, n: u64) -> Draft {
    let request = PublishRequest::new(
        Topic::parse(topic).unwrap(),
        EventType::StepProgress,
        json!({ "n": n }),
    );
    Draft::new(request, || format!("{topic}-{n}").parse().unwrap(), 0)
}

/// A filter that lets `high` and `critical` events through.
fn urgent_only() -> EventFilter {
    EventFilter {
        min_priority: Some(Priority::High),
        ..EventFilter::default()
    }
}

/// A batch on `run:1`, one event of each priority in turn.
fn with_priorities(priorities: &[Priority]) -> Vec<Draft> {
    priorities
        .iter()
        .zip(1..)
        .map(|(priority, n)| {
            let request = PublishRequest::new(
                Topic::parse("run:1").unwrap(),
                EventType::StepProgress,
                json!({ "n": n }),
            )
            .priority(*priority);
            Draft::new(request, || format!("run:1-{n}").parse().unwrap(), 0)
        })
        .collect()
}

/// What the connection was sent, one line per frame.
fn sent(conn: &ConnHandle) -> Vec<String> {
    let (entries, _) = conn.outbox.drain();
    entries
        .into_iter()
        .flat_map(|queued| match queued {
            Queued::One(entry) => vec![entry],
            Queued::Run(run) => run.frames.iter().cloned().map(Entry::Frame).collect(),
        })
        .map(|entry| match entry {
            Entry::Frame(frame) => {
                let frame: Value = serde_json::from_slice(&frame.text).unwrap();
                let seq = |field: &str| {
                    frame[field]
                        .as_u64()
                        .map_or("-".to_owned(), |s| s.to_string())
                };
                match frame["type"].as_str().unwrap() {
                    "event" => format!("event {} {}", frame["topic"].as_str().unwrap(), seq("seq")),
                    "subscribed" => format!("subscribed {}", seq("seq")),
                    "replay_complete" => {
                        format!("replay_complete {}-{}", seq("from_seq"), seq("to_seq"))
                    }
                    "gap" => format!(
                        "gap {} {}-{}",
                        frame["reason"].as_str().unwrap(),
                        seq("from_seq"),
                        seq("to_seq")
                    ),
                    other => other.to_owned(),
                }
            }
            Entry::Gap { .. } => "shed".to_owned(),
        })
        .collect()
}

fn subscribe(topics: &[&str], since: &[(&str, u64)]) -> Subscribe {
    Subscribe {
        topics: topics
            .iter()
            .map(|t| TopicPattern::parse(t).unwrap())
            .collect(),
        since: since
            .iter()
            .map(|(topic, seq)| (Topic::parse(topic).unwrap(), Since::seq(*seq)))
            .collect::<BTreeMap<_, _>>(),
        ..Subscribe::default()
    }
}

#[tokio::test]
async fn a_replay_meets_events_published_during_the_read_without_duplicate_or_hole() {
    let node = node(64);
    node.broker
        .publish_now((1..=3).map(|n| draft("run:1", n)).collect())
        .await;
    *node.broker.before.lock() = vec![draft("run:1", 4)];
    *node.broker.after.lock() = vec![draft("run:1", 5)];
    node.subscribe(&["run:1"], &[("run:1", 1)]).await;
    node.broker.publish_now(vec![draft("run:1", 6)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 4",
            "event run:1 2",
            "event run:1 3",
            "event run:1 4",
            "replay_complete 2-4",
            "event run:1 5",
            "event run:1 6",
        ]
    );
}

#[tokio::test]
async fn events_the_read_gave_are_not_sent_again_when_the_node_delivers_them_later() {
    let node = node(64);
    node.broker
        .publish_now((1..=3).map(|n| draft("run:1", n)).collect())
        .await;
    // Stored, but this node has not delivered them yet.
    *node.handler.behind.lock() = true;
    node.broker
        .publish_now((4..=5).map(|n| draft("run:1", n)).collect())
        .await;
    node.subscribe(&["run:1"], &[("run:1", 1)]).await;
    node.handler.catch_up();
    node.broker.publish_now(vec![draft("run:1", 6)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 5",
            "event run:1 2",
            "event run:1 3",
            "event run:1 4",
            "event run:1 5",
            "replay_complete 2-5",
            "event run:1 6",
        ]
    );
}

#[tokio::test]
async fn a_run_the_read_gave_part_of_sends_only_the_rest() {
    let node = node(64);
    *node.handler.behind.lock() = true;
    node.broker
        .publish_now((1..=2).map(|n| draft("run:1", n)).collect())
        .await;
    node.subscribe(&["run:1"], &[("run:1", 0)]).await;
    node.broker
        .publish_now((3..=4).map(|n| draft("run:1", n)).collect())
        .await;
    // The node delivers 1..=4 as one run; the read gave 1 and 2.
    node.handler.catch_up();
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 2",
            "event run:1 1",
            "event run:1 2",
            "replay_complete 1-2",
            "event run:1 3",
            "event run:1 4",
        ]
    );
}

#[tokio::test]
async fn a_run_published_during_the_read_is_held_and_sent_after_the_replay() {
    let node = node(64);
    node.broker.publish_now(vec![draft("run:1", 1)]).await;
    *node.broker.after.lock() = (2..=3).map(|n| draft("run:1", n)).collect();
    node.subscribe(&["run:1"], &[("run:1", 0)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 1",
            "event run:1 1",
            "replay_complete 1-1",
            "event run:1 2",
            "event run:1 3",
        ]
    );
}

#[tokio::test]
async fn while_one_subscription_reads_its_replay_the_frames_the_others_answer_for_go_out_live() {
    let node = node(64);
    node.subscribe(&["run:*"], &[]).await;
    sent(&node.conn);
    // Published while the urgent exact subscription's read is under way:
    // #2 is its own and waits for its replay; #1 and #3 are the pattern's.
    *node.broker.after.lock() =
        with_priorities(&[Priority::Normal, Priority::High, Priority::Normal]);
    let urgent = Subscribe {
        filter: Some(urgent_only()),
        ..subscribe(&["run:1"], &[("run:1", 0)])
    };
    node.subscriptions
        .subscribe(&node.conn, &urgent)
        .await
        .unwrap();
    assert_eq!(
        sent(&node.conn),
        [
            "event run:1 1",
            "event run:1 3",
            "subscribed 0",
            "replay_complete 1-0",
            "event run:1 2",
        ]
    );
}

#[tokio::test]
async fn a_pattern_is_not_sent_again_what_its_replay_gave_when_the_node_delivers_it_later() {
    let node = node(64);
    node.broker
        .publish_now(vec![draft("run:1", 1), draft("run:2", 1)])
        .await;
    *node.handler.behind.lock() = true;
    node.broker
        .publish_now(vec![draft("run:1", 2), draft("run:2", 2)])
        .await;
    node.subscribe(&["run:*"], &[("run:1", 0)]).await;
    node.handler.catch_up();
    let sent = sent(&node.conn);
    assert_eq!(
        sent,
        [
            "subscribed -",
            "event run:1 1",
            "event run:1 2",
            "replay_complete 1-2",
            // Not replayed (no `since`): live from the node's deliveries.
            "event run:2 2",
        ]
    );
}

#[tokio::test]
async fn a_new_subscription_starts_after_the_seq_it_is_told() {
    let node = node(64);
    *node.broker.before.lock() = vec![draft("run:1", 1)];
    *node.broker.after.lock() = vec![draft("run:1", 2)];
    node.subscribe(&["run:1"], &[]).await;
    assert_eq!(sent(&node.conn), ["subscribed 1", "event run:1 2"]);
}

#[tokio::test]
async fn a_pattern_replays_its_covered_topics_and_holds_the_rest_until_then() {
    let node = node(64);
    node.broker
        .publish_now(vec![draft("run:1", 1), draft("run:1", 2)])
        .await;
    *node.broker.before.lock() = vec![draft("run:1", 3), draft("run:2", 1)];
    *node.broker.after.lock() = vec![draft("run:1", 4)];
    node.subscribe(&["run:*"], &[("run:1", 1)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed -",
            "event run:1 2",
            "event run:1 3",
            "replay_complete 2-3",
            // Not covered by a checkpoint: live from the subscription on.
            "event run:2 1",
            "event run:1 4",
        ]
    );
}

#[tokio::test]
async fn subscribing_again_sends_what_the_earlier_subscription_had_before_the_new_position() {
    let node = node(64);
    node.subscribe(&["run:1"], &[]).await;
    *node.broker.before.lock() = vec![draft("run:1", 1)];
    *node.broker.after.lock() = vec![draft("run:1", 2)];
    node.subscribe(&["run:1"], &[]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 0",
            "event run:1 1",
            "subscribed 1",
            "event run:1 2"
        ]
    );
}

#[tokio::test]
async fn more_live_events_during_a_read_than_the_queue_holds_close_the_connection_to_replay() {
    let node = node(2);
    *node.broker.after.lock() = (1..=3).map(|n| draft("run:1", n)).collect();
    node.subscribe(&["run:1"], &[]).await;
    let (_, closing) = node.conn.outbox.drain();
    assert_eq!(
        closing.map(|c| c.code),
        Some(herald_protocol::CloseReason::TRY_AGAIN_LATER)
    );
}

/// A queue smaller than the replay: the replay goes in parts as the writer
/// takes them, and neither its `replay_complete` nor the live events held
/// meanwhile find the queue full of its last part: nothing is shed.
#[tokio::test(start_paused = true)]
async fn a_replay_longer_than_the_queue_sheds_nothing_at_its_seam_with_live_events() {
    let node = node(4);
    let conn = Arc::new(ConnHandle::new(None, None, None, None, 4));
    node.broker
        .publish_now((1..=3).map(|n| draft("run:1", n)).collect())
        .await;
    *node.broker.after.lock() = (4..=5).map(|n| draft("run:1", n)).collect();
    let request = subscribe(&["run:1"], &[("run:1", 0)]);
    let mut written = Vec::new();
    // The connection's writer: woken by what is queued, it takes it all.
    let writer = async {
        while !written.iter().any(|f| f == "event run:1 5") {
            let woken = tokio::time::timeout(Duration::from_secs(5), conn.outbox.ready()).await;
            assert!(woken.is_ok(), "nothing more queued; written: {written:?}");
            written.extend(sent(&conn));
        }
    };
    let (subscribed, ()) = tokio::join!(node.subscriptions.subscribe(&conn, &request), writer);
    subscribed.unwrap();
    assert_eq!(
        written,
        [
            "subscribed 3",
            "event run:1 1",
            "event run:1 2",
            "event run:1 3",
            "replay_complete 1-3",
            "event run:1 4",
            "event run:1 5",
        ]
    );
    assert_eq!(
        conn.events_shed.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A connection of its own on `node`, subscribed to `topics` with `filter`.
async fn subscriber(node: &Node, topics: &[&str], filter: Option<EventFilter>) -> Arc<ConnHandle> {
    let conn = Arc::new(ConnHandle::new(None, None, None, None, 1024));
    let request = Subscribe {
        filter,
        ..subscribe(topics, &[])
    };
    node.subscriptions.subscribe(&conn, &request).await.unwrap();
    sent(&conn);
    conn
}

#[tokio::test]
async fn a_batch_reaches_each_subscription_with_the_events_it_would_get_one_by_one() {
    let node = node(64);
    let exact = subscriber(&node, &["run:1"], None).await;
    let exact_urgent = subscriber(&node, &["run:1"], Some(urgent_only())).await;
    let kind_urgent = subscriber(&node, &["run:*"], Some(urgent_only())).await;
    let everything = subscriber(&node, &["*"], None).await;
    let other_topic = subscriber(&node, &["run:2"], None).await;
    // Exact and by pattern on one connection: each event once.
    let both = subscriber(&node, &["run:1", "run:*"], None).await;
    let batch = with_priorities(&[
        Priority::Normal,
        Priority::High,
        Priority::Low,
        Priority::Critical,
    ]);
    let published = node
        .broker
        .publish(batch, Audience::Subscribers, Wait::Stored)
        .await
        .unwrap();
    let reached: Vec<u32> = published.iter().map(|p| p.reached).collect();
    let all = [
        "event run:1 1",
        "event run:1 2",
        "event run:1 3",
        "event run:1 4",
    ];
    let urgent_events = ["event run:1 2", "event run:1 4"];
    assert_eq!(sent(&exact), all);
    assert_eq!(sent(&exact_urgent), urgent_events);
    assert_eq!(sent(&kind_urgent), urgent_events);
    assert_eq!(sent(&everything), all);
    assert!(sent(&other_topic).is_empty());
    assert_eq!(sent(&both), all);
    // Each event counts the connections it was queued to.
    assert_eq!(reached, [3, 5, 3, 5]);
}

#[tokio::test]
async fn a_batch_reaches_a_connection_in_seq_order_across_its_subscriptions() {
    let node = node(64);
    let conn = Arc::new(ConnHandle::new(None, None, None, None, 1024));
    // Subscribed exactly for urgent events and by pattern for all: the
    // exact subscription is responsible for #2, the pattern for #1 and #3.
    let urgent = Subscribe {
        filter: Some(urgent_only()),
        ..subscribe(&["run:1"], &[])
    };
    node.subscriptions.subscribe(&conn, &urgent).await.unwrap();
    let all = subscribe(&["run:*"], &[]);
    node.subscriptions.subscribe(&conn, &all).await.unwrap();
    sent(&conn);
    let batch = with_priorities(&[Priority::Normal, Priority::High, Priority::Normal]);
    node.broker.publish_now(batch).await;
    assert_eq!(
        sent(&conn),
        ["event run:1 1", "event run:1 2", "event run:1 3"]
    );
}

/// A socket that takes every frame at once, and keeps them.
#[derive(Debug, Default)]
struct Socket {
    took: Arc<Mutex<Vec<String>>>,
}

impl DirectWrite for Socket {
    fn try_write(&self, frame: &OutFrame) -> Wrote {
        let frame: Value = serde_json::from_slice(&frame.text).unwrap();
        self.took.lock().push(format!("event {}", frame["seq"]));
        Wrote::All
    }
}

/// Waits (at most 5 s) until nothing has waited to be written for a while.
async fn until_quiet(pace: &Pace) {
    let quiet = tokio::time::timeout(Duration::from_secs(5), async {
        while !pace.quiet() {
            tokio::task::yield_now().await;
        }
    });
    quiet.await.expect("the hub never turned quiet");
}

#[tokio::test]
async fn a_quiet_hub_writes_a_lone_event_straight_to_the_socket_but_queues_a_batch() {
    let node = node(64);
    let took = Arc::new(Mutex::new(Vec::new()));
    node.conn.outbox.set_direct(Some(Direct {
        writer: Box::new(Socket { took: took.clone() }),
        pace: node.pace.clone(),
    }));
    node.subscribe(&["run:1"], &[]).await;
    assert_eq!(sent(&node.conn), ["subscribed 0"]);
    node.conn.outbox.written();
    until_quiet(&node.pace).await;
    node.broker
        .publish_now((1..=2).map(|n| draft("run:1", n)).collect())
        .await;
    assert!(took.lock().is_empty(), "a batch's event was written alone");
    assert_eq!(sent(&node.conn), ["event run:1 1", "event run:1 2"]);
    node.conn.outbox.written();
    until_quiet(&node.pace).await;
    node.broker.publish_now(vec![draft("run:1", 3)]).await;
    assert_eq!(*took.lock(), ["event 3"]);
    assert!(sent(&node.conn).is_empty());
}

/// Subscribes the node's connection to `run:1`, and another connection,
/// which it returns, to `*`.
async fn subscribed_to_run_1_and_everything(node: &Node) -> Arc<ConnHandle> {
    let everything = Arc::new(ConnHandle::new(None, None, None, None, 1024));
    node.subscriptions
        .subscribe(&everything, &subscribe(&["*"], &[]))
        .await
        .unwrap();
    node.subscribe(&["run:1"], &[]).await;
    everything
}

#[tokio::test]
async fn a_stream_started_again_after_its_position_was_forgotten_is_announced_before_its_first_event()
 {
    let node = forgetful_node();
    let everything = subscribed_to_run_1_and_everything(&node).await;
    node.broker
        .publish_now((1..=3).map(|n| draft("run:1", n)).collect())
        .await;
    // run:1 is evicted and remembered; two more evicted streams fill what
    // the engine remembers, and it forgets them all.
    node.broker.forget_every_stream().await;
    // Subscribed after that, a connection is given the stream to come.
    let late = Arc::new(ConnHandle::new(None, None, None, None, 1024));
    node.subscriptions
        .subscribe(&late, &subscribe(&["run:1"], &[]))
        .await
        .unwrap();
    node.broker.publish_now(vec![draft("run:1", 4)]).await;
    // A topic that never had a stream starts without a word to anyone.
    node.broker.publish_now(vec![draft("run:9", 1)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 0",
            "event run:1 1",
            "event run:1 2",
            "event run:1 3",
            "gap epoch_changed 1-0",
            "event run:1 1",
        ]
    );
    assert_eq!(sent(&late), ["subscribed 0", "event run:1 1"]);
    assert_eq!(
        sent(&everything),
        [
            "subscribed -",
            "event run:1 1",
            "event run:1 2",
            "event run:1 3",
            "event run:2 1",
            "event run:3 1",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:9 1",
        ]
    );
}

#[tokio::test]
async fn the_first_stream_of_a_topic_is_announced_to_nobody() {
    let node = node(64);
    let everything = subscribed_to_run_1_and_everything(&node).await;
    node.broker.publish_now(vec![draft("run:1", 1)]).await;
    assert_eq!(sent(&node.conn), ["subscribed 0", "event run:1 1"]);
    assert_eq!(sent(&everything), ["subscribed -", "event run:1 1"]);
}

#[tokio::test]
async fn a_stream_that_starts_while_a_subscription_is_read_is_announced_and_all_its_events_follow()
{
    let node = forgetful_node_with_run_1().await;
    // The read names the stream of 3 events; a new one starts right after.
    node.restart_run_1(false, 4..=5);
    node.subscribe(&["run:1"], &[("run:1", 1)]).await;
    node.broker.publish_now(vec![draft("run:1", 6)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 3",
            "event run:1 2",
            "event run:1 3",
            "replay_complete 2-3",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:1 2",
            "event run:1 3",
        ]
    );
}

#[tokio::test]
async fn a_subscription_whose_read_names_a_stream_that_started_during_it_starts_on_it_untold() {
    let node = forgetful_node_with_run_1().await;
    // While the subscription is being read, the old stream gets one more
    // event, then a new stream starts, and the read names the new one.
    *node.broker.before.lock() = vec![draft("run:1", 4)];
    node.restart_run_1(true, 5..=6);
    node.subscribe(&["run:1"], &[]).await;
    node.broker.publish_now(vec![draft("run:1", 7)]).await;
    assert_eq!(sent(&node.conn), ["subscribed 2", "event run:1 3"]);
}

#[tokio::test]
async fn a_connection_subscribing_again_across_a_new_stream_is_told_of_it_before_its_events() {
    let node = forgetful_node_with_run_1().await;
    node.subscribe(&["run:1"], &[]).await;
    // Subscribed again: while it is read, the old stream gets one more
    // event, then a new stream starts, and the read names the new one.
    *node.broker.before.lock() = vec![draft("run:1", 4)];
    node.restart_run_1(true, 5..=6);
    node.subscribe(&["run:1"], &[]).await;
    node.broker.publish_now(vec![draft("run:1", 7)]).await;
    // What the earlier subscription would have delivered comes first, the
    // announcement included, then the new subscription at its position.
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 3",
            "event run:1 4",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:1 2",
            "subscribed 2",
            "event run:1 3"
        ]
    );
}

#[tokio::test]
async fn a_connection_subscribing_to_a_pattern_again_across_a_new_stream_is_told_of_it_before_its_events()
 {
    let node = forgetful_node_with_run_1().await;
    node.subscribe(&["run:*"], &[("run:1", 0)]).await;
    node.broker.before.lock().push(draft("run:1", 4));
    node.restart_run_1(true, 5..=6);
    node.subscribe(&["run:*"], &[("run:1", 1)]).await;
    node.broker.publish_now(vec![draft("run:1", 7)]).await;
    // What the earlier subscription would have delivered comes first, the
    // announcement included, then the new subscription and its replay.
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed -",
            "event run:1 1",
            "event run:1 2",
            "event run:1 3",
            "replay_complete 1-3",
            "event run:1 4",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:1 2",
            "subscribed -",
            "event run:1 2",
            "replay_complete 2-2",
            "event run:2 1",
            "event run:3 1",
            "event run:1 3",
        ]
    );
}

#[tokio::test]
async fn a_pattern_subscription_read_across_a_new_stream_gets_the_announcement_and_the_whole_stream()
 {
    let node = forgetful_node_with_run_1().await;
    node.restart_run_1(false, 4..=5);
    node.subscribe(&["run:*"], &[("run:1", 2)]).await;
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed -",
            "event run:1 3",
            "replay_complete 3-3",
            "event run:2 1",
            "event run:3 1",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:1 2",
        ]
    );
}

#[tokio::test]
async fn a_connection_live_on_a_topic_is_told_of_its_new_stream_at_once_while_another_subscription_of_it_is_read()
 {
    let node = forgetful_node_with_run_1().await;
    node.subscribe(&["run:1"], &[]).await;
    node.restart_run_1(false, 4..=5);
    node.subscribe(&["run:*"], &[("run:1", 2)]).await;
    // The new stream's events reach the connection through its live
    // subscription, after the announcement; the pattern's release does not
    // announce it again.
    assert_eq!(
        sent(&node.conn),
        [
            "subscribed 3",
            "gap epoch_changed 1-0",
            "event run:1 1",
            "event run:1 2",
            "subscribed -",
            "event run:1 3",
            "replay_complete 3-3",
            "event run:2 1",
            "event run:3 1",
        ]
    );
}
