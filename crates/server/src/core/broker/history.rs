//! What a client resuming from a checkpoint is sent: the `gap` for what is
//! gone, the retained events, and the `replay_complete`. Every engine plans
//! it here from what it retains, so the contract's rules are written once.

use herald_protocol::frame::{Gap, GapReason, ReplayComplete, Since};
use herald_protocol::{Event, EventFilter, Topic};

use super::{EncodedEvent, Position};

/// Which retained events a replay sends: those after a seq and, for a time
/// cursor, newer than a time.
#[derive(Debug, Clone, Copy)]
struct Window {
    after: u64,
    /// Milliseconds since the Unix epoch.
    newer_than: Option<u64>,
}

impl Window {
    fn admits(&self, event: &Event) -> bool {
        event.seq > self.after && self.newer_than.is_none_or(|t| event.timestamp > t)
    }
}

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
                epoch: None,
            })
        };
        match since {
            Since::Seq { seq, epoch } => {
                let foreign_epoch = epoch.as_ref().is_some_and(|epoch| *epoch != position.epoch);
                if foreign_epoch || *seq > current {
                    return History::epoch_changed(topic, position);
                }
                let window = Window {
                    after: (*seq).max(first_retained.saturating_sub(1)),
                    newer_than: None,
                };
                let retained = retained_after(window.after);
                History::collect(
                    topic,
                    trimmed(seq + 1),
                    retained,
                    current,
                    &window,
                    filter,
                    limit,
                )
            }
            Since::Time { time_ms } => {
                let window = Window {
                    after: first_retained.saturating_sub(1),
                    newer_than: Some(*time_ms),
                };
                let mut retained = retained_after(window.after);
                let oldest = retained.next();
                let lost_may_be_newer = oldest.is_none_or(|e| e.event.timestamp > *time_ms);
                let gap = if lost_may_be_newer { trimmed(1) } else { None };
                let retained = oldest.into_iter().chain(retained);
                History::collect(topic, gap, retained, current, &window, filter, limit)
            }
        }
    }

    /// The events of `retained` (seqs above `window.after`, in order) that
    /// the window and the filter let through, at most `limit`, then
    /// `replay_complete`.
    fn collect<'a>(
        topic: &Topic,
        gap: Option<Gap>,
        retained: impl Iterator<Item = &'a EncodedEvent>,
        current: u64,
        window: &Window,
        filter: &EventFilter,
        limit: usize,
    ) -> History {
        let mut events: Vec<EncodedEvent> = Vec::new();
        let mut to_seq = current;
        let mut first = None;
        for encoded in retained.filter(|e| window.admits(&e.event)) {
            if events.len() == limit {
                to_seq = events.last().map_or(window.after, |e| e.event.seq);
                break;
            }
            first.get_or_insert(encoded.event.seq);
            if filter.matches(&encoded.event) {
                events.push(encoded.clone());
            }
        }
        let from_seq = match window.newer_than {
            // A time cursor's replay starts at the first event newer than it.
            Some(_) => first.unwrap_or(current + 1),
            None => window.after + 1,
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
    /// head): the client is told to drop what it held, `1..=current` of the
    /// stream at `position`, even for a stream with no event yet (`1..=0`),
    /// and nothing is replayed.
    pub fn epoch_changed(topic: &Topic, position: &Position) -> History {
        let current = position.seq;
        History {
            gap: Some(Gap {
                topic: topic.clone(),
                from_seq: 1,
                to_seq: current,
                reason: GapReason::EpochChanged,
                epoch: Some(position.epoch.clone()),
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
