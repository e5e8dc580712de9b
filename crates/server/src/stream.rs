//! One topic's stream: its epoch, seqs, retained history, snapshot by key,
//! the ids it has seen (for idempotent retries) and its exact subscribers.
//!
//! Everything here is changed under the topic's lock, which is what makes
//! seq assignment, delivery order and the replay/live seam atomic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use herald_protocol::frame::{Gap, GapReason, ReplayComplete, Since};
use herald_protocol::{Epoch, Event, EventFilter, EventId, Label, Topic};
use tokio::sync::oneshot;

use crate::connection::ConnHandle;

/// Largest encoding buffer a thread keeps between events.
const MAX_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where events are encoded before their text is copied out at its exact
    /// size: a frame does not grow by reallocation each time, and history
    /// keeps no spare capacity. Dropped after an event larger than
    /// `MAX_SCRATCH`, so a thread does not hold on to a rare large one.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Most keys a topic's snapshot keeps; the least recently updated go first.
pub(crate) const MAX_SNAPSHOT_KEYS: usize = 10_000;

/// An event as retained: the event itself and its frame, serialized once.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) event: Arc<Event>,
    pub(crate) frame: Utf8Bytes,
    pub(crate) retained_at: Instant,
}

impl Retained {
    pub(crate) fn new(event: Event) -> Retained {
        let frame = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            event.encode_frame_into(scratch);
            // serde_json writes UTF-8; the lossy path is never taken.
            let text = match std::str::from_utf8(scratch) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(scratch).into_owned(),
            };
            if scratch.capacity() > MAX_SCRATCH {
                *scratch = Vec::new();
            }
            Utf8Bytes::from(text)
        });
        Retained {
            event: Arc::new(event),
            frame,
            retained_at: Instant::now(),
        }
    }

    /// An event that was retained `age` ago (restored from a store).
    pub(crate) fn aged(event: Event, age: Duration) -> Retained {
        let mut retained = Retained::new(event);
        retained.retained_at = Instant::now()
            .checked_sub(age)
            .unwrap_or(retained.retained_at);
        retained
    }

    fn weight(&self) -> usize {
        // The frame dominates; the parsed event costs about as much again.
        2 * self.frame.len() + 256
    }
}

/// A subscription of one connection to this exact topic.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) conn: Arc<ConnHandle>,
    pub(crate) filter: EventFilter,
}

/// What a replay sends, in order.
#[derive(Debug, Default)]
pub(crate) struct ReplayPlan {
    pub(crate) gap: Option<Gap>,
    pub(crate) events: Vec<Retained>,
    pub(crate) complete: Option<ReplayComplete>,
}

/// A topic's state.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) topic: Topic,
    pub(crate) epoch: Epoch,
    /// The last seq assigned (it may not be delivered yet with a durable store).
    pub(crate) assigned_seq: u64,
    /// The last seq delivered to subscribers; history holds nothing beyond it.
    pub(crate) delivered_seq: u64,
    history: VecDeque<Retained>,
    /// Event id → seq, for every retained or pending event. Hashed with
    /// foldhash (seeded per map, hashes never shown to anyone): ids are short
    /// and hashed on every publish; the map holds about a history's worth of
    /// ids, which bounds what ids chosen to collide could cost.
    ids: HashMap<EventId, u64, foldhash::fast::RandomState>,
    /// Latest event per key, and the order keys were last updated in.
    snapshot: HashMap<Label, Retained>,
    snapshot_order: BTreeMap<u64, Label>,
    pub(crate) subscribers: HashMap<Arc<str>, Subscriber>,
    pub(crate) last_activity: Instant,
    bytes: usize,
    /// Events a durable store is still writing, by seq: where a retry of
    /// one waits for the outcome. Weak: the write and its first attempt own
    /// their [`Settle`].
    pending: HashMap<u64, Weak<Settle>>,
}

/// How a durable write of one event ended: how many connections it reached
/// (read by its first attempt once the write is over), and the retries
/// waiting to learn whether it was stored. Held by the write's delivery
/// callback and the first attempt only: if the write is dropped unfinished
/// (its store gone), the retries learn that from their channel closing,
/// never by waiting forever.
#[derive(Debug, Default)]
pub(crate) struct Settle {
    pub(crate) reached: std::sync::atomic::AtomicU32,
    waiters: parking_lot::Mutex<Vec<oneshot::Sender<bool>>>,
}

