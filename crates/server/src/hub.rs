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
use herald_protocol::{
    ErrorCode, Event, EventFilter, EventId, PublishReceipt, PublishRequest, ServerMessage, Topic,
    TopicPattern,
};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, StoreConfig};
use crate::store::sqlite::SqliteStore;
use crate::store::{Append, RecoveredTopic, Store, StoreError};
use crate::connection::ConnHandle;
use crate::metrics::Metrics;
use crate::outbox::{EventMeta, OutFrame, Pushed};
use crate::stream::{Retained, Stream, Subscriber};

/// Most streams whose epoch and last seq are remembered after their history
/// was evicted, so seqs continue instead of restarting.
const MAX_DORMANT_STREAMS: usize = 1_000_000;

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
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
        let store = Arc::new(SqliteStore::open(path, config.history_size, config.history_age)?);
        let recovered = store.recover()?;
        store.start()?;
        let hub = Hub::with_store(config, shutdown, Some(store));
        let topics = recovered.len();
        for topic in recovered {
            hub.restore(topic);
        }
        tracing::info!(topics, "recovered from the store");
        Ok(hub)
    }

    fn restore(&self, recovered: RecoveredTopic) {
        let mut stream = Stream::new(recovered.topic.clone(), recovered.epoch, recovered.last_seq);
        for event in recovered.snapshot {
            stream.put_snapshot(&Retained::new(event));
        }
        for (event, age_ms) in recovered.history {
            stream.retain(Retained::aged(event, std::time::Duration::from_millis(age_ms)), self.inner.config.history_size);
        }
        stream.delivered_seq = recovered.last_seq;
        stream.assigned_seq = recovered.last_seq;
        self.inner.retained_bytes.fetch_add(stream.bytes() as isize, Relaxed);
        self.inner.streams.write().insert(recovered.topic, Arc::new(Mutex::new(stream)));
    }

    /// Finishes the store's pending writes and stops it.
    pub fn close_store(&self) {
        if let Some(store) = &self.inner.store {
            store.close();
        }
    }

    fn with_store(config: Config, shutdown: CancellationToken, store: Option<Arc<dyn Store>>) -> Hub {
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
        if self.inner.shutdown.is_cancelled() && audience != Audience::Everyone {
            return Err(PublishError::ShuttingDown);
        }
        // With a durable store, room in its journal is taken before the topic's
        // lock, so the lock is never held across a wait.
        let permit = match &self.inner.store {
            None => None,
            Some(store) => {
                let journal = store.journal().ok_or(PublishError::ShuttingDown)?;
                Some(journal.reserve_owned().await.map_err(|_| PublishError::ShuttingDown)?)
            }
        };
        let stream_ref = self.stream(&request.topic);
        let (receipt, durable) = {
            let mut stream = stream_ref.lock();
            let id = match request.id {
                Some(id) => {
                    if let Some(seq) = stream.seq_of(&id) {
                        self.inner.metrics.events_duplicate.fetch_add(1, Relaxed);
                        return Ok(PublishReceipt { id, topic: request.topic, seq });
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
            let receipt = PublishReceipt { id: event.id.clone(), topic: event.topic.clone(), seq };
            let retained = Retained::new(event);
            match permit {
                None => {
                    self.deliver(&mut stream, retained, &audience);
                    (receipt, None)
                }
                Some(permit) => {
                    let (done, durable) = tokio::sync::oneshot::channel();
                    let hub = self.clone();
                    let target = stream_ref.clone();
                    let event = retained.event.clone();
                    permit.send(Append {
                        event,
                        epoch: stream.epoch.clone(),
                        then: Box::new(move || hub.deliver(&mut target.lock(), retained, &audience)),
                        done,
                    });
                    (receipt, Some(durable))
                }
            }
        };
        if let Some(durable) = durable {
            durable
                .await
                .map_err(|_| PublishError::Store("the store stopped".into()))?
                .map_err(|e| PublishError::Store(e.to_string()))?;
        }
        self.inner.metrics.events_published.fetch_add(1, Relaxed);
        Ok(receipt)
    }

    /// Retains an event whose seq was assigned, and fans it out.
    fn deliver(&self, stream: &mut Stream, retained: Retained, audience: &Audience) {
        let delta = stream.retain(retained.clone(), self.inner.config.history_size);
        self.inner.retained_bytes.fetch_add(delta, Relaxed);
        let event = &retained.event;
        let frame = OutFrame {
            text: retained.frame.clone(),
            event: Some(EventMeta {
                topic: event.topic.clone(),
                seq: event.seq,
                priority: event.priority,
                published: Instant::now(),
            }),
        };
        let user: Option<&str> = match audience {
            Audience::Subscribers => None,
            Audience::Everyone => {
                for conn in self.inner.connections.read().values() {
                    self.push_event(conn, &frame);
                }
                return;
            }
            Audience::User(user) => {
                let connections = self.inner.connections.read();
                if let Some(ids) = self.inner.users.read().get(user.as_str()) {
                    for conn in ids.iter().filter_map(|id| connections.get(id)) {
                        self.push_event(conn, &frame);
                    }
                }
                Some(user)
            }
        };
        let reached = |conn: &ConnHandle| user.is_some_and(|u| conn.user_id.as_deref() == Some(u));
        let exact_matched = |id: &str| {
            stream.subscribers.get(id).is_some_and(|s| s.filter.matches(event))
        };
        for sub in stream.subscribers.values() {
            if !reached(&sub.conn) && sub.filter.matches(event) {
                self.push_event(&sub.conn, &frame);
            }
        }
        let patterns = self.inner.patterns.read();
        let by_kind = event.topic.id().and_then(|_| patterns.kinds.get(event.topic.kind()));
        if let Some(by_kind) = by_kind {
            for (id, sub) in by_kind {
                if !reached(&sub.conn) && !exact_matched(id) && sub.filter.matches(event) {
                    self.push_event(&sub.conn, &frame);
                }
            }
        }
        for (id, sub) in &patterns.all {
            let kind_matched = by_kind
                .and_then(|k| k.get(id))
                .is_some_and(|s| s.filter.matches(event));
            if !reached(&sub.conn) && !exact_matched(id) && !kind_matched && sub.filter.matches(event)
            {
                self.push_event(&sub.conn, &frame);
            }
        }
    }

    fn push_event(&self, conn: &ConnHandle, frame: &OutFrame) {
        let metrics = &self.inner.metrics;
        match conn.outbox.push(frame.clone()) {
            Pushed::Queued => {
                metrics.events_delivered.fetch_add(1, Relaxed);
            }
            Pushed::Shed => {
                metrics.events_delivered.fetch_add(1, Relaxed);
                metrics.events_shed.fetch_add(1, Relaxed);
            }
            Pushed::Closed => {}
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
        self.inner.connections.write().insert(conn.id.clone(), conn.clone());
        if let Some(user) = &conn.user_id {
            self.inner.users.write().entry(user.clone()).or_default().insert(conn.id.clone());
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
    pub(crate) fn subscribe(&self, conn: &Arc<ConnHandle>, request: &Subscribe) -> Result<(), ErrorFrame> {
        {
            let current = conn.subscriptions.lock();
            let new = request.topics.iter().filter(|p| !current.contains_key(*p)).count();
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
            let subscriber = Subscriber { conn: conn.clone(), filter: filter.clone() };
            conn.subscriptions.lock().insert(pattern.clone(), filter.clone());
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
                TopicPattern::Kind(kind) => {
                    self.inner
                        .patterns
                        .write()
                        .kinds
                        .entry(kind.clone())
                        .or_default()
                        .insert(conn.id.clone(), subscriber);
                    conn.send(&subscribed_pattern(pattern));
                }
                TopicPattern::All => {
                    self.inner.patterns.write().all.insert(conn.id.clone(), subscriber);
                    conn.send(&subscribed_pattern(pattern));
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
    pub fn history(&self, topic: &Topic, since: u64, limit: usize) -> (herald_protocol::Epoch, u64, Vec<Event>) {
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
        let streams: Vec<(Topic, Arc<Mutex<Stream>>)> =
            self.inner.streams.read().iter().map(|(t, s)| (t.clone(), s.clone())).collect();
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
            let Some(stream) = map.get(&topic) else { continue };
            let stream_guard = stream.lock();
            if !stream_guard.is_idle() {
                continue;
            }
            if dormant.len() >= MAX_DORMANT_STREAMS {
                dormant.clear();
            }
            dormant.insert(topic.clone(), (stream_guard.epoch.clone(), stream_guard.delivered_seq));
            self.inner.retained_bytes.fetch_sub(stream_guard.bytes() as isize, Relaxed);
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

fn snapshot_of(stream: &Stream) -> ServerMessage {
    ServerMessage::Snapshot(herald_protocol::frame::Snapshot {
        topic: stream.topic.clone(),
        epoch: stream.epoch.clone(),
        seq: stream.delivered_seq,
        events: stream.snapshot_events(),
    })
}

fn subscribed_pattern(pattern: &TopicPattern) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed { topic: pattern.clone(), epoch: None, seq: None })
}

#[allow(clippy::expect_used, reason = "a hyphenated UUID is 36 printable bytes: always a valid id")]
fn new_event_id() -> EventId {
    EventId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid event id")
}
