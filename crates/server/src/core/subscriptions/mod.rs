//! Subscribing, unsubscribing and reading state for a connection: the
//! `subscribed` frames, snapshots, replays from a checkpoint and the seam
//! between a replay and live delivery.
//!
//! A subscription is registered with the node's fan-out first, holding its
//! live events; then the topic is read from the broker (position, snapshot,
//! history after the checkpoint) and sent; then the held events the read did
//! not cover follow. So a replay meets live delivery without a duplicate or
//! a hole, whichever engine holds the history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_protocol::frame::{ErrorFrame, Since, Subscribe, Subscribed};
use herald_protocol::{CloseReason, ErrorCode, EventFilter, ServerMessage, Topic, TopicPattern};

use crate::core::broker::{Broker, BrokerError, History, HistoryRequest, ReadRequest};
use crate::core::connection::ConnHandle;
use crate::core::connections::Connections;
use crate::core::fanout::{Fanout, Held, Overflowed, Seam};
use crate::core::outbox::{Closing, EventMeta, OutFrame, Pushed};
use crate::operations::metrics::{CloseKind, Metrics, ReplayOutcome};

/// The control frames one topic of a `subscribe` queues at most besides its
/// replayed events: `subscribed`, `snapshot`, `gap`, `replay_complete`.
const FRAMES_PER_TOPIC: usize = 4;

/// A connection closed because too many live events came while its replay
/// was read: it reconnects and replays again.
const OVERFLOW_REASON: &str = "too many events during the replay: reconnect and replay";

/// Subscriptions of this node's connections.
#[derive(Debug)]
pub struct Subscriptions {
    broker: Arc<dyn Broker>,
    fanout: Arc<Fanout>,
    connections: Arc<Connections>,
    max_subscriptions: usize,
    queue_size: usize,
    metrics: Arc<Metrics>,
}

