//! [`Subscription`]: what the application subscribed to, kept as state so it
//! is replayed (with `since`) on every connection.

use std::collections::BTreeMap;

use crate::filter::EventFilter;
use crate::frame::{ClientFrame, ClientMessage, RequestId, Subscribe};
use crate::topic::{Topic, TopicPattern};

use super::checkpoint::Checkpoints;

/// One `subscribe` as the application made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub topics: Vec<TopicPattern>,
    pub filter: Option<EventFilter>,
    /// Ask for a `snapshot` first (on every connection).
    pub snapshot: bool,
}

impl Subscription {
    /// Whether `topic` falls under one of the subscription's patterns.
    pub fn covers(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|pattern| pattern.matches(topic))
    }

    /// The `subscribe` frame, with `since` for every checkpointed topic the
    /// subscription covers (exact topics, and topics seen under a pattern).
    pub(crate) fn frame(&self, checkpoints: &Checkpoints, id: Option<RequestId>) -> ClientFrame {
        let since: BTreeMap<_, _> = checkpoints
            .iter()
            .filter(|(topic, _)| self.covers(topic))
            .map(|(topic, checkpoint)| (topic.clone(), checkpoint.since()))
            .collect();
        ClientFrame {
            id,
            message: ClientMessage::Subscribe(Subscribe {
                topics: self.topics.clone(),
                filter: self.filter.clone(),
                since,
                snapshot: self.snapshot,
            }),
        }
    }
}
