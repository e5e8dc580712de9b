//! A connection's bounded outgoing queue.
//!
//! Fan-out never waits on a socket: it pushes an already-serialized frame
//! (shared bytes) and moves on. When the queue is full, `low` then `normal`
//! events are shed: each shed event is replaced in place by a `gap` marker,
//! or joins the latest marker of its topic when no event of that topic is
//! queued after that marker, so the client learns exactly which seqs it will
//! not get, before every later event of their topic. If a `high` or
//! `critical` event (or a control frame) would be lost, the outbox closes
//! with 1013 instead: the client reconnects and replays.
//!
//! The frames of a run (a batch's events of one topic) that a connection
//! takes whole are queued as one entry ([`Run`]), shared by every
//! connection it goes to and framed once for all of them by the first
//! writer; shedding one of its events queues its other frames one by one.
//!
//! On a quiet hub a live event need not queue at all: when nothing is
//! queued or being written, the fan-out writes it straight to the socket
//! through the connection's [`DirectWrite`] ([`Outbox::deliver`]), with no
//! wake-up of the connection's writer in between.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::{CloseReason, Priority, Topic};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::operations::metrics::CloseKind;

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct OutFrame {
    /// The encoded frame: UTF-8 JSON text (the core encodes every frame
    /// from a `String`; frames read from Redis are checked when read), sent
    /// as it is in a text frame.
    pub(crate) text: Bytes,
    pub(crate) event: Option<EventMeta>,
}

/// What the outbox needs to know about an event frame.
#[derive(Debug, Clone)]
pub(crate) struct EventMeta {
    pub(crate) topic: Topic,
    pub(crate) seq: u64,
    pub(crate) priority: Priority,
    pub(crate) published: Instant,
}

impl OutFrame {
    /// A reply or notice (welcome, ack, error, subscribed, …): never shed.
    pub(crate) fn control(text: impl Into<Bytes>) -> OutFrame {
        OutFrame {
            text: text.into(),
            event: None,
        }
    }

    fn priority(&self) -> Priority {
        self.event
            .as_ref()
            .map_or(Priority::Critical, |e| e.priority)
    }
}

/// A queued entry: a frame, or the seqs of one topic that were shed there.
#[derive(Debug)]
pub(crate) enum Entry {
    Frame(OutFrame),
    Gap {
        topic: Topic,
        from_seq: u64,
        to_seq: u64,
    },
}

/// The frames of a run (a batch's events of one topic, in seq order),
/// queued whole: one entry, shared by every connection the run goes to
/// whole, instead of a copy of each frame per connection.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) frames: Vec<OutFrame>,
    /// The run as it goes on the wire, made by the first writer that
    /// writes it: every writer that sends the core's frames as they are
    /// frames them alike.
    pub(crate) framed: OnceLock<Bytes>,
    low: usize,
    normal: usize,
}

impl Run {
    pub(crate) fn new(frames: Vec<OutFrame>) -> Arc<Run> {
        let count = |priority| frames.iter().filter(|f| f.priority() == priority).count();
        Arc::new(Run {
            low: count(Priority::Low),
            normal: count(Priority::Normal),
            frames,
            framed: OnceLock::new(),
        })
    }
}

/// What a connection's queue holds: an entry, or a run queued whole.
#[derive(Debug)]
pub(crate) enum Queued {
    One(Entry),
    Run(Arc<Run>),
}

/// How the connection should end once the outbox is drained, and why (as
/// `herald_connections_closed_total` counts it), decided where the close is.
#[derive(Debug, Clone)]
pub(crate) struct Closing {
    pub(crate) kind: CloseKind,
    pub(crate) code: CloseReason,
    pub(crate) reason: &'static str,
    /// Whether queued frames are written before the close (shutdown) or dropped (overload).
    pub(crate) flush: bool,
}

impl Closing {
    /// A consumer too slow for its queue: an event it must not lose (or a
    /// queue's worth of gaps) could not queue. Its queue is dropped.
    const SLOW_CONSUMER: Closing = Closing {
        kind: CloseKind::SlowConsumer,
        code: CloseReason::TRY_AGAIN_LATER,
        reason: "slow consumer: reconnect and replay",
        flush: false,
    };

    /// The hub is shutting down: queued frames go out first.
    pub(crate) const SHUTDOWN: Closing = Closing {
        kind: CloseKind::Shutdown,
        code: CloseReason::GOING_AWAY,
        reason: "server shutting down",
        flush: true,
    };

