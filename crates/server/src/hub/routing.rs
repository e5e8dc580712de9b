//! Subscriptions, replay, snapshots and history: everything that reads a
//! topic's stream for a client, atomically with live delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use herald_protocol::frame::{ErrorFrame, Since, Subscribe, Subscribed};
use herald_protocol::{ErrorCode, Event, EventFilter, ServerMessage, Topic, TopicPattern};
use parking_lot::Mutex;

use super::Hub;
use crate::connection::ConnHandle;
use crate::outbox::{EventMeta, OutFrame};
use crate::stream::{Stream, Subscriber};

impl Hub {
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
        // One request's snapshots, exact and pattern-covered together.
        let mut budget = self.snapshot_budget();
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
                    if request.snapshot && budget.take() {
                        conn.send(&snapshot_of(&stream, &filter));
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
                    drop(guards);
                    if request.snapshot {
                        for snapshot in self.snapshots_under(pattern, &filter, &mut budget) {
                            conn.send(&snapshot);
                        }
                    }
                }
            }
        }
        if let Some(error) = budget.overrun() {
            conn.send(&ServerMessage::Error(error));
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

    /// The `snapshot` frame of a topic: the latest event per key that
    /// `filter` lets through (as it would let them through live).
    pub(crate) fn snapshot(&self, topic: &Topic, filter: &EventFilter) -> ServerMessage {
        let stream = self.stream(topic);
        let stream = stream.lock();
        snapshot_of(&stream, filter)
    }

    /// A `snapshot` of each topic `pattern` covers whose snapshot holds an
    /// event `filter` lets through, in topic order. Each is consistent with
    /// its own seq; taken after the pattern's subscription started, so an
    /// event may arrive live and also be in its topic's snapshot.
    /// Each is taken from `budget`; topics beyond it are counted there.
    pub(crate) fn snapshots_under(
        &self,
        pattern: &TopicPattern,
        filter: &EventFilter,
        budget: &mut SnapshotBudget,
    ) -> Vec<ServerMessage> {
        let mut streams: Vec<(Topic, Arc<Mutex<Stream>>)> = self
            .inner
            .streams
            .read()
            .iter()
            .filter(|(topic, _)| pattern.matches(topic))
            .map(|(topic, stream)| (topic.clone(), stream.clone()))
            .collect();
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        let mut snapshots = Vec::new();
        for (_, stream) in streams {
            let stream = stream.lock();
            if stream.has_snapshot_matching(filter) && budget.take() {
                snapshots.push(snapshot_of(&stream, filter));
            }
        }
        snapshots
    }

    /// The snapshots one request may queue on a connection: half its queue.
    /// Never shed, they could otherwise fill it, and a connection whose
    /// queue holds only such frames is closed (1013).
    pub(crate) fn snapshot_budget(&self) -> SnapshotBudget {
        SnapshotBudget {
            left: (self.inner.config.queue_size / 2).max(1),
            refused: 0,
        }
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
}

fn snapshot_of(stream: &Stream, filter: &EventFilter) -> ServerMessage {
    ServerMessage::Snapshot(herald_protocol::frame::Snapshot {
        topic: stream.topic.clone(),
        epoch: stream.epoch.clone(),
        seq: stream.delivered_seq,
        events: stream.snapshot_events_matching(filter),
    })
}

/// How many more `snapshot` frames one request may queue, and how many it
/// asked for beyond that.
#[derive(Debug)]
pub(crate) struct SnapshotBudget {
    left: usize,
    refused: usize,
}

impl SnapshotBudget {
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

    /// The error that tells the client what did not fit, if anything.
    pub(crate) fn overrun(&self) -> Option<ErrorFrame> {
        (self.refused > 0).then(|| ErrorFrame {
            code: ErrorCode::TooLarge,
            message: format!(
                "{} topics' snapshots did not fit in this request (at most half of \
                 --queue-size a request): ask for them with request_state, a few topics at a time",
                self.refused
            ),
            reference: None,
        })
    }
}

fn subscribed_pattern(pattern: &TopicPattern) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed {
        topic: pattern.clone(),
        epoch: None,
        seq: None,
    })
}
