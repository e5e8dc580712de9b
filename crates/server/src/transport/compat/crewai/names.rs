//! How the CrewAI backend names what a client follows and what it reads:
//! subscriptions (`execution_123`, `crew_456`, `global`, `task_updates`)
//! ↔ Herald topics and patterns, and an event ↔ its `WebSocketEvent`.
//!
//! A subscription `{kind}_{id}` is the topic `{kind}:{id}` (split at the
//! first `_`), `{kind}_updates` is the pattern `{kind}:*`, a word is the
//! topic of that kind alone (`global`, `metrics`), and `all` is `*`.

use herald_protocol::{Event, Priority, Topic, TopicPattern};
use serde_json::{Value, json};

use crate::transport::compat::iso8601;

/// The pattern a subscription name stands for.
pub(crate) fn pattern(name: &str) -> Result<TopicPattern, String> {
    let refused = |e: &dyn std::fmt::Display| format!("subscription {name:?}: {e}");
    if name == "all" {
        return Ok(TopicPattern::All);
    }
    if let Some(kind) = name.strip_suffix("_updates") {
        return TopicPattern::parse(&format!("{kind}:*")).map_err(|e| refused(&e));
    }
    let topic = match name.split_once('_') {
        Some((kind, id)) => Topic::with_id(kind, id),
        None => Topic::parse(name),
    };
    topic.map(TopicPattern::Exact).map_err(|e| refused(&e))
}

/// The subscription name of a topic or pattern.
pub(crate) fn name(pattern: &TopicPattern) -> String {
    match pattern {
        TopicPattern::Exact(topic) => topic_name(topic),
        TopicPattern::Kind(kind) => format!("{kind}_updates"),
        TopicPattern::All => "all".to_owned(),
    }
}

/// The subscription name of a topic.
pub(crate) fn topic_name(topic: &Topic) -> String {
    match topic.id() {
        Some(id) => format!("{}_{id}", topic.kind()),
        None => topic.kind().to_owned(),
    }
}

/// The seed's `EventPriority` spelling: `LOW`, `NORMAL`, `HIGH`, `CRITICAL`.
pub(crate) fn priority(priority: Priority) -> String {
    priority.as_str().to_ascii_uppercase()
}

/// A priority as a client spells it, in either case.
pub(crate) fn parse_priority(spelled: &str) -> Result<Priority, String> {
    spelled
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| format!("priority {spelled:?} is not LOW, NORMAL, HIGH or CRITICAL"))
}

/// An event as the CrewAI backend's `WebSocketEvent`: its dotted
/// `event_type` (the same names), `timestamp` in ISO 8601, the seed's
/// priority spelling, `data`, the ids its topic names (`execution_id`,
/// `crew_id`, `agent_id`, `task_id`), the `subscription` it came through,
/// and Herald's own fields under `metadata`.
pub(crate) fn event(event: &Event) -> Value {
    let mut metadata = json!({"topic": event.topic, "seq": event.seq});
    if let Some(source) = &event.source {
        metadata["source"] = json!(source);
    }
    if let Some(key) = &event.key {
        metadata["key"] = json!(key);
    }
    let mut message = json!({
        "event_type": event.event_type,
        "event_id": event.id,
        "timestamp": iso8601(event.timestamp),
        "priority": priority(event.priority),
        "data": event.data,
        "subscription": topic_name(&event.topic),
        "metadata": metadata,
    });
    if let Some(id) = event.topic.id() {
        let field = match event.topic.kind() {
            "execution" => Some("execution_id"),
            "crew" => Some("crew_id"),
            "agent" => Some("agent_id"),
            "task" => Some("task_id"),
            _ => None,
        };
        if let Some(field) = field {
            message[field] = json!(id);
        }
    }
    message
}

/// A message the hub itself sends (greeting, heartbeat, errors) in the
/// same envelope.
pub(crate) fn notice(
    event_type: &str,
    priority: Priority,
    timestamp_ms: u64,
    data: Value,
) -> Value {
    let mut message = json!({
        "event_type": event_type,
        "timestamp": iso8601(timestamp_ms),
        "priority": self::priority(priority),
    });
    message["data"] = data;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_names_are_topics_and_back() {
        for (subscription, herald) in [
            ("execution_123", "execution:123"),
            ("execution_exec_123", "execution:exec_123"),
            ("crew_456", "crew:456"),
            ("global", "global"),
            ("metrics", "metrics"),
            ("task_updates", "task:*"),
            ("all", "*"),
        ] {
            let pattern = pattern(subscription).unwrap();
            assert_eq!(pattern.to_string(), herald);
            assert_eq!(name(&pattern), subscription);
        }
        assert!(pattern("Execution 1").is_err());
    }

    #[test]
    fn priorities_are_spelled_as_the_seed_and_read_in_any_case() {
        assert_eq!(priority(Priority::High), "HIGH");
        assert_eq!(parse_priority("CRITICAL").unwrap(), Priority::Critical);
        assert_eq!(parse_priority("low").unwrap(), Priority::Low);
        assert!(parse_priority("URGENT").is_err());
    }
}