    /// Whether this closes a consumer too slow for its queue.
    pub(crate) fn slow_consumer(&self) -> bool {
        self.kind == CloseKind::SlowConsumer
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Written straight to the socket ([`Outbox::deliver`]).
    Written,
    /// The queue was full: a low or normal event (this one or an older one) was shed.
    Shed,
    /// The outbox is closing (or just closed with 1013): the frame was dropped.
    Closed,
}

/// What a [`DirectWrite`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// All of it is on its way.
    All,
    /// The socket took the start of it; the rest waits in the socket's
    /// buffer for the connection's writer to flush it.
    Part,
    /// Nothing: the socket would have to wait, or has bytes waiting.
    Nothing,
}

/// Writes a frame to the connection's socket at once, or not at all,
/// never waiting: the transport installs one on connections that send the
/// core's frames as they are ([`Outbox::set_direct`]).
pub(crate) trait DirectWrite: Send + Sync + std::fmt::Debug {
    fn try_write(&self, frame: &OutFrame) -> Wrote;
}

/// Whether a hub keeps up with its publications: how many of its
/// connections (those that may be written to directly) have frames queued
/// or being written, and from when on the hub may be quiet: [`BUSY`] after
/// a fan-out ends or the last of those connections finishes writing. A hub
/// with nothing waiting, past that moment, is quiet: frames are written
/// straight away.
#[derive(Debug, Clone)]
pub(crate) struct Pace(Arc<PaceState>);

#[derive(Debug)]
struct PaceState {
    origin: Instant,
    waiting: AtomicUsize,
    /// Nanoseconds from `origin` to when the hub may be quiet again.
    quiet_from: AtomicU64,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace(Arc::new(PaceState {
            origin: Instant::now(),
            waiting: AtomicUsize::new(0),
            quiet_from: AtomicU64::new(0),
        }))
    }
}

impl Pace {
    /// Nothing waits to be written, and the hub's last busy spell is over.
    #[cfg(test)]
    pub(crate) fn quiet(&self) -> bool {
        self.quiet_at(self.now())
    }

    /// [`Pace::quiet`] at `now` (nanoseconds from the pace's origin).
    pub(crate) fn quiet_at(&self, now: u64) -> bool {
        let state = &self.0;
        state.waiting.load(Relaxed) == 0 && now >= state.quiet_from.load(Relaxed)
    }

    /// A fan-out ended now.
    pub(crate) fn fanned_out(&self) {
        self.fanned_out_at(self.now());
    }

    /// A fan-out ended at `now` (nanoseconds from the pace's origin).
    fn fanned_out_at(&self, now: u64) {
        self.busy_until(now.saturating_add(busy_nanos()));
    }

    /// Nanoseconds since the pace's origin.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.0.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn busy_until(&self, quiet_from: u64) {
        self.0.quiet_from.fetch_max(quiet_from, Relaxed);
    }

    fn started_waiting(&self) {
        self.0.waiting.fetch_add(1, Relaxed);
    }

    fn stopped_waiting(&self) {
        if self.0.waiting.fetch_sub(1, Relaxed) == 1 {
            self.busy_until(self.now().saturating_add(busy_nanos()));
        }
    }
}

fn busy_nanos() -> u64 {
    u64::try_from(BUSY.as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's [`DirectWrite`], and the hub's [`Pace`] it counts in.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) writer: Box<dyn DirectWrite>,
    pub(crate) pace: Pace,
}

/// A publication that starts within this long of the hub's last busy
/// moment meets a hub publishing as fast as it can ([`Pace`]): its frames
/// queue rather than being written straight away ([`Outbox::deliver`]).
/// On a quieter hub frames are written at once: coalescing adds no delay
/// to a hub that is not saturated.
///
/// Producers publishing as fast as they are answered start their next
/// publication well within this (the hub reads a request that is already
/// waiting), while a hub that keeps up at a steady rate has a gap between
/// one fan-out's end and the next publication: at 1000 publishes/s to
/// N = 100 a fan-out written straight away takes about half of the
/// millisecond, and a 1 ms rule counted 2991 of 3000 publications as
/// meeting a busy hub (counted in a local build), so their frames queued
/// and woke every writer; with 0.5 ms, 523. Measured with `herald-bench
/// load` (pinned, alternating runs): at 1000 publishes/s, N = 100, p50
/// 334–407 µs and 46–55 % of the hub's core with 0.5 ms against 441–513
/// µs and 59–67 % with 1 ms (4 runs each; p99 medians of 8 runs 961
/// against 1375 µs, the one-write floor 932, all with a wide spread);
/// single events, 4 producers, N = 1000 1.43 M deliveries/s against
/// 1.45 M (6 runs), N = 100 1.17 M against 1.18 M, and 1000 publishes/s
/// at N = 1000 p99 25.4 against 26.4 ms (4 runs): within the runs'
/// spread. 0.25 ms measured 1.41 M against 1.46 M at the N = 1000
/// plateau (5 runs).
pub(crate) const BUSY: Duration = Duration::from_micros(500);

