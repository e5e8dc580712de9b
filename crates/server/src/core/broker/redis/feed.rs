//! A node's feed from Redis: one pub/sub connection carrying the
//! announcements of every topic (and pattern) the node follows, handled in
//! order by one task, and the positions that make delivery exact.
//!
//! Pub/sub is a hint; the stream is the truth. Each followed topic has the
//! position (epoch, seq) this node last delivered; an announcement is
//! delivered when it is the next seq, skipped when it is not newer (a topic
//! followed exactly and by a pattern is announced twice), and when seqs were
//! missed they are read from the stream first (`XRANGE`), or announced as a
//! `trimmed` gap when they are no longer there. A stream with another epoch
//! (Redis lost its data, or a topic expired) is announced as `epoch_changed`
//! and taken from its first event.
//!
//! After Redis restarts, each followed stream is compared with what this
//! node's subscribers may hold of it: the position delivered, or what the
//! node's reads handed them (`subscribed`, a replay) when it delivered
//! nothing of the topic live since. A stream Redis holds an older copy of
//! gets a new epoch, and a restored copy is told apart by the time it was
//! stored, also by a node that hears of the new epoch later.
//!
//! Announcements are handed over through a bounded queue; when it is full
//! nothing waits and nothing is dropped silently: the feed reads what it
//! missed from the streams. The same happens after the connection is lost
//! and when a liveness probe (a message to the node's own channel, every
//! [`PROBE_EVERY`]) is not heard back in time: the feed reconnects and
//! catches up from the last moment it knew it had heard everything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herald_protocol::frame::{Gap, GapReason};
use herald_protocol::{CallbackId, Epoch, EventId, EventType, Topic, TopicPattern};
use parking_lot::{Mutex, RwLock};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, PushInfo, PushKind, RedisError, ServerErrorKind, Value,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::keys::{self, channel_of};
use super::questions;
use super::wire::Announcement;
use super::{ReadAt, Shared};
use crate::core::broker::{Audience, BrokerError, EncodedEvent, Publication};

/// How often the feed checks that it still hears its own channel.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a probe may take to come back before the connection is
/// restarted.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Announcements waiting for the feed task; beyond it, catch up from the
/// streams.
const QUEUE: usize = 8192;
/// Slack for the clocks involved in catching up by time.
const CATCH_UP_MARGIN_MS: u64 = 2_000;
/// Most topics whose position a node remembers; past it, the positions of
/// topics only a pattern follows are forgotten (their next announcement is
/// delivered as it comes).
const MAX_POSITIONS: usize = 100_000;
/// Reconnection backoff bounds.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a node last delivered of a topic: the stream, the seq, and the id
/// of that event (none after a reset or a trimmed gap).
type LastDelivered = (Epoch, u64, Option<EventId>);

/// A topic's [`LastDelivered`], once it has one.
type Slot = Arc<Mutex<Option<LastDelivered>>>;

/// Entries of a stream as `XRANGE` answers them: id, then field → value.
type StreamEntries = Vec<(String, HashMap<String, Vec<u8>>)>;

/// Followed streams compared with Redis's copy in one pipelined round trip
/// after Redis comes back.
const CHECKS_PER_ROUND_TRIP: usize = 500;

/// What happened to one event offered for delivery.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Delivered, to this many connections.
    Delivered(u32),
    /// Already delivered.
    Duplicate,
    /// Seqs after this one were not delivered yet.
    Behind(u64),
    /// The event is from another stream of the topic than the last one delivered.
    EpochChanged,
    /// Not delivered here (the topic has no position yet, and the caller
    /// leaves first deliveries to the feed).
    Deferred,
}

/// The feed's state, shared by its task and the broker's calls.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// Local subscriptions per pattern (the core subscribes once per
    /// connection and pattern).
    interest: Mutex<HashMap<TopicPattern, usize>>,
    positions: RwLock<HashMap<Topic, Slot>>,
    /// The newest (epoch, seq) of each followed topic that this node's
    /// reads handed to subscribers (a `subscribed` position, a replay's
    /// end, with that event's id when the read carried it): what they hold
    /// of a topic this node may not have delivered live since, compared
    /// with Redis's copy after Redis restarts. Not a delivery position: an
    /// event stored before a read and announced after it still goes to the
    /// subscriptions made earlier.
    handed: Mutex<HashMap<Topic, LastDelivered>>,
    /// The Redis time by which every event of a copy Redis restored at its
    /// last restart (while this node ran) was stored: a stream replaced
    /// since begins with such a copy, which is not delivered twice.
    restored_by: Mutex<Option<u64>>,
    /// The Redis time each pattern (an exact topic included) was first
    /// followed: events stored before it are owed to none of its
    /// subscribers (what they were owed of them, their reads gave), so a
    /// catch-up does not deliver them.
    followed_at: Mutex<HashMap<TopicPattern, u64>>,
    /// The subscribed connection, while it is up.
    connection: RwLock<Option<MultiplexedConnection>>,
    /// Whether the feed hears everything announced now.
    healthy: AtomicBool,
    /// Connections lost and made again.
    pub(super) reconnects: AtomicU64,
    /// Streams read for what announcements did not bring.
    pub(super) catch_up_reads: AtomicU64,
}

