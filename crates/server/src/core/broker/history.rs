//! What a client resuming from a checkpoint is sent: the `gap` for what is
//! gone, the retained events, and the `replay_complete`. Every engine plans
//! it here from what it retains, so the contract's rules are written once.

use herald_protocol::frame::{Gap, GapReason, ReplayComplete, Since};
use herald_protocol::{EventFilter, Topic};

use super::{EncodedEvent, Position};

/// A planned replay, in the order it is sent.
#[derive(Debug, Clone)]
pub struct History {
    /// Seqs after the checkpoint that will not be sent: `trimmed` (history no
    /// longer holds them) or `epoch_changed` (the checkpoint is from another
    /// stream, or beyond this one's head).
    pub gap: Option<Gap>,
    pub events: Vec<EncodedEvent>,
    pub complete: ReplayComplete,
}

impl History {
    /// Plans the replay of what came after `since` on a stream at
    /// `position` whose oldest retained seq is `first_retained`
    /// (`position.seq + 1` when it retains nothing). `retained_after(seq)`
    /// yields the retained events with a seq above `seq`, oldest first. The
    /// filter applies as it does live; at most `limit` events are sent, and
    /// then `replay_complete` ends at the last one sent.
    pub fn plan<'a, I>(
        topic: &Topic,
        since: &Since,
        position: &Position,
        first_retained: u64,
        retained_after: impl FnOnce(u64) -> I,
        filter: &EventFilter,
        limit: usize,
    ) -> History
    where
        I: Iterator<Item = &'a EncodedEvent>,
    {
        let current = position.seq;
        let foreign_epoch = since
            .epoch
            .as_ref()
            .is_some_and(|epoch| *epoch != position.epoch);
        if foreign_epoch || since.seq > current {
            return History::epoch_changed(topic, current);
        }
        let gap = (since.seq + 1 < first_retained).then(|| Gap {
            topic: topic.clone(),
            from_seq: since.seq + 1,
            to_seq: first_retained - 1,
            reason: GapReason::Trimmed,
        });
        let after = since.seq.max(first_retained.saturating_sub(1));
        let mut events: Vec<EncodedEvent> = Vec::new();
        let mut to_seq = current;
        for encoded in retained_after(after) {
            if events.len() == limit {
                to_seq = events.last().map_or(after, |e| e.event.seq);
                break;
            }
            if filter.matches(&encoded.event) {
                events.push(encoded.clone());
            }
        }
        History {
            gap,
            events,
            complete: ReplayComplete {
                topic: topic.clone(),
                from_seq: after + 1,
                to_seq,
            },
        }
    }

    /// The checkpoint is from another stream of the topic (or beyond its
    /// head): the client is told to drop what it held, `1..=current`, even
    /// for a stream with no event yet (`1..=0`), and nothing is replayed.
    pub fn epoch_changed(topic: &Topic, current: u64) -> History {
        History {
            gap: Some(Gap {
                topic: topic.clone(),
                from_seq: 1,
                to_seq: current,
                reason: GapReason::EpochChanged,
            }),
            events: Vec::new(),
            complete: ReplayComplete {
                topic: topic.clone(),
                from_seq: current + 1,
                to_seq: current,
            },
        }
    }

    /// Nothing after `current` to send.
    pub fn nothing_after(topic: &Topic, current: u64) -> History {
        History {
            gap: None,
            events: Vec::new(),
            complete: ReplayComplete {
                topic: topic.clone(),
                from_seq: current + 1,
                to_seq: current,
            },
        }
    }

    /// Whether the checkpoint was from another stream.
    pub fn epoch_changed_gap(&self) -> bool {
        self.gap
            .as_ref()
            .is_some_and(|gap| gap.reason == GapReason::EpochChanged)
    }
}