/// A writer woken within this long of its previous write gathers the
/// frames of further publications before it writes ([`Outbox::gather`]),
/// so they leave in one write. Longer than [`BUSY`]: on a hub that queues
/// because it cannot keep up, each connection's writes are several
/// publications apart (at 1000 publishes/s to 1000 subscribers, about
/// 12 frames per write, so about 12 ms apart), and with a 1 ms rule 28 %
/// of the wake-ups there skipped gathering and wrote what they found, a
/// write each. Measured with `herald-bench load` (1000
/// single publishes/s, N = 1000, pinned; 12 alternating runs each): p99
/// 40–68 ms (median 48) gathering within 10 ms against 49–147 ms (median
/// 64) within 1 ms (3 ms: median 54 in 7 runs; 20 ms: 57 in 3). The
/// single-event plateau (1.29–1.49 against 1.35–1.56 M deliveries/s in 3
/// runs each) and 100 publishes/s moved within the runs' spread. A quiet
/// hub writes from the fan-out and does not wake the writer at all.
pub(crate) const GATHER_WITHIN: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    /// The writer took entries and has not finished writing them.
    writing: bool,
    direct: Option<Direct>,
    /// Counted as waiting in the direct writer's [`Pace`]: entries are
    /// queued or being written.
    waiting: bool,
    /// A push since the writer last drained the queue has notified it:
    /// later pushes need not, since that drain takes their frames too.
    notified: bool,
    /// Frames in the queue (gap markers not counted).
    frames: usize,
    /// Publishes that queued frames since the writer last drained the
    /// queue (a run counts once): what [`Outbox::gather`] waits for.
    publishes: usize,
    gaps: usize,
    low: usize,
    normal: usize,
    /// Events shed by [`State::compact_gaps`] beyond the one its push
    /// reported ([`Outbox::take_folded`]).
    folded: u64,
    closing: Option<Closing>,
    /// The writer is sending (or sent) the hub's close frame: a close the
    /// peer sends from then on answers it.
    close_sent: bool,
    /// Any gap makes the connection's dialect send its whole state again, so
    /// one gap marker says as much as many ([`Outbox::resync_on_gap`]).
    resyncs: bool,
    /// Woken when the writer takes the queue or the outbox closes, for a
    /// replay waiting for room ([`Outbox::wait_for_room`]); made by the
    /// first such wait, so an idle connection carries only the pointer.
    room: Option<Arc<Notify>>,
}

