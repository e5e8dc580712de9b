//! The Redis engine: several nodes share seqs, epochs, history, snapshots,
//! idempotency ids and approvals through one Redis.
//!
//! - **Publish** is one Lua script per topic of a batch (`lua/publish.lua`):
//!   the idempotency check (same id → the first receipt; same id, other
//!   content → `conflict`), the epoch created with the stream's meta key (and
//!   a stale stream deleted), the seq by `HINCRBY`, `XADD` with the seq as the
//!   entry id and exact `MAXLEN` = `--history-size`, trimming by
//!   `--history-age` on Redis `TIME`, the keyed snapshot, and the `PUBLISH`
//!   that announces it, in seq order. The node that published delivers to
//!   its own connections at once when it is up to date with the topic.
//! - **Each node** follows its topics through its feed (`feed.rs`): pub/sub is a hint,
//!   the stream is the truth.
//! - **Reads** (`lua/read.lua`) take position, snapshot and history at once.
//! - **Approvals** (`approvals.rs`) are hashes with compare-and-set scripts;
//!   deadlines are a sorted set every node claims from, so exactly one node
//!   times each out.
//! - **Redis unreachable**: calls fail fast with [`BrokerError::Unavailable`]
//!   (HTTP 503 with `Retry-After`), [`Broker::ready`] is false, open
//!   connections stay up, and the feed reconnects with backoff and catches
//!   up from the streams.
//!
//! Memory is bounded on both sides: exact `MAXLEN`, TTLs on every topic key
//! derived from `--history-age`, event ids that expire, at most
//! [`MAX_SNAPSHOT_KEYS`] snapshot keys per topic, bounded local queues. Redis
//! must run with `maxmemory-policy noeviction`: evicting a stream's keys
//! would silently lose history.
//!
//! # Layout
//!
//! - this module: [`RedisBroker`], publishing and reading.
//! - `feed`: the node's pub/sub feed, positions, catch-up.
//! - `approvals`: the approval operations.
//! - `keys`: key and channel names.
//! - `scripts`: the Lua scripts and their answers.
//! - `wire`: split frames, announcements, fingerprints.

mod approvals;
mod feed;
mod keys;
mod questions;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_protocol::api::NodeInfo;
use herald_protocol::frame::Snapshot;
use herald_protocol::payload::ApprovalRecord;
use herald_protocol::{CallbackId, Epoch, Event, EventFilter, PublishReceipt, Topic, TopicPattern};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, IntoConnectionInfo, ProtocolVersion, RedisError, ServerErrorKind};
use tokio_util::sync::CancellationToken;

use self::feed::{Delivery, Feed};
use self::keys::TopicKeys;
use self::scripts::{Unexpected, bytes, items, number, text};
use self::wire::{SplitFrame, audience_code, audience_of, decode_frame, fingerprint};
use super::{
    ApprovalQuery, ApprovalStoreError, Audience, Broker, BrokerError, BrokerHandler, BrokerStats,
    Decision, Draft, EncodedEvent, Expired, History, MAX_SNAPSHOT_KEYS, PatternSnapshots, Position,
    Published, ReadRequest, Retention, TopicListing, TopicOrder, TopicRead, TopicStats, Wait,
};
use crate::core::cluster::{Gathered, NodeQuestion};

/// Topics read per round trip when listing them.
const LISTED_PER_ROUND_TRIP: usize = 256;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long reading the figures for a status answer may take; past it,
/// the answer gives those of the last probe.
const CURRENT_STATS_WITHIN: Duration = Duration::from_millis(500);
/// How long one command may take: past it, Redis counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long after its sending a publish may still be stored: within
/// [`RESPONSE_TIMEOUT`], with room for its answer to come back. A Redis
/// that stalled (paused, swapping, a slow disk under `appendfsync always`)
/// runs it later, after the node answered its producer 503: the script
/// then stores nothing, so the producer's retry does not publish it twice.
const PUBLISH_DEADLINE: Duration = Duration::from_millis(1500);
/// A node not heard of for this long (ms) is not listed among the nodes.
const NODE_SILENT_MS: u64 = 3 * feed::PROBE_EVERY.as_millis() as u64;
/// A node not heard of for this long (ms) leaves the nodes' hash.
const NODE_FORGOTTEN_MS: u64 = 60_000;
/// How long an event id is remembered beyond the history age, at least.
const MIN_ID_TTL: Duration = Duration::from_secs(60);