impl Subscriptions {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        fanout: Arc<Fanout>,
        connections: Arc<Connections>,
        max_subscriptions: usize,
        queue_size: usize,
        metrics: Arc<Metrics>,
    ) -> Subscriptions {
        Subscriptions {
            broker,
            fanout,
            connections,
            max_subscriptions,
            queue_size,
            metrics,
        }
    }

    /// Follows an admitted connection's user topic, so its user's messages
    /// reach it (broadcasts reach it from its admission on).
    pub(crate) async fn attach(&self, conn: &Arc<ConnHandle>) {
        if let Some(topic) = user_topic(conn) {
            let pattern = TopicPattern::Exact(topic);
            if let Err(error) = self.broker.subscribe(&pattern).await {
                tracing::warn!(%error, session = %conn.id, "could not follow the user's topic");
            }
        }
    }

    /// Forgets a connection and all its subscriptions; whether it was
    /// registered.
    pub(crate) async fn detach(&self, conn: &ConnHandle) -> bool {
        let patterns: Vec<TopicPattern> = conn.subscriptions.lock().keys().cloned().collect();
        self.unsubscribe(conn, &patterns).await;
        let removed = self.connections.remove(conn);
        if removed && let Some(topic) = user_topic(conn) {
            self.broker.unsubscribe(&TopicPattern::Exact(topic)).await;
        }
        removed
    }

    /// Subscribes a connection: a `subscribed` frame per topic; for an exact
    /// topic its snapshot when asked and the replay from `since`; for a
    /// pattern the replay of the covered topics named in `since`, then each
    /// covered topic's snapshot when asked.
    pub(crate) async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        request: &Subscribe,
    ) -> Result<(), ErrorFrame> {
        // A cursor for a topic the request does not subscribe to would be
        // ignored, and a client waiting for its `replay_complete` would wait
        // for ever: refused, nothing subscribed.
        if let Some(stray) = request
            .since
            .keys()
            .find(|topic| !request.topics.iter().any(|pattern| pattern.matches(topic)))
        {
            return Err(error_frame(
                ErrorCode::InvalidRequest,
                format!("since names {stray}, which this subscribe does not cover"),
            ));
        }
        {
            let current = conn.subscriptions.lock();
            // A pattern named twice is one subscription.
            let new = request
                .topics
                .iter()
                .filter(|p| !current.contains_key(p))
                .collect::<HashSet<_>>()
                .len();
            if current.len() + new > self.max_subscriptions {
                return Err(error_frame(
                    ErrorCode::InvalidRequest,
                    format!(
                        "too many subscriptions: at most {} per connection",
                        self.max_subscriptions
                    ),
                ));
            }
        }
        let filter = request.filter.clone().unwrap_or_default();
        // One request's snapshots, exact and pattern-covered together.
        let mut budget = SnapshotBudget::new(self.queue_size);
        let mut seen = HashSet::new();
        for pattern in request.topics.iter().filter(|p| seen.insert(*p)) {
            // A request's frames go as the writer takes them, as a replay's
            // parts do: a subscribe to many topics never fills the queue
            // with its own frames, which would shed its replayed events and
            // close a connection whose control frames no longer fit.
            if conn.outbox.len() + FRAMES_PER_TOPIC > conn.outbox.capacity() {
                if !conn.outbox.wait_for_room(FRAMES_PER_TOPIC).await {
                    return Ok(());
                }
                conn.saw_peer();
            }
            let known = conn
                .subscriptions
                .lock()
                .insert(pattern.clone(), filter.clone())
                .is_some();
            if !known && let Err(error) = self.broker.subscribe(pattern).await {
                conn.subscriptions.lock().remove(pattern);
                return Err(not_subscribed(conn, &error));
            }
            let held = self.fanout.hold(conn, pattern, &filter);
            let released = match pattern {
                TopicPattern::Exact(topic) => {
                    let snapshot = request.snapshot && budget.take();
                    self.subscribe_topic(
                        conn,
                        topic,
                        &filter,
                        snapshot,
                        request.since.get(topic),
                        &held,
                    )
                    .await
                }
                TopicPattern::Kind(_) | TopicPattern::All => {
                    self.subscribe_pattern(conn, pattern, &filter, request, &held)
                        .await
                }
            };
            self.fanout.settle(conn, pattern, &held);
            match released {
                Ok(Ok(())) => {}
                Ok(Err(Overflowed)) => {
                    self.metrics.replayed(ReplayOutcome::Overflowed, 0);
                    conn.outbox.close(Closing {
                        kind: CloseKind::TryAgainLater,
                        code: CloseReason::TRY_AGAIN_LATER,
                        reason: OVERFLOW_REASON,
                        flush: false,
                    });
                    return Ok(());
                }
                Err(error) => {
                    // Not read, so not subscribed: the client is told and
                    // may ask again.
                    self.unsubscribe(conn, std::slice::from_ref(pattern)).await;
                    return Err(not_subscribed(conn, &error));
                }
            }
            if request.snapshot && !matches!(pattern, TopicPattern::Exact(_)) {
                let found = self
                    .broker
                    .snapshots(pattern, &filter, budget.left())
                    .await
                    .map_err(|e| not_subscribed(conn, &e))?;
                budget.took(found.snapshots.len(), found.refused);
                for snapshot in found.snapshots {
                    if !send_when_room(conn, &ServerMessage::Snapshot(snapshot)).await {
                        return Ok(());
                    }
                }
            }
        }
        if let Some(error) = budget.overrun() {
            conn.send(&ServerMessage::Error(error));
        }
        Ok(())
    }

    /// An exact topic: `subscribed` at the position read, the snapshot, the
    /// replay, then the held live events after that position.
    async fn subscribe_topic(
        &self,
        conn: &ConnHandle,
        topic: &Topic,
        filter: &EventFilter,
        snapshot: bool,
        since: Option<&Since>,
        held: &Held,
    ) -> Result<Result<(), Overflowed>, BrokerError> {
        let request = ReadRequest {
            snapshot: snapshot.then_some(filter),
            history: since.map(|since| HistoryRequest {
                since,
                filter,
                limit: usize::MAX,
            }),
        };
        let read = self.broker.read(topic, request).await?;
        let head = read.position.seq;
        let seam = Seam {
            epoch: read.position.epoch.clone(),
            seq: head,
        };
        self.fanout.mark_read(
            conn,
            &TopicPattern::Exact(topic.clone()),
            [(topic.clone(), seam.clone())],
        );
        let seam_of = |t: &Topic| (t == topic).then_some(&seam);
        if held.was_live() {
            // Subscribed again: what the earlier subscription would have
            // delivered by now comes first, as it would have.
            let shed = held.send_early(conn, seam_of);
            count_shed(&self.metrics, conn, shed);
        }
        // Live events stay held while the subscription's own frames go.
        conn.send(&ServerMessage::Subscribed(Subscribed {
            topic: TopicPattern::Exact(topic.clone()),
            epoch: Some(read.position.epoch.clone()),
            seq: Some(head),
        }));
        if snapshot {
            conn.send(&ServerMessage::Snapshot(herald_protocol::frame::Snapshot {
                topic: topic.clone(),
                epoch: read.position.epoch.clone(),
                seq: head,
                events: read.snapshot,
            }));
        }
        if let Some(history) = read.history {
            send_history(&self.metrics, conn, history).await;
        }
        Ok(release(&self.metrics, conn, held, seam_of).await)
    }

    /// A pattern: `subscribed`, then the replay of each covered topic named
    /// in `since` (and not subscribed on its own in the same request), then
    /// the held live events those replays did not cover.
    async fn subscribe_pattern(
        &self,
        conn: &ConnHandle,
        pattern: &TopicPattern,
        filter: &EventFilter,
        request: &Subscribe,
        held: &Held,
    ) -> Result<Result<(), Overflowed>, BrokerError> {
        let covered = request
            .since
            .iter()
            .filter(|(topic, _)| pattern.matches(topic))
            .filter(|(topic, _)| !request.topics.iter().any(|p| p.as_topic() == Some(*topic)));
        let mut replays = Vec::new();
        for (topic, since) in covered {
            let history = HistoryRequest {
                since,
                filter,
                limit: usize::MAX,
            };
            let read = self
                .broker
                .read(
                    topic,
                    ReadRequest {
                        snapshot: None,
                        history: Some(history),
                    },
                )
                .await?;
            replays.push((topic.clone(), read.position, read.history));
        }
        let seams: HashMap<Topic, Seam> = replays
            .iter()
            .map(|(topic, position, _)| {
                let seam = Seam {
                    epoch: position.epoch.clone(),
                    seq: position.seq,
                };
                (topic.clone(), seam)
            })
            .collect();
        self.fanout.mark_read(conn, pattern, seams.clone());
        if held.was_live() {
            // Subscribed again: as for a topic (see `subscribe_topic`).
            let shed = held.send_early(conn, |t| seams.get(t));
            count_shed(&self.metrics, conn, shed);
        }
        // Live events stay held while the subscription's own frames go.
        conn.send(&ServerMessage::Subscribed(Subscribed {
            topic: pattern.clone(),
            epoch: None,
            seq: None,
        }));
        for (_, _, history) in replays {
            if let Some(history) = history {
                send_history(&self.metrics, conn, history).await;
            }
        }
        Ok(release(&self.metrics, conn, held, |t| seams.get(t)).await)
    }

    /// Removes subscriptions (unknown ones are ignored).
    pub(crate) async fn unsubscribe(&self, conn: &ConnHandle, patterns: &[TopicPattern]) {
        for pattern in patterns {
            let known = conn.subscriptions.lock().remove(pattern).is_some();
            self.fanout.remove(conn, pattern);
            if known {
                self.broker.unsubscribe(pattern).await;
            }
        }
    }

    /// A one-off read of the retained events after `since` (the `replay`
    /// action): they carry their seqs, so a subscribed client merges them.
    pub(crate) async fn replay(
        &self,
        conn: &ConnHandle,
        topic: &Topic,
        since: &Since,
        limit: usize,
    ) -> Result<(), ErrorFrame> {
        let (_, history) = self
            .broker
            .history(topic, since, limit)
            .await
            .map_err(|e| store_error(&e))?;
        send_history(&self.metrics, conn, history).await;
        Ok(())
    }

    /// Sends a `snapshot` per named topic, or, without names, per subscribed
    /// topic and per topic a subscribed pattern covers (those with state),
    /// each through its subscription's filter.
    pub(crate) async fn send_state(
        &self,
        conn: &ConnHandle,
        topics: Option<Vec<Topic>>,
    ) -> Result<(), ErrorFrame> {
        let subscriptions = conn.subscriptions.lock().clone();
        let filter_of = |topic: &Topic| {
            subscriptions
                .get(&TopicPattern::Exact(topic.clone()))
                .cloned()
                .unwrap_or_default()
        };
        let (topics, patterns): (Vec<Topic>, Vec<(&TopicPattern, &EventFilter)>) = match topics {
            Some(topics) => (topics, Vec::new()),
            None => (
                subscriptions
                    .keys()
                    .filter_map(|p| p.as_topic().cloned())
                    .collect(),
                subscriptions
                    .iter()
                    .filter(|(p, _)| p.as_topic().is_none())
                    .collect(),
            ),
        };
        // Access to all of it is checked before any snapshot is sent.
        let asked: Vec<TopicPattern> = topics
            .iter()
            .cloned()
            .map(TopicPattern::Exact)
            .chain(patterns.iter().map(|(p, _)| (*p).clone()))
            .collect();
        conn.check_access(&asked)
            .map_err(|(code, message)| error_frame(code, message))?;
        let mut budget = SnapshotBudget::new(self.queue_size);
        for topic in &topics {
            if budget.take() {
                self.send_snapshot(conn, topic, &filter_of(topic)).await?;
            }
        }
        for (pattern, filter) in patterns {
            let found = self
                .broker
                .snapshots(pattern, filter, budget.left())
                .await
                .map_err(|e| store_error(&e))?;
            budget.took(found.snapshots.len(), found.refused);
            for snapshot in found.snapshots {
                if !send_when_room(conn, &ServerMessage::Snapshot(snapshot)).await {
                    return Ok(());
                }
            }
        }
        match budget.overrun() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends the `snapshot` of a topic, through `filter`.
    pub(crate) async fn send_snapshot(
        &self,
        conn: &ConnHandle,
        topic: &Topic,
        filter: &EventFilter,
    ) -> Result<(), ErrorFrame> {
        let snapshot = self
            .broker
            .snapshot(topic, filter)
            .await
            .map_err(|e| store_error(&e))?;
        send_when_room(conn, &ServerMessage::Snapshot(snapshot)).await;
        Ok(())
    }

    /// Whether `topic` has a subscriber of its own on this node.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.fanout.has_subscribers(topic)
    }

    /// Subscriber counts per topic or pattern, on this node.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.fanout.subscriber_counts()
    }
}