/// The bounded queue between fan-out and a connection's writer.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity,
        }
    }

    /// Queues a frame without waiting; sheds or closes when full (see the module docs).
    pub(crate) fn push(&self, frame: OutFrame) -> Pushed {
        self.push_locked(self.state.lock(), frame, Wake::Always)
    }

    /// Queues one of a batch's frames (a publish of several events, which
    /// the fan-out pushes event by event to every connection): as
    /// [`Outbox::push`], but only the first push since the writer last
    /// drained the queue notifies it; that drain takes the later frames too.
    pub(crate) fn push_together(&self, frame: OutFrame) -> Pushed {
        self.push_locked(self.state.lock(), frame, Wake::FirstSinceDrain)
    }

    /// Delivers a live event frame: on a `quiet` hub, to a connection with
    /// nothing queued and nothing being written, straight to its socket
    /// when the socket takes it at once (so it cannot overtake a frame
    /// queued before it); otherwise queued as by [`Outbox::push`].
    /// The frame is cloned (reference counts) only when it is queued.
    pub(crate) fn deliver(&self, frame: &OutFrame, quiet: bool) -> Pushed {
        let mut state = self.state.lock();
        if quiet
            && state.closing.is_none()
            && !state.waiting
            && let Some(direct) = &state.direct
        {
            match direct.writer.try_write(frame) {
                Wrote::All => return Pushed::Written,
                Wrote::Part => {
                    // The writer flushes the rest, as it would a batch.
                    state.raise_waiting();
                    drop(state);
                    self.notify.notify_one();
                    return Pushed::Written;
                }
                Wrote::Nothing => {}
            }
        }
        self.push_locked(state, frame.clone(), Wake::Always)
    }

    /// Tells the outbox that any gap makes the connection's dialect resend
    /// its whole state: past a queue's worth of gap markers, all but the
    /// first go, instead of closing the connection (1013) to bound them.
    pub(crate) fn resync_on_gap(&self) {
        self.state.lock().resyncs = true;
    }

    /// Lets [`Outbox::deliver`] write through `direct`; `None` stops it
    /// (and stops counting this connection as waiting).
    pub(crate) fn set_direct(&self, direct: Option<Direct>) {
        let mut state = self.state.lock();
        state.lower_waiting();
        state.direct = direct;
        if !state.queue.is_empty() || state.writing {
            state.raise_waiting();
        }
    }

    /// Queues the frames of a run (several events of one topic published
    /// together), in order, under one lock, and notifies the writer once
    /// for the run, as a single publish does ([`Wake::Always`]): its next
    /// drain takes them all. Each is queued or shed as by [`Outbox::push`];
    /// once the outbox closes, the rest are not taken.
    pub(crate) fn push_run<'a>(&self, frames: impl IntoIterator<Item = &'a OutFrame>) -> RunPushed {
        self.push_run_locked(self.state.lock(), frames)
    }

    /// Queues a whole run as one entry, shared with the other connections
    /// it goes to, when the queue has room for all of its frames;
    /// otherwise frame by frame, shedding as [`Outbox::push_run`] does.
    /// Notifies the writer as [`Outbox::push_run`] does.
    pub(crate) fn push_shared_run(&self, run: &Arc<Run>) -> RunPushed {
        let mut state = self.state.lock();
        let n = run.frames.len();
        if state.closing.is_some() || state.frames + n > self.capacity {
            return self.push_run_locked(state, &run.frames);
        }
        state.raise_waiting();
        state.frames += n;
        state.low += run.low;
        state.normal += run.normal;
        state.queue.push_back(Queued::Run(run.clone()));
        state.publishes += 1;
        state.notified = true;
        drop(state);
        self.notify.notify_one();
        RunPushed { taken: n, shed: 0 }
    }

    fn push_run_locked<'a>(
        &self,
        mut state: MutexGuard<'_, State>,
        frames: impl IntoIterator<Item = &'a OutFrame>,
    ) -> RunPushed {
        let mut pushed = RunPushed::default();
        if state.closing.is_some() {
            return pushed;
        }
        for frame in frames {
            match self.queue_locked(&mut state, frame.clone()) {
                Pushed::Closed => break,
                Pushed::Shed => pushed.shed += 1,
                Pushed::Queued | Pushed::Written => {}
            }
            pushed.taken += 1;
        }
        state.publishes += 1;
        state.notified = true;
        drop(state);
        self.notify.notify_one();
        pushed
    }

    fn push_locked(&self, mut state: MutexGuard<'_, State>, frame: OutFrame, wake: Wake) -> Pushed {
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        let result = self.queue_locked(&mut state, frame);
        state.publishes += 1;
        let first = !std::mem::replace(&mut state.notified, true);
        drop(state);
        if first || wake == Wake::Always {
            self.notify.notify_one();
        }
        result
    }

    /// Queues `frame`, or sheds or closes when full.
    fn queue_locked(&self, state: &mut State, frame: OutFrame) -> Pushed {
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        state.raise_waiting();
        if state.frames < self.capacity {
            state.count(&frame, 1);
            state.queue.push_back(Queued::One(Entry::Frame(frame)));
            Pushed::Queued
        } else {
            self.push_full(state, frame)
        }
    }

    fn push_full(&self, state: &mut State, frame: OutFrame) -> Pushed {
        let incoming = frame.priority();
        for victim in [Priority::Low, Priority::Normal] {
            if victim > incoming {
                break;
            }
            let queued = if victim == Priority::Low {
                state.low
            } else {
                state.normal
            };
            if queued > 0 && state.shed_oldest(victim) {
                state.count(&frame, 1);
                state.queue.push_back(Queued::One(Entry::Frame(frame)));
                return self.check_gaps(state);
            }
        }
        match frame.event {
            Some(meta) if meta.priority.is_sheddable() => {
                state.push_gap_at_tail(meta.topic, meta.seq);
                self.check_gaps(state)
            }
            _ => {
                state.closing = Some(Closing::SLOW_CONSUMER);
                Pushed::Closed
            }
        }
    }

    fn check_gaps(&self, state: &mut State) -> Pushed {
        if state.gaps > self.capacity {
            state.compact_gaps();
        }
        if state.gaps > self.capacity && state.resyncs {
            state.keep_first_gap();
            return Pushed::Shed;
        }
        if state.gaps > self.capacity {
            state.closing = Some(Closing::SLOW_CONSUMER);
            return Pushed::Closed;
        }
        Pushed::Shed
    }

    /// Events shed past a queue's worth of gap markers since the last call,
    /// beyond those the pushes reported as [`Pushed::Shed`] (one each): for
    /// the shed counts.
    pub(crate) fn take_folded(&self) -> u64 {
        std::mem::take(&mut self.state.lock().folded)
    }

    /// Asks the writer to close the connection (after flushing, if
    /// `closing.flush`). The first close asked for wins.
    pub(crate) fn close(&self, closing: Closing) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(closing);
        }
        let room = state.room.take();
        drop(state);
        self.notify.notify_one();
        if let Some(room) = room {
            room.notify_waiters();
        }
    }

    /// Waits until `frames` more frames fit in the queue (at most its
    /// capacity are asked for); `false` once the outbox closes. A replay
    /// longer than the queue goes in parts this way, each queued once the
    /// writer took the ones before, instead of shedding its own events.
    pub(crate) async fn wait_for_room(&self, frames: usize) -> bool {
        let frames = frames.min(self.capacity);
        loop {
            let room = {
                let mut state = self.state.lock();
                if state.closing.is_some() {
                    return false;
                }
                if state.frames + frames <= self.capacity {
                    return true;
                }
                state
                    .room
                    .get_or_insert_with(|| Arc::new(Notify::new()))
                    .clone()
            };
            let taken = room.notified();
            tokio::pin!(taken);
            // Registered before the queue is looked at again: a drain in
            // between is not missed.
            taken.as_mut().enable();
            let fits = {
                let state = self.state.lock();
                state.closing.is_some() || state.frames + frames <= self.capacity
            };
            if !fits {
                taken.await;
            }
        }
    }

    /// Takes every queued entry (the queue's buffer goes with them, so an
    /// idle connection holds no queue memory) and returns the pending close,
    /// if any; a non-flushing close drops what was queued.
    pub(crate) fn drain(&self) -> (VecDeque<Queued>, Option<Closing>) {
        let mut state = self.state.lock();
        let closing = state.closing.clone();
        let mut entries = std::mem::take(&mut state.queue);
        if closing.as_ref().is_some_and(|c| !c.flush) {
            entries.clear();
        }
        state.notified = false;
        state.publishes = 0;
        state.frames = 0;
        state.gaps = 0;
        state.low = 0;
        state.normal = 0;
        state.writing = !entries.is_empty();
        let room = state.room.take();
        drop(state);
        if let Some(room) = room {
            room.notify_waiters();
        }
        (entries, closing)
    }

    /// The writer finished writing what it last took.
    pub(crate) fn written(&self) {
        let mut state = self.state.lock();
        state.writing = false;
        if state.queue.is_empty() {
            state.lower_waiting();
        }
    }

    /// The close the hub asked for, if it did.
    pub(crate) fn closing(&self) -> Option<Closing> {
        self.state.lock().closing.clone()
    }

    /// The writer is about to send the hub's close frame.
    pub(crate) fn sending_close(&self) {
        self.state.lock().close_sent = true;
    }

    /// Whether the hub's close frame went out (or is going): a close from
    /// the peer then answers it, and needs no answer.
    pub(crate) fn close_sent(&self) -> bool {
        self.state.lock().close_sent
    }

    /// Waits until something was pushed or a close was requested.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Most frames the queue holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames currently queued.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().frames
    }

    /// Publishes that queued frames since the writer last drained, and
    /// the frames queued.
    fn gathered(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.publishes, state.frames)
    }

    /// Lets the publishes already on their way add their frames before the
    /// writer takes the queue, so the frames of several publishes leave in
    /// one write: yields to the scheduler, for at most [`GATHER_ROUNDS`]
    /// rounds, until [`GATHER_PUBLISHES`] publishes queued frames (a run
    /// pushed in one call counts once, so that the memory store's runs
    /// gather as single events do; the SQLite and Redis stores push a
    /// batch event by event and count each), or until half the queue is
    /// full (a writer waiting by choice must not bring its queue near
    /// shedding); [`GATHER_QUIET_ROUNDS`] rounds in a row that add no
    /// publish mean publishing paused, and it returns then. Tokio runs a yielded task
    /// again only after it polled for IO, so the publishing requests that
    /// arrived meanwhile run first.
    ///
    /// Measured with `cargo xtask bench` (single events, one frame per
    /// publish, 4 producers, N = 1000, pinned): 0.63 M deliveries/s without
    /// gathering, 1.66 M with 8 rounds / 64 publishes (1.38 M with 8 / 32,
    /// 1.24 M with 32 / 256: longer holds cost more scheduler rounds than
    /// they save in writes).
    pub(crate) async fn gather(&self) {
        let enough = |(publishes, frames): (usize, usize)| {
            publishes >= GATHER_PUBLISHES || frames >= self.capacity / 2
        };
        let mut gathered = self.gathered();
        let mut quiet = 0;
        for _ in 0..GATHER_ROUNDS {
            if enough(gathered) {
                return;
            }
            tokio::task::yield_now().await;
            let now = self.gathered();
            if now.0 == gathered.0 {
                quiet += 1;
                if quiet == GATHER_QUIET_ROUNDS {
                    return;
                }
            } else {
                quiet = 0;
            }
            gathered = now;
        }
    }
}