impl Feed {
    pub(super) fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Whether the subscribed connection is up (it hears the channels).
    pub(super) fn connected(&self) -> bool {
        self.connection.read().is_some()
    }

    /// One more local subscription to `pattern`; the first one subscribes
    /// the feed's connection. Whether it was the first.
    pub(super) async fn follow(&self, pattern: &TopicPattern) -> Result<bool, BrokerError> {
        let first = {
            // Locks in `slot`'s order; the first follow forgets under the
            // same locks, so no position set meanwhile is forgotten.
            let mut positions = self.positions.write();
            let mut interest = self.interest.lock();
            let count = interest.entry(pattern.clone()).or_default();
            *count += 1;
            let first = *count == 1;
            if first {
                forget_unfollowed(&mut positions, &interest, pattern);
                forget_unfollowed(&mut self.handed.lock(), &interest, pattern);
            }
            first
        };
        if let TopicPattern::Exact(topic) = pattern {
            self.slot(topic);
        }
        if !first {
            return Ok(false);
        }
        let connection = self.connection.read().clone();
        let Some(mut connection) = connection else {
            self.unfollow_count(pattern);
            return Err(BrokerError::Unavailable(
                "the feed from Redis is reconnecting".into(),
            ));
        };
        let (channel, is_pattern) = channel_of(pattern);
        let subscribed = if is_pattern {
            connection.psubscribe(&channel).await
        } else {
            connection.subscribe(&channel).await
        };
        subscribed.map(|()| true).map_err(|e| {
            self.unfollow_count(pattern);
            super::unavailable(&e)
        })
    }

    /// Notes that `pattern` was first followed at `time` (Redis time).
    pub(super) fn followed_from(&self, pattern: &TopicPattern, time: u64) {
        self.followed_at.lock().insert(pattern.clone(), time);
    }

    /// The time from which `topic`'s events are owed to this node's
    /// subscribers in a catch-up from `since`: `since`, or, when every
    /// pattern covering the topic was first followed later, the earliest
    /// of those times.
    fn owed_from(&self, topic: &Topic, since: u64) -> u64 {
        let covering: Vec<TopicPattern> = self
            .interest
            .lock()
            .keys()
            .filter(|pattern| pattern.matches(topic))
            .cloned()
            .collect();
        let followed_at = self.followed_at.lock();
        covering
            .iter()
            .map(|pattern| followed_at.get(pattern).copied().unwrap_or(0))
            .min()
            .map_or(since, |followed| since.max(followed))
    }

    /// One local subscription to `pattern` less; the last one unsubscribes.
    pub(super) async fn unfollow(&self, pattern: &TopicPattern) {
        if !self.unfollow_count(pattern) {
            return;
        }
        self.followed_at.lock().remove(pattern);
        if let TopicPattern::Exact(topic) = pattern
            && *topic != Topic::global()
        {
            // A pattern this node still follows still delivers the topic:
            // its position stays, or an announcement of an event already
            // delivered here (the pattern's copy of an announcement, or one
            // a publisher on this node delivered first) would find no
            // position and be delivered again. (Locks in `slot`'s order.)
            let mut positions = self.positions.write();
            if !self.interest.lock().keys().any(|p| p.matches(topic)) {
                positions.remove(topic);
                self.handed.lock().remove(topic);
            }
        }
        let connection = self.connection.read().clone();
        if let Some(mut connection) = connection {
            let (channel, is_pattern) = channel_of(pattern);
            let _ = if is_pattern {
                connection.punsubscribe(&channel).await
            } else {
                connection.unsubscribe(&channel).await
            };
        }
    }