/// Hands the live events held during a replay to the connection's queue
/// once it has room for them: the replay's last part may have filled it,
/// and a full queue would shed them. Events held while it waits are waited
/// for too. Held past a queue's worth, they overflowed: the caller closes
/// the connection (1013) to replay again, at once.
async fn release<'s>(
    metrics: &Metrics,
    conn: &ConnHandle,
    held: &Held,
    read: impl Fn(&Topic) -> Option<&'s Seam>,
) -> Result<(), Overflowed> {
    let mut room_for = 0;
    while let Some(holding) = held.holding()?
        && holding > room_for
    {
        if !conn.outbox.wait_for_room(holding).await {
            break;
        }
        // As between a replay's parts: the reader waits on the writer, and
        // a writer that makes room has a peer that reads.
        conn.saw_peer();
        room_for = holding;
    }
    let shed = held.release(conn, read)?;
    count_shed(metrics, conn, shed);
    Ok(())
}

/// Queues a request's frame once the connection's queue has room for it, as
/// a replay's parts are: a request's own frames (snapshots above all) never
/// push queued events out, nor close a connection whose client reads.
/// `false` once the connection is closing.
async fn send_when_room(conn: &ConnHandle, message: &ServerMessage) -> bool {
    if conn.outbox.len() >= conn.outbox.capacity() {
        if !conn.outbox.wait_for_room(1).await {
            return false;
        }
        // The writer took frames: the peer reads, though its own frames
        // wait while the reader queues this request's.
        conn.saw_peer();
    }
    conn.send(message);
    true
}

