//! The event envelope, what producers send to publish, and the ids around them.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use ts_rs::TS;

use crate::event_type::EventType;
use crate::priority::Priority;
use crate::topic::Topic;

/// The longest event id, key or source, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// The longest `key` or `source`, in bytes.
pub const MAX_LABEL_LEN: usize = 256;

/// An event as every subscriber sees it (inside an `event` frame, in snapshots
/// and in history).
///
/// ```json
/// {"topic":"execution:exec_123","seq":42,"id":"0193c7a2-...","event_type":"execution.progress",
///  "priority":"normal","timestamp":1729845678123,"source":"worker-7","key":"exec_123",
///  "data":{"progress":75}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Event {
    #[ts(as = "String")]
    pub topic: Topic,
    /// Per-topic sequence number, strictly +1 per topic, assigned by the hub.
    #[ts(type = "number")]
    pub seq: u64,
    pub id: EventId,
    pub event_type: EventType,
    pub priority: Priority,
    /// Milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub source: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub key: Option<Label>,
    #[serde(default)]
    pub data: Value,
}

/// What a producer sends to publish one event (`POST /api/v1/events`, a Unix
/// datagram, or the Rust client). The hub fills in `seq`, and `id` and
/// `timestamp` when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct PublishRequest {
    #[ts(as = "String")]
    pub topic: Topic,
    pub event_type: EventType,
    /// Any JSON; `null` when absent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// `normal` when absent.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    #[schemars(extend("default" = "normal"))]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub key: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub source: Option<Label>,
    /// A producer-chosen id makes retries idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub timestamp: Option<u64>,
}

impl PublishRequest {
    /// A request with default priority and no key, source, id or timestamp.
    pub fn new(topic: Topic, event_type: EventType, data: Value) -> PublishRequest {
        PublishRequest {
            topic,
            event_type,
            data,
            priority: Priority::Normal,
            key: None,
            source: None,
            id: None,
            timestamp: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the snapshot key.
    pub fn key(mut self, key: Label) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the producer-chosen id.
    pub fn id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }
}

/// A body of `POST /api/v1/events`: one event or a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[serde(untagged)]
pub enum PublishBody {
    Batch(Vec<PublishRequest>),
    One(Box<PublishRequest>),
}

/// What the hub answers for each published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct PublishReceipt {
    pub id: EventId,
    #[ts(as = "String")]
    pub topic: Topic,
    #[ts(type = "number")]
    pub seq: u64,
}

/// Why an id or label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} bytes")]
    TooLong(usize),
    #[error("must not contain control characters")]
    Control,
}

/// A label as a regular expression (for the JSON Schema): no control
/// characters. (`maxLength` counts characters; the hub counts bytes.)
pub const LABEL_REGEX: &str = r"^[^\u0000-\u001f\u007f-\u009f]+$";

fn check_label(value: &str, max: usize) -> Result<(), LabelError> {
    if value.is_empty() {
        return Err(LabelError::Empty);
    }
    if value.len() > max {
        return Err(LabelError::TooLong(max));
    }
    if value.chars().any(char::is_control) {
        return Err(LabelError::Control);
    }
    Ok(())
}

macro_rules! label_newtype {
    ($(#[doc = $doc:literal])* $name:ident, $noun:literal, $max:expr) => {
        $(#[doc = $doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, TS)]
        #[ts(type = "string")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps the value.
            pub fn new(value: impl Into<String>) -> Result<$name, LabelError> {
                let value = value.into();
                check_label(&value, $max)?;
                Ok($name(value))
            }

            /// The value, as on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                // Named as a reader knows it, not by this type ("an event
                // id must be at most 128 bytes"; an HTTP body's error adds
                // the field's path in front).
                $name::new(value)
                    .map_err(|e| serde::de::Error::custom(format_args!(concat!($noun, " {}"), e)))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": concat!($($doc),*).trim(),
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": LABEL_REGEX,
                })
            }
        }

        impl std::str::FromStr for $name {
            type Err = LabelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }
    };
}

label_newtype!(
    /// An event id: a UUID when the hub assigns it; a producer may use any
    /// string of 1 to 128 bytes without control characters.
    EventId,
    "an event id",
    MAX_ID_LEN
);
label_newtype!(
    /// A short label: an event's `key` (its entity id, for snapshots) or `source`.
    Label,
    "a name (key, source, task or run id)",
    MAX_LABEL_LEN
);
label_newtype!(
    /// A topic stream's epoch: chosen when its history is created; a `seq` is
    /// only meaningful together with the epoch it came from.
    Epoch,
    "an epoch",
    MAX_ID_LEN
);
label_newtype!(
    /// An approval's id (`callback_id` on the wire).
    CallbackId,
    "a callback id",
    MAX_ID_LEN
);