    /// Counts one subscription off; whether it was the last.
    fn unfollow_count(&self, pattern: &TopicPattern) -> bool {
        let mut interest = self.interest.lock();
        match interest.get_mut(pattern) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                interest.remove(pattern);
                true
            }
            None => false,
        }
    }

    fn slot(&self, topic: &Topic) -> Slot {
        if let Some(slot) = self.positions.read().get(topic) {
            return slot.clone();
        }
        let mut positions = self.positions.write();
        if positions.len() >= MAX_POSITIONS {
            let interest = self.interest.lock();
            positions.retain(|topic, _| {
                *topic == Topic::global()
                    || interest.contains_key(&TopicPattern::Exact(topic.clone()))
            });
        }
        positions.entry(topic.clone()).or_default().clone()
    }

    /// Delivers `event` to this node if it is the next of its topic. With
    /// `first_here`, an event of a topic with no position is delivered (and
    /// gives it one); without, it is left to the feed. `together`: see
    /// [`Publication::together`].
    pub(super) fn deliver(
        &self,
        engine: &Shared,
        epoch: &Epoch,
        event: &EncodedEvent,
        audience: Audience,
        first_here: bool,
        together: bool,
    ) -> Delivery {
        let topic = &event.event.topic;
        let seq = event.event.seq;
        // Until the feed is caught up after a reconnection (and has checked
        // that Redis did not come back with older streams), only the feed
        // delivers, not a publisher on this node: a position must not move
        // on with an event of a stream that is about to get a new epoch.
        if !first_here && !self.healthy() {
            return Delivery::Deferred;
        }
        let slot = if first_here {
            self.slot(topic)
        } else {
            match self.positions.read().get(topic) {
                Some(slot) => slot.clone(),
                None => return Delivery::Deferred,
            }
        };
        let mut position = slot.lock();
        match &*position {
            Some((known, last, _)) if known == epoch => {
                if seq <= *last {
                    return Delivery::Duplicate;
                }
                if seq > *last + 1 {
                    return Delivery::Behind(*last);
                }
            }
            Some(_) => return Delivery::EpochChanged,
            None if !first_here => return Delivery::Deferred,
            // A stream's first event, where none of the topic's was
            // delivered: a subscriber given another stream of the topic
            // (its keys expired, or the genesis it was read under did)
            // hears of the change first.
            None if seq == 1 => engine.handler.on_stream_started(topic, epoch, false),
            None => {}
        }
        // Under the topic's lock: deliveries of one topic never overlap and
        // follow seq order, from the feed or from a publisher on this node.
        let reached = engine.handler.on_publication(&Publication {
            event,
            epoch,
            audience,
            stored_at: Instant::now(),
            together,
        });
        *position = Some((epoch.clone(), seq, Some(event.event.id.clone())));
        Delivery::Delivered(reached)
    }

    /// Moves the topic's position to `seq` of a new stream (its stream was
    /// replaced).
    fn reset(&self, topic: &Topic, epoch: &Epoch, seq: u64) {
        *self.slot(topic).lock() = Some((epoch.clone(), seq, None));
    }

    fn position(&self, topic: &Topic) -> Option<(Epoch, u64)> {
        self.positions
            .read()
            .get(topic)
            .and_then(|slot| slot.lock().as_ref().map(|(e, s, _)| (e.clone(), *s)))
    }

    /// Notes that a read handed subscribers `topic` up to `seq` of the
    /// stream `epoch` (`id`: that event's, when the read carried it), when
    /// this node follows the topic (see the `handed` field); within one
    /// stream the highest seq is kept.
    pub(super) fn handed_out(&self, topic: &Topic, epoch: &Epoch, seq: u64, id: Option<EventId>) {
        let interest = self.interest.lock();
        let followed = *topic == Topic::global()
            || interest.contains_key(&TopicPattern::Exact(topic.clone()))
            || interest.keys().any(|p| p.matches(topic));
        if !followed {
            return;
        }
        let mut handed = self.handed.lock();
        if handed.len() >= MAX_POSITIONS && !handed.contains_key(topic) {
            handed.retain(|topic, _| {
                *topic == Topic::global()
                    || interest.contains_key(&TopicPattern::Exact(topic.clone()))
            });
        }
        match handed.get_mut(topic) {
            Some((known, last, _)) if known == epoch && *last > seq => {}
            Some((known, last, known_id)) if known == epoch && *last == seq => {
                if known_id.is_none() {
                    *known_id = id;
                }
            }
            Some(other) => *other = (epoch.clone(), seq, id),
            None => {
                handed.insert(topic.clone(), (epoch.clone(), seq, id));
            }
        }
    }

    /// What this node's subscribers may hold of each followed topic, to
    /// compare with Redis's copy after it restarted: the position delivered
    /// (with its event's id), or what reads handed out when nothing was
    /// delivered live or a read handed a later seq of the same stream.
    fn held(&self) -> Vec<(Topic, LastDelivered)> {
        let mut held: HashMap<Topic, LastDelivered> = self
            .positions
            .read()
            .iter()
            .filter_map(|(topic, slot)| Some((topic.clone(), slot.lock().clone()?)))
            .collect();
        for (topic, handed) in self.handed.lock().iter() {
            let (epoch, seq, _) = handed;
            match held.get(topic) {
                Some((delivered, last, _)) if delivered != epoch || last >= seq => {}
                _ => {
                    held.insert(topic.clone(), handed.clone());
                }
            }
        }
        held.into_iter().collect()
    }

    /// What reads handed subscribers of `topic` (the `handed` field).
    fn handed(&self, topic: &Topic) -> Option<(Epoch, u64)> {
        self.handed
            .lock()
            .get(topic)
            .map(|(epoch, seq, _)| (epoch.clone(), *seq))
    }

    fn restored_by(&self) -> Option<u64> {
        *self.restored_by.lock()
    }
}

