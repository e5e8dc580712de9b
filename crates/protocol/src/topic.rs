//! Topics (`kind` or `kind:id`) and subscription patterns (`kind:*`, `*`).
//!
//! Grammar: kind `[a-z][a-z0-9_.-]{0,31}`, id `[A-Za-z0-9_.@-]{1,128}`.
//! A [`Topic`] can only be built through [`Topic::parse`], so an invalid topic
//! cannot exist anywhere in Herald.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest kind, in bytes.
pub const MAX_KIND_LEN: usize = 32;
/// The longest id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// `text` as an error names it: whole up to [`SHOWN_AT_MOST`] bytes, else
/// its start and its length, so that a huge input is not echoed back whole.
fn shown(text: &str) -> String {
    if text.len() <= SHOWN_AT_MOST {
        return text.to_owned();
    }
    let mut end = SHOWN_AT_MOST;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The most of a bad topic an error repeats.
const SHOWN_AT_MOST: usize = 160;

/// Why a string is not a topic or a pattern (a long one is shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error(
        "topic {0:?} has a bad kind: it must match [a-z][a-z0-9_.-]{{0,31}} (e.g. \"execution\")"
    )]
    BadKind(String),
    #[error("topic {0:?} has a bad id: it must match [A-Za-z0-9_.@-]{{1,128}} (e.g. \"exec_123\")")]
    BadId(String),
    #[error(
        "pattern {0:?} is not valid: use a topic, \"kind:*\" or \"*\" (wildcards only as the whole id)"
    )]
    BadPattern(String),
}

/// A concrete topic such as `execution:exec_123` or `global`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    name: Arc<str>,
    /// Byte length of the kind: `name[..kind_len]` is the kind.
    kind_len: usize,
}

impl Topic {
    /// Parses and validates a topic.
    pub fn parse(name: &str) -> Result<Topic, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        let (kind, id) = match name.split_once(':') {
            Some((kind, id)) => (kind, Some(id)),
            None => (name, None),
        };
        if !valid_kind(kind) {
            return Err(TopicError::BadKind(shown(name)));
        }
        if let Some(id) = id
            && !valid_id(id)
        {
            return Err(TopicError::BadId(shown(name)));
        }
        Ok(Topic {
            name: Arc::from(name),
            kind_len: kind.len(),
        })
    }

    /// Builds `kind:id`, validating both parts.
    pub fn with_id(kind: &str, id: &str) -> Result<Topic, TopicError> {
        Topic::parse(&format!("{kind}:{id}"))
    }

    /// The topic `user:{user_id}`, where a user's direct messages and approvals go.
    pub fn user(user_id: &str) -> Result<Topic, TopicError> {
        Topic::with_id("user", user_id)
    }

    /// The topic `global`, where broadcasts go.
    pub fn global() -> Topic {
        Topic {
            name: Arc::from("global"),
            kind_len: 6,
        }
    }

    /// The topic `metrics`, where the hub streams its own figures
    /// (`/ws/metrics` follows it).
    pub fn metrics() -> Topic {
        Topic {
            name: Arc::from("metrics"),
            kind_len: 7,
        }
    }

    /// The whole topic, as on the wire.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The kind (`execution` for `execution:exec_123`).
    pub fn kind(&self) -> &str {
        &self.name[..self.kind_len]
    }

    /// The id, if the topic has one.
    pub fn id(&self) -> Option<&str> {
        self.name.get(self.kind_len + 1..)
    }
}

fn valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    kind.len() <= MAX_KIND_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", self.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::parse(s)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Topic::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The topic grammar as a regular expression (for the JSON Schema).
pub const TOPIC_REGEX: &str = r"^[a-z][a-z0-9_.-]{0,31}(:[A-Za-z0-9_.@-]{1,128})?$";
/// The pattern grammar (a topic, `kind:*` or `*`) as a regular expression.
pub const PATTERN_REGEX: &str = r"^(\*|[a-z][a-z0-9_.-]{0,31}(:(\*|[A-Za-z0-9_.@-]{1,128}))?)$";

