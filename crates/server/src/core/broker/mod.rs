//! The engine boundary: everything several nodes would have to share.
//!
//! A [`Broker`] owns each topic's stream (its epoch, seqs, retained history,
//! keyed snapshot and the event ids it has seen, for idempotent retries) and
//! the approvals (create, decide with exactly one winner, read, list, claim
//! the expired ones). What it does not own is who is connected: this node's
//! subscriber index and outboxes live in the core, and every event a broker
//! stores, published on this node or on another one, reaches them through one
//! call, [`BrokerHandler::on_publication`], in seq order per topic.
//!
//! A node tells its broker which topics (and patterns) it has local interest
//! in with [`Broker::subscribe`] and [`Broker::unsubscribe`], once per local
//! subscription (the broker counts them). One node on its own has nothing to
//! ask for; an engine shared by several nodes subscribes to the topics' feeds
//! and starts delivering them.
//!
//! # Engines
//!
//! - [`memory`]: everything in this process; optionally made durable by
//!   [`sqlite`] (write-ahead journal, group commit, delivery only after the
//!   commit, recovery after a restart).
//! - An engine shared by several nodes implements the same trait: its
//!   `publish` stores the event where every node reads (assigning the seq
//!   there), and each node's feed of that store calls `on_publication`.
//!
//! # Layout
//!
//! - this module: the [`Broker`] trait, [`BrokerHandler`], [`Publication`],
//!   and the values that cross the boundary.
//! - `encoded`: [`Draft`] (an event before its seq) and [`EncodedEvent`]
//!   (an event with its `event` frame, serialized once).
//! - `history`: [`History`], what a reconnecting client is sent, planned the
//!   same way by every engine.

mod encoded;
mod history;
pub mod memory;
pub mod redis;
pub mod sqlite;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_protocol::api::NodeInfo;
use herald_protocol::frame::{Gap, Since, Snapshot};
use herald_protocol::payload::{ApprovalRecord, ApprovalStatus};
use herald_protocol::{
    CallbackId, Epoch, Event, EventFilter, EventType, PublishReceipt, Topic, TopicPattern,
};

pub use encoded::{Content, Draft, EncodedEvent};
pub use history::History;
pub use memory::Retention;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::cluster::{Gathered, NodeAnswer, NodeQuestion};
use crate::operations::config::{Config, StoreConfig};

/// An open engine, and the task that keeps it (trimming, eviction), if it
/// needs one; the task runs until the hub stops.
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub upkeep: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// How often the memory engine trims history by age and evicts idle streams.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Most keys a topic's snapshot keeps; the least recently updated go first.
pub const MAX_SNAPSHOT_KEYS: usize = 10_000;

/// Most owed approvals [`Broker::unannounced`] hands out at once.
pub const UNANNOUNCED_PER_PASS: usize = 100;

/// How long the stores that outlive the hub (SQLite, Redis) keep a topic's
/// epoch and last seq after its last event: 24 × the history age, at least
/// a day. A topic never published to is kept by neither: it is read under
/// the store's genesis epoch.
/// A client resuming within it finds the same stream (its seqs go on, and
/// what aged out is a `trimmed` gap); after it, the topic starts a new epoch.
pub(crate) fn stream_ttl(history_age: Duration) -> Duration {
    history_age.max(Duration::from_secs(3600)) * 24
}

/// A fresh epoch id.
pub fn new_epoch() -> Epoch {
    // A v7 UUID sorts by creation time, which makes epochs easy to read in logs.
    #[allow(clippy::expect_used, reason = "32 hex digits are always a valid epoch")]
    Epoch::new(uuid::Uuid::now_v7().simple().to_string()).expect("a UUID is a valid epoch")
}

/// When the stream `epoch` names began, in milliseconds since the Unix
/// epoch: the time a v7 UUID (as [`new_epoch`] makes them) carries in its
/// first 48 bits; `None` for an epoch of another form.
pub fn epoch_created_ms(epoch: &Epoch) -> Option<u64> {
    let id = uuid::Uuid::try_parse(epoch.as_str()).ok()?;
    if id.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    Some(seconds * 1000 + u64::from(nanos) / 1_000_000)
}

/// The memory engine: nothing to open.
pub fn in_memory(retention: Retention, handler: Arc<dyn BrokerHandler>) -> Engine {
    with_sweeper(memory::MemoryBroker::new(retention, handler))
}

