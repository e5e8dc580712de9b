//! [`Subscription`]: what the application subscribed to, kept as state so it
//! is replayed (with `since`) on every connection.

use std::collections::BTreeMap;

use crate::filter::EventFilter;
use crate::frame::{ClientFrame, ClientMessage, RequestId, Subscribe};
use crate::topic::{Topic, TopicPattern};

use super::checkpoint::{Checkpoints, since_bytes};

/// One `subscribe` as the application made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub topics: Vec<TopicPattern>,
    pub filter: Option<EventFilter>,
    /// Ask for a `snapshot` first (on every connection).
    pub snapshot: bool,
    /// The request id the application gave it: every `subscribe` frame for
    /// it carries it, so the hub's `ack` or `error` names it on every
    /// connection (a refusal after a reconnect included).
    pub id: Option<RequestId>,
}

impl Subscription {
    /// Whether `topic` falls under one of the subscription's patterns.
    pub fn covers(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|pattern| pattern.matches(topic))
    }

    /// Whether a filter holds back some of its topics' events (an empty
    /// filter holds back none).
    pub fn is_filtered(&self) -> bool {
        self.filter
            .as_ref()
            .is_some_and(|filter| !filter.is_empty())
    }

    /// Whether the subscription names `topic` itself (not by a pattern).
    pub fn names(&self, topic: &Topic) -> bool {
        self.topics
            .iter()
            .any(|pattern| pattern.as_topic() == Some(topic))
    }

    /// The `subscribe` frame, with `since` for the checkpointed topics the
    /// subscription covers (exact topics, and topics seen under a pattern):
    /// the topics it names first, then the others, the most recently
    /// advanced first, as many as fit in `max_since_bytes` ([`since_bytes`])
    /// and keep the frame within `max_frame_bytes`. Also the checkpointed
    /// topics it covers that did not fit: they resume live.
    ///
    /// Only the topics `resumes` lets through are resumed here: on a new
    /// connection each topic is resumed by one subscription ([`resumer`]),
    /// and a topic its resumer has no room for resumes live, whatever room
    /// the others have.
    pub(crate) fn frame(
        &self,
        checkpoints: &Checkpoints,
        limits: FrameLimits,
        resumes: impl Fn(&Topic) -> bool,
    ) -> (ClientFrame, Vec<Topic>) {
        let mut frame = self.frame_without_since();
        let room = limits
            .max_frame_bytes
            .saturating_sub(frame.encoded_len() + SINCE_FIELD_BYTES);
        let mut left = limits.max_since_bytes.min(room);
        let mut since = BTreeMap::new();
        let mut left_out = Vec::new();
        for (topic, checkpoint) in checkpoints.resumed_first(
            |topic| self.covers(topic) && resumes(topic),
            |topic| self.names(topic),
        ) {
            match left.checked_sub(since_bytes(topic, checkpoint)) {
                Some(rest) if left_out.is_empty() => {
                    left = rest;
                    since.insert(topic.clone(), checkpoint.since());
                }
                _ => left_out.push(topic.clone()),
            }
        }
        if let ClientMessage::Subscribe(subscribe) = &mut frame.message {
            subscribe.since = since;
        }
        (frame, left_out)
    }

    /// The `subscribe` frame with no `since`: the smallest this
    /// subscription's frame can be.
    pub(crate) fn frame_without_since(&self) -> ClientFrame {
        ClientFrame {
            id: self.id.clone(),
            message: ClientMessage::Subscribe(Subscribe {
                topics: self.topics.clone(),
                filter: self.filter.clone(),
                since: BTreeMap::new(),
                snapshot: self.snapshot,
            }),
        }
    }
}