impl JsonSchema for Topic {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Topic".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A topic: `kind` or `kind:id` (e.g. `execution:exec_123`, `global`).",
            "type": "string",
            "pattern": TOPIC_REGEX,
        })
    }
}

/// What a subscription names: one topic, every topic of a kind, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(Topic),
    /// `kind:*`: every topic of the kind that has an id.
    Kind(Arc<str>),
    /// `*`: every topic (the firehose; admin only once authentication is on).
    All,
}

impl TopicPattern {
    /// Parses a topic, `kind:*` or `*`.
    pub fn parse(pattern: &str) -> Result<TopicPattern, TopicError> {
        if pattern == "*" {
            return Ok(TopicPattern::All);
        }
        if let Some(kind) = pattern.strip_suffix(":*") {
            if !valid_kind(kind) {
                return Err(TopicError::BadPattern(shown(pattern)));
            }
            return Ok(TopicPattern::Kind(Arc::from(kind)));
        }
        if pattern.contains('*') {
            return Err(TopicError::BadPattern(shown(pattern)));
        }
        Topic::parse(pattern).map(TopicPattern::Exact)
    }

    /// Whether `topic` falls under this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        match self {
            TopicPattern::Exact(exact) => exact == topic,
            TopicPattern::Kind(kind) => topic.id().is_some() && topic.kind() == &**kind,
            TopicPattern::All => true,
        }
    }

    /// The topic, when the pattern names exactly one.
    pub fn as_topic(&self) -> Option<&Topic> {
        match self {
            TopicPattern::Exact(topic) => Some(topic),
            _ => None,
        }
    }

    /// Whether every topic of `other` also matches `self` (used for authorization).
    pub fn covers(&self, other: &TopicPattern) -> bool {
        match (self, other) {
            (TopicPattern::All, _) => true,
            (_, TopicPattern::All) => false,
            (TopicPattern::Kind(a), TopicPattern::Kind(b)) => a == b,
            (TopicPattern::Kind(_), TopicPattern::Exact(topic)) => self.matches(topic),
            (TopicPattern::Exact(a), TopicPattern::Exact(b)) => a == b,
            (TopicPattern::Exact(_), TopicPattern::Kind(_)) => false,
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicPattern::Exact(topic) => f.write_str(topic.as_str()),
            TopicPattern::Kind(kind) => write!(f, "{kind}:*"),
            TopicPattern::All => f.write_str("*"),
        }
    }
}

impl FromStr for TopicPattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicPattern::parse(s)
    }
}

impl From<Topic> for TopicPattern {
    fn from(topic: Topic) -> Self {
        TopicPattern::Exact(topic)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for TopicPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TopicPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a subscription names: a topic, `kind:*` (every topic of the kind) or `*` (every topic).",
            "type": "string",
            "pattern": PATTERN_REGEX,
        })
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        TopicPattern::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::{Topic, TopicPattern};

    #[test]
    fn an_error_repeats_a_huge_topic_only_in_part() {
        let huge = format!("run:{}", "é".repeat(100_000));
        for message in [
            Topic::parse(&huge).unwrap_err().to_string(),
            TopicPattern::parse(&format!("{huge}*"))
                .unwrap_err()
                .to_string(),
        ] {
            assert!(message.len() < 400, "{} bytes", message.len());
            assert!(message.contains("… (20000"), "{message}");
        }
        let short = Topic::parse("Run:x").unwrap_err().to_string();
        assert!(short.contains("\"Run:x\""), "{short}");
    }

    #[test]
    fn the_named_topics_are_the_topics_their_names_parse_to() {
        assert_eq!(Topic::global(), Topic::parse("global").unwrap());
        assert_eq!(Topic::metrics(), Topic::parse("metrics").unwrap());
        assert_eq!(Topic::metrics().kind(), "metrics");
    }
}
