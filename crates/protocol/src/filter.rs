//! Subscription filters: which event types, from which priority up.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ts_rs::TS;

use crate::event::Event;
use crate::event_type::{EventType, EventTypeError};
use crate::priority::Priority;

/// A filter on a subscription. Empty `types` means every type.
///
/// ```json
/// {"types": ["execution.*", "approval.requested"], "min_priority": "high"}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Vec<String>")]
    pub types: Vec<TypePattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub min_priority: Option<Priority>,
}

impl EventFilter {
    /// Whether the event passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_parts(&event.event_type, event.priority)
    }

    /// [`EventFilter::matches`] on the two fields a filter reads.
    pub fn matches_parts(&self, event_type: &EventType, priority: Priority) -> bool {
        self.min_priority.is_none_or(|min| priority >= min)
            && (self.types.is_empty() || self.types.iter().any(|p| p.matches(event_type)))
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.min_priority.is_none()
    }

    /// A filter that lets through at least everything each of `filters`
    /// does: the union of their types, the lowest of their priorities.
    /// `None` (no filter) when one of them lets everything through, or
    /// there are none. The hub keeps one filter per topic and connection,
    /// so a `subscribe` frame for a topic several subscriptions share
    /// carries this one.
    pub fn widest<'a>(
        filters: impl IntoIterator<Item = Option<&'a EventFilter>>,
    ) -> Option<EventFilter> {
        let mut types: Vec<TypePattern> = Vec::new();
        let mut every_type = false;
        let mut lowest: Option<Priority> = None;
        let mut every_priority = false;
        for filter in filters {
            let filter = filter.filter(|filter| !filter.is_empty())?;
            every_type |= filter.types.is_empty();
            for pattern in &filter.types {
                if !types.contains(pattern) {
                    types.push(pattern.clone());
                }
            }
            match filter.min_priority {
                None => every_priority = true,
                Some(min) => lowest = Some(lowest.map_or(min, |low| low.min(min))),
            }
        }
        if every_type {
            types.clear();
        }
        let wide = EventFilter {
            types,
            min_priority: lowest.filter(|_| !every_priority),
        };
        (!wide.is_empty()).then_some(wide)
    }
}

/// An event type pattern: an exact type, `domain.*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypePattern {
    Exact(EventType),
    /// `domain.*`: the name without the trailing `*`, dot kept (`execution.`).
    Prefix(String),
    All,
}

impl TypePattern {
    /// Parses `execution.progress`, `execution.*` or `*`.
    pub fn parse(pattern: &str) -> Result<TypePattern, EventTypeError> {
        if pattern == "*" {
            return Ok(TypePattern::All);
        }
        if let Some(prefix) = pattern.strip_suffix(".*") {
            // Validate the prefix as the front of a dotted name.
            EventType::parse(&format!("{prefix}.x"))?;
            return Ok(TypePattern::Prefix(format!("{prefix}.")));
        }
        EventType::parse(pattern).map(TypePattern::Exact)
    }

    /// Whether `event_type` falls under the pattern.
    pub fn matches(&self, event_type: &EventType) -> bool {
        match self {
            TypePattern::Exact(exact) => exact == event_type,
            TypePattern::Prefix(prefix) => event_type.as_str().starts_with(prefix.as_str()),
            TypePattern::All => true,
        }
    }
}

impl std::str::FromStr for TypePattern {
    type Err = EventTypeError;

    fn from_str(pattern: &str) -> Result<TypePattern, EventTypeError> {
        TypePattern::parse(pattern)
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::Exact(exact) => f.write_str(exact.as_str()),
            TypePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            TypePattern::All => f.write_str("*"),
        }
    }
}

/// The type pattern grammar as a regular expression (for the JSON Schema).
pub const TYPE_PATTERN_REGEX: &str =
    r"^(\*|[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*\.(\*|[a-z][a-z0-9_-]*))$";

impl JsonSchema for TypePattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TypePattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An event type pattern: an exact type, `domain.*`, or `*`.",
            "type": "string",
            "pattern": TYPE_PATTERN_REGEX,
        })
    }
}

impl Serialize for TypePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TypePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        TypePattern::parse(&name).map_err(serde::de::Error::custom)
    }
}
