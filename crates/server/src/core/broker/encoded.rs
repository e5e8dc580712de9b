//! Events on their way through a broker: a [`Draft`] before its seq, an
//! [`EncodedEvent`] after, serialized once into its `event` frame.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::{
    Event, EventId, EventType, Label, Priority, PublishReceipt, PublishRequest, Topic,
};
use serde_json::Value;

/// Largest encoding buffer a thread keeps between events.
const MAX_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where events are encoded before their text is copied out at its exact
    /// size: a frame does not grow by reallocation each time, and history
    /// keeps no spare capacity. Dropped after an event larger than
    /// `MAX_SCRATCH`, so a thread does not hold on to a rare large one.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An event with everything but its seq, which the broker assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub topic: Topic,
    pub id: EventId,
    pub event_type: EventType,
    pub priority: Priority,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub source: Option<Label>,
    pub key: Option<Label>,
    pub data: Value,
}

impl Draft {
    /// A producer's request, with the id and timestamp it did not set.
    pub fn new(request: PublishRequest, id: impl FnOnce() -> EventId, now_ms: u64) -> Draft {
        Draft {
            topic: request.topic,
            id: request.id.unwrap_or_else(id),
            event_type: request.event_type,
            priority: request.priority,
            timestamp: request.timestamp.unwrap_or(now_ms),
            source: request.source,
            key: request.key,
            data: request.data,
        }
    }

    /// The event, at `seq`.
    pub fn into_event(self, seq: u64) -> Event {
        Event {
            topic: self.topic,
            seq,
            id: self.id,
            event_type: self.event_type,
            priority: self.priority,
            timestamp: self.timestamp,
            source: self.source,
            key: self.key,
            data: self.data,
        }
    }

    /// The receipt of this draft stored as `seq`.
    pub fn receipt(&self, seq: u64) -> PublishReceipt {
        PublishReceipt {
            id: self.id.clone(),
            topic: self.topic.clone(),
            seq,
        }
    }

    /// Whether `stored` (an event with this draft's id) carries the same
    /// content: a retry, not another event reusing the id.
    pub fn same_content(&self, stored: &Event) -> bool {
        self.content() == Content::of_event(stored)
    }

    /// What a retry of this draft must repeat.
    pub fn content(&self) -> Content<'_> {
        Content {
            event_type: &self.event_type,
            priority: self.priority,
            key: self.key.as_ref(),
            source: self.source.as_ref(),
            data: &self.data,
        }
    }
}

/// What a retry under an id must repeat to be taken for the same event: all
/// but the timestamp (the hub sets it when the producer did not).
#[derive(Debug, PartialEq, Hash)]
pub struct Content<'a> {
    event_type: &'a EventType,
    priority: Priority,
    key: Option<&'a Label>,
    source: Option<&'a Label>,
    data: &'a Value,
}

impl<'a> Content<'a> {
    pub fn of_event(event: &'a Event) -> Content<'a> {
        Content {
            event_type: &event.event_type,
            priority: event.priority,
            key: event.key.as_ref(),
            source: event.source.as_ref(),
            data: &event.data,
        }
    }

    /// A digest of it, to tell a retry from another event under the same
    /// id once history has let the event itself go: equal contents give
    /// equal digests (serde_json hashes a map in key order); unrelated ones
    /// collide with a chance of about 2^-64 (a few crafted numbers hash
    /// alike, such as `-1` and `18446744073709551615`: a producer can only
    /// confuse its own retries with them).
    pub fn digest(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(self, &mut hasher);
        std::hash::Hasher::finish(&hasher)
    }

    pub fn of_request(request: &'a PublishRequest) -> Content<'a> {
        Content {
            event_type: &request.event_type,
            priority: request.priority,
            key: request.key.as_ref(),
            source: request.source.as_ref(),
            data: &request.data,
        }
    }
}

/// An event and its `event` frame, serialized once and shared by every
/// delivery and replay.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub event: Arc<Event>,
    /// The `event` frame: UTF-8 JSON text.
    pub frame: Bytes,
}

impl EncodedEvent {
    /// Encodes `event` into its frame.
    pub fn new(event: Event) -> EncodedEvent {
        let frame = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            event.encode_frame_into(scratch);
            let frame = Bytes::copy_from_slice(scratch);
            if scratch.capacity() > MAX_SCRATCH {
                *scratch = Vec::new();
            }
            frame
        });
        EncodedEvent {
            event: Arc::new(event),
            frame,
        }
    }

    /// The encoded frame's size plus about as much again for the parsed event:
    /// what retaining it costs.
    pub fn weight(&self) -> usize {
        2 * self.frame.len() + 256
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn frames_encoded_through_the_reused_buffer_are_exactly_each_events_frame() {
        let event = |seq: u64, data: Value| Event {
            topic: Topic::parse("run:1").unwrap(),
            seq,
            id: EventId::new(format!("id-{seq}")).unwrap(),
            event_type: EventType::StepProgress,
            priority: Priority::Normal,
            timestamp: 7,
            source: None,
            key: None,
            data,
        };
        // Large after small, small after large: nothing of an earlier frame
        // may leak into a later one, and a frame larger than the buffer a
        // thread keeps is encoded whole, then its buffer is let go.
        for event in [
            event(1, json!({"text": "é ✓ \"quoted\""})),
            event(2, json!({"blob": "x".repeat(MAX_SCRATCH * 2)})),
            event(3, json!([1, 2, 3])),
            event(4, json!(null)),
        ] {
            let encoded = EncodedEvent::new(event.clone());
            assert_eq!(encoded.frame, event.encode_frame().as_bytes());
            assert!(SCRATCH.with_borrow(Vec::capacity) <= MAX_SCRATCH);
        }
    }

    #[test]
    fn a_retry_has_the_same_content_whatever_its_timestamp_and_another_event_does_not() {
        let request = PublishRequest::new(
            Topic::parse("run:1").unwrap(),
            EventType::StepProgress,
            json!({"step": 3, "ratio": 0.1}),
        )
        .id(EventId::new("e1").unwrap());
        let first = Draft::new(request.clone(), || unreachable!(), 1).into_event(1);
        let retry = Draft::new(request.clone(), || unreachable!(), 2);
        assert!(retry.same_content(&first));
        let mut other = request;
        other.data = json!({"step": 4, "ratio": 0.1});
        assert!(!Draft::new(other, || unreachable!(), 2).same_content(&first));
    }
}
