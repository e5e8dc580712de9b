//! The hub: topics, subscriptions, connections, and the publish path.
//!
//! Publishing takes the topic's lock, assigns the next seq, serializes the
//! event once, retains it, and pushes the same bytes into every matching
//! connection's outbox without waiting on any socket. Subscribing with `since`
//! takes the same lock, so the replayed events and the live ones meet with no
//! duplicate and no hole. Subscriber lookup is by topic (exact subscribers
//! live on the topic's stream; `kind:*` subscribers in a map by kind; `*` in
//! one list), never a scan of every connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_protocol::frame::{ErrorFrame, Since, Subscribe, Subscribed};
use herald_protocol::payload::{
    ApprovalDecision, ApprovalRecord, ApprovalResolved, ApprovalStatus, NewApproval, Payload as _,
};
use herald_protocol::{
    ErrorCode, Event, EventFilter, EventId, EventType, Label, Priority, PublishReceipt,
    PublishRequest, ServerMessage, Topic, TopicPattern,
};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approvals::{ApprovalError, Approvals};
use crate::config::{Config, StoreConfig};
use crate::connection::ConnHandle;
use crate::metrics::Metrics;
use crate::outbox::{EventMeta, OutFrame, Pushed};
use crate::store::sqlite::SqliteStore;
use crate::store::{Append, ApprovalWrite, RecoveredTopic, Store, StoreError, Write};
use crate::stream::{Retained, Stream, Subscriber};

/// Most streams whose epoch and last seq are remembered after their history
/// was evicted, so seqs continue instead of restarting.
const MAX_DORMANT_STREAMS: usize = 1_000_000;

/// The store's confirmation of a write, and how many connections the event
/// then reached.
type DurableWait = (
    tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
    Arc<std::sync::atomic::AtomicU32>,
);

/// A publish whose seq is assigned; with a durable store, not yet confirmed.
struct Enqueued {
    receipt: PublishReceipt,
    /// `Err(reached)` when delivered already; else the durability wait and the count.
    durable: Result<DurableWait, u32>,
    hub: Hub,
}