/// Opens the engine `store` names for the node `node`; its task stops with
/// `stop`. This is where engines are chosen.
pub async fn open(
    store: &StoreConfig,
    retention: Retention,
    handler: Arc<dyn BrokerHandler>,
    node: &str,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Engine, BrokerError> {
    match store {
        StoreConfig::Memory => Ok(in_memory(retention, handler)),
        StoreConfig::Sqlite(path) => Ok(with_sweeper(memory::MemoryBroker::open_sqlite(
            path, retention, handler,
        )?)),
        StoreConfig::Redis(url) => {
            let (broker, feed) =
                redis::RedisBroker::open(url, retention, handler, node, stop).await?;
            Ok(Engine {
                broker: Arc::new(broker),
                upkeep: Some(Box::pin(feed)),
            })
        }
    }
}

fn with_sweeper(broker: memory::MemoryBroker) -> Engine {
    let swept = broker.clone();
    let upkeep = async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A pass visits every topic: on a blocking thread, so a million
            // of them do not hold up the runtime's workers for its length.
            // Awaited here, so one pass runs at a time and ends with this
            // task (a pass left running at shutdown only touches memory).
            let swept = swept.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || swept.sweep()).await
                && error.is_panic()
            {
                tracing::error!(%error, "a sweep of the history panicked");
            }
        }
    };
    Engine {
        broker: Arc::new(broker),
        upkeep: Some(Box::pin(upkeep)),
    }
}

impl From<&Config> for Retention {
    fn from(config: &Config) -> Retention {
        Retention {
            history_size: config.history_size,
            history_age: config.history_age,
            history_memory: config.history_memory,
        }
    }
}

/// Who an event is delivered to, besides its topic's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Audience {
    /// The topic's subscribers (and matching pattern subscribers).
    #[default]
    Subscribers,
    /// Every connection, subscribed or not (broadcasts on topic `global`).
    Everyone,
    /// Every connection of the user the topic `user:{id}` names, subscribed
    /// or not, plus the topic's subscribers.
    User,
    /// No connection on the node that publishes it: the event is stored (it
    /// takes its seq and stays in history) and the caller queues it to that
    /// node's connections it chooses (the hub's own shutdown notice, which
    /// each connection gets with its own retry hint). The other nodes of a
    /// shared store deliver it to every connection, as [`Audience::Everyone`]
    /// (so their clients see every seq of `global`).
    Nobody,
}

impl Audience {
    /// The widest audience `topic`'s events can have: everyone for
    /// `global`, the user's connections for `user:{id}`, its subscribers
    /// otherwise. What is said of the topic's stream as a whole (a `gap`)
    /// goes to that audience, which may hold checkpoints of it.
    pub fn of(topic: &Topic) -> Audience {
        if *topic == Topic::global() {
            Audience::Everyone
        } else if topic.kind() == "user" && topic.id().is_some() {
            Audience::User
        } else {
            Audience::Subscribers
        }
    }
}

/// How long a publish waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Until the event is stored and delivered (the default): the receipt
    /// vouches for it.
    #[default]
    Stored,
    /// Until the event has its seq (fire-and-forget producers: nobody waits
    /// for the receipt). It is still delivered only once it is stored.
    Assigned,
}

/// A topic stream's position: its epoch and its latest seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Epoch,
    pub seq: u64,
}

/// One stored event on its way to this node's connections.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    pub event: &'a EncodedEvent,
    /// The epoch of the stream the event's seq belongs to.
    pub epoch: &'a Epoch,
    pub audience: Audience,
    /// When it was stored: where its publish-to-send latency starts.
    pub stored_at: Instant,
    /// One of several events published in one call: its frames queue, so
    /// that the batch leaves each connection in one write.
    pub together: bool,
}

