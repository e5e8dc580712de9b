//! How AIECS names its messages (`"type": "system_notification"`) and how
//! Herald names events (`system.notification`), both ways: the first `_`
//! is the dot, `heartbeat` is `connection.heartbeat`, and a one-word type
//! lives in the `aiecs` domain (`foo` is `aiecs.foo`).

use herald_protocol::{Event, EventType, EventTypeError, PublishRequest, Topic};
use serde_json::{Map, Value};

use crate::transport::compat::{fields_of, millis_from, seconds, underscored};

/// The seed's heartbeat message type.
const HEARTBEAT: &str = "heartbeat";
/// Where one-word message types live.
const DOMAIN: &str = "aiecs";

/// The event type of a message `type`.
pub(crate) fn event_type(kind: &str) -> Result<EventType, EventTypeError> {
    if kind == HEARTBEAT {
        return Ok(EventType::ConnectionHeartbeat);
    }
    match kind.split_once('_') {
        Some((domain, action)) => EventType::parse(&format!("{domain}.{action}")),
        None => EventType::parse(&format!("{DOMAIN}.{kind}")),
    }
}

/// The message `type` of an event type.
pub(crate) fn message_type(event_type: &EventType) -> String {
    if *event_type == EventType::ConnectionHeartbeat {
        return HEARTBEAT.to_owned();
    }
    let name = event_type.as_str();
    match name.strip_prefix(DOMAIN).and_then(|n| n.strip_prefix('.')) {
        Some(kind) if !kind.contains(['.', '_']) => kind.to_owned(),
        _ => underscored(name),
    }
}

/// An event as a flat message: its `data`'s fields, `type`, `timestamp` in
/// seconds (the message's own when it had one), and, on a user's topic,
/// `target_user_id` (as the seed's `send_to_user` set it).
pub(crate) fn message(event: &Event) -> Value {
    let mut fields = fields_of(&event.data);
    fields.insert(
        "type".to_owned(),
        Value::from(message_type(&event.event_type)),
    );
    fields
        .entry("timestamp")
        .or_insert_with(|| Value::from(seconds(event.timestamp)));
    if event.topic.kind() == "user"
        && let Some(user) = event.topic.id()
    {
        fields
            .entry("target_user_id")
            .or_insert_with(|| Value::from(user));
    }
    Value::Object(fields)
}

/// A message a producer broadcasts or sends to a user, as the event that
/// carries it on `topic`: its `type` names the event, the rest is `data`,
/// unchanged (its `timestamp` too, so it reaches pages exactly as sent; a
/// timestamp in seconds or milliseconds also becomes the event's).
pub(crate) fn request(
    topic: Topic,
    mut message: Map<String, Value>,
) -> Result<PublishRequest, String> {
    let kind = match message.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err("a message needs a \"type\" (e.g. \"system_notification\")".to_owned()),
    };
    let event_type = event_type(&kind).map_err(|e| format!("message type {kind:?}: {e}"))?;
    let timestamp = message
        .get("timestamp")
        .and_then(Value::as_f64)
        .and_then(millis_from);
    let mut request = PublishRequest::new(topic, event_type, Value::Object(message));
    request.timestamp = timestamp;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_message_types_name_events_and_back() {
        for (kind, dotted) in [
            ("system_notification", "system.notification"),
            ("task_progress", "task.progress"),
            ("personal_notification", "personal.notification"),
            ("task_step_result", "task.step_result"),
            ("task_cancelled", "task.cancelled"),
            ("system_health_check", "system.health_check"),
            ("heartbeat", "connection.heartbeat"),
            ("status", "aiecs.status"),
        ] {
            let event_type = event_type(kind).unwrap();
            assert_eq!(event_type.as_str(), dotted);
            assert_eq!(message_type(&event_type), kind);
        }
        assert!(event_type("Not A Type").is_err());
        assert!(event_type("trailing_").is_err());
    }

    #[test]
    fn a_message_keeps_its_fields_and_timestamp_exactly() {
        let message = serde_json::json!({"type": "task_progress", "task_id": "task_123",
            "progress": 75, "message": "Task execution progress 75%", "timestamp": 1729845678.123456});
        let Value::Object(fields) = message.clone() else {
            unreachable!()
        };
        let request = request(Topic::global(), fields).unwrap();
        assert_eq!(request.event_type, EventType::TaskProgress);
        assert_eq!(request.timestamp, Some(1_729_845_678_123));
        let event = Event {
            topic: request.topic,
            seq: 1,
            id: herald_protocol::EventId::new("e").unwrap(),
            event_type: request.event_type,
            priority: request.priority,
            timestamp: 1_729_845_678_123,
            source: None,
            key: None,
            data: request.data,
        };
        assert_eq!(super::message(&event), message);
    }
}