impl Drop for Outbox {
    /// A connection dropped while waiting stops counting as waiting, so
    /// its hub can be quiet again.
    fn drop(&mut self) {
        self.state.get_mut().lower_waiting();
    }
}

/// What [`Outbox::push_run`] did with a run's frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunPushed {
    /// The first `taken` frames were queued or shed (the rest came after
    /// the outbox closed).
    pub(crate) taken: usize,
    /// How many of them were shed.
    pub(crate) shed: u64,
}

/// Which pushes notify the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Every push, also onto a queue that has a wake-up on its way: the
    /// permit left behind wakes the writer again as soon as its write
    /// ends, and while single publishes keep coming that wake-up gathers
    /// them. Waking only on a queue's first entry measured 0.65 M
    /// deliveries/s against 1.6 M, and only on the first push since the
    /// writer's last drain 0.93–1.11 M against 1.27–1.34 M (single events,
    /// 4 producers, N = 1000, pinned).
    Always,
    /// Only the first push since the writer last drained the queue: the
    /// frames of one batch reach the queue together, so the later pushes
    /// would only repeat the notify, an atomic on a cache line of its own
    /// (notifying on every push of a 64-event batch notifies each
    /// subscriber 64 times: 10 % of the hub's samples in `perf`, batched,
    /// N = 1000).
    FirstSinceDrain,
}