/// What a broker calls on its node. Calls for one topic come in seq order and
/// never overlap; they must not block (fan-out queues frames, or writes one
/// to a socket only when the socket takes it at once, and never waits).
pub trait BrokerHandler: Send + Sync + Debug {
    /// An event was stored; returns how many of this node's connections it
    /// was queued to (for an `approval.requested`, those that can answer it).
    fn on_publication(&self, publication: &Publication<'_>) -> u32;

    /// Several events of one topic, stored by one publish, in seq order: as
    /// many calls of [`BrokerHandler::on_publication`], which is what this
    /// does unless the node hands each connection the run at once. Returns
    /// what each of those calls would.
    fn on_publications(&self, publications: &[Publication<'_>]) -> Vec<u32> {
        publications
            .iter()
            .map(|publication| self.on_publication(publication))
            .collect()
    }

    /// An approval was created or decided (on this node or another).
    fn on_approval(&self, record: &ApprovalRecord);

    /// Events of a topic this node follows will not be delivered: they left
    /// the stream before this node could read them (`trimmed`), or the
    /// stream itself was replaced (`epoch_changed`, `1..=0`: its subscribers
    /// drop their checkpoints and take the new stream from its first event).
    fn on_gap(&self, gap: &Gap);

    /// A stream of `topic` starts here under `epoch`, with nothing
    /// remembered of an earlier one; called before its first event. A
    /// subscriber that was given another of the topic's streams (or, when
    /// `forgotten`, the engine forgot streams it had, any subscriber not
    /// given this one) is told `epoch_changed`, `1..=0`, naming `epoch`, so
    /// that the new stream's seqs, which start again at 1, are not taken
    /// for ones it already has.
    fn on_stream_started(&self, topic: &Topic, epoch: &Epoch, forgotten: bool) {
        let _ = (topic, epoch, forgotten);
    }

    /// Another node sharing the store asks about this node's connections
    /// ([`Broker::ask_nodes`]); returns this node's answer. Must not block.
    fn on_node_question(&self, question: &NodeQuestion) -> NodeAnswer {
        let _ = question;
        NodeAnswer::default()
    }
}

/// How one event of a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub receipt: PublishReceipt,
    /// This node's connections it was queued to (for an
    /// `approval.requested`, those that can answer it; 0 for a duplicate,
    /// and for an event not waited for).
    pub reached: u32,
    /// The id was already stored: this is the first attempt's receipt.
    pub duplicate: bool,
}

/// A replay request: the retained events after a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRequest<'a> {
    pub since: &'a Since,
    /// Only these are sent (seqs of others are skipped, not reported).
    pub filter: &'a EventFilter,
    /// At most this many events.
    pub limit: usize,
}

/// What to read of a topic, at one position.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRequest<'a> {
    /// The latest event per key that this filter lets through.
    pub snapshot: Option<&'a EventFilter>,
    /// The retained events after a checkpoint.
    pub history: Option<HistoryRequest<'a>>,
}

/// A topic read at one position.
#[derive(Debug, Clone)]
pub struct TopicRead {
    pub position: Position,
    /// Oldest update first; empty unless asked for.
    pub snapshot: Vec<Event>,
    pub history: Option<History>,
}

/// The snapshots of the topics a pattern covers.
#[derive(Debug, Clone, Default)]
pub struct PatternSnapshots {
    /// In topic order, only topics with a matching keyed event.
    pub snapshots: Vec<Snapshot>,
    /// Topics that had one but did not fit in the limit.
    pub refused: usize,
}

/// Which approvals to list.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub task_id: Option<String>,
    pub user_id: Option<String>,
    pub status: Option<ApprovalStatus>,
}

/// A decision to record on a pending approval.
#[derive(Debug, Clone)]
pub struct Decision {
    pub status: ApprovalStatus,
    pub proceed: bool,
    pub feedback: Option<String>,
    pub decided_by: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub decided_at: u64,
    /// When a user answers: only the approval's own user may.
    pub answering_user: Option<String>,
}

impl Decision {
    /// The hub's own decision, now: a timeout (`proceed` is the approval's
    /// default) or a cancellation.
    pub fn by_hub(status: ApprovalStatus, proceed: bool, feedback: Option<String>) -> Decision {
        Decision {
            status,
            proceed,
            feedback,
            decided_by: None,
            decided_at: crate::core::clock::now_ms(),
            answering_user: None,
        }
    }
}

/// Expired approvals this node must time out, and when to look again.
#[derive(Debug, Clone, Default)]
pub struct Expired {
    pub approvals: Vec<ApprovalRecord>,
    /// The nearest deadline still ahead (ms since the Unix epoch).
    pub next_deadline: Option<u64>,
}

/// Figures for status and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerStats {
    /// Topics whose streams are held.
    pub topics: usize,
    /// Approximate bytes of retained history and snapshots.
    pub retained_bytes: usize,
    pub pending_approvals: usize,
    /// Times a shared store's feed was lost and connected again.
    pub reconnects: u64,
    /// Times this node read a stream for what its feed did not bring (seqs
    /// skipped, a full queue, a reconnect).
    pub catch_up_reads: u64,
}

