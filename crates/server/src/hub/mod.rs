//! The hub: topics, subscriptions, connections, and the publish path.
//!
//! Publishing takes the topic's lock, assigns the next seq, serializes the
//! event once, retains it, and pushes the same bytes into every matching
//! connection's outbox without waiting on any socket. Subscribing with `since`
//! takes the same lock, so the replayed events and the live ones meet with no
//! duplicate and no hole. Subscriber lookup is by topic (exact subscribers
//! live on the topic's stream; `kind:*` subscribers in a map by kind; `*` in
//! one list), never a scan of every connection.
//!
//! # Layout
//!
//! - this module: the [`Hub`] handle, its state, opening and recovery,
//!   connections, and the memory sweep.
//! - `publish`: the publish path (seq assignment, durable hand-off, fan-out).
//! - `routing`: subscriptions, replay, snapshots and history.
//! - `approvals`: the approval methods of the hub.

mod approvals;
mod publish;
mod routing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_protocol::payload::ApprovalRecord;
use herald_protocol::{Topic, TopicPattern};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approvals::Approvals;
use crate::config::{Config, StoreConfig};
use crate::connection::ConnHandle;
use crate::metrics::Metrics;
use crate::store::sqlite::SqliteStore;
use crate::store::{RecoveredTopic, Store, StoreError};
use crate::stream::{Retained, Stream, Subscriber};

pub use publish::{Audience, PublishError};

/// Most streams whose epoch and last seq are remembered after their history
/// was evicted, so seqs continue instead of restarting.
const MAX_DORMANT_STREAMS: usize = 1_000_000;

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

    /// Trims a stream's history by age, keeping the retained-bytes count right.
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
        // Our handles go first: a stream is evicted only if the map holds
        // the one handle left.
        drop(streams);
        if evict.is_empty() {
            return;
        }
        let mut map = self.inner.streams.write();
        let mut dormant = self.inner.dormant.lock();
        for topic in evict {
            let Some(stream) = map.get(&topic) else {
                continue;
            };
            // Someone got this stream from the map and is about to lock it (a
            // publisher, about to assign the next seq): evicting it now
            // would let the next caller rebuild the topic from the dormant
            // seq and assign that seq a second time. Handles are only handed
            // out under the map's lock, which we hold, so this count is exact.
            if Arc::strong_count(stream) > 1 {
                continue;
            }
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

    /// Whether `topic` has a subscriber of its own (patterns aside), without
    /// creating its stream.
    pub(crate) fn has_subscribers(&self, topic: &Topic) -> bool {
        let stream = self.inner.streams.read().get(topic).cloned();
        stream.is_some_and(|stream| !stream.lock().subscribers.is_empty())
    }

    /// Topics held in memory.
    pub fn topic_count(&self) -> usize {
        self.inner.streams.read().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use herald_protocol::Topic;
    use tokio_util::sync::CancellationToken;

    use super::Hub;
    use crate::config::Config;

    #[test]
    fn a_stream_someone_holds_is_not_evicted_under_them() {
        let config = Config {
            history_age: Duration::ZERO,
            ..Config::default()
        };
        let hub = Hub::new(config, CancellationToken::new());
        let topic = Topic::parse("run:idle").unwrap();
        // Idle for long past the (zero) history age, and held, as by a
        // publisher between taking the stream and locking it.
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        let held = hub.stream(&topic);
        held.lock().last_activity = long_ago;
        hub.sweep();
        assert_eq!(hub.topic_count(), 1);
        held.lock().assign(&"e1".parse().unwrap());
        drop(held);
        // Idle again only once its seq is delivered; then it may go, and it
        // comes back at the seq it had.
        {
            let stream = hub.stream(&topic);
            let mut stream = stream.lock();
            stream.delivered_seq = 1;
            stream.last_activity = long_ago;
        }
        hub.sweep();
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(hub.stream(&topic).lock().assigned_seq, 1);
    }

    #[test]
    fn asking_whether_a_topic_has_subscribers_does_not_create_it() {
        let hub = Hub::new(Config::default(), CancellationToken::new());
        assert!(!hub.has_subscribers(&Topic::metrics()));
        assert_eq!(hub.topic_count(), 0);
    }
}