/// The Redis engine (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// What the broker's calls and its feed share.
#[derive(Debug)]
struct Shared {
    commands: ConnectionManager,
    /// The same server, spoken to in RESP3 (pub/sub pushes).
    feed_client: Client,
    retention: Retention,
    handler: Arc<dyn BrokerHandler>,
    /// This node's id: its probe channel and its entry among the nodes.
    node: String,
    /// When this node started (ms since the Unix epoch).
    started_at: u64,
    feed: Feed,
    /// Figures refreshed with every probe.
    stats: Mutex<BrokerStats>,
    /// TTL of a topic's keys, and of an event id.
    topic_ttl: Duration,
    id_ttl: Duration,
    /// Redis's clock minus this node's (ms), as the last publish found it:
    /// a publish's deadline is set in Redis's time.
    clock_offset_ms: AtomicI64,
    /// The last publish found Redis unreachable and nothing has answered
    /// since: the node is not ready, before its feed's next probe says so.
    failing: AtomicBool,
    /// Failures that set `failing`, counted: a probe's write clears
    /// `failing` only when none came while it was on its way.
    failures: AtomicU64,
    /// This node's questions to the others, waiting for their answers.
    questions: questions::Questions,
}

/// What to read of a topic (see `lua/read.lua`).
#[derive(Debug, Clone, Copy)]
struct ReadAt {
    snapshot: bool,
    /// The events after this seq, if any.
    after: Option<u64>,
    /// Of those, only the ones stored at or after this Redis time (ms).
    min_time: u64,
}

impl ReadAt {
    fn after(after: u64, min_time: u64) -> ReadAt {
        ReadAt {
            snapshot: false,
            after: Some(after),
            min_time,
        }
    }
}

/// A topic as one read found it.
#[derive(Debug)]
struct StoredTopic {
    epoch: Epoch,
    last: u64,
    first_retained: u64,
    snapshot: Vec<EncodedEvent>,
    events: Vec<(Audience, EncodedEvent)>,
}

/// The error of a failed Redis call: unreachable (try again later) or a
/// failed write.
fn unavailable(error: &RedisError) -> BrokerError {
    BrokerError::Unavailable(described(error))
}

/// What Redis said, without where in one of the hub's scripts it said it
/// (the script's hash and line are logged, not told to clients).
fn described(error: &RedisError) -> String {
    let text = error.to_string();
    match text.find(" script: ") {
        Some(at) => {
            tracing::debug!(error = text, "Redis refused a script");
            text[..at].trim_end_matches('.').to_owned()
        }
        None => text,
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "taken by value to be used as `map_err(failed)`"
)]
fn failed(error: RedisError) -> BrokerError {
    // A Redis loading its data (after a restart), a replica (read-only, or
    // without its primary), or one at its `maxmemory` refuses writes for a
    // while: as good as unreachable, and the client is told to come back
    // (503). Scripts fail before their first write, so nothing was stored.
    let busy = matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
        )
    ) || error.code() == Some("OOM");
    if busy
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        unavailable(&error)
    } else {
        BrokerError::Write(described(&error))
    }
}

impl From<Unexpected> for BrokerError {
    fn from(error: Unexpected) -> Self {
        BrokerError::Write(error.to_string())
    }
}

impl RedisBroker {
    /// Connects to the Redis at `url` and starts following it; returns the
    /// engine and its feed, to run until `stop`.
    pub async fn open(
        url: &str,
        retention: Retention,
        handler: Arc<dyn BrokerHandler>,
        node: &str,
        stop: CancellationToken,
    ) -> Result<(RedisBroker, impl Future<Output = ()> + Send + 'static), BrokerError> {
        let open_error = |e: RedisError| BrokerError::Open {
            path: redacted(url),
            reason: e.to_string(),
        };
        let info = url.into_connection_info().map_err(open_error)?;
        let feed_info = info.clone().set_redis_settings(
            info.redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3),
        );
        let client = Client::open(info).map_err(open_error)?;
        let feed_client = Client::open(feed_info).map_err(open_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(open_error)?;
        let (questions, heard) = questions::Questions::new();
        let shared = Arc::new(Shared {
            commands,
            feed_client,
            retention,
            handler,
            node: node.to_owned(),
            started_at: crate::core::clock::now_ms(),
            feed: Feed::default(),
            stats: Mutex::default(),
            topic_ttl: super::stream_ttl(retention.history_age),
            id_ttl: retention.history_age.max(MIN_ID_TTL),
            clock_offset_ms: AtomicI64::new(i64::MIN),
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            questions,
        });
        shared.learn_clock().await.map_err(|e| BrokerError::Open {
            path: redacted(url),
            reason: e.to_string(),
        })?;
        shared.check_eviction_policy().await;
        shared.index_tasks().await.map_err(|e| BrokerError::Open {
            path: redacted(url),
            reason: e.to_string(),
        })?;
        // The feed is up before the node takes connections: a subscription
        // has its channel from the start.
        let first = feed::FeedSession::open(&shared)
            .await
            .map_err(|e| BrokerError::Open {
                path: redacted(url),
                reason: e.to_string(),
            })?;
        let feed = feed::run(shared.clone(), first, stop.clone());
        let answering = questions::answer_questions(shared.clone(), heard, stop);
        let upkeep = async move {
            tokio::join!(feed, answering);
        };
        Ok((RedisBroker { shared }, upkeep))
    }
}