/// Which topics [`Broker::topics`] lists, in what order, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    pub pattern: TopicPattern,
    pub order: TopicOrder,
    pub limit: usize,
}

/// The order of a topic listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicOrder {
    /// By name.
    #[default]
    Name,
    /// The topic published to last first (by the hub's clock, or Redis's,
    /// when it was; ties by name): the latest runs of a busy hub, however
    /// many older ones it holds.
    Recent,
}

/// One topic's stream, as [`Broker::topics`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    pub topic: Topic,
    pub position: Position,
    /// Events retained for replay.
    pub retained: usize,
    /// Approximate bytes of its retained events and snapshot.
    pub retained_bytes: usize,
    /// Keys in its snapshot.
    pub snapshot_keys: usize,
    /// The newest retained event: its seq, type and timestamp.
    pub last_event: Option<(u64, EventType, u64)>,
}

/// Why a broker could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The engine is shutting down or stopped.
    #[error("the store is closed")]
    Closed,
    /// Writing failed (a full disk): nothing was stored.
    #[error("the store failed to write: {0}")]
    Write(String),
    /// An earlier attempt with this id was not stored; the retry may be sent again.
    #[error("an earlier attempt with this id could not be stored; retry it")]
    EarlierAttemptFailed,
    /// The id was stored on the topic with other content.
    #[error("event id {id:?} was already published on {topic} with other content")]
    Conflict { topic: Topic, id: String },
    /// The store cannot be reached now; try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store could not be opened.
    #[error("could not open the store at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Why an approval operation failed at the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalStoreError {
    #[error("no approval has callback_id {0:?}")]
    NotFound(String),
    #[error("approval {id:?} is already resolved ({status})")]
    AlreadyResolved { id: String, status: &'static str },
    #[error("only the approval's user may answer it")]
    Forbidden,
    #[error("too many pending approvals (at most {0})")]
    TooMany(usize),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Where events and approvals live; see the module docs.
#[async_trait]
pub trait Broker: Send + Sync + Debug {
    /// Stores a batch in order: each event gets its topic's next seq, and is
    /// delivered through [`BrokerHandler::on_publication`] once stored. An id
    /// already stored answers the first attempt's receipt (`duplicate`), or
    /// [`BrokerError::Conflict`] if its content differs. With
    /// [`Wait::Stored`] the call returns once every event is stored and
    /// delivered (a durable engine commits the batch together).
    async fn publish(
        &self,
        batch: Vec<Draft>,
        audience: Audience,
        wait: Wait,
    ) -> Result<Vec<Published>, BrokerError>;

    /// Reads a topic at one position: its snapshot and history, as asked.
    async fn read(&self, topic: &Topic, request: ReadRequest<'_>)
    -> Result<TopicRead, BrokerError>;

    /// The retained events after `since` (at most `limit`), and the position
    /// they were read at.
    async fn history(
        &self,
        topic: &Topic,
        since: &Since,
        limit: usize,
    ) -> Result<(Position, History), BrokerError> {
        let filter = EventFilter::default();
        let request = ReadRequest {
            snapshot: None,
            history: Some(HistoryRequest {
                since,
                filter: &filter,
                limit,
            }),
        };
        let read = self.read(topic, request).await?;
        let history = read
            .history
            .unwrap_or_else(|| History::nothing_after(topic, read.position.seq));
        Ok((read.position, history))
    }

    /// The latest event per key that `filter` lets through, with the
    /// position it is consistent with.
    async fn snapshot(&self, topic: &Topic, filter: &EventFilter) -> Result<Snapshot, BrokerError> {
        let request = ReadRequest {
            snapshot: Some(filter),
            history: None,
        };
        let read = self.read(topic, request).await?;
        Ok(Snapshot {
            topic: topic.clone(),
            epoch: read.position.epoch,
            seq: read.position.seq,
            events: read.snapshot,
        })
    }

    /// The snapshots of the topics `pattern` covers that hold an event
    /// `filter` lets through, at most `limit` of them.
    async fn snapshots(
        &self,
        pattern: &TopicPattern,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<PatternSnapshots, BrokerError>;

    /// This node has one more local subscription to `pattern`; once this
    /// returns, every event stored on the topics it covers is delivered here.
    async fn subscribe(&self, pattern: &TopicPattern) -> Result<(), BrokerError>;

    /// This node has one local subscription to `pattern` less.
    async fn unsubscribe(&self, pattern: &TopicPattern);

    /// Registers a new approval (pending).
    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), ApprovalStoreError>;

    /// Decides a pending approval: exactly one decision wins; any later one
    /// is [`ApprovalStoreError::AlreadyResolved`].
    async fn decide_approval(
        &self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError>;

    /// Adds connections able to answer an approval that its request reached
    /// on this node to its `delivered_to`: the node that publishes the
    /// request adds those [`Published::reached`] counts, and an engine that
    /// delivers it later (on other nodes, or after a catch-up) adds its own.
    async fn record_delivery(&self, id: &CallbackId, connections: u32) -> Result<(), BrokerError>;

    /// The approval's request (`pending`) or its decision was published on
    /// its topics: unless the approval has changed since (a decision stored
    /// meanwhile stays owed), nothing about it is owed any more. False when
    /// it had changed (a request withdrawn, or decided, meanwhile).
    /// [`create_approval`](Broker::create_approval) and
    /// [`decide_approval`](Broker::decide_approval) store the change as
    /// owed, in the same write, so a node that stops between storing and
    /// publishing leaves it to [`unannounced`](Broker::unannounced).
    async fn announced(&self, id: &CallbackId, pending: bool) -> Result<bool, BrokerError>;

    /// Approvals whose last change has been owed for `older_than` or
    /// longer (at most [`UNANNOUNCED_PER_PASS`]): each is handed to one
    /// node, and owed from now again until that node says it is
    /// [`announced`](Broker::announced).
    async fn unannounced(&self, older_than: Duration) -> Result<Vec<ApprovalRecord>, BrokerError>;

    /// One approval.
    async fn approval(&self, id: &CallbackId) -> Result<Option<ApprovalRecord>, BrokerError>;

    /// Approvals matching the query, newest first.
    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, BrokerError>;

    /// Whether `user` was asked an approval on task `task_id`: any user's
    /// steering is checked with this, so an engine whose records are far
    /// away reads no more than it needs.
    async fn asked_on_task(&self, user: &str, task_id: &str) -> Result<bool, BrokerError> {
        let query = ApprovalQuery {
            task_id: Some(task_id.to_owned()),
            user_id: Some(user.to_owned()),
            status: None,
        };
        Ok(!self.approvals(&query).await?.is_empty())
    }

    /// Pending approvals past their deadline that this node is to time out
    /// (each is handed to one node only), and the next deadline.
    async fn claim_expired(&self, now_ms: u64) -> Result<Expired, BrokerError>;

    /// The topics whose streams the engine holds under `listing.pattern`,
    /// in `listing.order`, at most `listing.limit` of them, and whether
    /// there were more. An engine that cannot list its topics says so with
    /// [`BrokerError::Unavailable`].
    async fn topics(&self, listing: &TopicListing) -> Result<(Vec<TopicStats>, bool), BrokerError> {
        let _ = listing;
        Err(BrokerError::Unavailable(
            "this store does not list its topics".to_owned(),
        ))
    }

    /// Figures for status and metrics, as of the broker's last look.
    fn stats(&self) -> BrokerStats;

    /// [`stats`](Broker::stats) with the pending approvals a shared store
    /// holds for every node read now (within half a second), for status
    /// answers: the periodic look may be seconds old.
    async fn current_stats(&self) -> BrokerStats {
        self.stats()
    }

    /// The nodes sharing this broker and heard of lately; empty when the
    /// broker serves one node only.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        Ok(Vec::new())
    }

    /// Asks `question` of every other node sharing this broker and gathers
    /// the answers that come within a second (the asking included), and
    /// how many nodes did not answer by then; none when the broker serves
    /// one node only. `Err` when the store cannot be reached to ask.
    async fn ask_nodes(&self, question: &NodeQuestion) -> Result<Gathered, BrokerError> {
        let _ = question;
        Ok(Gathered::default())
    }

    /// Whether the engine can take publishes now (a shared store may be
    /// unreachable for a while; this node's connections stay up meanwhile).
    fn ready(&self) -> bool {
        true
    }

    /// Whether a publish has reached every connection that will get it by
    /// the time it returns, so [`Published::reached`] is the whole count
    /// (one node, delivering as it stores). An engine shared by several
    /// nodes delivers on the others later, and says `false`.
    fn delivers_on_publish(&self) -> bool {
        true
    }

    /// Finishes what is in flight and stops.
    async fn close(&self);
}