/// Most scheduler rounds [`Outbox::gather`] waits for more frames.
const GATHER_ROUNDS: usize = 8;

/// Rounds in a row without a new publish after which [`Outbox::gather`]
/// stops waiting. Producers that publish as fast as they are answered
/// still leave single rounds without a publish (a round passes over every
/// writer that is gathering, and a producer's next request is read only
/// after it got its answer and sent again), so ending at one quiet round
/// would write early and small. Measured with `herald-bench load`
/// (single events, pinned, alternating runs, medians): 4 producers, N = 1000,
/// 1.52 M deliveries/s (1.36–1.55 in 6 runs) with two against 1.29 M
/// (1.15–1.38) with one; N = 100 1.61 M against 1.24 M; 1 producer,
/// N = 1000, 0.85 M against 0.66 M; 1000 publishes/s at N = 1000, p99
/// 22–27 ms against 32–45 ms in 5 runs each. Batches, 100 publishes/s and
/// N = 9,900 moved within their runs' spread. Four quiet rounds (with 16
/// rounds at most) measured 1.57 M, within the spread of two, and waited
/// longer for nothing at 100 publishes/s (p99 at N = 100 798–1043 µs
/// against 729–879 with two, 4 runs each).
const GATHER_QUIET_ROUNDS: usize = 2;

/// Publishes whose frames [`Outbox::gather`] is content to have queued.
/// Counted as publishes, not frames: counting a 64-event batch as 64 frames
/// ends gathering at once, so that each write carries one batch; counted
/// once, writes to 1000 connections measured 17–20k a second against
/// 22–23k at the same deliveries (batched, pinned, `perf stat`).
const GATHER_PUBLISHES: usize = 64;

impl State {
    /// Counts this connection as waiting (once) in its direct writer's [`Pace`].
    fn raise_waiting(&mut self) {
        if !self.waiting
            && let Some(direct) = &self.direct
        {
            direct.pace.started_waiting();
            self.waiting = true;
        }
    }

    fn lower_waiting(&mut self) {
        if self.waiting
            && let Some(direct) = &self.direct
        {
            direct.pace.stopped_waiting();
        }
        self.waiting = false;
    }