/// Forgets the positions of the topics `pattern` (just followed for the
/// first time) covers that nothing else followed here (`global` aside):
/// what this node last delivered of them (under a pattern since unfollowed,
/// or from an announcement that crossed an unsubscribe) is old, and the seqs
/// published since, which it did not hear, are no gap for anyone who
/// follows them now. The next announcement gives them a position again, as
/// on a new node.
fn forget_unfollowed<T>(
    positions: &mut HashMap<Topic, T>,
    interest: &HashMap<TopicPattern, usize>,
    pattern: &TopicPattern,
) {
    // Exact topics by lookup, and only the patterns scanned: a first `*`
    // looks at every position once.
    let patterns: Vec<&TopicPattern> = interest
        .keys()
        .filter(|other| *other != pattern && other.as_topic().is_none())
        .collect();
    let followed_otherwise = |topic: &Topic| {
        *topic == Topic::global()
            || (pattern.as_topic() != Some(topic)
                && interest.contains_key(&TopicPattern::Exact(topic.clone())))
            || patterns.iter().any(|other| other.matches(topic))
    };
    match pattern {
        TopicPattern::Exact(topic) => {
            if !followed_otherwise(topic) {
                positions.remove(topic);
            }
        }
        _ => positions.retain(|topic, _| !pattern.matches(topic) || followed_otherwise(topic)),
    }
}

