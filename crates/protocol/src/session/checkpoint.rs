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

/// Checkpoints by exact topic. Serializes as
/// `{"execution:exec_123": {"seq": 42, "epoch": "e1"}, ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checkpoints(BTreeMap<Topic, Checkpoint>);

impl Checkpoints {
    /// No checkpoints.
    pub fn new() -> Checkpoints {
        Checkpoints::default()
    }

    /// The checkpoint of `topic`.
    pub fn get(&self, topic: &Topic) -> Option<&Checkpoint> {
        self.0.get(topic)
    }

    /// Sets the checkpoint of `topic`.
    pub fn insert(&mut self, topic: Topic, checkpoint: Checkpoint) {
        self.0.insert(topic, checkpoint);
    }

    /// Forgets the checkpoint of `topic`.
    pub fn remove(&mut self, topic: &Topic) -> Option<Checkpoint> {
        self.0.remove(topic)
    }

    /// Every checkpoint, by topic.
    pub fn iter(&self) -> impl Iterator<Item = (&Topic, &Checkpoint)> {
        self.0.iter()
    }

    /// How many topics have a checkpoint.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no topic has a checkpoint.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an event of `topic` with `seq` is new; if so it becomes the
    /// checkpoint. `false` means a duplicate (or an older event) to drop.
    pub(crate) fn accept_event(&mut self, topic: &Topic, seq: u64) -> bool {
        match self.0.get_mut(topic) {
            Some(checkpoint) if seq <= checkpoint.seq => false,
            Some(checkpoint) => {
                checkpoint.seq = seq;
                true
            }
            None => {
                self.0
                    .insert(topic.clone(), Checkpoint { seq, epoch: None });
                true
            }
        }
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
        let checkpoint = self.0.entry(topic.clone()).or_insert_with(|| fresh.clone());
        let other_stream = checkpoint
            .epoch
            .as_ref()
            .is_some_and(|known| known != epoch)
            || checkpoint.seq > latest;
        if other_stream {
            *checkpoint = fresh;
        } else {
            checkpoint.epoch = Some(epoch.clone());
        }
        checkpoint
    }

    /// The topic's stream is a new one, at `seq` (its epoch unknown here).
    pub(crate) fn restart(&mut self, topic: &Topic, seq: u64) {
        self.0
            .insert(topic.clone(), Checkpoint { seq, epoch: None });
    }

    /// Everything up to `seq` was delivered or reported missing.
    pub(crate) fn advance(&mut self, topic: &Topic, seq: u64) {
        let checkpoint = self
            .0
            .entry(topic.clone())
            .or_insert(Checkpoint { seq, epoch: None });
        checkpoint.seq = checkpoint.seq.max(seq);
    }

    /// Merges `other` in; its entries win.
    pub(crate) fn merge(&mut self, other: Checkpoints) {
        self.0.extend(other.0);
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Topic) -> bool) {
        self.0.retain(|topic, _| keep(topic));
    }
}

impl FromIterator<(Topic, Checkpoint)> for Checkpoints {
    fn from_iter<I: IntoIterator<Item = (Topic, Checkpoint)>>(iter: I) -> Self {
        Checkpoints(iter.into_iter().collect())
    }
}
