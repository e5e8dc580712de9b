//! Event priority: `low < normal < high < critical`.

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// How much an event matters when a slow consumer's queue is full: `low` then
/// `normal` events are shed (with a `gap`), `high` and `critical` never are (the
/// connection is closed with 1013 instead, so the client reconnects and replays).
///
/// Decoded from its name only; `null` is the default (`normal`), as an
/// absent `priority` is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, TS, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Whether this is the default priority (used to omit it on the wire).
    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }

    /// Whether a slow consumer may lose this event (it is then told with a `gap`).
    pub fn is_sheddable(self) -> bool {
        self <= Priority::Normal
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Priority, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Priority;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of \"low\", \"normal\", \"high\", \"critical\"")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Priority, E> {
                Priority::ALL
                    .into_iter()
                    .find(|p| p.as_str() == name)
                    .ok_or_else(|| E::unknown_variant(name, &["low", "normal", "high", "critical"]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Priority, E> {
                Ok(Priority::Normal)
            }
        }
        // `any`, so that `null` reaches `visit_unit`; anything but a string
        // or null (`{"critical": null}` included) is refused.
        deserializer.deserialize_any(Name)
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown priority {s:?}: use low, normal, high or critical"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Priority;
    use crate::PublishRequest;

    fn priority_of(value: &serde_json::Value) -> Result<Priority, serde_json::Error> {
        let body = json!({"topic": "run:1", "event_type": "step.started", "priority": value});
        serde_json::from_value::<PublishRequest>(body).map(|request| request.priority)
    }

    #[test]
    fn a_priority_is_one_of_its_four_names_and_null_is_the_default() {
        for priority in Priority::ALL {
            assert_eq!(priority_of(&json!(priority.as_str())).unwrap(), priority);
        }
        assert_eq!(priority_of(&json!(null)).unwrap(), Priority::Normal);
    }

    #[test]
    fn anything_but_a_name_is_refused() {
        for bad in [
            json!("urgent"),
            json!({"critical": null}),
            json!(3),
            json!("HIGH"),
        ] {
            assert!(priority_of(&bad).is_err(), "{bad} was accepted");
        }
    }
}
