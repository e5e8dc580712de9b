//! What a `snapshot` received ahead of the checkpoint holds, while the
//! replay behind it comes: the replayed events it shows newer are not
//! delivered again.

use std::collections::BTreeMap;

use crate::event::{Event, Label};
use crate::frame::Snapshot;

/// Up to the snapshot's seq, the latest seq of each key it holds.
#[derive(Debug, Clone)]
pub(crate) struct Covered {
    seq: u64,
    keys: BTreeMap<Label, u64>,
}

impl Covered {
    pub(crate) fn of(snapshot: &Snapshot) -> Covered {
        let mut keys = BTreeMap::new();
        for event in &snapshot.events {
            if let Some(key) = &event.key {
                let seq = keys.entry(key.clone()).or_insert(event.seq);
                *seq = (*seq).max(event.seq);
            }
        }
        Covered {
            seq: snapshot.seq,
            keys,
        }
    }

    /// Whether the replay has passed the snapshot (then it does not matter).
    pub(crate) fn passed_by(&self, event: &Event) -> bool {
        event.seq > self.seq
    }

    /// Whether the snapshot holds a newer or the same event of `event`'s
    /// key: its state is shown already.
    pub(crate) fn holds(&self, event: &Event) -> bool {
        event
            .key
            .as_ref()
            .and_then(|key| self.keys.get(key))
            .is_some_and(|&latest| latest >= event.seq)
    }
}