impl Settle {
    /// Tells every waiter whether the write `stored` the event.
    pub(crate) fn tell(&self, stored: bool) {
        for waiter in self.waiters.lock().drain(..) {
            let _ = waiter.send(stored);
        }
    }
}

impl Stream {
    pub(crate) fn new(topic: Topic, epoch: Epoch, last_seq: u64) -> Stream {
        Stream {
            topic,
            epoch,
            assigned_seq: last_seq,
            delivered_seq: last_seq,
            history: VecDeque::new(),
            ids: HashMap::default(),
            snapshot: HashMap::new(),
            snapshot_order: BTreeMap::new(),
            subscribers: HashMap::new(),
            last_activity: Instant::now(),
            bytes: 0,
            pending: HashMap::new(),
        }
    }

    /// A fresh epoch id.
    pub(crate) fn new_epoch() -> Epoch {
        // A v7 UUID sorts by creation time, which makes epochs easy to read in logs.
        #[allow(clippy::expect_used, reason = "32 hex digits are always a valid epoch")]
        Epoch::new(uuid::Uuid::now_v7().simple().to_string()).expect("a UUID is a valid epoch")
    }

    /// The seq an event with this id already has, if it is retained or pending.
    pub(crate) fn seq_of(&self, id: &EventId) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Reserves the next seq for an event with this id.
    pub(crate) fn assign(&mut self, id: &EventId) -> u64 {
        self.assigned_seq += 1;
        self.ids.insert(id.clone(), self.assigned_seq);
        self.last_activity = Instant::now();
        self.assigned_seq
    }

    /// Whether the event assigned `seq` is still being written by a durable
    /// store (neither delivered nor given up).
    pub(crate) fn is_pending(&self, seq: u64) -> bool {
        seq > self.delivered_seq
    }

    /// Records that a durable store is writing `seq`, and who to tell.
    pub(crate) fn writing(&mut self, seq: u64, settle: &Arc<Settle>) {
        self.pending.insert(seq, Arc::downgrade(settle));
    }

    /// A receiver told, once the pending event `seq` is settled, whether its
    /// write stored it; `None` if that write was dropped unfinished.
    pub(crate) fn when_settled(&mut self, seq: u64) -> Option<oneshot::Receiver<bool>> {
        let settle = self.pending.get(&seq)?.upgrade()?;
        let (tell, told) = oneshot::channel();
        settle.waiters.lock().push(tell);
        Some(told)
    }

    /// A durable write of `seq` is over (its callback then tells the waiters).
    pub(crate) fn settled(&mut self, seq: u64) {
        self.pending.remove(&seq);
    }

    /// Gives up an event that was assigned `seq` but will never be delivered
    /// (its durable write failed): its id is forgotten, so a retry is
    /// published rather than taken for a duplicate. Writes end in seq order,
    /// so if `seq` is the newest assigned, every seq after the last delivered
    /// one was given up: the next event takes them again. Nobody was told of
    /// them (no receipt, no delivery, not in `subscribed` or history), and
    /// the store never recorded them, so the stream stays gapless, also
    /// across a restart. Otherwise a later event is already on its way with
    /// a higher seq, and `seq` stays a hole (the one case without a `gap`:
    /// no event is missing).
    pub(crate) fn give_up(&mut self, id: &EventId, seq: u64) {
        if self.ids.get(id) == Some(&seq) {
            self.ids.remove(id);
        }
        if seq == self.assigned_seq {
            self.assigned_seq = self.delivered_seq;
        }
    }

    /// Records a delivered event in history and the snapshot. Returns the
    /// change in retained bytes.
    pub(crate) fn retain(&mut self, retained: Retained, history_size: usize) -> isize {
        let before = self.bytes;
        self.delivered_seq = self.delivered_seq.max(retained.event.seq);
        self.assigned_seq = self.assigned_seq.max(retained.event.seq);
        // Usually recorded by `assign` already (not when restored from a
        // store); the newest seq of an id wins, without cloning the id again.
        match self.ids.get_mut(&retained.event.id) {
            Some(seq) => *seq = retained.event.seq,
            None => {
                self.ids
                    .insert(retained.event.id.clone(), retained.event.seq);
            }
        }
        self.put_snapshot(&retained);
        self.bytes += retained.weight();
        self.history.push_back(retained);
        while self.history.len() > history_size {
            self.pop_oldest();
        }
        self.bytes as isize - before as isize
    }

