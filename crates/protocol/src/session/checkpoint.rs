//! Per-topic checkpoints: the last `seq` delivered and the stream `epoch` it
//! belongs to. They drive `since` on resubscribe and de-duplication at the
//! replay/live seam, and they can be persisted (e.g. in `sessionStorage`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Epoch;
use crate::frame::Since;
use crate::topic::Topic;

/// Where a topic's stream was left: every event with `seq <= self.seq` of
/// this epoch has been delivered (or reported missing by a `gap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// `None` until the hub has named the stream's epoch (`subscribed` or
    /// `snapshot`); a checkpoint without an epoch is sent as a plain seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

impl Checkpoint {
    /// The `since` value a `subscribe` frame carries for this checkpoint.
    pub fn since(&self) -> Since {
        Since::Seq {
            seq: self.seq,
            epoch: self.epoch.clone(),
        }
    }
}

/// Checkpoints by exact topic, each stamped with when it was last written,
/// so the session can keep and resume the most recently active ones
/// ([`SessionConfig::max_checkpoints`](super::SessionConfig::max_checkpoints),
/// [`SessionConfig::max_since_bytes`](super::SessionConfig::max_since_bytes)).
/// Serializes as `{"execution:exec_123": {"seq": 42, "epoch": "e1"}, ...}`
/// (the stamps are not persisted: restored checkpoints are written in topic
/// order).
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    entries: BTreeMap<Topic, Kept>,
    /// Writes so far: the stamp of the next one.
    writes: u64,
}

/// A checkpoint and the write that last touched it.
#[derive(Debug, Clone)]
struct Kept {
    checkpoint: Checkpoint,
    written: u64,
}

impl Checkpoints {
    /// No checkpoints.
    pub fn new() -> Checkpoints {
        Checkpoints::default()
    }

    /// The checkpoint of `topic`.
    pub fn get(&self, topic: &Topic) -> Option<&Checkpoint> {
        self.entries.get(topic).map(|kept| &kept.checkpoint)
    }

    /// Sets the checkpoint of `topic`.
    pub fn insert(&mut self, topic: Topic, checkpoint: Checkpoint) {
        let written = self.stamp();
        self.entries.insert(
            topic,
            Kept {
                checkpoint,
                written,
            },
        );
    }

    /// Forgets the checkpoint of `topic`.
    pub fn remove(&mut self, topic: &Topic) -> Option<Checkpoint> {
        self.entries.remove(topic).map(|kept| kept.checkpoint)
    }

    /// Every checkpoint, by topic.
    pub fn iter(&self) -> impl Iterator<Item = (&Topic, &Checkpoint)> {
        self.entries
            .iter()
            .map(|(topic, kept)| (topic, &kept.checkpoint))
    }

    /// How many topics have a checkpoint.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no topic has a checkpoint.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn stamp(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    /// The checkpoint of `topic` for writing, stamped as written now.
    fn write(&mut self, topic: &Topic, fresh: impl FnOnce() -> Checkpoint) -> &mut Checkpoint {
        let written = self.stamp();
        let kept = self.entries.entry(topic.clone()).or_insert_with(|| Kept {
            checkpoint: fresh(),
            written,
        });
        kept.written = written;
        &mut kept.checkpoint
    }

    /// Whether an event of `topic` with `seq` is new; if so it becomes the
    /// checkpoint. `false` means a duplicate (or an older event) to drop.
    pub(crate) fn accept_event(&mut self, topic: &Topic, seq: u64) -> bool {
        if self
            .get(topic)
            .is_some_and(|checkpoint| seq <= checkpoint.seq)
        {
            return false;
        }
        self.write(topic, || Checkpoint { seq, epoch: None }).seq = seq;
        true
    }

    /// Whether the checkpoint of `topic` belongs to another stream than the
    /// one named (`epoch`, latest seq `latest`): another epoch, or a seq
    /// beyond `latest`. No checkpoint: no.
    fn names_another_stream(&self, topic: &Topic, epoch: &Epoch, latest: u64) -> bool {
        self.get(topic).is_some_and(|checkpoint| {
            checkpoint
                .epoch
                .as_ref()
                .is_some_and(|known| known != epoch)
                || checkpoint.seq > latest
        })
    }