/// Runs the feed until `stop`: connect, subscribe, prove it hears, catch
/// up, then handle announcements and probes; on any failure start over.
pub(super) async fn run(engine: Arc<Shared>, first: FeedSession, stop: CancellationToken) {
    let mut heard_until: Option<u64> = None;
    let mut server_run: Option<String> = None;
    let mut retry = RETRY_MIN;
    let mut first = Some(first);
    loop {
        let session = match first.take() {
            Some(session) => Ok(session),
            None => FeedSession::open(&engine).await,
        };
        let mut session = match session {
            Ok(session) => session,
            Err(error) => {
                engine.feed.healthy.store(false, Relaxed);
                tracing::warn!(%error, retry_in = ?retry, "cannot reach Redis for the feed");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        let ended = session
            .serve(&engine, &mut heard_until, &mut server_run, &stop)
            .await;
        let was_healthy = engine.feed.healthy.swap(false, Relaxed);
        engine.feed.reconnects.fetch_add(1, Relaxed);
        *engine.feed.connection.write() = None;
        match ended {
            Ok(()) => return,
            Err(reason) => tracing::warn!(reason, "the feed from Redis restarts"),
        }
        // A session that caught up starts the backoff over; a Redis that
        // answers but fails every session before that (a catch-up it cannot
        // serve) is retried ever more slowly, not in a tight loop.
        if was_healthy {
            retry = RETRY_MIN;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        if !was_healthy {
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

/// What a read told of Redis.
enum Serving {
    Data,
    /// Loading its data set, or a replica without its primary.
    NotYet,
    Unreachable,
}

/// One connection's worth of feed.
pub(super) struct FeedSession {
    connection: MultiplexedConnection,
    pushes: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl FeedSession {
    /// Connects and subscribes the node's channels and every followed one.
    pub(super) async fn open(engine: &Shared) -> Result<FeedSession, BrokerError> {
        let (sender, pushes) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        // Called by the connection's reader: it must not block. A full queue
        // is not a loss: the flag makes the feed read the streams.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(super::CONNECT_TIMEOUT))
            .set_response_timeout(Some(super::RESPONSE_TIMEOUT))
            .set_push_sender(move |push: PushInfo| match sender.try_send(push) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    flag.store(true, Relaxed);
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            });
        let mut connection = engine
            .feed_client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| super::unavailable(&e))?;
        let mut channels = vec![
            keys::node_channel(&engine.node),
            keys::APPROVALS_CHANNEL.to_owned(),
            keys::QUESTIONS_CHANNEL.to_owned(),
            keys::channel(&Topic::global()),
        ];
        let mut patterns = Vec::new();
        for pattern in engine.feed.interest.lock().keys() {
            match channel_of(pattern) {
                (channel, true) => patterns.push(channel),
                (channel, false) => channels.push(channel),
            }
        }
        connection
            .subscribe(&channels)
            .await
            .map_err(|e| super::unavailable(&e))?;
        if !patterns.is_empty() {
            connection
                .psubscribe(&patterns)
                .await
                .map_err(|e| super::unavailable(&e))?;
        }
        *engine.feed.connection.write() = Some(connection.clone());
        Ok(FeedSession {
            connection,
            pushes,
            overflowed,
        })
    }

    /// Handles the connection until it fails (`Err`, why) or `stop` (`Ok`).
    async fn serve(
        &mut self,
        engine: &Shared,
        heard_until: &mut Option<u64>,
        server_run: &mut Option<String>,
        stop: &CancellationToken,
    ) -> Result<(), &'static str> {
        let mut probes = tokio::time::interval(PROBE_EVERY);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Probes in flight: their number and the Redis time they were sent at.
        let mut waiting: Vec<(u64, u64, Instant)> = Vec::new();
        let mut next_probe = 0u64;
        // A Redis loading its data set after a restart answers TIME, INFO
        // and PUBLISH but refuses every read until it is done: the check
        // and the catch-up below would read nothing, and the node would
        // call itself ready.
        let mut wait = RETRY_MIN;
        loop {
            match engine.serving().await {
                Serving::Data => break,
                Serving::NotYet => {
                    tracing::info!(retry_in = ?wait, "Redis is loading its data; the feed waits");
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Serving::Unreachable => return Err("Redis does not answer"),
            }
        }
        // A Redis that restarted may hold an older copy of a stream
        // (restored from a snapshot): checked before this session delivers
        // anything, since events published meanwhile could otherwise be
        // taken for the continuation of what this node delivered.
        let Ok(now) = engine.redis_time().await else {
            return Err("Redis does not answer");
        };
        let (run, uptime_s) = engine.server_run().await.unzip();
        // Every event a copy restored at this run's start holds was stored
        // before the run started (a second's precision), and before this
        // node last heard Redis.
        let restored_by = uptime_s
            .map(|uptime| now.saturating_sub((uptime + 1) * 1000))
            .max(*heard_until);
        if server_run.is_some() && run.is_some() && run != *server_run {
            // Kept for the streams replaced later than this check (another
            // node rebases one, a publish runs ahead of this node's feed):
            // their restored copy is told apart by the same time.
            *engine.feed.restored_by.lock() = restored_by;
            if !engine.rebase_regressed(restored_by).await {
                // Checked again by the next session: the node stays unready.
                return Err("the followed streams could not be compared with Redis's copy");
            }
        }
        if run.is_some() {
            *server_run = run;
        }
        // What may have been missed is read once the first probe is heard:
        // by then every subscription above is in effect.
        let mut caught_up = false;
        loop {
            if self.overflowed.swap(false, Relaxed) && caught_up {
                tracing::warn!("the feed fell behind; reading the streams");
                engine.catch_up(*heard_until).await?;
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = probes.tick() => {
                    if waiting.first().is_some_and(|(_, _, sent)| sent.elapsed() > PROBE_TIMEOUT) {
                        return Err("a liveness probe was not heard back");
                    }
                    let Ok(time) = engine.redis_time().await else {
                        return Err("Redis does not answer");
                    };
                    next_probe += 1;
                    let channel = keys::node_channel(&engine.node);
                    let sent: Result<(), _> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(next_probe)
                        .query_async(&mut self.connection.clone())
                        .await;
                    if sent.is_err() {
                        return Err("Redis does not take the probe");
                    }
                    waiting.push((next_probe, time, Instant::now()));
                    engine.refresh(time).await;
                }
                push = self.pushes.recv() => {
                    let Some(push) = push else {
                        return Err("the connection closed");
                    };
                    match push.kind {
                        PushKind::Disconnection => return Err("the connection was lost"),
                        PushKind::Message | PushKind::PMessage => {
                            let Some((channel, payload)) = message_parts(&push) else {
                                continue;
                            };
                            if channel == keys::node_channel(&engine.node).as_bytes()
                                && questions::is_answer(payload)
                            {
                                engine.answer_heard(payload);
                            } else if channel == keys::node_channel(&engine.node).as_bytes() {
                                let heard: Option<u64> = std::str::from_utf8(payload)
                                    .ok()
                                    .and_then(|p| p.parse().ok());
                                if let Some(at) = waiting.iter().position(|(n, _, _)| Some(*n) == heard) {
                                    let (_, time, _) = waiting[at];
                                    waiting.drain(..=at);
                                    if !caught_up {
                                        engine.catch_up(*heard_until).await?;
                                        caught_up = true;
                                        engine.feed.healthy.store(true, Relaxed);
                                    }
                                    *heard_until = Some(time);
                                }
                            } else if channel == keys::APPROVALS_CHANNEL.as_bytes() {
                                engine.approval_announced(payload).await;
                            } else if channel == keys::QUESTIONS_CHANNEL.as_bytes() {
                                engine.question_heard(payload);
                            } else {
                                engine.announced(payload).await;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The channel and payload of a pub/sub message (`message`: channel,
/// payload; `pmessage`: pattern, channel, payload).
fn message_parts(push: &PushInfo) -> Option<(&[u8], &[u8])> {
    fn bytes(value: &Value) -> Option<&[u8]> {
        match value {
            Value::BulkString(bytes) => Some(bytes.as_slice()),
            _ => None,
        }
    }
    match push.data.as_slice() {
        [channel, payload] => Some((bytes(channel)?, bytes(payload)?)),
        [_, channel, payload] => Some((bytes(channel)?, bytes(payload)?)),
        _ => None,
    }
}

impl Shared {
    /// The Redis server's run id (new at every start of it).
    async fn server_run(&self) -> Option<(String, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.commands.clone())
            .await
            .ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some((
            field("run_id")?.to_owned(),
            field("uptime_in_seconds")?.parse().ok()?,
        ))
    }

    /// Whether Redis serves reads.
    async fn serving(&self) -> Serving {
        let read: Result<u64, RedisError> = redis::cmd("EXISTS")
            .arg(keys::PENDING)
            .query_async(&mut self.commands.clone())
            .await;
        match read {
            Ok(_) => Serving::Data,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown)
                ) =>
            {
                Serving::NotYet
            }
            Err(_) => Serving::Unreachable,
        }
    }

    /// Gives every followed stream that Redis now holds at a lower seq than
    /// this node delivered a new epoch: its subscribers are then told
    /// `epoch_changed`, here by the catch-up and everywhere by `since`.
    /// `restored_by`: the Redis time by which every event of a copy Redis
    /// restored was stored. False when the streams could not all be
    /// compared.
    async fn rebase_regressed(&self, restored_by: Option<u64>) -> bool {
        let followed = self.feed.held();
        for chunk in followed.chunks(CHECKS_PER_ROUND_TRIP) {
            let Some(regressed) = self.regressed(chunk).await else {
                return false;
            };
            for (topic, stored_epoch, stored_seq) in regressed {
                let replaced: Result<u64, _> = super::scripts::REBASE
                    .key(keys::TopicKeys::of(topic).meta)
                    .arg(&stored_epoch)
                    .arg(stored_seq)
                    .arg(crate::core::broker::new_epoch().as_str())
                    .invoke_async(&mut self.commands.clone())
                    .await;
                if replaced.is_ok_and(|n| n == 1) {
                    tracing::warn!(%topic, stored_seq, "Redis holds an older copy of this stream: it gets a new epoch");
                }
            }
        }
        // Told now (`epoch_changed`, then the new stream), before any
        // announcement of the old epoch could be taken as its continuation;
        // so are the subscribers of a topic this node delivered nothing of
        // live, who hold what a read handed them.
        for (topic, _) in &followed {
            let handed = match self.feed.position(topic) {
                Some(_) => None,
                None => self.feed.handed(topic),
            };
            if self
                .fill_after_restart(topic, None, restored_by, handed)
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// The streams of `followed` that Redis holds an older copy of, with
    /// the epoch and seq it holds: under the epoch this node delivered, a
    /// lower seq, or another event at the delivered seq (events published
    /// since Redis came back may have taken the stream past it). Two
    /// pipelined round trips for the lot; a stream whose delivered event
    /// was trimmed since has nothing to tell by and is left as it is.
    /// `None` when Redis did not answer the reads.
    async fn regressed<'a>(
        &self,
        followed: &'a [(Topic, LastDelivered)],
    ) -> Option<Vec<(&'a Topic, String, u64)>> {
        let mut metas = redis::pipe();
        for (topic, _) in followed {
            metas
                .cmd("HMGET")
                .arg(keys::TopicKeys::of(topic).meta)
                .arg("e")
                .arg("s");
        }
        let stored: Vec<(Option<String>, Option<u64>)> =
            match metas.query_async(&mut self.commands.clone()).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "could not compare followed streams with Redis's copy");
                    return None;
                }
            };
        let mut regressed = Vec::new();
        let mut same_seq = Vec::new();
        for ((topic, (epoch, delivered, delivered_id)), stored) in followed.iter().zip(stored) {
            let (Some(stored_epoch), Some(stored_seq)) = stored else {
                continue;
            };
            if stored_epoch != epoch.as_str() {
                continue;
            }
            if stored_seq < *delivered {
                regressed.push((topic, stored_epoch, stored_seq));
            } else if let Some(delivered_id) = delivered_id {
                same_seq.push((topic, *delivered, delivered_id, stored_epoch, stored_seq));
            }
        }
        if same_seq.is_empty() {
            return Some(regressed);
        }
        let mut ranges = redis::pipe();
        for (topic, delivered, ..) in &same_seq {
            let at = format!("{delivered}-0");
            ranges
                .cmd("XRANGE")
                .arg(keys::TopicKeys::of(topic).stream)
                .arg(&at)
                .arg(&at);
        }
        let entries: Vec<StreamEntries> = match ranges.query_async(&mut self.commands.clone()).await
        {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "could not compare followed streams with Redis's copy");
                return None;
            }
        };
        for ((topic, _, delivered_id, stored_epoch, stored_seq), entries) in
            same_seq.into_iter().zip(entries)
        {
            let stored_id = entries.first().and_then(|(_, fields)| {
                let frame = fields.get("f")?.clone();
                Some(
                    super::wire::decode_frame(bytes::Bytes::from(frame))?
                        .event
                        .id
                        .clone(),
                )
            });
            if stored_id.is_some_and(|id| id != *delivered_id) {
                regressed.push((topic, stored_epoch, stored_seq));
            }
        }
        Some(regressed)
    }

    /// An announcement from a topic's channel.
    async fn announced(&self, payload: &[u8]) {
        let Some(announcement) = Announcement::parse(payload, &self.node) else {
            tracing::warn!("skipping an unreadable announcement from Redis");
            return;
        };
        self.deliver_in_order(
            &announcement.epoch,
            &announcement.event,
            announcement.audience,
        )
        .await;
    }

    /// Delivers `event`, first reading from the stream whatever came before
    /// it that this node did not deliver.
    async fn deliver_in_order(&self, epoch: &Epoch, event: &EncodedEvent, audience: Audience) {
        let topic = &event.event.topic;
        match self.deliver_counted(epoch, event, audience, false).await {
            Delivery::Delivered(_) | Delivery::Duplicate | Delivery::Deferred => return,
            Delivery::Behind(_) => {}
            // The fill reads which stream is current: it tells and resets
            // when that is another one; an announcement from a stream
            // replaced since (a rebase) is then not delivered below.
            Delivery::EpochChanged => {}
        }
        // A stream that cannot be read now (logged) is read again at the
        // topic's next announcement, or by the catch-up after a reconnect.
        let _ = self.fill(topic, None).await;
        // Whatever the stream said, this event is the newest: deliver it
        // unless the fill did.
        self.deliver_counted(epoch, event, audience, false).await;
    }

    /// Delivers `event` here ([`Feed::deliver`]); an approval's request that
    /// reached connections able to answer it adds them to the approval's
    /// `delivered_to`, as every node does for its own.
    async fn deliver_counted(
        &self,
        epoch: &Epoch,
        event: &EncodedEvent,
        audience: Audience,
        together: bool,
    ) -> Delivery {
        let delivery = self
            .feed
            .deliver(self, epoch, event, audience, true, together);
        if let Delivery::Delivered(reached) = delivery
            && reached > 0
            && event.event.event_type == EventType::ApprovalRequested
            && let Some(id) = event
                .event
                .key
                .as_ref()
                .and_then(|key| CallbackId::new(key.as_str()).ok())
            && let Err(error) = self.record_delivery(&id, reached).await
        {
            tracing::warn!(%error, callback_id = %id, "could not count an approval's deliveries");
        }
        delivery
    }

    /// Reads and delivers what this node has not delivered of `topic`
    /// (since `min_time`, when it has no position), announcing what the
    /// stream no longer holds.
    /// `Err` (logged) when the stream could not be read.
    async fn fill(&self, topic: &Topic, min_time: Option<u64>) -> Result<(), BrokerError> {
        self.fill_after_restart(topic, min_time, self.feed.restored_by(), None)
            .await
    }

    /// [`fill`](Self::fill), where a stream replaced since this node's
    /// position (a new epoch) is delivered from its first event stored after
    /// `restored_by` (Redis time, of Redis's last restart). Those stored by
    /// then are a restored copy of events this node delivered already, under
    /// the old epoch: they are not sent twice. `handed`: right after Redis
    /// restarted, for a topic with no position, what reads handed its
    /// subscribers; only a new stream is then told of and delivered, the
    /// rest being the catch-up's.
    async fn fill_after_restart(
        &self,
        topic: &Topic,
        min_time: Option<u64>,
        restored_by: Option<u64>,
        handed: Option<(Epoch, u64)>,
    ) -> Result<(), BrokerError> {
        self.feed.catch_up_reads.fetch_add(1, Relaxed);
        let delivered = self.feed.position(topic);
        let by_reads = delivered.is_none() && handed.is_some();
        let known = delivered.or(handed);
        let after = known.as_ref().map_or(0, |(_, seq)| *seq);
        let read = match self
            .read_at(topic, ReadAt::after(after, min_time.unwrap_or(0)))
            .await
        {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, %topic, "cannot read a stream to catch up");
                return Err(error);
            }
        };
        if let Some((epoch, delivered)) = &known
            && *epoch != read.epoch
        {
            // A new stream: delivered from its start, except, right after
            // Redis restarted, a restored older copy's events this node
            // delivered already (the same events, under the old epoch),
            // which are not sent twice but named by the gap.
            let restored = match restored_by {
                Some(restored_by) => self.restored_copy(topic, restored_by).await.min(*delivered),
                None => 0,
            };
            self.handler.on_gap(&Gap {
                topic: topic.clone(),
                from_seq: 1,
                to_seq: restored,
                reason: GapReason::EpochChanged,
                epoch: Some(read.epoch.clone()),
            });
            self.feed.reset(topic, &read.epoch, restored);
            return Box::pin(self.fill(topic, None)).await;
        }
        if by_reads {
            return Ok(());
        }
        if known.is_some() && read.first_retained > after + 1 {
            let to_seq = read.first_retained - 1;
            self.handler.on_gap(&Gap {
                topic: topic.clone(),
                from_seq: after + 1,
                to_seq,
                reason: GapReason::Trimmed,
                epoch: None,
            });
            if let Some(slot) = self.feed.positions.read().get(topic) {
                *slot.lock() = Some((read.epoch.clone(), to_seq, None));
            }
        }
        let together = read.events.len() > 1;
        for (audience, event) in &read.events {
            self.deliver_counted(&read.epoch, event, *audience, together)
                .await;
        }
        Ok(())
    }

    /// The last seq of the events of `topic`'s stream stored by
    /// `restored_by` (Redis time): a stream Redis restored from a snapshot
    /// begins with them, and later ones were stored after it came back.
    /// 0 when none, or when the stream cannot be read.
    async fn restored_copy(&self, topic: &Topic, restored_by: u64) -> u64 {
        let keys = keys::TopicKeys::of(topic);
        super::scripts::RESTORED
            .key(keys.meta)
            .key(keys.stream)
            .arg(restored_by)
            .invoke_async(&mut self.commands.clone())
            .await
            .unwrap_or(0)
    }

    /// Reads what may have been missed since `heard_until` (Redis time up to
    /// which every announcement was heard): every followed topic after its
    /// position, and the topics of followed patterns active since then; for
    /// a topic with no position, never what was stored before this node
    /// first followed it (see [`Feed::owed_from`]).
    /// `Err` when a stream cannot be read or the topics of a pattern cannot
    /// be listed: the session ends, and the next one catches up from the
    /// same time.
    pub(super) async fn catch_up(&self, heard_until: Option<u64>) -> Result<(), &'static str> {
        let Some(heard_until) = heard_until else {
            // The first connection: nothing was delivered before it.
            return Ok(());
        };
        let since = heard_until.saturating_sub(CATCH_UP_MARGIN_MS);
        let followed: Vec<Topic> = self.feed.positions.read().keys().cloned().collect();
        for topic in &followed {
            let min_time = self
                .feed
                .position(topic)
                .is_none()
                .then(|| self.feed.owed_from(topic, since));
            if self.fill(topic, min_time).await.is_err() {
                return Err("a followed stream could not be read to catch up");
            }
        }
        let patterns: Vec<TopicPattern> = self
            .feed
            .interest
            .lock()
            .keys()
            .filter(|p| p.as_topic().is_none())
            .cloned()
            .collect();
        for pattern in patterns {
            let active = match self.active_topics(&pattern, since).await {
                Ok(active) => active,
                Err(error) => {
                    tracing::warn!(%error, %pattern, "cannot list a followed pattern's topics to catch up");
                    return Err("the topics of a followed pattern could not be listed to catch up");
                }
            };
            for topic in active {
                if !followed.contains(&topic)
                    && self
                        .fill(&topic, Some(self.feed.owed_from(&topic, since)))
                        .await
                        .is_err()
                {
                    return Err("a stream under a followed pattern could not be read to catch up");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> TopicPattern {
        TopicPattern::parse(p).unwrap()
    }

    #[tokio::test]
    async fn a_topic_a_pattern_still_follows_keeps_its_position_when_its_last_exact_follower_leaves()
     {
        let feed = Feed::default();
        let epoch = Epoch::new("e1").unwrap();
        let covered = Topic::parse("run:x").unwrap();
        let alone = Topic::parse("job:y").unwrap();
        {
            let mut interest = feed.interest.lock();
            interest.insert(pattern("run:*"), 1);
            interest.insert(pattern("run:x"), 1);
            interest.insert(pattern("job:y"), 1);
        }
        *feed.slot(&covered).lock() = Some((epoch.clone(), 188, None));
        *feed.slot(&alone).lock() = Some((epoch.clone(), 7, None));
        feed.unfollow(&pattern("run:x")).await;
        feed.unfollow(&pattern("job:y")).await;
        // `run:*` still delivers run:x here: forgetting that #188 was
        // delivered would deliver its next announcement (or its pattern copy)
        // a second time.
        assert_eq!(feed.position(&covered), Some((epoch, 188)));
        // Nothing follows job:y any more: its position goes.
        assert_eq!(feed.position(&alone), None);
    }
}