    /// Makes this event the latest of its key (if it has one and is newer).
    pub(crate) fn put_snapshot(&mut self, retained: &Retained) {
        let Some(key) = retained.event.key.clone() else {
            return;
        };
        if let Some(old) = self.snapshot.get(&key) {
            if old.event.seq >= retained.event.seq {
                return;
            }
            self.snapshot_order.remove(&old.event.seq);
            self.bytes -= old.weight();
        }
        self.snapshot_order.insert(retained.event.seq, key.clone());
        self.bytes += retained.weight();
        self.snapshot.insert(key, retained.clone());
        while self.snapshot.len() > MAX_SNAPSHOT_KEYS {
            if let Some((_, key)) = self.snapshot_order.pop_first()
                && let Some(old) = self.snapshot.remove(&key)
            {
                self.bytes -= old.weight();
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.history.pop_front() {
            // Unless the id has a newer event (the same id restored twice).
            if self.ids.get(&old.event.id) == Some(&old.event.seq) {
                self.ids.remove(&old.event.id);
            }
            self.bytes -= old.weight();
        }
    }

    /// Drops history older than `max_age`. Returns the change in retained bytes.
    pub(crate) fn trim_age(&mut self, max_age: Duration, now: Instant) -> isize {
        let before = self.bytes;
        while self
            .history
            .front()
            .is_some_and(|oldest| now.saturating_duration_since(oldest.retained_at) > max_age)
        {
            self.pop_oldest();
        }
        self.bytes as isize - before as isize
    }

    /// Approximate bytes retained.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing would be lost by forgetting this stream.
    pub(crate) fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.assigned_seq == self.delivered_seq
    }

    /// The latest event per key that `filter` lets through, oldest update
    /// first (only those are cloned).
    pub(crate) fn snapshot_events_matching(&self, filter: &EventFilter) -> Vec<Event> {
        self.snapshot_order
            .values()
            .filter_map(|key| self.snapshot.get(key))
            .filter(|r| filter.matches(&r.event))
            .map(|r| Event::clone(&r.event))
            .collect()
    }

    /// Whether the snapshot holds an event `filter` lets through.
    pub(crate) fn has_snapshot_matching(&self, filter: &EventFilter) -> bool {
        self.snapshot.values().any(|r| filter.matches(&r.event))
    }

    /// Retained events with seq > `after`, at most `limit`.
    pub(crate) fn history_after(&self, after: u64, limit: usize) -> Vec<Retained> {
        let start = self.history.partition_point(|r| r.event.seq <= after);
        self.history.range(start..).take(limit).cloned().collect()
    }

    /// The seq of the oldest retained event (or the next one, if none is retained).
    pub(crate) fn first_retained_seq(&self) -> u64 {
        self.history
            .front()
            .map_or(self.delivered_seq + 1, |r| r.event.seq)
    }

    /// Plans a replay of what came after `since`, with the filter applied and
    /// at most `limit` events: a `gap` for what is gone, the events, and the
    /// `replay_complete`.
    pub(crate) fn plan_replay(
        &self,
        since: &Since,
        filter: &EventFilter,
        limit: usize,
    ) -> ReplayPlan {
        let current = self.delivered_seq;
        let foreign_epoch = since
            .epoch
            .as_ref()
            .is_some_and(|epoch| *epoch != self.epoch);
        if foreign_epoch || since.seq > current {
            return ReplayPlan {
                // Even for a stream with no event yet (`to_seq` 0 < 1), as
                // the contract says: the gap tells the client (and its
                // application) to drop what it held from the old stream.
                gap: Some(Gap {
                    topic: self.topic.clone(),
                    from_seq: 1,
                    to_seq: current,
                    reason: GapReason::EpochChanged,
                }),
                events: Vec::new(),
                complete: Some(ReplayComplete {
                    topic: self.topic.clone(),
                    from_seq: current + 1,
                    to_seq: current,
                }),
            };
        }
        let first = self.first_retained_seq();
        let gap = (since.seq + 1 < first).then(|| Gap {
            topic: self.topic.clone(),
            from_seq: since.seq + 1,
            to_seq: first - 1,
            reason: GapReason::Trimmed,
        });
        let after = since.seq.max(first.saturating_sub(1));
        let mut events = Vec::new();
        let mut to_seq = current;
        for retained in self
            .history
            .range(self.history.partition_point(|r| r.event.seq <= after)..)
        {
            if events.len() == limit {
                to_seq = events.last().map_or(after, |r: &Retained| r.event.seq);
                break;
            }
            if filter.matches(&retained.event) {
                events.push(retained.clone());
            }
        }
        ReplayPlan {
            gap,
            events,
            complete: Some(ReplayComplete {
                topic: self.topic.clone(),
                from_seq: after + 1,
                to_seq,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_protocol::{EventType, Priority};
    use serde_json::json;

    use super::*;

    fn stream_with(seqs: std::ops::RangeInclusive<u64>, history_size: usize) -> Stream {
        let topic = Topic::parse("run:1").unwrap();
        let mut stream = Stream::new(topic.clone(), Epoch::new("e1").unwrap(), 0);
        for seq in seqs {
            let id = EventId::new(format!("id-{seq}")).unwrap();
            assert_eq!(stream.assign(&id), seq);
            stream.retain(
                Retained::new(Event {
                    topic: topic.clone(),
                    seq,
                    id,
                    event_type: EventType::StepProgress,
                    priority: Priority::Normal,
                    timestamp: 0,
                    source: None,
                    key: Some(Label::new(format!("k{}", seq % 2)).unwrap()),
                    data: json!({}),
                }),
                history_size,
            );
        }
        stream
    }

    fn since(seq: u64) -> Since {
        Since { seq, epoch: None }
    }

    #[test]
    fn replay_sends_what_came_after_the_checkpoint() {
        let stream = stream_with(1..=5, 100);
        let plan = stream.plan_replay(&since(2), &EventFilter::default(), usize::MAX);
        assert!(plan.gap.is_none());
        let seqs: Vec<u64> = plan.events.iter().map(|r| r.event.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        let complete = plan.complete.unwrap();
        assert_eq!((complete.from_seq, complete.to_seq), (3, 5));
    }

    #[test]
    fn replay_of_trimmed_history_reports_exactly_the_missing_seqs() {
        let stream = stream_with(1..=30, 10);
        let plan = stream.plan_replay(&since(0), &EventFilter::default(), usize::MAX);
        let gap = plan.gap.unwrap();
        assert_eq!(
            (gap.from_seq, gap.to_seq, gap.reason),
            (1, 20, GapReason::Trimmed)
        );
        assert_eq!(plan.events.first().unwrap().event.seq, 21);
        assert_eq!(plan.events.len(), 10);
    }

    #[test]
    fn a_checkpoint_from_another_epoch_or_beyond_the_stream_is_an_epoch_change() {
        let stream = stream_with(1..=3, 100);
        for checkpoint in [
            since(9),
            Since {
                seq: 1,
                epoch: Some(Epoch::new("old").unwrap()),
            },
        ] {
            let plan = stream.plan_replay(&checkpoint, &EventFilter::default(), usize::MAX);
            let gap = plan.gap.unwrap();
            assert_eq!(
                (gap.from_seq, gap.to_seq, gap.reason),
                (1, 3, GapReason::EpochChanged)
            );
            assert!(plan.events.is_empty());
            let complete = plan.complete.unwrap();
            assert!(complete.to_seq < complete.from_seq);
        }
    }

    #[test]
    fn nothing_missed_completes_with_to_below_from() {
        let stream = stream_with(1..=3, 100);
        let complete = stream
            .plan_replay(&since(3), &EventFilter::default(), 10)
            .complete
            .unwrap();
        assert_eq!((complete.from_seq, complete.to_seq), (4, 3));
    }

    #[test]
    fn snapshot_keeps_the_latest_event_per_key() {
        let stream = stream_with(1..=5, 100);
        let seqs: Vec<u64> = stream
            .snapshot_events_matching(&EventFilter::default())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [4, 5]);
    }

    #[test]
    fn frames_encoded_through_the_reused_buffer_are_exactly_each_events_frame() {
        let event = |seq: u64, data: serde_json::Value| Event {
            topic: Topic::parse("run:1").unwrap(),
            seq,
            id: EventId::new(format!("id-{seq}")).unwrap(),
            event_type: EventType::StepProgress,
            priority: Priority::Normal,
            timestamp: 7,
            source: None,
            key: None,
            data,
        };
        // Large after small, small after large: nothing of an earlier frame
        // may leak into a later one, and a frame larger than the buffer a
        // thread keeps is encoded whole, then its buffer is let go.
        for event in [
            event(1, json!({"text": "é ✓ \"quoted\""})),
            event(2, json!({"blob": "x".repeat(MAX_SCRATCH * 2)})),
            event(3, json!([1, 2, 3])),
            event(4, json!(null)),
        ] {
            let retained = Retained::new(event.clone());
            assert_eq!(retained.frame.as_str(), event.encode_frame());
            assert!(SCRATCH.with_borrow(Vec::capacity) <= MAX_SCRATCH);
        }
    }

    #[test]
    fn events_restored_without_assign_are_known_ids_and_the_newest_seq_wins() {
        // Restored from a store, events are retained without `assign`; the
        // same id twice (history grown across a restart) answers with the
        // later seq, as a retry would have been given.
        let mut stream = Stream::new(Topic::parse("run:1").unwrap(), Epoch::new("e1").unwrap(), 0);
        let mut restored = stream_with(1..=2, 10).history;
        let mut second = restored.pop_back().unwrap();
        Arc::make_mut(&mut second.event).id = EventId::new("id-1").unwrap();
        stream.retain(restored.pop_front().unwrap(), 10);
        assert_eq!(stream.seq_of(&EventId::new("id-1").unwrap()), Some(1));
        stream.retain(second, 10);
        assert_eq!(stream.seq_of(&EventId::new("id-1").unwrap()), Some(2));
        assert_eq!(stream.assign(&EventId::new("id-3").unwrap()), 3);
        // The older of the two leaving history leaves the newer one known.
        stream.pop_oldest();
        assert_eq!(stream.seq_of(&EventId::new("id-1").unwrap()), Some(2));
    }

    #[test]
    fn a_given_up_newest_event_leaves_no_id_and_its_seq_to_the_next_event() {
        let mut stream = stream_with(1..=2, 10);
        let id = EventId::new("lost").unwrap();
        let seq = stream.assign(&id);
        assert!(stream.is_pending(seq) && !stream.is_idle());
        stream.give_up(&id, seq);
        assert_eq!(stream.seq_of(&id), None);
        // Nothing pending: the topic can go dormant, and the next event is 3.
        assert!(stream.is_idle());
        assert_eq!(stream.delivered_seq, 2);
        assert_eq!(stream.assign(&EventId::new("next").unwrap()), 3);
    }

    #[test]
    fn failed_writes_in_a_row_give_their_seqs_back_once_the_newest_is_given_up() {
        let mut stream = stream_with(1..=2, 10);
        let id = |name: &str| EventId::new(name).unwrap();
        // 3 and 4 fail together (one batch); their callbacks run in order.
        assert_eq!((stream.assign(&id("a")), stream.assign(&id("b"))), (3, 4));
        stream.give_up(&id("a"), 3);
        assert_eq!(stream.assigned_seq, 4, "4 is still on its way");
        stream.give_up(&id("b"), 4);
        assert_eq!(stream.assign(&id("c")), 3);
        // A publish assigned between two failing callbacks keeps both holes:
        // its seq is after them and may already be in a receipt.
        assert_eq!(stream.assign(&id("d")), 4);
        stream.give_up(&id("c"), 3);
        assert_eq!(stream.assign(&id("e")), 5);
        stream.give_up(&id("d"), 4);
        assert_eq!(stream.assign(&id("f")), 6);
    }

    #[test]
    fn a_retry_waiting_on_a_write_dropped_unfinished_is_told_not_left_waiting() {
        let mut stream = stream_with(1..=2, 10);
        let settle = Arc::new(Settle::default());
        stream.writing(3, &settle);
        let told = stream.when_settled(3).unwrap();
        drop(settle);
        assert!(told.blocking_recv().is_err());
        assert!(stream.when_settled(3).is_none());
    }

    #[test]
    fn ids_are_forgotten_when_their_event_leaves_history() {
        let stream = stream_with(1..=5, 2);
        assert_eq!(stream.seq_of(&EventId::new("id-5").unwrap()), Some(5));
        assert_eq!(stream.seq_of(&EventId::new("id-1").unwrap()), None);
    }
}