    /// The hub named the stream: `epoch`, latest seq `latest`. A checkpoint
    /// from another epoch (or one beyond `latest`, so from an older stream
    /// without a known epoch) is forgotten and restarts at `latest`; a
    /// checkpoint of the same stream keeps its seq (the replay that follows
    /// fills the difference).
    pub(crate) fn adopt_stream(
        &mut self,
        topic: &Topic,
        epoch: &Epoch,
        latest: u64,
    ) -> &mut Checkpoint {
        let fresh = Checkpoint {
            seq: latest,
            epoch: Some(epoch.clone()),
        };
        let other_stream = self.names_another_stream(topic, epoch, latest);
        let checkpoint = self.write(topic, || fresh.clone());
        if other_stream {
            *checkpoint = fresh;
        } else {
            checkpoint.epoch = Some(epoch.clone());
        }
        checkpoint
    }

    /// The topic's stream is a new one, at `seq` (of `epoch`, when known).
    pub(crate) fn restart(&mut self, topic: &Topic, seq: u64, epoch: Option<Epoch>) {
        self.insert(topic.clone(), Checkpoint { seq, epoch });
    }

    /// Everything up to `seq` was delivered or reported missing.
    pub(crate) fn advance(&mut self, topic: &Topic, seq: u64) {
        let checkpoint = self.write(topic, || Checkpoint { seq, epoch: None });
        checkpoint.seq = checkpoint.seq.max(seq);
    }

    /// Merges `other` in, in topic order; its entries win.
    pub(crate) fn merge(&mut self, other: Checkpoints) {
        for (topic, kept) in other.entries {
            self.insert(topic, kept.checkpoint);
        }
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Topic) -> bool) {
        self.entries.retain(|topic, _| keep(topic));
    }

    /// Once more than `max` are kept, forgets the least recently written
    /// checkpoints until an eighth of `max` is free again (so the sort this
    /// takes runs once per `max / 8` new topics, not for each), never one of
    /// a topic `pinned` names (a topic the application subscribed to by name).
    pub(crate) fn keep_most_recent(&mut self, max: usize, pinned: impl Fn(&Topic) -> bool) {
        if self.entries.len() <= max {
            return;
        }
        let excess = self.entries.len() - (max - max / 8);
        let mut stamps: Vec<u64> = self
            .entries
            .iter()
            .filter(|(topic, _)| !pinned(topic))
            .map(|(_, kept)| kept.written)
            .collect();
        let Some(last) = excess.min(stamps.len()).checked_sub(1) else {
            return;
        };
        stamps.sort_unstable();
        // Stamps are unique: the oldest unpinned ones are at or below the cutoff.
        let cutoff = stamps[last];
        self.entries
            .retain(|topic, kept| kept.written > cutoff || pinned(topic));
    }

    /// The checkpoints of topics `covers` accepts: those `first` names
    /// first (in topic order), then the others, most recently written first.
    pub(crate) fn resumed_first(
        &self,
        covers: impl Fn(&Topic) -> bool,
        first: impl Fn(&Topic) -> bool,
    ) -> Vec<(&Topic, &Checkpoint)> {
        let mut chosen: Vec<(&Topic, &Kept)> = self
            .entries
            .iter()
            .filter(|(topic, _)| covers(topic))
            .collect();
        // Stable: the named keep the map's topic order.
        chosen.sort_by_key(|(topic, kept)| {
            if first(topic) {
                (false, std::cmp::Reverse(0))
            } else {
                (true, std::cmp::Reverse(kept.written))
            }
        });
        chosen
            .into_iter()
            .map(|(topic, kept)| (topic, &kept.checkpoint))
            .collect()
    }
}

/// What a checkpoint adds to a `subscribe` frame's `since`, counted the
/// same way by every client: the topic, the epoch, the seq's digits, and
/// 24 bytes for the JSON around them (at most 23 are).
pub(crate) fn since_bytes(topic: &Topic, checkpoint: &Checkpoint) -> usize {
    let epoch = checkpoint
        .epoch
        .as_ref()
        .map_or(0, |epoch| epoch.as_str().len());
    let digits = checkpoint
        .seq
        .checked_ilog10()
        .map_or(1, |log| log as usize + 1);
    topic.as_str().len() + epoch + digits + 24
}

impl PartialEq for Checkpoints {
    fn eq(&self, other: &Checkpoints) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Checkpoints {}

impl Serialize for Checkpoints {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Checkpoints {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_topic = BTreeMap::<Topic, Checkpoint>::deserialize(deserializer)?;
        Ok(by_topic.into_iter().collect())
    }
}

impl FromIterator<(Topic, Checkpoint)> for Checkpoints {
    fn from_iter<I: IntoIterator<Item = (Topic, Checkpoint)>>(iter: I) -> Self {
        let mut checkpoints = Checkpoints::new();
        for (topic, checkpoint) in iter {
            checkpoints.insert(topic, checkpoint);
        }
        checkpoints
    }
}
