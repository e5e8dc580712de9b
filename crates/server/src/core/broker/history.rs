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
    ///
    /// A seq checkpoint replays the seqs after it (see [`Since::Seq`]). A
    /// time cursor replays every retained event whose `timestamp` is above
    /// it, in seq order, whatever the epoch; since producers may set
    /// timestamps, every retained event is looked at. What was trimmed may
    /// have been newer than the cursor whenever the oldest retained event
    /// is (or nothing is retained): then the trimmed seqs `1..first_retained`
    /// are announced as a `trimmed` gap, which may over-report (the client
    /// re-reads state either way).
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
        let trimmed = |from_seq: u64| {
            (from_seq < first_retained).then(|| Gap {
                topic: topic.clone(),
                from_seq,
                to_seq: first_retained - 1,
                reason: GapReason::Trimmed,
            })
        };
        let (gap, after, newer_than) = match since {
            Since::Seq { seq, epoch } => {
                let foreign_epoch = epoch.as_ref().is_some_and(|epoch| *epoch != position.epoch);
                if foreign_epoch || *seq > current {
                    return History::epoch_changed(topic, current);
                }
                let after = (*seq).max(first_retained.saturating_sub(1));
                (trimmed(seq + 1), after, None)
            }
            Since::Time { time_ms } => {
                let mut retained = retained_after(0);
                let oldest = retained.next();
                let lost_may_be_newer = oldest.is_none_or(|e| e.event.timestamp > *time_ms);
                let gap = if lost_may_be_newer { trimmed(1) } else { None };
                let events = oldest.into_iter().chain(retained);
                return History::collect(
                    topic,
                    gap,
                    events,
                    current,
                    first_retained.saturating_sub(1),
                    Some(*time_ms),
                    filter,
                    limit,
                );
            }
        };
        History::collect(
            topic,
            gap,
            retained_after(after),
            current,
            after,
            newer_than,
            filter,
            limit,
        )
    }

    /// The events of `retained` (seqs above `after`, in order) that the
    /// filter lets through and that are newer than `newer_than`, at most
    /// `limit`, then `replay_complete`.
    #[allow(clippy::too_many_arguments, reason = "the parts of one plan")]
    fn collect<'a>(
        topic: &Topic,
        gap: Option<Gap>,
        retained: impl Iterator<Item = &'a EncodedEvent>,
        current: u64,
        after: u64,
        newer_than: Option<u64>,
        filter: &EventFilter,
        limit: usize,
    ) -> History {
        let mut events: Vec<EncodedEvent> = Vec::new();
        let mut to_seq = current;
        let mut from_seq = None;
        let wanted =
            |encoded: &EncodedEvent| newer_than.is_none_or(|t| encoded.event.timestamp > t);
        for encoded in retained.filter(|e| wanted(e)) {
            if events.len() == limit {
                to_seq = events.last().map_or(after, |e| e.event.seq);
                break;
            }
            from_seq.get_or_insert(encoded.event.seq);
            if filter.matches(&encoded.event) {
                events.push(encoded.clone());
            }
        }
        let from_seq = match newer_than {
            // A time cursor's replay starts at the first event newer than it.
            Some(_) => from_seq.unwrap_or(current + 1),
            None => after + 1,
        };
        History {
            gap,
            events,
            complete: ReplayComplete {
                topic: topic.clone(),
                from_seq,
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