impl Enqueued {
    /// Waits until the event is durable (and so delivered).
    async fn finish(self) -> Result<(PublishReceipt, u32), PublishError> {
        match self.durable {
            Err(reached) => Ok((self.receipt, reached)),
            Ok((durable, reached)) => {
                durable
                    .await
                    .map_err(|_| PublishError::Store("the store stopped".into()))?
                    .map_err(|e| PublishError::Store(e.to_string()))?;
                self.hub
                    .inner
                    .metrics
                    .events_published
                    .fetch_add(1, Relaxed);
                Ok((self.receipt, reached.load(Relaxed)))
            }
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

#[derive(Debug, Default)]
struct PatternIndex {
    kinds: HashMap<Arc<str>, HashMap<Arc<str>, Subscriber>>,
    all: HashMap<Arc<str>, Subscriber>,
}

/// The hub. Cheap to clone; every clone is the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    config: Config,
    started: Instant,
    streams: RwLock<HashMap<Topic, Arc<Mutex<Stream>>>>,
    /// Epoch and last seq of streams evicted from memory.
    dormant: Mutex<HashMap<Topic, (herald_protocol::Epoch, u64)>>,
    patterns: RwLock<PatternIndex>,
    connections: RwLock<HashMap<Arc<str>, Arc<ConnHandle>>>,
    users: RwLock<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    retained_bytes: AtomicIsize,
    /// The durable store, when one is configured; `None` is the memory store.
    store: Option<Arc<dyn Store>>,
    approvals: Approvals,
    publish_limiter: crate::limits::PublishLimiter,
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub that keeps everything in memory, whatever `config.store` says.
    /// `shutdown` stops everything it runs.
    pub fn new(config: Config, shutdown: CancellationToken) -> Hub {
        Hub::with_store(config, shutdown, None)
    }

    /// A hub with the store `config.store` names: for SQLite, opens the file,
    /// recovers its topics (seqs continue, history and snapshots are back) and
    /// starts the writer.
    pub fn open(config: Config, shutdown: CancellationToken) -> Result<Hub, StoreError> {
        let StoreConfig::Sqlite(path) = &config.store else {
            return Ok(Hub::new(config, shutdown));
        };
        let store = Arc::new(SqliteStore::open(
            path,
            config.history_size,
            config.history_age,
        )?);
        let recovered = store.recover()?;
        let approvals = store.recover_approvals()?;
        store.start()?;
        let hub = Hub::with_store(config, shutdown, Some(store));
        let topics = recovered.len();
        for topic in recovered {
            hub.restore(topic);
        }
        for body in approvals {
            match serde_json::from_str::<ApprovalRecord>(&body) {
                Ok(record) => {
                    if let Err(error) = hub.inner.approvals.insert(record) {
                        tracing::warn!(%error, "dropping a stored approval");
                    }
                }
                Err(error) => tracing::warn!(%error, "skipping an unreadable stored approval"),
            }
        }
        tracing::info!(
            topics,
            pending_approvals = hub.inner.approvals.pending(),
            "recovered from the store"
        );
        Ok(hub)
    }

    fn restore(&self, recovered: RecoveredTopic) {
        let mut stream = Stream::new(recovered.topic.clone(), recovered.epoch, recovered.last_seq);
        for event in recovered.snapshot {
            stream.put_snapshot(&Retained::new(event));
        }
        for (event, age_ms) in recovered.history {
            stream.retain(
                Retained::aged(event, std::time::Duration::from_millis(age_ms)),
                self.inner.config.history_size,
            );
        }
        stream.delivered_seq = recovered.last_seq;
        stream.assigned_seq = recovered.last_seq;
        self.inner
            .retained_bytes
            .fetch_add(stream.bytes() as isize, Relaxed);
        self.inner
            .streams
            .write()
            .insert(recovered.topic, Arc::new(Mutex::new(stream)));
    }

    /// Finishes the store's pending writes and stops it.
    pub fn close_store(&self) {
        if let Some(store) = &self.inner.store {
            store.close();
        }
    }

    fn with_store(
        config: Config,
        shutdown: CancellationToken,
        store: Option<Arc<dyn Store>>,
    ) -> Hub {
        let publish_limiter = crate::limits::PublishLimiter::new(config.publish_rate_limit);
        Hub {
            inner: Arc::new(HubInner {
                config,
                started: Instant::now(),
                streams: RwLock::default(),
                dormant: Mutex::default(),
                patterns: RwLock::default(),
                connections: RwLock::default(),
                users: RwLock::default(),
                retained_bytes: AtomicIsize::new(0),
                store,
                approvals: Approvals::default(),
                publish_limiter,
                metrics: Metrics::default(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The token that stops the hub.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The tracker every task of the hub is spawned on.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Seconds since the hub started.
    pub fn uptime_s(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

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
    async fn publish_counted(
        &self,
        request: PublishRequest,
        audience: Audience,
    ) -> Result<(PublishReceipt, u32), PublishError> {
        self.enqueue(request, audience).await?.finish().await
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
            receipts.push(enqueued.finish().await?.0);
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
        let (receipt, durable) = {
            let mut stream = stream_ref.lock();
            let id = match request.id {
                Some(id) => {
                    if let Some(seq) = stream.seq_of(&id) {
                        self.inner.metrics.events_duplicate.fetch_add(1, Relaxed);
                        let receipt = PublishReceipt {
                            id,
                            topic: request.topic,
                            seq,
                        };
                        return Ok(Enqueued {
                            receipt,
                            durable: Err(0),
                            hub: self.clone(),
                        });
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
                    (receipt, Err(reached))
                }
                Some(permit) => {
                    let (done, durable) = tokio::sync::oneshot::channel();
                    let reached = Arc::new(std::sync::atomic::AtomicU32::new(0));
                    let hub = self.clone();
                    let target = stream_ref.clone();
                    let event = retained.event.clone();
                    let count = reached.clone();
                    permit.send(Write::Event(Append {
                        event,
                        epoch: stream.epoch.clone(),
                        then: Box::new(move || {
                            let n = hub.deliver(&mut target.lock(), retained, &audience);
                            count.store(n, Relaxed);
                        }),
                        done,
                    }));
                    (receipt, Ok((durable, reached)))
                }
            }
        };
        if durable.is_err() {
            self.inner.metrics.events_published.fetch_add(1, Relaxed);
        }
        Ok(Enqueued {
            receipt,
            durable,
            hub: self.clone(),
        })
    }

    /// Retains an event whose seq was assigned, and fans it out.
    fn deliver(&self, stream: &mut Stream, retained: Retained, audience: &Audience) -> u32 {
        let event = retained.event.clone();
        let frame = OutFrame {
            text: retained.frame.clone(),
            event: Some(EventMeta {
                topic: event.topic.clone(),
                seq: event.seq,
                priority: event.priority,
                published: Instant::now(),
            }),
        };
        let delta = stream.retain(retained, self.inner.config.history_size);
        self.inner.retained_bytes.fetch_add(delta, Relaxed);
        let event = &*event;
        let mut reached = 0u32;
        let mut push = |conn: &ConnHandle| {
            if self.push_event(conn, &frame) {
                reached += 1;
            }
        };
        let user: Option<&str> = match audience {
            Audience::Subscribers => None,
            Audience::Everyone => {
                for conn in self.inner.connections.read().values() {
                    push(conn);
                }
                return reached;
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
        reached
    }

    /// Queues an event frame; false when the connection is closing.
    fn push_event(&self, conn: &ConnHandle, frame: &OutFrame) -> bool {
        let metrics = &self.inner.metrics;
        match conn.outbox.push(frame.clone()) {
            Pushed::Queued => {
                metrics.events_delivered.fetch_add(1, Relaxed);
                true
            }
            Pushed::Shed => {
                metrics.events_delivered.fetch_add(1, Relaxed);
                metrics.events_shed.fetch_add(1, Relaxed);
                true
            }
            Pushed::Closed => false,
        }
    }

    /// The stream of a topic, created (with a new epoch, or the remembered
    /// one) when it does not exist.
    fn stream(&self, topic: &Topic) -> Arc<Mutex<Stream>> {
        if let Some(stream) = self.inner.streams.read().get(topic) {
            return stream.clone();
        }
        let mut streams = self.inner.streams.write();
        streams
            .entry(topic.clone())
            .or_insert_with(|| {
                let (epoch, seq) = self
                    .inner
                    .dormant
                    .lock()
                    .remove(topic)
                    .unwrap_or_else(|| (Stream::new_epoch(), 0));
                Arc::new(Mutex::new(Stream::new(topic.clone(), epoch, seq)))
            })
            .clone()
    }

    /// Registers a connection.
    pub(crate) fn attach(&self, conn: &Arc<ConnHandle>) {
        self.inner
            .connections
            .write()
            .insert(conn.id.clone(), conn.clone());
        if let Some(user) = &conn.user_id {
            self.inner
                .users
                .write()
                .entry(user.clone())
                .or_default()
                .insert(conn.id.clone());
        }
        self.inner.metrics.connections_active.fetch_add(1, Relaxed);
        self.inner.metrics.connections_total.fetch_add(1, Relaxed);
    }

    /// Forgets a connection and all its subscriptions.
    pub(crate) fn detach(&self, conn: &ConnHandle) {
        let patterns: Vec<TopicPattern> = conn.subscriptions.lock().keys().cloned().collect();
        self.unsubscribe(conn, &patterns);
        if let Some(user) = &conn.user_id {
            let mut users = self.inner.users.write();
            if let Some(ids) = users.get_mut(user) {
                ids.remove(&conn.id);
                if ids.is_empty() {
                    users.remove(user);
                }
            }
        }
        if self.inner.connections.write().remove(&conn.id).is_some() {
            self.inner.metrics.connections_active.fetch_sub(1, Relaxed);
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.read().len()
    }

    pub(crate) fn connections(&self) -> Vec<Arc<ConnHandle>> {
        self.inner.connections.read().values().cloned().collect()
    }

    pub(crate) fn connection(&self, id: &str) -> Option<Arc<ConnHandle>> {
        self.inner.connections.read().get(id).cloned()
    }

    /// Subscribes a connection: `subscribed` per topic; for exact topics a
    /// snapshot when asked and a replay from `since` (both atomic with live
    /// delivery).
    pub(crate) fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        request: &Subscribe,
    ) -> Result<(), ErrorFrame> {
        {
            let current = conn.subscriptions.lock();
            let new = request
                .topics
                .iter()
                .filter(|p| !current.contains_key(*p))
                .count();
            if current.len() + new > self.inner.config.max_subscriptions {
                return Err(ErrorFrame {
                    code: ErrorCode::InvalidRequest,
                    message: format!(
                        "too many subscriptions: at most {} per connection",
                        self.inner.config.max_subscriptions
                    ),
                    reference: None,
                });
            }
        }
        let filter = request.filter.clone().unwrap_or_default();
        for pattern in &request.topics {
            let subscriber = Subscriber {
                conn: conn.clone(),
                filter: filter.clone(),
            };
            conn.subscriptions
                .lock()
                .insert(pattern.clone(), filter.clone());
            match pattern {
                TopicPattern::Exact(topic) => {
                    let stream = self.stream(topic);
                    let mut stream = stream.lock();
                    self.trim(&mut stream);
                    conn.send(&ServerMessage::Subscribed(Subscribed {
                        topic: pattern.clone(),
                        epoch: Some(stream.epoch.clone()),
                        seq: Some(stream.delivered_seq),
                    }));
                    if request.snapshot {
                        conn.send(&snapshot_of(&stream));
                    }
                    if let Some(since) = request.since.get(topic) {
                        self.replay_locked(conn, &stream, since, &filter, usize::MAX);
                    }
                    stream.subscribers.insert(conn.id.clone(), subscriber);
                }
                TopicPattern::Kind(_) | TopicPattern::All => {
                    // Topics under the pattern that the client has checkpoints
                    // for (and did not name on their own) are replayed while
                    // their locks are held, so the seam is as tight as for an
                    // exact topic. Locks are taken in topic order.
                    let mut covered: Vec<(&Topic, &Since)> = request
                        .since
                        .iter()
                        .filter(|(topic, _)| pattern.matches(topic))
                        .filter(|(topic, _)| {
                            !request.topics.iter().any(|p| p.as_topic() == Some(*topic))
                        })
                        .collect();
                    covered.sort_by(|a, b| a.0.cmp(b.0));
                    let streams: Vec<Arc<Mutex<Stream>>> =
                        covered.iter().map(|(t, _)| self.stream(t)).collect();
                    let mut guards: Vec<_> = streams.iter().map(|s| s.lock()).collect();
                    {
                        let mut patterns = self.inner.patterns.write();
                        match pattern {
                            TopicPattern::Kind(kind) => {
                                patterns
                                    .kinds
                                    .entry(kind.clone())
                                    .or_default()
                                    .insert(conn.id.clone(), subscriber);
                            }
                            _ => {
                                patterns.all.insert(conn.id.clone(), subscriber);
                            }
                        }
                    }
                    conn.send(&subscribed_pattern(pattern));
                    for ((_, since), stream) in covered.iter().zip(guards.iter_mut()) {
                        self.trim(stream);
                        self.replay_locked(conn, stream, since, &filter, usize::MAX);
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes subscriptions (unknown ones are ignored).
    pub(crate) fn unsubscribe(&self, conn: &ConnHandle, patterns: &[TopicPattern]) {
        for pattern in patterns {
            conn.subscriptions.lock().remove(pattern);
            match pattern {
                TopicPattern::Exact(topic) => {
                    let stream = self.inner.streams.read().get(topic).cloned();
                    if let Some(stream) = stream {
                        stream.lock().subscribers.remove(&conn.id);
                    }
                }
                TopicPattern::Kind(kind) => {
                    let mut patterns = self.inner.patterns.write();
                    if let Some(subs) = patterns.kinds.get_mut(kind) {
                        subs.remove(&conn.id);
                        if subs.is_empty() {
                            patterns.kinds.remove(kind);
                        }
                    }
                }
                TopicPattern::All => {
                    self.inner.patterns.write().all.remove(&conn.id);
                }
            }
        }
    }

    /// A one-off read of retained events after `since` (the `replay` action).
    pub(crate) fn replay(&self, conn: &ConnHandle, topic: &Topic, since: &Since, limit: usize) {
        let stream = self.stream(topic);
        let mut stream = stream.lock();
        self.trim(&mut stream);
        self.replay_locked(conn, &stream, since, &EventFilter::default(), limit);
    }

    fn replay_locked(
        &self,
        conn: &ConnHandle,
        stream: &Stream,
        since: &Since,
        filter: &EventFilter,
        limit: usize,
    ) {
        let plan = stream.plan_replay(since, filter, limit);
        if let Some(gap) = plan.gap {
            conn.send(&ServerMessage::Gap(gap));
        }
        for retained in plan.events {
            let event = &retained.event;
            conn.outbox.push(OutFrame {
                text: retained.frame.clone(),
                event: Some(EventMeta {
                    topic: event.topic.clone(),
                    seq: event.seq,
                    priority: event.priority,
                    published: Instant::now(),
                }),
            });
        }
        if let Some(complete) = plan.complete {
            conn.send(&ServerMessage::ReplayComplete(complete));
        }
    }

    /// The `snapshot` frame of a topic.
    pub(crate) fn snapshot(&self, topic: &Topic) -> ServerMessage {
        let stream = self.stream(topic);
        let stream = stream.lock();
        snapshot_of(&stream)
    }

    /// Retained events of a topic after `since` (HTTP history): the epoch, the
    /// latest seq, and at most `limit` events.
    pub fn history(
        &self,
        topic: &Topic,
        since: u64,
        limit: usize,
    ) -> (herald_protocol::Epoch, u64, Vec<Event>) {
        let stream = self.stream(topic);
        let mut stream = stream.lock();
        self.trim(&mut stream);
        let events = stream
            .history_after(since, limit)
            .into_iter()
            .map(|r| Event::clone(&r.event))
            .collect();
        (stream.epoch.clone(), stream.delivered_seq, events)
    }

    /// Subscriber counts per topic or pattern.
    pub fn subscriber_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (topic, stream) in self.inner.streams.read().iter() {
            let n = stream.lock().subscribers.len();
            if n > 0 {
                counts.insert(topic.to_string(), n);
            }
        }
        let patterns = self.inner.patterns.read();
        for (kind, subs) in &patterns.kinds {
            counts.insert(format!("{kind}:*"), subs.len());
        }
        if !patterns.all.is_empty() {
            counts.insert("*".to_owned(), patterns.all.len());
        }
        counts
    }

    fn trim(&self, stream: &mut Stream) {
        let delta = stream.trim_age(self.inner.config.history_age, Instant::now());
        self.inner.retained_bytes.fetch_add(delta, Relaxed);
    }

    /// Trims history by age and, past the memory cap, evicts idle streams
    /// (no subscribers), least recently active first. Their epoch and last seq
    /// are remembered, so their seqs continue.
    pub(crate) fn sweep(&self) {
        let streams: Vec<(Topic, Arc<Mutex<Stream>>)> = self
            .inner
            .streams
            .read()
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect();
        let mut idle = Vec::new();
        for (topic, stream) in &streams {
            let mut stream = stream.lock();
            self.trim(&mut stream);
            if stream.is_idle() {
                idle.push((stream.last_activity, topic.clone(), stream.bytes()));
            }
        }
        let cap = self.inner.config.history_memory as isize;
        let over = self.inner.retained_bytes.load(Relaxed) - cap;
        let horizon = self.inner.config.history_age;
        idle.sort_by_key(|(at, _, _)| *at);
        let mut freed = 0isize;
        let mut evict = Vec::new();
        for (at, topic, bytes) in idle {
            if freed < over || (bytes == 0 && at.elapsed() > horizon) {
                freed += bytes as isize;
                evict.push(topic);
            }
        }
        if evict.is_empty() {
            return;
        }
        let mut map = self.inner.streams.write();
        let mut dormant = self.inner.dormant.lock();
        for topic in evict {
            let Some(stream) = map.get(&topic) else {
                continue;
            };
            let stream_guard = stream.lock();
            if !stream_guard.is_idle() {
                continue;
            }
            if dormant.len() >= MAX_DORMANT_STREAMS {
                dormant.clear();
            }
            dormant.insert(
                topic.clone(),
                (stream_guard.epoch.clone(), stream_guard.delivered_seq),
            );
            self.inner
                .retained_bytes
                .fetch_sub(stream_guard.bytes() as isize, Relaxed);
            drop(stream_guard);
            map.remove(&topic);
        }
    }

    /// Approximate bytes of retained history and snapshots.
    pub fn retained_bytes(&self) -> usize {
        self.inner.retained_bytes.load(Relaxed).max(0) as usize
    }

    /// Topics held in memory.
    pub fn topic_count(&self) -> usize {
        self.inner.streams.read().len()
    }
}

impl Hub {
    pub(crate) fn publish_limiter(&self) -> &crate::limits::PublishLimiter {
        &self.inner.publish_limiter
    }

    /// The hub's approvals.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// Asks a user and returns at once: registers the approval (durably, with
    /// a durable store) and publishes `approval.requested` on `user:{user_id}`
    /// (to every connection of the user) and `task:{task_id}`, keyed by the
    /// callback id so the topics' snapshots show it until it is resolved.
    pub async fn create_approval(
        &self,
        request: NewApproval,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let user_topic =
            Topic::user(&request.user_id).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let task_topic = Topic::with_id("task", &request.task_id)
            .map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let config = &self.inner.config;
        let record = Approvals::prepare(
            request,
            config.approval_timeout,
            config.approval_default_proceed,
        )?;
        self.persist_approval(&record).await?;
        self.inner.approvals.insert(record.clone())?;
        let id = record.request.callback_id.clone();
        let data = record.request.to_data();
        let key = Label::new(id.as_str()).map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        let user = record.request.user_id.clone();
        let mut reached = 0;
        for (topic, audience) in [
            (user_topic, Audience::User(user)),
            (task_topic, Audience::Subscribers),
        ] {
            let request = PublishRequest::new(topic, EventType::ApprovalRequested, data.clone())
                .priority(Priority::High)
                .key(key.clone());
            let (_, n) = self
                .publish_counted(request, audience)
                .await
                .map_err(|e| ApprovalError::Publish(e.to_string()))?;
            reached += n;
        }
        self.inner.approvals.set_delivered(&id, reached);
        tracing::info!(callback_id = %id, user = %record.request.user_id, task = %record.request.task_id, reached, "approval requested");
        Ok(self.inner.approvals.get(id.as_str()).unwrap_or(record))
    }

    /// Asks a user and waits for the decision (or the timeout's default): the
    /// one-call form for Rust producers.
    pub async fn request_approval(
        &self,
        request: NewApproval,
    ) -> Result<ApprovalDecision, ApprovalError> {
        let record = self.create_approval(request).await?;
        let id = record.request.callback_id.as_str();
        let limit = std::time::Duration::from_millis(record.request.timeout_ms)
            + std::time::Duration::from_secs(5);
        self.inner.approvals.wait(id, limit).await
    }

    /// Records a decision (the first wins) and publishes `approval.resolved`.
    /// `answering_user` is checked against the approval's user when given.
    pub async fn decide_approval(
        &self,
        id: &str,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let status = if proceed {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        self.resolve(id, status, proceed, feedback, decided_by, answering_user)
            .await
    }

    async fn resolve(
        &self,
        id: &str,
        status: ApprovalStatus,
        proceed: bool,
        feedback: Option<String>,
        decided_by: Option<String>,
        answering_user: Option<&str>,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let record = self.inner.approvals.decide(
            id,
            status,
            proceed,
            feedback,
            decided_by,
            answering_user,
        )?;
        if let Err(error) = self.persist_approval(&record).await {
            tracing::error!(%error, callback_id = id, "could not store a decision");
        }
        let data = ApprovalResolved {
            decision: record.decision(),
            task_id: record.request.task_id.clone(),
            user_id: record.request.user_id.clone(),
        }
        .to_data();
        let key = Label::new(id).ok();
        let topics = [
            (
                Topic::user(&record.request.user_id),
                Audience::User(record.request.user_id.clone()),
            ),
            (
                Topic::with_id("task", &record.request.task_id),
                Audience::Subscribers,
            ),
        ];
        for (topic, audience) in topics {
            let Ok(topic) = topic else { continue };
            let mut request = PublishRequest::new(topic, EventType::ApprovalResolved, data.clone())
                .priority(Priority::High);
            request.key = key.clone();
            if let Err(error) = self.publish_to(request, audience).await {
                tracing::warn!(%error, callback_id = id, "could not publish a decision");
            }
        }
        tracing::info!(
            callback_id = id,
            status = status.as_str(),
            by = record.decided_by.as_deref(),
            "approval resolved"
        );
        Ok(record)
    }

    /// Resolves a task's pending approvals as cancelled.
    pub async fn cancel_task_approvals(&self, task_id: &str) -> usize {
        let ids = self.inner.approvals.pending_of_task(task_id);
        let mut cancelled = 0;
        for id in ids {
            if self
                .resolve(
                    id.as_str(),
                    ApprovalStatus::Cancelled,
                    false,
                    None,
                    None,
                    None,
                )
                .await
                .is_ok()
            {
                cancelled += 1;
            }
        }
        cancelled
    }

    /// Resolves expired approvals with their default until the hub stops.
    pub(crate) async fn run_approval_timeouts(&self) {
        let token = self.inner.shutdown.clone();
        loop {
            let (expired, next) = self.inner.approvals.expired(now_ms());
            for id in expired {
                let default = self
                    .inner
                    .approvals
                    .get(id.as_str())
                    .is_some_and(|r| r.request.default_proceed);
                let _ = self
                    .resolve(
                        id.as_str(),
                        ApprovalStatus::TimedOut,
                        default,
                        None,
                        None,
                        None,
                    )
                    .await;
            }
            let wait = next.map_or(std::time::Duration::from_secs(3600), |at| {
                std::time::Duration::from_millis(at.saturating_sub(now_ms()))
            });
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.inner.approvals.changed.notified() => {}
            }
        }
    }

    async fn persist_approval(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let journal = store
            .journal()
            .ok_or_else(|| ApprovalError::Publish("the store is closed".into()))?;
        let (done, durable) = tokio::sync::oneshot::channel();
        let write = Write::Approval(ApprovalWrite {
            callback_id: record.request.callback_id.to_string(),
            pending: record.status == ApprovalStatus::Pending,
            body: serde_json::to_string(record).unwrap_or_default(),
            done,
        });
        journal
            .send(write)
            .await
            .map_err(|_| ApprovalError::Publish("the store is closed".into()))?;
        durable
            .await
            .map_err(|_| ApprovalError::Publish("the store stopped".into()))?
            .map_err(|e| ApprovalError::Publish(e.to_string()))
    }
}

fn snapshot_of(stream: &Stream) -> ServerMessage {
    ServerMessage::Snapshot(herald_protocol::frame::Snapshot {
        topic: stream.topic.clone(),
        epoch: stream.epoch.clone(),
        seq: stream.delivered_seq,
        events: stream.snapshot_events(),
    })
}

fn subscribed_pattern(pattern: &TopicPattern) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed {
        topic: pattern.clone(),
        epoch: None,
        seq: None,
    })
}

#[allow(
    clippy::expect_used,
    reason = "a hyphenated UUID is 36 printable bytes: always a valid id"
)]
fn new_event_id() -> EventId {
    EventId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid event id")
}