    fn count(&mut self, frame: &OutFrame, delta: isize) {
        self.frames = self.frames.saturating_add_signed(delta);
        match frame.event.as_ref().map(|e| e.priority) {
            Some(Priority::Low) => self.low = self.low.saturating_add_signed(delta),
            Some(Priority::Normal) => self.normal = self.normal.saturating_add_signed(delta),
            _ => {}
        }
    }

    /// Replaces the oldest queued event of `priority` by a gap marker; a
    /// run that holds it is queued frame by frame first.
    fn shed_oldest(&mut self, priority: Priority) -> bool {
        let is_victim = |frame: &OutFrame| {
            frame
                .event
                .as_ref()
                .is_some_and(|meta| meta.priority == priority)
        };
        let found = self.queue.iter().position(|queued| match queued {
            Queued::One(Entry::Frame(frame)) => is_victim(frame),
            Queued::Run(run) => run.frames.iter().any(is_victim),
            Queued::One(Entry::Gap { .. }) => false,
        });
        let Some(mut index) = found else { return false };
        if matches!(self.queue[index], Queued::Run(_)) {
            index = self.unshare_run(index, is_victim);
        }
        let Queued::One(Entry::Frame(frame)) = std::mem::replace(
            &mut self.queue[index],
            Queued::One(Entry::Gap {
                topic: Topic::global(),
                from_seq: 0,
                to_seq: 0,
            }),
        ) else {
            return false;
        };
        self.count(&frame, -1);
        let Some(meta) = frame.event else {
            return false;
        };
        if let Some(earlier) = self.last_gap_of(&meta.topic, index) {
            self.queue.remove(index);
            self.widen_gap(earlier, meta.seq);
            return true;
        }
        self.queue[index] = Queued::One(Entry::Gap {
            topic: meta.topic,
            from_seq: meta.seq,
            to_seq: meta.seq,
        });
        self.gaps += 1;
        self.merge_gap_at(index);
        true
    }

    /// The latest gap marker of `topic` before `index` with no frame of
    /// `topic` after it (up to `index`): a seq of `topic` shed at `index`
    /// joins that marker, which still comes before every later event of
    /// its topic. So a connection on many topics that falls behind holds a
    /// marker per topic, not one per shed event (markers of different
    /// topics interleave and never sit side by side).
    fn last_gap_of(&self, topic: &Topic, index: usize) -> Option<usize> {
        for earlier in (0..index).rev() {
            match &self.queue[earlier] {
                Queued::One(Entry::Gap { topic: marked, .. }) if marked == topic => {
                    return Some(earlier);
                }
                // A control frame may be about any topic (a `subscribed`,
                // a `snapshot`): a marker never moves ahead of one.
                Queued::One(Entry::Frame(frame))
                    if frame.event.as_ref().is_none_or(|meta| meta.topic == *topic) =>
                {
                    return None;
                }
                Queued::Run(run)
                    if run.frames.iter().any(|frame| {
                        frame
                            .event
                            .as_ref()
                            .is_some_and(|meta| meta.topic == *topic)
                    }) =>
                {
                    return None;
                }
                _ => {}
            }
        }
        None
    }