/// `url` with its password masked.
fn redacted(url: &str) -> String {
    crate::operations::config::StoreConfig::Redis(url.to_owned()).redacted()
}

impl Shared {
    /// Reads Redis's clock once, for the deadline of the first publishes.
    async fn learn_clock(&self) -> Result<(), BrokerError> {
        let now = self.redis_time().await?;
        self.note_redis_time(now);
        Ok(())
    }

    /// Records Redis's time `redis_ms` as read just now. Each reading is
    /// behind Redis's clock by the reply's way back, so the offset only
    /// grows with them (a slow reply would move deadlines early and refuse
    /// publishes for nothing), except for a clock that stepped back by more
    /// than a publish's deadline.
    fn note_redis_time(&self, redis_ms: u64) {
        let offset = redis_ms as i64 - crate::core::clock::now_ms() as i64;
        let known = self.clock_offset_ms.load(Relaxed);
        if offset > known || known.saturating_sub(offset) > PUBLISH_DEADLINE.as_millis() as i64 * 2
        {
            self.clock_offset_ms.store(offset, Relaxed);
        }
    }

    /// Redis's time now, as this node's clock and the offset learned from
    /// Redis's readings tell it (no round trip).
    fn redis_now(&self) -> u64 {
        (crate::core::clock::now_ms() as i64)
            .saturating_add(self.clock_offset_ms.load(Relaxed))
            .max(0) as u64
    }

    /// The deadline in Redis's time of a publish sent now.
    fn publish_deadline(&self) -> u64 {
        self.redis_now()
            .saturating_add(PUBLISH_DEADLINE.as_millis() as u64)
            .max(1)
    }