/// Which of `subscriptions` resumes `topic` on a new connection: the one
/// whose `since` carries its checkpoint. Only one does: each replay ends
/// with a `replay_complete` that moves the topic's checkpoint to where the
/// replay read, and the first to end would make the events of another,
/// still coming, look already seen (a filtered subscription's replay ends
/// at the topic's head having sent none of them). The first covering it
/// with no filter that names it, else with no filter, else that names it,
/// else the first covering it. Subscriptions naming the same topic are sent
/// with one filter ([`as_sent`]), so the resumer replays what all of them
/// let through; a topic covered under different names (a topic filtered
/// one way, a pattern another) replays only the resumer's filter: the
/// other's events of the time offline do not come back.
pub(crate) fn resumer(subscriptions: &[Subscription], topic: &Topic) -> Option<usize> {
    subscriptions
        .iter()
        .enumerate()
        .filter(|(_, subscription)| subscription.covers(topic))
        .max_by_key(|(index, subscription)| {
            (
                !subscription.is_filtered(),
                subscription.names(topic),
                std::cmp::Reverse(*index),
            )
        })
        .map(|(index, _)| index)
}

/// The order subscriptions are sent in on a new connection: those with no
/// filter first, and among each, those naming only topics before those
/// with patterns; otherwise as they were made. The hub answers each
/// `subscribe` whole (replay included) before the next, and a subscription
/// is live from its own answer on: sent first, a topic's resumer replays it
/// before another subscription covering it goes live and moves its
/// checkpoint with a live event. (A resumer that names a topic beside
/// patterns of its own can still come after an unfiltered pattern that
/// covers it.)
pub(crate) fn resubscription_order(subscriptions: &[Subscription]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..subscriptions.len()).collect();
    order.sort_by_key(|&index| {
        let subscription = &subscriptions[index];
        let patterns = subscription
            .topics
            .iter()
            .any(|pattern| pattern.as_topic().is_none());
        (subscription.is_filtered(), patterns)
    });
    order
}

/// The subscriptions as their frames go to the hub: each with what every
/// subscription sharing one of its topics (or patterns, by name) lets
/// through ([`EventFilter::widest`]). The hub keeps one filter per topic and
/// connection, the last one sent, so a frame with only its own filter would
/// narrow what another subscription on the topic gets. A frame carries one
/// filter for all its topics, so a topic it alone names may be widened too:
/// the session delivers only what some covering subscription's own filter
/// lets through. Each subscription keeps its own filter, so the widening
/// follows the subscriptions the session holds on each connection.
///
/// A widened frame over `max_frame_bytes` goes with no filter at all: the
/// widest, and smaller than the subscription's own frame, which was checked
/// against the limit.
pub(crate) fn as_sent(subscriptions: &[Subscription], max_frame_bytes: usize) -> Vec<Subscription> {
    subscriptions
        .iter()
        .map(|subscription| sent(subscriptions, subscription, max_frame_bytes))
        .collect()
}

/// `subscription` as its frame goes beside `others` (which may hold it):
/// see [`as_sent`].
pub(crate) fn sent(
    others: &[Subscription],
    subscription: &Subscription,
    max_frame_bytes: usize,
) -> Subscription {
    let wide = Subscription {
        filter: sent_filter(others, subscription),
        ..subscription.clone()
    };
    if wide.frame_without_since().encoded_len() > max_frame_bytes {
        Subscription {
            filter: None,
            ..subscription.clone()
        }
    } else {
        wide
    }
}

/// The filter `subscription`'s frame carries beside `others` (which may
/// hold it): see [`as_sent`].
fn sent_filter(others: &[Subscription], subscription: &Subscription) -> Option<EventFilter> {
    let sharing = others.iter().filter(|other| {
        other
            .topics
            .iter()
            .any(|pattern| subscription.topics.contains(pattern))
    });
    // In the order they were made (the types' union is sent in that order),
    // then `subscription` itself when `others` does not hold it yet.
    EventFilter::widest(
        sharing
            .map(|other| other.filter.as_ref())
            .chain(std::iter::once(subscription.filter.as_ref())),
    )
}

/// What bounds a `subscribe` frame: the session's `since` budget and the
/// hub's frame limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    pub max_since_bytes: usize,
    pub max_frame_bytes: usize,
}

/// What a non-empty `since` adds around its entries: `,"since":{}`.
const SINCE_FIELD_BYTES: usize = 11;
