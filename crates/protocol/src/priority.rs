//! Event priority: `low < normal < high < critical`.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// How much an event matters when a slow consumer's queue is full: `low` then
/// `normal` events are shed (with a `gap`), `high` and `critical` never are (the
/// connection is closed with 1013 instead, so the client reconnects and replays).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, TS,
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
