//! One topic's stream in memory: its epoch, seqs, retained history, snapshot
//! by key, and the ids it has seen (for idempotent retries).
//!
//! Everything here is changed under the topic's lock, which is what makes
//! seq assignment and delivery order one sequence per topic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use herald_protocol::frame::Since;
use herald_protocol::{Epoch, Event, EventFilter, EventId, Label, Topic};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::core::broker::{
    Content, EncodedEvent, History, MAX_SNAPSHOT_KEYS, Position, TopicStats,
};

/// A delivered event as history holds it.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) encoded: EncodedEvent,
    /// When it entered history: where its age starts.
    pub(crate) retained_at: Instant,
}

impl Retained {
    pub(crate) fn new(encoded: EncodedEvent) -> Retained {
        Retained {
            encoded,
            retained_at: Instant::now(),
        }
    }

    /// An event that was retained `age` ago (restored from a store).
    pub(crate) fn aged(event: Event, age: Duration) -> Retained {
        let now = Instant::now();
        Retained {
            encoded: EncodedEvent::new(event),
            retained_at: now.checked_sub(age).unwrap_or(now),
        }
    }

    fn seq(&self) -> u64 {
        self.encoded.event.seq
    }
}

/// The least time an event's id is remembered after it was retained, when
/// `--history-age` is shorter: a producer's retry may come later than a
/// short history lasts. The same floor as the Redis store's id keys.
pub(crate) const MIN_ID_MEMORY: Duration = Duration::from_secs(60);

/// How many ids a topic remembers past its history, per event of
/// `--history-size` (10,000 ids with the default 1000, about 2 MB of
/// UUIDs): on a topic published to faster than that many per
/// `--history-age`, an id is remembered for that many events instead.
pub(crate) const REMEMBERED_IDS_PER_RETAINED: usize = 10;

/// The id of an event that left history, still remembered so that a late
/// retry of it is answered with its receipt rather than published again.
#[derive(Debug)]
struct Remembered {
    id: EventId,
    seq: u64,
    /// Its event's [`Content::digest`]: a retry must match it.
    content: u64,
    /// When its event was retained: where the id's time starts.
    retained_at: Instant,
}

impl Remembered {
    /// What remembering it costs, counted with the retained bytes: this
    /// entry, its copy of the id and the id map's entry with its own copy.
    fn weight(&self) -> usize {
        2 * self.id.as_str().len() + 128
    }
}

/// A durable write still in progress: the retries of its event wait here to
/// learn whether it was stored. Held by the write only: if the write is
/// dropped unfinished (its store gone), the retries learn that from their
/// channel closing, never by waiting forever.
#[derive(Debug, Default)]
pub(crate) struct PendingWrite {
    waiters: Mutex<Vec<oneshot::Sender<bool>>>,
}

impl PendingWrite {
    /// Tells every waiter whether the write `stored` the event.
    pub(crate) fn tell(&self, stored: bool) {
        for waiter in self.waiters.lock().drain(..) {
            let _ = waiter.send(stored);
        }
    }
}