/// Counts events a connection's full queue shed (each told with a gap).
fn count_shed(metrics: &Metrics, conn: &ConnHandle, shed: u64) {
    if shed > 0 {
        conn.events_shed.fetch_add(shed, Relaxed);
        metrics.events_shed.inc_by(shed);
    }
}

/// Queues a replay, and counts how it ended: its gap, its events, then
/// `replay_complete`. A replay longer than half the connection's queue goes
/// in parts of that size, each once the writer took the frames before it
/// ([`Outbox::wait_for_room`]), so that its parts never push each other
/// out; it stops if the connection closes. Live events of the connection's
/// other topics still go to the queue meanwhile, and on a connection that
/// reads more slowly than they come they shed the oldest queued events, the
/// replay's among them, as for any slow consumer (counted as shed).
///
/// [`Outbox::wait_for_room`]: crate::core::outbox::Outbox::wait_for_room
async fn send_history(metrics: &Metrics, conn: &ConnHandle, history: History) {
    metrics.replayed(
        ReplayOutcome::of_gap(history.gap.as_ref().map(|gap| gap.reason)),
        history.events.len(),
    );
    if let Some(gap) = history.gap {
        if !conn.outbox.wait_for_room(1).await {
            return;
        }
        conn.send(&ServerMessage::Gap(gap));
    }
    let part = (conn.outbox.capacity() / 2).max(1);
    for events in history.events.chunks(part) {
        if !conn.outbox.wait_for_room(events.len()).await {
            return;
        }
        // The writer took the part before: the peer reads, so it is alive,
        // though its own frames wait while the reader queues this replay.
        conn.saw_peer();
        let mut shed = 0;
        for encoded in events {
            let event = &encoded.event;
            let pushed = conn.outbox.push(OutFrame {
                text: encoded.frame.clone(),
                event: Some(EventMeta {
                    topic: event.topic.clone(),
                    seq: event.seq,
                    priority: event.priority,
                    published: std::time::Instant::now(),
                }),
            });
            if pushed == Pushed::Shed {
                shed += 1 + conn.outbox.take_folded();
            }
        }
        count_shed(metrics, conn, shed);
    }
    // Its last part may have filled the queue, which would shed one of its
    // events to make room for the control frame (a live event of another
    // topic may still take the room first).
    if conn.outbox.wait_for_room(1).await {
        conn.send(&ServerMessage::ReplayComplete(history.complete));
    }
}