    /// Past a queue's worth of gap markers: folds the markers of each topic
    /// into the first one, shedding the low and normal events of that topic
    /// queued between them (none after its last marker). A high or critical
    /// event of the topic, or any control frame (it may be about the topic),
    /// ends a marker's reach. Markers of one topic are kept apart only by
    /// events of that topic, so a connection that falls behind on interleaved
    /// priorities (a `low` between `normal`s) holds a marker per topic again
    /// instead of being closed.
    fn compact_gaps(&mut self) {
        let mut last_marker: HashMap<Topic, usize> = HashMap::new();
        for (at, queued) in self.queue.iter().enumerate() {
            if let Queued::One(Entry::Gap { topic, .. }) = queued {
                last_marker.insert(topic.clone(), at);
            }
        }
        let mut open: HashMap<Topic, usize> = HashMap::new();
        let mut kept: VecDeque<Queued> = VecDeque::with_capacity(self.queue.len());
        let queue = std::mem::take(&mut self.queue);
        for (at, queued) in queue.into_iter().enumerate() {
            let frames = match queued {
                Queued::One(Entry::Gap {
                    topic,
                    from_seq,
                    to_seq,
                }) => {
                    match open.get(&topic) {
                        Some(&marker) => {
                            widen(&mut kept[marker], from_seq, to_seq);
                            self.gaps -= 1;
                        }
                        None => {
                            open.insert(topic.clone(), kept.len());
                            kept.push_back(Queued::One(Entry::Gap {
                                topic,
                                from_seq,
                                to_seq,
                            }));
                        }
                    }
                    continue;
                }
                Queued::Run(run) => {
                    let marked = |frame: &OutFrame| {
                        frame
                            .event
                            .as_ref()
                            .is_some_and(|meta| open.contains_key(&meta.topic))
                    };
                    if !run.frames.iter().any(marked) {
                        kept.push_back(Queued::Run(run));
                        continue;
                    }
                    run.frames.clone()
                }
                Queued::One(Entry::Frame(frame)) => vec![frame],
            };
            for frame in frames {
                let Some(meta) = frame.event.as_ref() else {
                    open.clear();
                    kept.push_back(Queued::One(Entry::Frame(frame)));
                    continue;
                };
                let before_last = last_marker.get(&meta.topic).is_some_and(|&last| at < last);
                match open.get(&meta.topic) {
                    Some(&marker) if meta.priority.is_sheddable() && before_last => {
                        widen(&mut kept[marker], meta.seq, meta.seq);
                        self.count(&frame, -1);
                        self.folded += 1;
                    }
                    _ => {
                        open.remove(&meta.topic);
                        kept.push_back(Queued::One(Entry::Frame(frame)));
                    }
                }
            }
        }
        self.queue = kept;
    }

    /// Widens the gap marker at `index` to cover `seq`.
    fn widen_gap(&mut self, index: usize, seq: u64) {
        widen(&mut self.queue[index], seq, seq);
    }

    /// Replaces the run at `index` by its frames, each an entry of its own;
    /// the index of the first that `pick` selects.
    fn unshare_run(&mut self, index: usize, pick: impl Fn(&OutFrame) -> bool) -> usize {
        let mut rest = self.queue.split_off(index);
        let Some(Queued::Run(run)) = rest.pop_front() else {
            self.queue.append(&mut rest);
            return index;
        };
        let picked = run.frames.iter().position(pick).unwrap_or(0);
        self.queue.extend(
            run.frames
                .iter()
                .map(|frame| Queued::One(Entry::Frame(frame.clone()))),
        );
        self.queue.append(&mut rest);
        index + picked
    }

    /// Removes every gap marker but the first.
    fn keep_first_gap(&mut self) {
        let mut seen = false;
        self.queue.retain(|queued| match queued {
            Queued::One(Entry::Gap { .. }) => !std::mem::replace(&mut seen, true),
            _ => true,
        });
        self.gaps = usize::from(seen);
    }

    /// Merges the gap at `index` with a neighbouring gap of the same topic.
    fn merge_gap_at(&mut self, index: usize) {
        if index + 1 < self.queue.len() {
            self.merge_pair(index);
        }
        if index > 0 {
            self.merge_pair(index - 1);
        }
    }

    /// Merges entries `first` and `first + 1` when both are gaps of one topic.
    fn merge_pair(&mut self, first: usize) {
        let (
            Queued::One(Entry::Gap { topic: a, .. }),
            Some(Queued::One(Entry::Gap {
                topic: b,
                from_seq,
                to_seq,
            })),
        ) = (&self.queue[first], self.queue.get(first + 1))
        else {
            return;
        };
        if a != b {
            return;
        }
        let (from, to) = (*from_seq, *to_seq);
        self.queue.remove(first + 1);
        if let Queued::One(Entry::Gap {
            from_seq, to_seq, ..
        }) = &mut self.queue[first]
        {
            *from_seq = (*from_seq).min(from);
            *to_seq = (*to_seq).max(to);
        }
        self.gaps -= 1;
    }

    fn push_gap_at_tail(&mut self, topic: Topic, seq: u64) {
        if let Some(earlier) = self.last_gap_of(&topic, self.queue.len()) {
            self.widen_gap(earlier, seq);
            return;
        }
        self.queue.push_back(Queued::One(Entry::Gap {
            topic,
            from_seq: seq,
            to_seq: seq,
        }));
        self.gaps += 1;
    }
}

/// Widens a gap marker to cover `from_seq..=to_seq`.
fn widen(queued: &mut Queued, from: u64, to: u64) {
    if let Queued::One(Entry::Gap {
        from_seq, to_seq, ..
    }) = queued
    {
        *from_seq = (*from_seq).min(from);
        *to_seq = (*to_seq).max(to);
    }
}

#[cfg(test)]
mod tests;