/// What the log knows of an event with a given id.
#[derive(Debug)]
pub(crate) enum Known<'a> {
    /// Stored and retained.
    Stored(u64, &'a Event),
    /// A durable store is still writing it.
    Pending(u64, &'a Event),
    /// Its event left history; its id is remembered with the digest of
    /// its content.
    Remembered(u64, u64),
    /// Its id is known but its event is not held.
    Unknown(u64),
}

/// A topic's state.
#[derive(Debug)]
pub(crate) struct TopicLog {
    pub(crate) topic: Topic,
    pub(crate) epoch: Epoch,
    /// The last seq assigned (it may not be delivered yet with a durable store).
    pub(crate) assigned_seq: u64,
    /// The last seq delivered; history holds nothing beyond it.
    pub(crate) delivered_seq: u64,
    history: VecDeque<Retained>,
    /// Event id → seq, for every retained, pending or remembered event.
    /// Hashed with foldhash (seeded per map, hashes never shown to anyone):
    /// ids are short and hashed on every publish; the map holds at most a
    /// history's worth of ids and `REMEMBERED_IDS_PER_RETAINED` times that,
    /// which bounds what ids chosen to collide could cost.
    ids: HashMap<EventId, u64, foldhash::fast::RandomState>,
    /// Ids of events that left history, oldest first, until their time
    /// (`--history-age`, at least `MIN_ID_MEMORY`) is up.
    remembered: VecDeque<Remembered>,
    /// Latest event per key, and the order keys were last updated in.
    snapshot: HashMap<Label, Retained>,
    snapshot_order: BTreeMap<u64, Label>,
    /// When it was last published to (an event given a seq; for a stream
    /// restored from SQLite, when its newest event was stored).
    pub(crate) last_activity: Instant,
    bytes: usize,
    /// Events a durable store is still writing, by seq, with where a retry
    /// of one waits for the outcome.
    pending: HashMap<u64, (Arc<Event>, Weak<PendingWrite>)>,
    /// A stream that started with nothing remembered of the topic, not yet
    /// announced to the node (see `BrokerHandler::on_stream_started`): the
    /// first publisher to lock it announces it before its first event.
    /// `Some(true)` when the topic was among the streams forgotten last.
    pub(crate) unannounced: Option<bool>,
}

impl TopicLog {
    pub(crate) fn new(topic: Topic, epoch: Epoch, last_seq: u64) -> TopicLog {
        TopicLog {
            topic,
            epoch,
            assigned_seq: last_seq,
            delivered_seq: last_seq,
            history: VecDeque::new(),
            ids: HashMap::default(),
            remembered: VecDeque::new(),
            snapshot: HashMap::new(),
            snapshot_order: BTreeMap::new(),
            last_activity: Instant::now(),
            bytes: 0,
            pending: HashMap::new(),
            unannounced: None,
        }
    }

    /// Where the stream stands: its epoch and latest delivered seq.
    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            seq: self.delivered_seq,
        }
    }

    /// What is known of an event with this id, if it is retained, pending
    /// or remembered.
    pub(crate) fn known(&self, id: &EventId) -> Option<Known<'_>> {
        let seq = *self.ids.get(id)?;
        if let Some((event, _)) = self.pending.get(&seq) {
            return Some(Known::Pending(seq, event));
        }
        let index = self.history.partition_point(|r| r.seq() < seq);
        if let Some(retained) = self.history.get(index)
            && retained.seq() == seq
        {
            return Some(Known::Stored(seq, &retained.encoded.event));
        }
        let index = self.remembered.partition_point(|r| r.seq < seq);
        Some(match self.remembered.get(index) {
            Some(remembered) if remembered.seq == seq => Known::Remembered(seq, remembered.content),
            _ => Known::Unknown(seq),
        })
    }

    /// Reserves the next seq for an event with this id.
    pub(crate) fn assign(&mut self, id: &EventId) -> u64 {
        self.assigned_seq += 1;
        self.ids.insert(id.clone(), self.assigned_seq);
        self.last_activity = Instant::now();
        self.assigned_seq
    }

    /// Records that a durable store is writing `event`, and who to tell.
    pub(crate) fn writing(&mut self, event: Arc<Event>, write: &Arc<PendingWrite>) {
        self.pending
            .insert(event.seq, (event, Arc::downgrade(write)));
    }

    /// A receiver told, once the pending event `seq` is written, whether it
    /// was stored; `None` if that write was dropped unfinished.
    pub(crate) fn when_written(&mut self, seq: u64) -> Option<oneshot::Receiver<bool>> {
        let write = self.pending.get(&seq)?.1.upgrade()?;
        let (tell, told) = oneshot::channel();
        write.waiters.lock().push(tell);
        Some(told)
    }

    /// A durable write of `seq` is over (its writer then tells the waiters).
    pub(crate) fn written(&mut self, seq: u64) {
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
        let event = &retained.encoded.event;
        self.delivered_seq = self.delivered_seq.max(event.seq);
        self.assigned_seq = self.assigned_seq.max(event.seq);
        // Usually recorded by `assign` already (not when restored from a
        // store); the newest seq of an id wins, without cloning the id again.
        match self.ids.get_mut(&event.id) {
            Some(seq) => *seq = event.seq,
            None => {
                self.ids.insert(event.id.clone(), event.seq);
            }
        }
        self.put_snapshot(&retained);
        self.bytes += retained.encoded.weight();
        self.history.push_back(retained);
        while self.history.len() > history_size {
            self.pop_oldest(history_size * REMEMBERED_IDS_PER_RETAINED);
        }
        self.bytes as isize - before as isize
    }

    /// Makes this event the latest of its key (if it has one and is newer).
    pub(crate) fn put_snapshot(&mut self, retained: &Retained) {
        let Some(key) = retained.encoded.event.key.clone() else {
            return;
        };
        if let Some(old) = self.snapshot.get(&key) {
            if old.seq() >= retained.seq() {
                return;
            }
            self.snapshot_order.remove(&old.seq());
            self.bytes -= old.encoded.weight();
        }
        self.snapshot_order.insert(retained.seq(), key.clone());
        self.bytes += retained.encoded.weight();
        self.snapshot.insert(key, retained.clone());
        while self.snapshot.len() > MAX_SNAPSHOT_KEYS {
            if let Some((_, key)) = self.snapshot_order.pop_first()
                && let Some(old) = self.snapshot.remove(&key)
            {
                self.bytes -= old.encoded.weight();
            }
        }
    }

    /// Drops the oldest event of history; its id stays remembered, with
    /// at most `remember` ids in all.
    fn pop_oldest(&mut self, remember: usize) {
        if let Some(old) = self.history.pop_front() {
            let event = &old.encoded.event;
            // Unless the id has a newer event (the same id restored twice).
            if self.ids.get(&event.id) == Some(&event.seq) {
                let remembered = Remembered {
                    id: event.id.clone(),
                    seq: event.seq,
                    content: Content::of_event(event).digest(),
                    retained_at: old.retained_at,
                };
                self.bytes += remembered.weight();
                self.remembered.push_back(remembered);
                while self.remembered.len() > remember {
                    self.forget_oldest_id();
                }
            }
            self.bytes -= old.encoded.weight();
        }
    }

    /// Forgets the id remembered longest.
    fn forget_oldest_id(&mut self) {
        if let Some(old) = self.remembered.pop_front() {
            if self.ids.get(&old.id) == Some(&old.seq) {
                self.ids.remove(&old.id);
            }
            self.bytes -= old.weight();
        }
    }

    /// Drops history older than `max_age` (remembering at most `remember`
    /// ids past it), and forgets the ids of events retained longer ago than
    /// that (or than `MIN_ID_MEMORY`, if longer). Returns the change in
    /// retained bytes.
    pub(crate) fn trim_age(&mut self, max_age: Duration, remember: usize, now: Instant) -> isize {
        let before = self.bytes;
        let older_than = |at: Instant, age: Duration| now.saturating_duration_since(at) > age;
        while self
            .history
            .front()
            .is_some_and(|oldest| older_than(oldest.retained_at, max_age))
        {
            self.pop_oldest(remember);
        }
        let id_age = max_age.max(MIN_ID_MEMORY);
        while self
            .remembered
            .front()
            .is_some_and(|oldest| older_than(oldest.retained_at, id_age))
        {
            self.forget_oldest_id();
        }
        self.bytes as isize - before as isize
    }

    /// What the admin API lists about this stream.
    pub(crate) fn stats(&self) -> TopicStats {
        TopicStats {
            topic: self.topic.clone(),
            position: self.position(),
            retained: self.history.len(),
            retained_bytes: self.bytes,
            snapshot_keys: self.snapshot.len(),
            last_event: self.history.back().map(|r| {
                let event = &r.encoded.event;
                (event.seq, event.event_type.clone(), event.timestamp)
            }),
        }
    }

    /// When its newest retained event was retained.
    pub(crate) fn newest_retained_at(&self) -> Option<Instant> {
        self.history.back().map(|r| r.retained_at)
    }

    /// Approximate bytes retained.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is on its way: forgetting the stream (but for its
    /// epoch and last seq) loses no event anyone waits for.
    pub(crate) fn is_idle(&self) -> bool {
        self.assigned_seq == self.delivered_seq
    }

    /// The latest event per key that `filter` lets through, oldest update
    /// first (only those are cloned).
    pub(crate) fn snapshot_matching(&self, filter: &EventFilter) -> Vec<Event> {
        self.snapshot_order
            .values()
            .filter_map(|key| self.snapshot.get(key))
            .filter(|r| filter.matches(&r.encoded.event))
            .map(|r| Event::clone(&r.encoded.event))
            .collect()
    }

    /// Whether the snapshot holds an event `filter` lets through.
    pub(crate) fn has_snapshot_matching(&self, filter: &EventFilter) -> bool {
        self.snapshot
            .values()
            .any(|r| filter.matches(&r.encoded.event))
    }

    /// The seq of the oldest retained event (or the next one, if none is retained).
    fn first_retained_seq(&self) -> u64 {
        self.history
            .front()
            .map_or(self.delivered_seq + 1, Retained::seq)
    }

    /// Plans a replay of what came after `since` (see [`History::plan`]).
    pub(crate) fn history(&self, since: &Since, filter: &EventFilter, limit: usize) -> History {
        History::plan(
            &self.topic,
            since,
            &self.position(),
            self.first_retained_seq(),
            |after| {
                self.history
                    .range(self.history.partition_point(|r| r.seq() <= after)..)
                    .map(|r| &r.encoded)
            },
            filter,
            limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use herald_protocol::frame::GapReason;
    use herald_protocol::{EventType, Priority};
    use serde_json::json;

    use super::*;

    fn event(topic: &Topic, seq: u64, id: &str) -> Event {
        Event {
            topic: topic.clone(),
            seq,
            id: EventId::new(id).unwrap(),
            event_type: EventType::StepProgress,
            priority: Priority::Normal,
            timestamp: 0,
            source: None,
            key: Some(Label::new(format!("k{}", seq % 2)).unwrap()),
            data: json!({}),
        }
    }

    fn log_with(seqs: std::ops::RangeInclusive<u64>, history_size: usize) -> TopicLog {
        let topic = Topic::parse("run:1").unwrap();
        let mut log = TopicLog::new(topic.clone(), Epoch::new("e1").unwrap(), 0);
        for seq in seqs {
            let id = EventId::new(format!("id-{seq}")).unwrap();
            assert_eq!(log.assign(&id), seq);
            log.retain(
                Retained::new(EncodedEvent::new(event(&topic, seq, id.as_str()))),
                history_size,
            );
        }
        log
    }

    fn since(seq: u64) -> Since {
        Since::seq(seq)
    }

    fn id(name: &str) -> EventId {
        EventId::new(name).unwrap()
    }

    #[test]
    fn replay_sends_what_came_after_the_checkpoint() {
        let log = log_with(1..=5, 100);
        let plan = log.history(&since(2), &EventFilter::default(), usize::MAX);
        assert!(plan.gap.is_none());
        let seqs: Vec<u64> = plan.events.iter().map(|e| e.event.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!((plan.complete.from_seq, plan.complete.to_seq), (3, 5));
    }

    #[test]
    fn replay_of_trimmed_history_reports_exactly_the_missing_seqs() {
        let log = log_with(1..=30, 10);
        let plan = log.history(&since(0), &EventFilter::default(), usize::MAX);
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
        let log = log_with(1..=3, 100);
        for checkpoint in [since(9), Since::in_epoch(1, Epoch::new("old").unwrap())] {
            let plan = log.history(&checkpoint, &EventFilter::default(), usize::MAX);
            let gap = plan.gap.unwrap();
            assert_eq!(
                (gap.from_seq, gap.to_seq, gap.reason),
                (1, 3, GapReason::EpochChanged)
            );
            assert!(plan.events.is_empty());
            assert!(plan.complete.to_seq < plan.complete.from_seq);
        }
    }

    #[test]
    fn nothing_missed_completes_with_to_below_from() {
        let log = log_with(1..=3, 100);
        let complete = log.history(&since(3), &EventFilter::default(), 10).complete;
        assert_eq!((complete.from_seq, complete.to_seq), (4, 3));
    }

    #[test]
    fn a_limited_replay_ends_at_the_last_event_sent() {
        let log = log_with(1..=5, 100);
        let plan = log.history(&since(1), &EventFilter::default(), 2);
        let seqs: Vec<u64> = plan.events.iter().map(|e| e.event.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!((plan.complete.from_seq, plan.complete.to_seq), (2, 3));
    }

    /// A log of events 1..=n whose timestamps are `times[seq - 1]`.
    fn log_with_times(times: &[u64], history_size: usize) -> TopicLog {
        let topic = Topic::parse("run:1").unwrap();
        let mut log = TopicLog::new(topic.clone(), Epoch::new("e1").unwrap(), 0);
        for (seq, time) in (1..).zip(times) {
            let id = EventId::new(format!("id-{seq}")).unwrap();
            log.assign(&id);
            let mut event = event(&topic, seq, id.as_str());
            event.timestamp = *time;
            log.retain(Retained::new(EncodedEvent::new(event)), history_size);
        }
        log
    }

    fn seqs(plan: &History) -> Vec<u64> {
        plan.events.iter().map(|e| e.event.seq).collect()
    }

    #[test]
    fn a_time_cursor_replays_every_retained_event_newer_than_it_in_seq_order() {
        // Producers set timestamps: they need not grow with the seq.
        let log = log_with_times(&[100, 250, 200, 300, 150], 100);
        let plan = log.history(&Since::time_ms(199), &EventFilter::default(), usize::MAX);
        assert!(plan.gap.is_none());
        assert_eq!(seqs(&plan), [2, 3, 4]);
        assert_eq!((plan.complete.from_seq, plan.complete.to_seq), (2, 5));
    }

    #[test]
    fn a_time_cursor_after_everything_replays_nothing() {
        let log = log_with_times(&[100, 200], 100);
        let plan = log.history(&Since::time_ms(200), &EventFilter::default(), usize::MAX);
        assert!(plan.gap.is_none() && plan.events.is_empty());
        assert_eq!((plan.complete.from_seq, plan.complete.to_seq), (3, 2));
    }

    #[test]
    fn a_time_cursor_older_than_the_oldest_retained_event_reports_the_trimmed_seqs() {
        let log = log_with_times(&[100, 200, 300, 400, 500], 3);
        let plan = log.history(&Since::time_ms(250), &EventFilter::default(), usize::MAX);
        let gap = plan.gap.clone().unwrap();
        assert_eq!(
            (gap.from_seq, gap.to_seq, gap.reason),
            (1, 2, GapReason::Trimmed)
        );
        assert_eq!(seqs(&plan), [3, 4, 5]);
        // The oldest retained event is not newer than the cursor: whatever
        // was trimmed is older still, and nothing is reported missing.
        let plan = log.history(&Since::time_ms(300), &EventFilter::default(), usize::MAX);
        assert!(plan.gap.is_none());
        assert_eq!(seqs(&plan), [4, 5]);
    }

    #[test]
    fn a_time_cursor_knows_no_epoch_and_applies_the_filter_and_limit() {
        let log = log_with_times(&[100, 200, 300, 400], 100);
        let plan = log.history(&Since::time_ms(0), &EventFilter::default(), 2);
        assert!(!plan.epoch_changed_gap());
        assert_eq!(seqs(&plan), [1, 2]);
        assert_eq!((plan.complete.from_seq, plan.complete.to_seq), (1, 2));
        let filter: EventFilter = serde_json::from_value(json!({"types": ["task.*"]})).unwrap();
        let plan = log.history(&Since::time_ms(0), &filter, usize::MAX);
        assert!(plan.events.is_empty());
        assert_eq!(plan.complete.to_seq, 4);
    }

    #[test]
    fn snapshot_keeps_the_latest_event_per_key() {
        let log = log_with(1..=5, 100);
        let seqs: Vec<u64> = log
            .snapshot_matching(&EventFilter::default())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [4, 5]);
    }

    #[test]
    fn an_id_is_known_with_its_event_while_retained_or_pending() {
        let mut log = log_with(1..=2, 10);
        assert!(matches!(log.known(&id("id-2")), Some(Known::Stored(2, e)) if e.seq == 2));
        let seq = log.assign(&id("pending"));
        let write = Arc::new(PendingWrite::default());
        log.writing(Arc::new(event(&log.topic.clone(), seq, "pending")), &write);
        assert!(matches!(
            log.known(&id("pending")),
            Some(Known::Pending(3, _))
        ));
        assert!(log.known(&id("never")).is_none());
    }

    #[test]
    fn events_restored_without_assign_are_known_ids_and_the_newest_seq_wins() {
        // Restored from a store, events are retained without `assign`; the
        // same id twice (history grown across a restart) answers with the
        // later seq, as a retry would have been given.
        let topic = Topic::parse("run:1").unwrap();
        let mut log = TopicLog::new(topic.clone(), Epoch::new("e1").unwrap(), 0);
        log.retain(Retained::aged(event(&topic, 1, "id-1"), Duration::ZERO), 10);
        assert!(matches!(log.known(&id("id-1")), Some(Known::Stored(1, _))));
        log.retain(Retained::aged(event(&topic, 2, "id-1"), Duration::ZERO), 10);
        assert!(matches!(log.known(&id("id-1")), Some(Known::Stored(2, _))));
        assert_eq!(log.assign(&id("id-3")), 3);
        // The older of the two leaving history leaves the newer one known.
        log.pop_oldest(10);
        assert!(matches!(log.known(&id("id-1")), Some(Known::Stored(2, _))));
    }

    #[test]
    fn a_given_up_newest_event_leaves_no_id_and_its_seq_to_the_next_event() {
        let mut log = log_with(1..=2, 10);
        let lost = id("lost");
        let seq = log.assign(&lost);
        assert!(!log.is_idle());
        log.give_up(&lost, seq);
        assert!(log.known(&lost).is_none());
        // Nothing pending: the topic can go dormant, and the next event is 3.
        assert!(log.is_idle());
        assert_eq!(log.delivered_seq, 2);
        assert_eq!(log.assign(&id("next")), 3);
    }

    #[test]
    fn failed_writes_in_a_row_give_their_seqs_back_once_the_newest_is_given_up() {
        let mut log = log_with(1..=2, 10);
        // 3 and 4 fail together (one batch); their writes end in order.
        assert_eq!((log.assign(&id("a")), log.assign(&id("b"))), (3, 4));
        log.give_up(&id("a"), 3);
        assert_eq!(log.assigned_seq, 4, "4 is still on its way");
        log.give_up(&id("b"), 4);
        assert_eq!(log.assign(&id("c")), 3);
        // A publish assigned between two failing writes keeps both holes:
        // its seq is after them and may already be in a receipt.
        assert_eq!(log.assign(&id("d")), 4);
        log.give_up(&id("c"), 3);
        assert_eq!(log.assign(&id("e")), 5);
        log.give_up(&id("d"), 4);
        assert_eq!(log.assign(&id("f")), 6);
    }

    #[test]
    fn a_retry_waiting_on_a_write_dropped_unfinished_is_told_not_left_waiting() {
        let mut log = log_with(1..=2, 10);
        let seq = log.assign(&id("w"));
        let write = Arc::new(PendingWrite::default());
        log.writing(Arc::new(event(&log.topic.clone(), seq, "w")), &write);
        let told = log.when_written(seq).unwrap();
        drop(write);
        assert!(told.blocking_recv().is_err());
        assert!(log.when_written(seq).is_none());
    }

    #[test]
    fn an_id_outlives_its_event_in_history_until_its_time_is_up() {
        let mut log = log_with(1..=5, 2);
        let digest = |seq| Content::of_event(&event(&log.topic, seq, "any")).digest();
        let (one, five) = (digest(1), digest(5));
        assert!(matches!(log.known(&id("id-5")), Some(Known::Stored(5, _))));
        assert!(matches!(log.known(&id("id-1")), Some(Known::Remembered(1, d)) if d == one));
        let now = Instant::now();
        // History's age is short, but ids stay for at least MIN_ID_MEMORY.
        log.trim_age(Duration::from_millis(1), 20, now + Duration::from_secs(1));
        assert!(log.history.is_empty());
        assert!(matches!(log.known(&id("id-5")), Some(Known::Remembered(5, d)) if d == five));
        let with_ids = log.bytes();
        let later = now + MIN_ID_MEMORY + Duration::from_secs(1);
        log.trim_age(Duration::from_millis(1), 20, later);
        assert!(log.known(&id("id-1")).is_none());
        assert!(log.known(&id("id-5")).is_none());
        // Five ids of 4 bytes were counted with the retained bytes, and are freed.
        assert_eq!(with_ids - log.bytes(), 5 * (2 * 4 + 128));
    }

    #[test]
    fn a_topic_remembers_ten_ids_per_retained_event_past_its_history() {
        let log = log_with(1..=30, 2);
        // 2 in history, 20 remembered, the 8 oldest forgotten.
        assert!(log.known(&id("id-8")).is_none());
        assert!(matches!(
            log.known(&id("id-9")),
            Some(Known::Remembered(9, _))
        ));
        assert!(matches!(
            log.known(&id("id-29")),
            Some(Known::Stored(29, _))
        ));
    }

    #[test]
    fn a_content_digest_tells_a_retry_from_another_event_under_its_id() {
        let topic = Topic::parse("run:1").unwrap();
        let first = event(&topic, 1, "a");
        let mut retry = event(&topic, 7, "a");
        retry.timestamp = 99;
        let mut other = event(&topic, 1, "a");
        other.data = json!({"n": 2});
        let digest = |e: &Event| Content::of_event(e).digest();
        assert_eq!(
            digest(&first),
            digest(&retry),
            "seq and timestamp are not content"
        );
        assert_ne!(digest(&first), digest(&other));
        let reordered: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        let ordered: serde_json::Value = serde_json::from_str(r#"{"a": 2, "b": 1}"#).unwrap();
        let (mut x, mut y) = (first.clone(), first);
        (x.data, y.data) = (reordered, ordered);
        assert_eq!(
            digest(&x),
            digest(&y),
            "an object's key order is not content"
        );
    }
}