fn user_topic(conn: &ConnHandle) -> Option<Topic> {
    conn.user_id
        .as_deref()
        .and_then(|user| Topic::user(user).ok())
}

fn error_frame(code: ErrorCode, message: String) -> ErrorFrame {
    ErrorFrame {
        code,
        message,
        reference: None,
    }
}

fn store_error(error: &BrokerError) -> ErrorFrame {
    error_frame(ErrorCode::Internal, error.to_string())
}

/// A subscription the store failed to serve. While the store is
/// unavailable (a shared store down or stalled), the connection is closed
/// with 1013 rather than left open without the subscription: a client
/// resubscribes (with `since`) only when it reconnects, and would otherwise
/// get nothing more, not even a gap, once the store is back. The error
/// frame its caller sends is then not queued (the connection is closing):
/// a client that matches refusals to subscriptions must not take this one
/// for a refusal.
fn not_subscribed(conn: &ConnHandle, error: &BrokerError) -> ErrorFrame {
    if matches!(error, BrokerError::Unavailable(_)) {
        conn.outbox.close(Closing {
            kind: CloseKind::TryAgainLater,
            code: CloseReason::TRY_AGAIN_LATER,
            reason: STORE_UNAVAILABLE_REASON,
            flush: true,
        });
    }
    store_error(error)
}

/// The close reason of a connection whose subscription the store could not
/// serve.
const STORE_UNAVAILABLE_REASON: &str = "the store is unavailable: reconnect and subscribe again";

/// How many more `snapshot` frames one request may queue: half of the
/// connection's queue. Never shed, they could otherwise fill it, and a
/// connection whose queue holds only such frames is closed (1013).
#[derive(Debug)]
pub(crate) struct SnapshotBudget {
    left: usize,
    refused: usize,
}

impl SnapshotBudget {
    pub(crate) fn new(queue_size: usize) -> SnapshotBudget {
        SnapshotBudget {
            left: (queue_size / 2).max(1),
            refused: 0,
        }
    }

    /// Whether one more snapshot fits (it is then counted); if not, it is
    /// counted as refused.
    pub(crate) fn take(&mut self) -> bool {
        if self.left == 0 {
            self.refused += 1;
            return false;
        }
        self.left -= 1;
        true
    }

    /// How many more fit.
    fn left(&self) -> usize {
        self.left
    }

    /// `sent` snapshots were queued and `refused` did not fit.
    fn took(&mut self, sent: usize, refused: usize) {
        self.left = self.left.saturating_sub(sent);
        self.refused += refused;
    }

    /// The error that tells the client what did not fit, if anything.
    pub(crate) fn overrun(&self) -> Option<ErrorFrame> {
        (self.refused > 0).then(|| {
            error_frame(
                ErrorCode::TooLarge,
                format!(
                    "{} topics' snapshots did not fit in this request (at most half of \
                     --queue-size a request): ask for them with request_state, a few topics at a time",
                    self.refused
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests;