    /// Warns when Redis may evict keys: a lost stream key is lost history.
    async fn check_eviction_policy(&self) {
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut self.commands.clone())
            .await;
        match policy.as_deref() {
            Ok([_, policy]) if policy == "noeviction" => {}
            Ok([_, policy]) => tracing::warn!(
                policy,
                "Redis may evict keys under memory pressure (maxmemory-policy {policy}): set it to noeviction, or history can be lost without a gap"
            ),
            _ => {}
        }
    }

    /// Redis's clock, in ms since the Unix epoch.
    async fn redis_time(&self) -> Result<u64, BrokerError> {
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        Ok(seconds * 1000 + micros / 1000)
    }

    /// Reads the figures Redis holds for every node (pending approvals,
    /// topics, memory) into [`BrokerStats`]; a figure Redis does not answer
    /// keeps its last value.
    async fn refresh_figures(&self, now_ms: u64) {
        let mut commands = self.commands.clone();
        let pending: Result<(u64, u64), _> = redis::pipe()
            .zcard(keys::PENDING)
            .zcard(keys::CLAIMED)
            .query_async(&mut commands)
            .await;
        // Topics whose keys expired (no event for the topic TTL) leave the
        // index, and kinds with none left the set of kinds: both stay as
        // large as what Redis still holds.
        let expired = now_ms.saturating_sub(self.topic_ttl.as_millis() as u64);
        let indexed: Result<usize, _> = scripts::PRUNE
            .key(keys::KINDS)
            .arg(keys::kind_index(""))
            .arg(expired)
            .invoke_async(&mut commands)
            .await;
        let topics = indexed.ok();
        let memory: Result<String, _> = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut commands)
            .await;
        let used = memory.ok().and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("used_memory:"))
                .and_then(|n| n.trim().parse().ok())
        });
        {
            let mut stats = self.stats.lock();
            if let Ok((pending, claimed)) = pending {
                stats.pending_approvals = (pending + claimed) as usize;
            }
            if let Some(topics) = topics {
                stats.topics = topics;
            }
            stats.retained_bytes = used.unwrap_or(stats.retained_bytes);
        }
    }

    /// Refreshes the figures and this node's entry among the nodes.
    async fn refresh(&self, now_ms: u64) {
        let mut commands = self.commands.clone();
        let me = NodeInfo {
            node: self.node.clone(),
            started_at: self.started_at,
            seen_at: now_ms,
        };
        let entry = serde_json::to_string(&me).unwrap_or_default();
        // A write: a Redis that answers the probe but takes no write (a
        // replica, one at its `maxmemory`) leaves the node unready.
        let failures = self.failures.load(Relaxed);
        let written: Result<(), _> = redis::cmd("HSET")
            .arg(keys::NODES)
            .arg(&self.node)
            .arg(entry)
            .query_async(&mut commands)
            .await;
        match &written {
            Err(error) => {
                self.failures.fetch_add(1, Relaxed);
                if !self.failing.swap(true, Relaxed) {
                    tracing::warn!(%error, "Redis takes no write: not ready");
                }
            }
            Ok(()) if self.failures.load(Relaxed) == failures => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!("Redis takes writes again");
                }
            }
            Ok(()) => {}
        }
        self.refresh_figures(now_ms).await;
        // Nodes gone for long leave the list.
        if let Ok(nodes) = self.nodes_seen().await {
            let gone: Vec<&str> = nodes
                .iter()
                .filter(|n| n.seen_at + NODE_FORGOTTEN_MS < now_ms)
                .map(|n| n.node.as_str())
                .collect();
            if !gone.is_empty() {
                let _: Result<(), _> = redis::cmd("HDEL")
                    .arg(keys::NODES)
                    .arg(gone)
                    .query_async(&mut commands)
                    .await;
            }
        }
    }

    /// Every node entry.
    async fn nodes_seen(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let entries: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::NODES)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let mut nodes: Vec<NodeInfo> = entries
            .values()
            .filter_map(|entry| serde_json::from_str::<NodeInfo>(entry).ok())
            .collect();
        nodes.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.node.cmp(&b.node)));
        Ok(nodes)
    }

    /// Reads a topic (see [`ReadAt`]).
    async fn read_at(&self, topic: &Topic, at: ReadAt) -> Result<StoredTopic, BrokerError> {
        let keys = TopicKeys::of(topic);
        let mut invocation = scripts::READ.prepare_invoke();
        for key in keys.script_keys() {
            invocation.key(key);
        }
        invocation
            .key(keys::GENESIS)
            .arg(super::new_epoch().as_str())
            .arg(self.topic_ttl.as_millis() as u64)
            .arg(self.retention.history_age.as_millis() as u64)
            .arg(if at.snapshot { "1" } else { "0" })
            .arg(at.after.map_or(-1, |seq| seq as i64))
            .arg(at.min_time);
        let answer: redis::Value = invocation
            .invoke_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        let answer = items(answer)?;
        let [epoch, last, first, count, rest @ ..] = answer.as_slice() else {
            return Err(Unexpected(format!("{answer:?}")).into());
        };
        let epoch = Epoch::new(text(epoch)?).map_err(|e| Unexpected(e.to_string()))?;
        let count = number(count)? as usize;
        let (snapshot, events) = rest.split_at(count.min(rest.len()));
        let decode = |value: &redis::Value| -> Result<EncodedEvent, BrokerError> {
            decode_frame(Bytes::copy_from_slice(bytes(value)?))
                .ok_or_else(|| Unexpected("an unreadable event frame".into()).into())
        };
        let snapshot = snapshot.iter().map(decode).collect::<Result<_, _>>()?;
        let events = events
            .chunks_exact(2)
            .map(|pair| {
                let audience = audience_of(bytes(&pair[0])?, &self.node);
                Ok((audience.unwrap_or_default(), decode(&pair[1])?))
            })
            .collect::<Result<_, BrokerError>>()?;
        Ok(StoredTopic {
            epoch,
            last: number(last)?,
            first_retained: number(first)?,
            snapshot,
            events,
        })
    }

    /// The kinds whose topics `pattern` covers: its own, or every kind that
    /// has topics (`*`); an exact topic's.
    async fn kinds_under(&self, pattern: &TopicPattern) -> Result<Vec<String>, BrokerError> {
        match pattern {
            TopicPattern::Exact(topic) => Ok(vec![topic.kind().to_string()]),
            TopicPattern::Kind(kind) => Ok(vec![kind.to_string()]),
            TopicPattern::All => redis::cmd("SMEMBERS")
                .arg(keys::KINDS)
                .query_async(&mut self.commands.clone())
                .await
                .map_err(failed),
        }
    }

    /// The topics a listing names (from the per-kind indexes, scored by
    /// the Redis time each was last published to), and whether it left
    /// some out.
    async fn listed_topics(
        &self,
        listing: &TopicListing,
    ) -> Result<(Vec<Topic>, bool), BrokerError> {
        let mut commands = self.commands.clone();
        if let TopicPattern::Exact(topic) = &listing.pattern {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(keys::kind_index(topic.kind()))
                .arg(topic.as_str())
                .query_async(&mut commands)
                .await
                .map_err(failed)?;
            let held = Vec::from_iter(score.map(|_| topic.clone()));
            let truncated = held.len() > listing.limit;
            return Ok((held.into_iter().take(listing.limit).collect(), truncated));
        }
        let kinds = self.kinds_under(&listing.pattern).await?;
        // Each kind's most recent `limit + 1` are enough to find the most
        // recent `limit` of all and whether there are more.
        let most = listing.limit.saturating_add(1);
        let mut scored: Vec<(f64, Topic)> = Vec::new();
        for kind in kinds {
            let index = keys::kind_index(&kind);
            let names: Vec<(String, f64)> = match listing.order {
                TopicOrder::Name => {
                    redis::cmd("ZRANGE")
                        .arg(&index)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut commands)
                        .await
                }
                TopicOrder::Recent => {
                    redis::cmd("ZREVRANGEBYSCORE")
                        .arg(&index)
                        .arg("+inf")
                        .arg("-inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(most)
                        .query_async(&mut commands)
                        .await
                }
            }
            .map_err(failed)?;
            scored.extend(names.into_iter().filter_map(|(name, score)| {
                let topic = Topic::parse(&name).ok()?;
                listing.pattern.matches(&topic).then_some((score, topic))
            }));
        }
        match listing.order {
            TopicOrder::Name => scored.sort_by(|a, b| a.1.cmp(&b.1)),
            TopicOrder::Recent => {
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            }
        }
        let truncated = scored.len() > listing.limit;
        scored.truncate(listing.limit);
        Ok((
            scored.into_iter().map(|(_, topic)| topic).collect(),
            truncated,
        ))
    }

    /// Topics of `pattern` with an event since `since_ms` (Redis time).
    async fn active_topics(
        &self,
        pattern: &TopicPattern,
        since_ms: u64,
    ) -> Result<Vec<Topic>, BrokerError> {
        if let TopicPattern::Exact(topic) = pattern {
            return Ok(vec![topic.clone()]);
        }
        let kinds = self.kinds_under(pattern).await?;
        let mut topics = Vec::new();
        for kind in kinds {
            let names: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(keys::kind_index(&kind))
                .arg(since_ms)
                .arg("+inf")
                .query_async(&mut self.commands.clone())
                .await
                .map_err(failed)?;
            topics.extend(names.iter().filter_map(|name| Topic::parse(name).ok()));
        }
        topics.sort();
        Ok(topics)
    }

    /// Publishes one topic's events, in order (one script).
    async fn publish_topic(
        &self,
        topic: &Topic,
        drafts: Vec<Draft>,
        audience: Audience,
    ) -> Result<Vec<Published>, BrokerError> {
        let keys = TopicKeys::of(topic);
        let mut invocation = scripts::PUBLISH.prepare_invoke();
        for key in keys.script_keys() {
            invocation.key(key);
        }
        invocation
            .key(keys::kind_index(topic.kind()))
            .key(keys::KINDS)
            .key(keys::GENESIS)
            .arg(super::new_epoch().as_str())
            .arg(self.retention.history_size)
            .arg(self.retention.history_age.as_millis() as u64)
            .arg(self.topic_ttl.as_millis() as u64)
            .arg(self.id_ttl.as_millis() as u64)
            .arg(&keys.ids)
            .arg(&keys.channel)
            .arg(MAX_SNAPSHOT_KEYS)
            .arg(audience_code(audience, &self.node).as_ref())
            .arg(topic.as_str())
            .arg(topic.kind())
            .arg(self.publish_deadline());
        for draft in &drafts {
            let split = SplitFrame::of(draft)
                .ok_or_else(|| BrokerError::Write("an event frame without its seq field".into()))?;
            invocation
                .arg(draft.id.as_str())
                .arg(fingerprint(draft))
                .arg(draft.key.as_ref().map_or("", |k| k.as_str()))
                .arg(split.head)
                .arg(split.tail);
        }
        let answer = invocation
            .invoke_async::<redis::Value>(&mut self.commands.clone())
            .await
            .map_err(failed);
        let unavailable = matches!(answer, Err(BrokerError::Unavailable(_)));
        if unavailable {
            self.failures.fetch_add(1, Relaxed);
        }
        self.failing.store(unavailable, Relaxed);
        let answer = items(answer?)?;
        if let Some(now) = answer.first() {
            self.note_redis_time(number(now)?);
        }
        let [_now, epoch, outcomes @ ..] = answer.as_slice() else {
            return match answer.as_slice() {
                [_now] => Err(BrokerError::Unavailable(
                    "the store ran the publish past its deadline, and stored nothing".into(),
                )),
                _ => Err(Unexpected(format!("{answer:?}")).into()),
            };
        };
        let epoch = Epoch::new(text(epoch)?).map_err(|e| Unexpected(e.to_string()))?;
        let mut published = Vec::with_capacity(drafts.len());
        let together = drafts.len() > 1;
        for (draft, outcome) in drafts.into_iter().zip(outcomes.chunks_exact(2)) {
            let (seq, status) = (number(&outcome[0])?, number(&outcome[1])?);
            let receipt = PublishReceipt {
                id: draft.id.clone(),
                topic: topic.clone(),
                seq,
            };
            match status {
                0 => {
                    let event = EncodedEvent::new(draft.into_event(seq));
                    // This node's connections get it now if the node is up
                    // to date with the topic; otherwise its feed delivers it
                    // in order.
                    let reached = match self
                        .feed
                        .deliver(self, &epoch, &event, audience, false, together)
                    {
                        Delivery::Delivered(reached) => reached,
                        _ => 0,
                    };
                    published.push(Published {
                        receipt,
                        reached,
                        duplicate: false,
                    });
                }
                1 => published.push(Published {
                    receipt,
                    reached: 0,
                    duplicate: true,
                }),
                _ => {
                    return Err(BrokerError::Conflict {
                        topic: topic.clone(),
                        id: draft.id.to_string(),
                    });
                }
            }
        }
        Ok(published)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        batch: Vec<Draft>,
        audience: Audience,
        _wait: Wait,
    ) -> Result<Vec<Published>, BrokerError> {
        // One script per topic, in the order topics first appear; an event's
        // place in the batch is kept for the answer.
        let mut groups: Vec<(Topic, Vec<(usize, Draft)>)> = Vec::new();
        let mut by_topic: HashMap<Topic, usize> = HashMap::new();
        for (index, draft) in batch.into_iter().enumerate() {
            let group = *by_topic.entry(draft.topic.clone()).or_insert_with(|| {
                groups.push((draft.topic.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push((index, draft));
        }
        let total = groups.iter().map(|(_, drafts)| drafts.len()).sum();
        let mut answers: Vec<Option<Published>> = vec![None; total];
        // A conflict stops its own topic's script there; the other topics'
        // events are published whatever their place, then it is answered.
        let mut conflict = None;
        for (topic, drafts) in groups {
            let (indexes, drafts): (Vec<usize>, Vec<Draft>) = drafts.into_iter().unzip();
            match self.shared.publish_topic(&topic, drafts, audience).await {
                Ok(published) => {
                    for (index, published) in indexes.into_iter().zip(published) {
                        answers[index] = Some(published);
                    }
                }
                Err(refused @ BrokerError::Conflict { .. }) => {
                    conflict.get_or_insert(refused);
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(conflict) = conflict {
            return Err(conflict);
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.ok_or_else(|| Unexpected("an event without its outcome".into()).into())
            })
            .collect()
    }

    async fn read(
        &self,
        topic: &Topic,
        request: ReadRequest<'_>,
    ) -> Result<TopicRead, BrokerError> {
        let at = ReadAt {
            snapshot: request.snapshot.is_some(),
            // A time cursor looks at every retained event.
            after: request.history.map(|h| match h.since {
                herald_protocol::frame::Since::Seq { seq, .. } => *seq,
                herald_protocol::frame::Since::Time { .. } => 0,
            }),
            min_time: 0,
        };
        let stored = self.shared.read_at(topic, at).await?;
        // A subscriber may now hold this position: compared with Redis's
        // copy if Redis restarts before this node delivers the topic live.
        let last_read = stored
            .events
            .last()
            .filter(|(_, e)| e.event.seq == stored.last)
            .map(|(_, e)| e.event.id.clone());
        self.shared
            .feed
            .handed_out(topic, &stored.epoch, stored.last, last_read);
        let position = Position {
            epoch: stored.epoch.clone(),
            seq: stored.last,
        };
        let snapshot = match request.snapshot {
            Some(filter) => stored
                .snapshot
                .iter()
                .filter(|e| filter.matches(&e.event))
                .map(|e| Event::clone(&e.event))
                .collect(),
            None => Vec::new(),
        };
        let history = request.history.map(|h| {
            History::plan(
                topic,
                h.since,
                &position,
                stored.first_retained,
                |after| {
                    stored
                        .events
                        .iter()
                        .map(|(_, e)| e)
                        .filter(move |e| e.event.seq > after)
                },
                h.filter,
                h.limit,
            )
        });
        Ok(TopicRead {
            position,
            snapshot,
            history,
        })
    }

    async fn snapshots(
        &self,
        pattern: &TopicPattern,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<PatternSnapshots, BrokerError> {
        let mut found = PatternSnapshots::default();
        for topic in self.shared.active_topics(pattern, 0).await? {
            let at = ReadAt {
                snapshot: true,
                after: None,
                min_time: 0,
            };
            let stored = self.shared.read_at(&topic, at).await?;
            let events: Vec<Event> = stored
                .snapshot
                .iter()
                .filter(|e| filter.matches(&e.event))
                .map(|e| Event::clone(&e.event))
                .collect();
            if events.is_empty() {
                continue;
            }
            if found.snapshots.len() == limit {
                found.refused += 1;
                continue;
            }
            self.shared
                .feed
                .handed_out(&topic, &stored.epoch, stored.last, None);
            found.snapshots.push(Snapshot {
                topic,
                epoch: stored.epoch,
                seq: stored.last,
                events,
            });
        }
        Ok(found)
    }

    async fn subscribe(&self, pattern: &TopicPattern) -> Result<(), BrokerError> {
        if self.shared.feed.follow(pattern).await?
            && let Ok(time) = self.shared.redis_time().await
        {
            // When it began to be followed, by Redis's clock: a catch-up
            // owes its subscribers nothing stored before.
            self.shared.feed.followed_from(pattern, time);
        }
        Ok(())
    }

    async fn unsubscribe(&self, pattern: &TopicPattern) {
        self.shared.feed.unfollow(pattern).await;
    }

    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), ApprovalStoreError> {
        self.shared.create_approval(&record).await
    }

    async fn decide_approval(
        &self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError> {
        self.shared.decide_approval(id, decision).await
    }

    async fn record_delivery(&self, id: &CallbackId, connections: u32) -> Result<(), BrokerError> {
        self.shared.record_delivery(id, connections).await
    }

    async fn announced(&self, id: &CallbackId, pending: bool) -> Result<bool, BrokerError> {
        self.shared.approval_published(id, pending).await
    }

    async fn unannounced(&self, older_than: Duration) -> Result<Vec<ApprovalRecord>, BrokerError> {
        self.shared.approvals_owed(older_than).await
    }

    async fn approval(&self, id: &CallbackId) -> Result<Option<ApprovalRecord>, BrokerError> {
        self.shared.approval(id).await
    }

    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, BrokerError> {
        self.shared.approvals(query).await
    }

    async fn asked_on_task(&self, user: &str, task_id: &str) -> Result<bool, BrokerError> {
        self.shared.asked_on_task(user, task_id).await
    }

    async fn claim_expired(&self, now_ms: u64) -> Result<Expired, BrokerError> {
        self.shared.claim_expired(now_ms).await
    }

    fn delivers_on_publish(&self) -> bool {
        false
    }

    fn stats(&self) -> BrokerStats {
        let feed = &self.shared.feed;
        BrokerStats {
            reconnects: feed.reconnects.load(Relaxed),
            catch_up_reads: feed.catch_up_reads.load(Relaxed),
            ..*self.shared.stats.lock()
        }
    }

    async fn ask_nodes(&self, question: &NodeQuestion) -> Result<Gathered, BrokerError> {
        self.shared.ask_nodes(question).await
    }

    async fn current_stats(&self) -> BrokerStats {
        let mut commands = self.shared.commands.clone();
        let mut pending = redis::pipe();
        pending.zcard(keys::PENDING).zcard(keys::CLAIMED);
        let read = pending.query_async::<(u64, u64)>(&mut commands);
        // Bounded: a stalled Redis leaves the figure of the last probe.
        if let Ok(Ok((pending, claimed))) = tokio::time::timeout(CURRENT_STATS_WITHIN, read).await {
            self.shared.stats.lock().pending_approvals = (pending + claimed) as usize;
        }
        self.stats()
    }

    async fn topics(&self, listing: &TopicListing) -> Result<(Vec<TopicStats>, bool), BrokerError> {
        let (topics, truncated) = self.shared.listed_topics(listing).await?;
        let mut listed = Vec::with_capacity(topics.len());
        // One round trip per chunk of topics, not per topic.
        for chunk in topics.chunks(LISTED_PER_ROUND_TRIP) {
            let mut pipe = redis::pipe();
            for topic in chunk {
                let keys = TopicKeys::of(topic);
                pipe.cmd("HMGET")
                    .arg(&keys.meta)
                    .arg("e")
                    .arg("s")
                    .xlen(&keys.stream)
                    .hlen(&keys.snapshot)
                    .cmd("XREVRANGE")
                    .arg(&keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
            }
            type Read = (
                (Option<String>, Option<u64>),
                usize,
                usize,
                Vec<(String, HashMap<String, Vec<u8>>)>,
            );
            let reads: Vec<Read> = pipe
                .query_async(&mut self.shared.commands.clone())
                .await
                .map_err(failed)?;
            for (topic, (meta, retained, snapshot_keys, last)) in chunk.iter().zip(reads) {
                // Expired since it was last indexed.
                let (Some(epoch), Some(seq)) = meta else {
                    continue;
                };
                let Ok(epoch) = Epoch::new(epoch) else {
                    continue;
                };
                let last_event = last
                    .first()
                    .and_then(|(_, fields)| fields.get("f"))
                    .and_then(|frame| decode_frame(Bytes::copy_from_slice(frame)))
                    .map(|e| (e.event.seq, e.event.event_type.clone(), e.event.timestamp));
                listed.push(TopicStats {
                    topic: topic.clone(),
                    position: Position { epoch, seq },
                    retained,
                    // Redis's own memory is in `herald_retained_bytes`.
                    retained_bytes: 0,
                    snapshot_keys,
                    last_event,
                });
            }
        }
        Ok((listed, truncated))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let now = self.shared.redis_time().await?;
        let mut nodes = self.shared.nodes_seen().await?;
        nodes.retain(|n| n.seen_at + NODE_SILENT_MS >= now);
        Ok(nodes)
    }

    fn ready(&self) -> bool {
        self.shared.feed.healthy() && !self.shared.failing.load(Relaxed)
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a Redis reply `line` (`-CODE detail`) reads as.
    fn reply_error(line: &str) -> RedisError {
        let reply = redis::parse_redis_value(format!("{line}\r\n").as_bytes()).unwrap();
        reply.extract_error().unwrap_err()
    }

    #[test]
    fn a_redis_that_takes_no_write_is_unavailable_and_says_why_without_the_scripts_insides() {
        for line in [
            "-READONLY You can't write against a read only replica. script: 3b16, on @user_script:34.",
            "-OOM command not allowed when used memory > 'maxmemory'. script: 3b16, on @user_script:53.",
        ] {
            let BrokerError::Unavailable(message) = failed(reply_error(line)) else {
                panic!("{line} is not unavailable");
            };
            assert!(
                !message.contains("script") && !message.contains("3b16"),
                "{message}"
            );
            assert!(
                message.contains("replica") || message.contains("maxmemory"),
                "{message}"
            );
        }
        let BrokerError::Write(message) =
            failed(reply_error("-ERR bad. script: 3b16, on @user_script:1."))
        else {
            panic!("a script's own error is a failed write");
        };
        assert!(!message.contains("3b16"), "{message}");
    }

    #[test]
    fn a_redis_loading_its_data_is_unavailable_not_a_failed_write() {
        for kind in [ServerErrorKind::BusyLoading, ServerErrorKind::MasterDown] {
            let error = RedisError::from((ErrorKind::Server(kind), "busy"));
            assert!(
                matches!(failed(error), BrokerError::Unavailable(_)),
                "{kind:?}"
            );
        }
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "bad"));
        assert!(matches!(failed(script), BrokerError::Write(_)));
    }
}
