//! This node's subscriber index, and the fan-out of every publication to it.
//!
//! Subscribers are found by topic, never by a scan of every connection:
//! exact subscribers by their topic, `kind:*` subscribers by kind, `*`
//! subscribers in one list. A publication reaches each matching connection
//! at most once, as the same shared bytes, pushed into its bounded outbox
//! without waiting on any socket; on a quiet hub (see
//! [`Pace`](crate::core::outbox::Pace)), written straight to a
//! connection's socket when the socket takes the frame at once.
//!
//! While a new subscription's replay or snapshot is read from the broker,
//! its live events are held ([`Held`], at most `--queue-size` of them) and
//! released after the replay, those the replay already covered dropped; and
//! where the read left each topic ([`Seam`]) stays with the subscription, so
//! an event of the same stream at or before it that this node delivers
//! later (a shared store runs ahead of the node's own deliveries) is not
//! sent again: no duplicate and no hole at the seam, whatever the engine.
//! A new stream of a topic that starts while a subscription is read is
//! announced to it (`gap` `epoch_changed`, then all its events) when the
//! read named an older stream, and not when the read named the new one
//! (whose events up to the read's position are in the read, and whose
//! predecessor's late events are dropped).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_protocol::frame::{Gap, GapReason};
use herald_protocol::payload::ApprovalRecord;
use herald_protocol::{Epoch, Event, EventFilter, EventType, ServerMessage, Topic, TopicPattern};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::core::approvals::Decisions;
use crate::core::broker::{Audience, BrokerHandler, Publication};
use crate::core::cluster::{self, NodeAnswer, NodeQuestion};
use crate::core::connection::ConnHandle;
use crate::core::connections::Connections;
use crate::core::outbox::{EventMeta, OutFrame, Pushed, Run};
use crate::operations::metrics::Metrics;

/// One connection's subscription to a topic or pattern.
#[derive(Debug, Clone)]
struct Subscriber {
    conn: Arc<ConnHandle>,
    /// Its filter, unless it lets every event through: boxed, so that an
    /// entry in the index is 24 bytes smaller and only a filtered
    /// subscription allocates one.
    filter: Option<Box<EventFilter>>,
    /// Present while the subscription's replay is read.
    held: Option<Arc<Held>>,
    /// Where its read left the topics it covers.
    seams: Seams,
}

impl Subscriber {
    /// Whether its filter lets `event` through.
    fn passes(&self, event: &Event) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(event))
    }
}

/// Where a subscription's read left one topic: the stream, and the last
/// seq the subscription was given (its `subscribed` position, up to which
/// the replay went).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seam {
    pub(crate) epoch: Epoch,
    pub(crate) seq: u64,
}

impl Seam {
    fn covers(&self, epoch: &Epoch, seq: u64) -> bool {
        seq <= self.seq && *epoch == self.epoch
    }
}

/// The seams of one subscription: none yet, its topic's, or those of the
/// topics a pattern subscription replayed.
#[derive(Debug, Clone, Default)]
enum Seams {
    #[default]
    None,
    One(Seam),
    Many(Arc<HashMap<Topic, Seam>>),
}

impl Seams {
    /// Where the subscription's read left `topic`, if it read it.
    fn of(&self, topic: &Topic) -> Option<&Seam> {
        match self {
            Seams::None => None,
            Seams::One(seam) => Some(seam),
            Seams::Many(seams) => seams.get(topic),
        }
    }

    /// Whether a subscription whose reads left its topics here is told of
    /// a new stream of `topic` under `epoch`, as
    /// [`Fanout::announce_stream`] tells a live one: when its read left
    /// the topic on another stream, or, not having read it, when the store
    /// forgot the old one.
    fn told_of(&self, topic: &Topic, epoch: &Epoch, forgotten: bool) -> bool {
        match self.of(topic) {
            Some(seam) => seam.epoch != *epoch,
            None => forgotten,
        }
    }

    /// Whether the subscription was already given this publication's event.
    fn cover(&self, publication: &Publication<'_>) -> bool {
        let event = &publication.event.event;
        match self {
            Seams::None => false,
            Seams::One(seam) => seam.covers(publication.epoch, event.seq),
            Seams::Many(seams) => seams
                .get(&event.topic)
                .is_some_and(|seam| seam.covers(publication.epoch, event.seq)),
        }
    }
}

/// The exact subscribers of one topic, by connection id.
type TopicSubscribers = HashMap<Arc<str>, Subscriber>;

#[derive(Debug, Default)]
struct PatternIndex {
    kinds: HashMap<Arc<str>, HashMap<Arc<str>, Subscriber>>,
    all: HashMap<Arc<str>, Subscriber>,
}

/// Live frames held for a subscription while its replay is read.
#[derive(Debug)]
pub(crate) struct Held {
    state: Mutex<HeldState>,
    limit: usize,
    /// Where the reads of the connection's earlier subscription to the
    /// same topic or pattern left its topics, when it had one: what that
    /// subscription would have been told of a new stream by now is told
    /// first ([`Held::send_early`]).
    earlier: Option<Seams>,
}

#[derive(Debug)]
enum HeldState {
    Holding {
        frames: Vec<HeldFrame>,
        overflowed: bool,
    },
    Released,
}

/// A frame held while a subscription is read.
#[derive(Debug)]
enum HeldFrame {
    Frame(OutFrame),
    /// The `gap` `epoch_changed` that announces a new stream of `topic`
    /// under `epoch` (see [`Fanout::announce_stream`], or a store's own
    /// gap naming the epoch). Whether the subscription is told depends on
    /// which stream its read names, which is not known yet: see [`Walk`].
    /// `silent`: the connection was told through another, live
    /// subscription, so this one only marks where the new stream begins.
    Restart {
        gap: OutFrame,
        topic: Topic,
        epoch: Epoch,
        forgotten: bool,
        silent: bool,
    },
}

/// What a held announcement carries besides its stream (see
/// [`HeldFrame::Restart`]).
#[derive(Debug, Clone, Copy)]
struct Told {
    /// The store forgot the topic's earlier stream: a subscription without
    /// a position in it is told too.
    forgotten: bool,
    /// The connection was told, or holds the new stream, through another,
    /// live subscription.
    elsewhere: bool,
}

/// Which stream of a topic the frames held for it belong to, walking them
/// in the order they came, against the stream the subscription's read
/// named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A stream older than the read's: the read started after a new stream
    /// (announced further on) had begun.
    Older,
    /// The read's stream: its events up to the read's position are in the
    /// read, those after it are not.
    Read,
    /// A stream newer than the read's, announced in between: none of its
    /// events were read.
    Newer,
}

/// Where each held frame goes, decided frame by frame in the order they
/// were held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// An event before the read's position: of the read's stream up to
    /// it, or of an older stream. Sent before
    /// the subscription's own frames to a connection subscribed again (its
    /// earlier subscription would have delivered them by now), and not
    /// sent otherwise.
    Early,
    /// Sent after the subscription's own frames.
    Late,
    /// The announcement of the stream the read named or of one before it:
    /// sent before the subscription's own frames to a connection
    /// subscribed again whose earlier subscription would have been told
    /// of it ([`Held::told_earlier`]), and not sent otherwise.
    Passed,
    /// Never sent: the announcement of a stream of a topic the
    /// subscription did not read that was not forgotten (and that an
    /// earlier subscription made again held no other stream of), of the read's
    /// stream again, or of one the connection was told of through another
    /// subscription.
    Dropped,
}

/// The walk over held frames that gives each its [`Fate`], given where
/// the subscription's read left each topic (`read`).
struct Walk<'f, R> {
    read: R,
    /// Where the connection's earlier subscription's reads left its
    /// topics, for a subscription made again ([`Held::earlier`]).
    earlier: Option<&'f Seams>,
    phases: HashMap<Topic, Phase>,
    frames: &'f [HeldFrame],
}

impl<'f, 's, R: Fn(&Topic) -> Option<&'s Seam>> Walk<'f, R> {
    fn new(frames: &'f [HeldFrame], read: R, earlier: Option<&'f Seams>) -> Self {
        Walk {
            read,
            earlier,
            phases: HashMap::new(),
            frames,
        }
    }

    /// `topic`'s phase before its first held frame: [`Phase::Older`] if
    /// the stream the read named is announced among the held frames.
    fn first_phase(&self, topic: &Topic) -> Phase {
        let Some(seam) = (self.read)(topic) else {
            return Phase::Read;
        };
        let announced = self.frames.iter().any(|frame| {
            matches!(frame, HeldFrame::Restart { topic: t, epoch, .. }
                if t == topic && *epoch == seam.epoch)
        });
        if announced { Phase::Older } else { Phase::Read }
    }

    /// The fate of the next held frame.
    fn fate(&mut self, frame: &HeldFrame) -> Fate {
        match frame {
            HeldFrame::Frame(frame) => {
                let Some(event) = &frame.event else {
                    return Fate::Late;
                };
                match self.phase(&event.topic) {
                    Phase::Older => Fate::Early,
                    Phase::Read => match (self.read)(&event.topic) {
                        Some(seam) if event.seq <= seam.seq => Fate::Early,
                        _ => Fate::Late,
                    },
                    Phase::Newer => Fate::Late,
                }
            }
            HeldFrame::Restart {
                topic,
                epoch,
                forgotten,
                silent,
                ..
            } => {
                let seam = (self.read)(topic);
                let (next, fate) = match (self.phase(topic), seam) {
                    // The read named this stream: the subscription starts
                    // on it.
                    (Phase::Older, Some(seam)) if seam.epoch == *epoch => {
                        (Phase::Read, Fate::Passed)
                    }
                    // One more stream the read came after.
                    (Phase::Older, _) => (Phase::Older, Fate::Passed),
                    // The read's stream announced again (a shared store
                    // may tell a node twice).
                    (Phase::Read, Some(seam)) if seam.epoch == *epoch => {
                        (Phase::Read, Fate::Dropped)
                    }
                    // A topic the read did not cover is told as a
                    // subscriber without a seam would be, or as the
                    // earlier subscription would have been by its seam.
                    (Phase::Read, None) => {
                        let told_earlier = self
                            .earlier
                            .is_some_and(|earlier| earlier.told_of(topic, epoch, *forgotten));
                        let fate = if *forgotten || told_earlier {
                            Fate::Late
                        } else {
                            Fate::Dropped
                        };
                        (Phase::Read, fate)
                    }
                    (Phase::Read | Phase::Newer, _) => (Phase::Newer, Fate::Late),
                };
                self.phases.insert(topic.clone(), next);
                if *silent { Fate::Dropped } else { fate }
            }
        }
    }

    fn phase(&mut self, topic: &Topic) -> Phase {
        if let Some(phase) = self.phases.get(topic) {
            return *phase;
        }
        let phase = self.first_phase(topic);
        self.phases.insert(topic.clone(), phase);
        phase
    }
}

impl HeldFrame {
    fn into_frame(self) -> OutFrame {
        match self {
            HeldFrame::Frame(frame) | HeldFrame::Restart { gap: frame, .. } => frame,
        }
    }

    /// The frame as it would be sent.
    fn as_frame(&self) -> &OutFrame {
        match self {
            HeldFrame::Frame(frame) | HeldFrame::Restart { gap: frame, .. } => frame,
        }
    }

    /// The same frame, never to be sent (an announcement that was).
    fn silenced(self) -> HeldFrame {
        match self {
            HeldFrame::Restart {
                gap,
                topic,
                epoch,
                forgotten,
                ..
            } => HeldFrame::Restart {
                gap,
                topic,
                epoch,
                forgotten,
                silent: true,
            },
            frame @ HeldFrame::Frame(_) => frame,
        }
    }
}

/// More live events arrived while a replay was read than a connection's
/// queue holds: the subscription cannot be made seamless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflowed;

impl Held {
    fn new(limit: usize, earlier: Option<Seams>) -> Held {
        Held {
            state: Mutex::new(HeldState::Holding {
                frames: Vec::new(),
                overflowed: false,
            }),
            limit,
            earlier,
        }
    }

    /// The connection was already subscribed to the same topic or pattern.
    pub(crate) fn was_live(&self) -> bool {
        self.earlier.is_some()
    }

    /// Whether the connection's earlier subscription would have been told
    /// of the stream `frame` announces ([`Seams::told_of`]).
    fn told_earlier(&self, frame: &HeldFrame) -> bool {
        let (
            Some(earlier),
            HeldFrame::Restart {
                topic,
                epoch,
                forgotten,
                ..
            },
        ) = (&self.earlier, frame)
        else {
            return false;
        };
        earlier.told_of(topic, epoch, *forgotten)
    }

    /// Holds `frame`, or hands it to `push` once released.
    fn offer(&self, conn: &ConnHandle, frame: &OutFrame, push: &mut impl FnMut(&ConnHandle)) {
        if !self.hold(|| HeldFrame::Frame(frame.clone())) {
            push(conn);
        }
    }

    /// Holds the announcement of a new stream of `topic` under `epoch`
    /// (`gap`), to be sent or not once the read says which stream the
    /// subscription starts on; false once released (the caller then tells
    /// the subscription as any other).
    fn announce(&self, gap: &OutFrame, topic: &Topic, epoch: &Epoch, told: Told) -> bool {
        self.hold(|| HeldFrame::Restart {
            gap: gap.clone(),
            topic: topic.clone(),
            epoch: epoch.clone(),
            forgotten: told.forgotten,
            silent: told.elsewhere,
        })
    }

    /// Holds the frame `make` gives while holding (up to the limit, past
    /// which the subscription overflowed); false once released.
    fn hold(&self, make: impl FnOnce() -> HeldFrame) -> bool {
        let mut state = self.state.lock();
        match &mut *state {
            HeldState::Holding { frames, overflowed } => {
                if frames.len() < self.limit {
                    frames.push(make());
                } else {
                    *overflowed = true;
                }
                true
            }
            HeldState::Released => false,
        }
    }

    /// Sends the held frames the read did not cover (`read` says where it
    /// left each topic it read), in the order they arrived, after the
    /// subscription's own frames (`subscribed`, snapshot, replay), which
    /// the caller queued while they were held; from then on frames go
    /// straight to the outbox. Nothing offered meanwhile can slip in
    /// between: offers wait. A stream that started during the read is
    /// announced if the read named an older one (and its events all
    /// follow), and not if the read named it.
    ///
    /// Returns how many events a full queue shed on the way.
    pub(crate) fn release<'s>(
        &self,
        conn: &ConnHandle,
        read: impl Fn(&Topic) -> Option<&'s Seam>,
    ) -> Result<u64, Overflowed> {
        let mut state = self.state.lock();
        let HeldState::Holding { frames, overflowed } =
            std::mem::replace(&mut *state, HeldState::Released)
        else {
            return Ok(0);
        };
        if overflowed {
            return Err(Overflowed);
        }
        let mut walk = Walk::new(&frames, read, self.earlier.as_ref());
        let fates: Vec<Fate> = frames.iter().map(|frame| walk.fate(frame)).collect();
        let late = frames
            .into_iter()
            .zip(fates)
            .filter(|(_, fate)| *fate == Fate::Late)
            .map(|(frame, _)| frame.into_frame());
        Ok(push_all(conn, late))
    }

    /// The held events the read covered are sent now, those of the read's
    /// stream up to its position, and any of an older stream (a connection
    /// subscribed again: what its earlier subscription would have had),
    /// with the announcements between them that subscription would have
    /// been told.
    ///
    /// Returns how many events a full queue shed on the way.
    pub(crate) fn send_early<'s>(
        &self,
        conn: &ConnHandle,
        read: impl Fn(&Topic) -> Option<&'s Seam>,
    ) -> u64 {
        let mut state = self.state.lock();
        let HeldState::Holding { frames, .. } = &mut *state else {
            return 0;
        };
        let held = std::mem::take(frames);
        let mut walk = Walk::new(&held, read, self.earlier.as_ref());
        let fates: Vec<Fate> = held.iter().map(|frame| walk.fate(frame)).collect();
        let mut early = Vec::new();
        for (frame, fate) in held.into_iter().zip(fates) {
            match fate {
                Fate::Early => early.push(frame.into_frame()),
                Fate::Passed if self.told_earlier(&frame) => {
                    early.push(frame.as_frame().clone());
                    // Still held, silent: the release's walk over what is
                    // left learns from it where the stream begins.
                    frames.push(frame.silenced());
                }
                Fate::Passed | Fate::Late | Fate::Dropped => frames.push(frame),
            }
        }
        push_all(conn, early)
    }

    /// How many frames are held: none once released, an error once more
    /// than the limit came.
    pub(crate) fn holding(&self) -> Result<Option<usize>, Overflowed> {
        match &*self.state.lock() {
            HeldState::Holding {
                overflowed: true, ..
            } => Err(Overflowed),
            HeldState::Holding { frames, .. } => Ok(Some(frames.len())),
            HeldState::Released => Ok(None),
        }
    }
}

/// Queues `frames` on `conn`; returns how many events a full queue shed.
fn push_all(conn: &ConnHandle, frames: impl IntoIterator<Item = OutFrame>) -> u64 {
    let mut shed = 0;
    for frame in frames {
        if conn.outbox.push(frame) == Pushed::Shed {
            shed += 1 + conn.outbox.take_folded();
        }
    }
    shed
}

/// The subscriber index of this node (see the module docs).
#[derive(Debug)]
pub(crate) struct Fanout {
    connections: Arc<Connections>,
    exact: RwLock<HashMap<Topic, Arc<Mutex<TopicSubscribers>>>>,
    patterns: RwLock<PatternIndex>,
    metrics: Arc<Metrics>,
    /// Most live frames held per subscription while its replay is read.
    hold_limit: usize,
}

impl Fanout {
    pub(crate) fn new(
        connections: Arc<Connections>,
        metrics: Arc<Metrics>,
        hold_limit: usize,
    ) -> Fanout {
        Fanout {
            connections,
            exact: RwLock::default(),
            patterns: RwLock::default(),
            metrics,
            hold_limit,
        }
    }

    /// Adds (or replaces) `conn`'s subscription to `pattern`, holding its
    /// live frames until the returned [`Held`] is released.
    pub(crate) fn hold(
        &self,
        conn: &Arc<ConnHandle>,
        pattern: &TopicPattern,
        filter: &EventFilter,
    ) -> Arc<Held> {
        let entry = |earlier: Option<&Subscriber>| {
            let earlier = earlier.map(|subscriber| subscriber.seams.clone());
            let held = Arc::new(Held::new(self.hold_limit, earlier));
            let subscriber = Subscriber {
                conn: conn.clone(),
                filter: (!filter.is_empty()).then(|| Box::new(filter.clone())),
                held: Some(held.clone()),
                seams: Seams::None,
            };
            (held, subscriber)
        };
        match pattern {
            TopicPattern::Exact(topic) => {
                let subscribers = self.exact.write().entry(topic.clone()).or_default().clone();
                let mut subscribers = subscribers.lock();
                let (held, subscriber) = entry(subscribers.get(&conn.id));
                subscribers.insert(conn.id.clone(), subscriber);
                held
            }
            TopicPattern::Kind(kind) => {
                let mut patterns = self.patterns.write();
                let subscribers = patterns.kinds.entry(kind.clone()).or_default();
                let (held, subscriber) = entry(subscribers.get(&conn.id));
                subscribers.insert(conn.id.clone(), subscriber);
                held
            }
            TopicPattern::All => {
                let mut patterns = self.patterns.write();
                let (held, subscriber) = entry(patterns.all.get(&conn.id));
                patterns.all.insert(conn.id.clone(), subscriber);
                held
            }
        }
    }

    /// Records where the subscription's read left each topic (`seams`, by
    /// topic): call it before the held frames are released.
    pub(crate) fn mark_read(
        &self,
        conn: &ConnHandle,
        pattern: &TopicPattern,
        seams: impl IntoIterator<Item = (Topic, Seam)>,
    ) {
        let mut seams = seams.into_iter();
        let seams = match pattern {
            TopicPattern::Exact(_) => seams
                .next()
                .map_or(Seams::None, |(_, seam)| Seams::One(seam)),
            TopicPattern::Kind(_) | TopicPattern::All => {
                let seams: HashMap<Topic, Seam> = seams.collect();
                if seams.is_empty() {
                    Seams::None
                } else {
                    Seams::Many(Arc::new(seams))
                }
            }
        };
        self.with_subscriber(conn, pattern, |subscriber| subscriber.seams = seams);
    }

    /// Once `held` is released, frames go to the outbox without passing through it.
    pub(crate) fn settle(&self, conn: &ConnHandle, pattern: &TopicPattern, held: &Arc<Held>) {
        self.with_subscriber(conn, pattern, |subscriber| {
            if subscriber
                .held
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, held))
            {
                subscriber.held = None;
            }
        });
    }

    /// Runs `change` on `conn`'s subscription to `pattern`, if it has one.
    fn with_subscriber(
        &self,
        conn: &ConnHandle,
        pattern: &TopicPattern,
        change: impl FnOnce(&mut Subscriber),
    ) {
        match pattern {
            TopicPattern::Exact(topic) => {
                let subscribers = self.exact.read().get(topic).cloned();
                if let Some(subscribers) = subscribers
                    && let Some(subscriber) = subscribers.lock().get_mut(&conn.id)
                {
                    change(subscriber);
                }
            }
            TopicPattern::Kind(kind) => {
                let mut patterns = self.patterns.write();
                if let Some(subscriber) = patterns
                    .kinds
                    .get_mut(kind)
                    .and_then(|subscribers| subscribers.get_mut(&conn.id))
                {
                    change(subscriber);
                }
            }
            TopicPattern::All => {
                if let Some(subscriber) = self.patterns.write().all.get_mut(&conn.id) {
                    change(subscriber);
                }
            }
        }
    }

    /// Removes `conn`'s subscription to `pattern`; whether it had one.
    pub(crate) fn remove(&self, conn: &ConnHandle, pattern: &TopicPattern) -> bool {
        match pattern {
            TopicPattern::Exact(topic) => {
                let mut exact = self.exact.write();
                let Some(subscribers) = exact.get(topic) else {
                    return false;
                };
                let mut subscribers = subscribers.lock();
                let removed = subscribers.remove(&conn.id).is_some();
                if subscribers.is_empty() {
                    drop(subscribers);
                    exact.remove(topic);
                }
                removed
            }
            TopicPattern::Kind(kind) => {
                let mut patterns = self.patterns.write();
                let Some(subscribers) = patterns.kinds.get_mut(kind) else {
                    return false;
                };
                let removed = subscribers.remove(&conn.id).is_some();
                if subscribers.is_empty() {
                    patterns.kinds.remove(kind);
                }
                removed
            }
            TopicPattern::All => self.patterns.write().all.remove(&conn.id).is_some(),
        }
    }

    /// Whether `topic` has a subscriber of its own (patterns aside).
    pub(crate) fn has_subscribers(&self, topic: &Topic) -> bool {
        self.exact
            .read()
            .get(topic)
            .is_some_and(|subscribers| !subscribers.lock().is_empty())
    }

    /// Subscriber counts per topic or pattern.
    pub(crate) fn subscriber_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (topic, subscribers) in self.exact.read().iter() {
            let n = subscribers.lock().len();
            if n > 0 {
                counts.insert(topic.to_string(), n);
            }
        }
        let patterns = self.patterns.read();
        for (kind, subscribers) in &patterns.kinds {
            counts.insert(format!("{kind}:*"), subscribers.len());
        }
        if !patterns.all.is_empty() {
            counts.insert("*".to_owned(), patterns.all.len());
        }
        counts
    }

    /// Offers a control frame about `topic` (a `gap`) to each connection
    /// subscribed to it, exactly or by pattern, whatever its filter, and to
    /// each connection its events reach without a subscription (everyone
    /// for `global`, the user's connections for `user:{id}`): the audience
    /// its events have, each connection once.
    /// A gap that starts a new stream (`restart`, its epoch) is held by a
    /// subscription being read as the announcement it is (see [`Walk`]).
    fn notify_subscribers(&self, topic: &Topic, frame: &OutFrame, restart: Option<&Epoch>) {
        let mut told = HashSet::new();
        self.each_subscriber(topic, |subscriber| {
            if !told.insert(subscriber.conn.id.clone()) {
                return;
            }
            let announced = match (restart, &subscriber.held) {
                (Some(epoch), Some(held)) => {
                    let how = Told {
                        forgotten: true,
                        elsewhere: false,
                    };
                    held.announce(frame, topic, epoch, how)
                }
                _ => false,
            };
            if !announced {
                tell(subscriber, frame);
            }
        });
        self.each_in_audience(topic, |conn| {
            if !told.contains(&conn.id) {
                conn.outbox.push(frame.clone());
            }
        });
    }

    /// Tells each connection subscribed to `topic` that holds another of
    /// its streams that a new one starts under `epoch` (see
    /// [`BrokerHandler::on_stream_started`]): a `gap` `epoch_changed`,
    /// `1..=0`, naming `epoch`. A connection whose read of the topic named
    /// `epoch` holds this stream already and is not told, whatever else it
    /// subscribed to. A connection the topic's events reach without a
    /// subscription (`global`, its user's topic) read none of its streams:
    /// as a subscriber without a seam, it is told only when `forgotten`.
    fn announce_stream(&self, topic: &Topic, epoch: &Epoch, forgotten: bool) {
        let audience = forgotten && Audience::of(topic) != Audience::Subscribers;
        let mut holding = Vec::new();
        let mut stale = Vec::new();
        let mut reading = Vec::new();
        let mut subscribed = HashSet::new();
        self.each_subscriber(topic, |subscriber| {
            if audience {
                subscribed.insert(subscriber.conn.id.clone());
            }
            let told = match subscriber.seams.of(topic) {
                Some(seam) => Some(seam.epoch != *epoch),
                None => forgotten.then_some(true),
            };
            if subscriber.held.is_some() {
                reading.push((subscriber.clone(), told));
                return;
            }
            match told {
                Some(false) => holding.push(subscriber.conn.id.clone()),
                Some(true) => stale.push(subscriber.clone()),
                None => {}
            }
        });
        if stale.is_empty() && reading.is_empty() && !audience {
            return;
        }
        let gap = Gap {
            topic: topic.clone(),
            from_seq: 1,
            to_seq: 0,
            reason: GapReason::EpochChanged,
            epoch: Some(epoch.clone()),
        };
        let frame = OutFrame::control(ServerMessage::Gap(gap).encode());
        // Live subscriptions first: a connection is told through them, as
        // their events reach it (or holds the new stream through them).
        let mut settled: HashSet<Arc<str>> = holding.into_iter().collect();
        for subscriber in &stale {
            if settled.insert(subscriber.conn.id.clone()) {
                tell(subscriber, &frame);
            }
        }
        // A subscription still being read holds the announcement, which
        // its release sends or drops by the stream its read named (only
        // marking where the new stream begins when its connection was told,
        // or holds the new stream, through a live one); one released
        // meanwhile is told by its seam as any other.
        for (subscriber, told) in reading {
            let how = Told {
                forgotten,
                elsewhere: settled.contains(&subscriber.conn.id),
            };
            let held = subscriber
                .held
                .as_ref()
                .is_some_and(|held| held.announce(&frame, topic, epoch, how));
            if held {
                settled.insert(subscriber.conn.id.clone());
            } else if told == Some(true) && settled.insert(subscriber.conn.id.clone()) {
                tell(&subscriber, &frame);
            }
        }
        if audience {
            self.each_in_audience(topic, |conn| {
                if !subscribed.contains(&conn.id) {
                    conn.outbox.push(frame.clone());
                }
            });
        }
    }

    /// Runs `visit` on each connection `topic`'s events reach whatever it
    /// subscribed to: every connection for `global`, the user's for
    /// `user:{id}`, none for other topics (see [`Fanout::fan_out`]).
    fn each_in_audience(&self, topic: &Topic, mut visit: impl FnMut(&ConnHandle)) {
        match Audience::of(topic) {
            Audience::Everyone => self.connections.each(visit),
            Audience::User => {
                if let Some(user) = topic.id() {
                    self.connections.each_of_user(user, &mut visit);
                }
            }
            Audience::Subscribers | Audience::Nobody => {}
        }
    }

    /// Runs `visit` on each subscription that covers `topic`: exact ones
    /// first, then `kind:*`, then `*`.
    fn each_subscriber(&self, topic: &Topic, mut visit: impl FnMut(&Subscriber)) {
        let exact = self.exact.read().get(topic).cloned();
        if let Some(subscribers) = exact {
            subscribers.lock().values().for_each(&mut visit);
        }
        let patterns = self.patterns.read();
        if topic.id().is_some()
            && let Some(by_kind) = patterns.kinds.get(topic.kind())
        {
            by_kind.values().for_each(&mut visit);
        }
        patterns.all.values().for_each(&mut visit);
    }

    /// Pushes `frame` to every connection the publication goes to: the
    /// audience's, then the topic's exact subscribers, `kind:*` and `*`
    /// subscribers whose filter matches, each connection at most once.
    fn fan_out(
        &self,
        publication: &Publication<'_>,
        frame: &OutFrame,
        push: &mut impl FnMut(&ConnHandle),
    ) {
        let event = &publication.event.event;
        if publication.audience == Audience::Nobody {
            return;
        }
        let exact = self.exact.read().get(&event.topic).cloned();
        let exact = exact.as_ref().map(|subscribers| subscribers.lock());
        let patterns = self.patterns.read();
        let by_kind = event
            .topic
            .id()
            .and_then(|_| patterns.kinds.get(event.topic.kind()));
        // A connection the event reaches whatever it subscribed to (everyone,
        // or its user's connections) still gets it through its own
        // subscription to the topic when it has one: held while that
        // subscription's replay is read (so it cannot overtake the replay),
        // and not at all when the read already carried it.
        let mut reach = |conn: &ConnHandle| {
            let id = conn.id.as_ref();
            let own = exact
                .as_ref()
                .and_then(|subscribers| subscribers.get(id))
                .or_else(|| by_kind.and_then(|subscribers| subscribers.get(id)))
                .or_else(|| patterns.all.get(id));
            match own {
                Some(subscriber) if subscriber.seams.cover(publication) => {}
                Some(subscriber) => offer(subscriber, frame, push),
                None => push(conn),
            }
        };
        let user = match publication.audience {
            Audience::Nobody | Audience::Subscribers => None,
            Audience::Everyone => {
                self.connections.each(|conn| reach(conn));
                return;
            }
            Audience::User => {
                let user = event.topic.id();
                if let Some(user) = user {
                    self.connections.each_of_user(user, |conn| reach(conn));
                }
                user
            }
        };
        let reached_user =
            |conn: &ConnHandle| user.is_some_and(|u| conn.user_id.as_deref() == Some(u));
        let exact_matched = |id: &str| {
            exact
                .as_ref()
                .and_then(|subscribers| subscribers.get(id))
                .is_some_and(|s| s.passes(event))
        };
        // A connection whose subscription is responsible for the event (its
        // filter matches) gets it from that subscription only, and not at
        // all when its read already gave it (`seams`).
        if let Some(subscribers) = &exact {
            for subscriber in subscribers.values() {
                if !reached_user(&subscriber.conn)
                    && subscriber.passes(event)
                    && !subscriber.seams.cover(publication)
                {
                    offer(subscriber, frame, push);
                }
            }
        }
        if let Some(by_kind) = by_kind {
            for (id, subscriber) in by_kind {
                if !reached_user(&subscriber.conn)
                    && !exact_matched(id)
                    && subscriber.passes(event)
                    && !subscriber.seams.cover(publication)
                {
                    offer(subscriber, frame, push);
                }
            }
        }
        for (id, subscriber) in &patterns.all {
            let kind_matched = by_kind
                .and_then(|k| k.get(id))
                .is_some_and(|s| s.passes(event));
            if !reached_user(&subscriber.conn)
                && !exact_matched(id)
                && !kind_matched
                && subscriber.passes(event)
                && !subscriber.seams.cover(publication)
            {
                offer(subscriber, frame, push);
            }
        }
    }
}

impl Fanout {
    /// Gives each connection subscribed to a run's topic (exactly, `kind:*`
    /// or `*`) the frames of the run its subscriptions are responsible for,
    /// as [`Fanout::fan_out`] would one publication at a time, at once:
    /// `push` gets the connection and the indices of its frames, in seq
    /// order. A connection is taken whole, with all its ways of being
    /// subscribed to the topic, so that frames several of its subscriptions
    /// are responsible for still reach it in order. Every publication of the
    /// run has the topic of the first and the audience of its subscribers.
    fn fan_out_run(
        &self,
        run: &[Publication<'_>],
        frames: &[OutFrame],
        push: &mut impl FnMut(&ConnHandle, &[usize]),
    ) {
        let Some(first) = run.first() else {
            return;
        };
        let topic = &first.event.event.topic;
        let exact = self.exact.read().get(topic).cloned();
        let exact = exact.as_ref().map(|subscribers| subscribers.lock());
        let patterns = self.patterns.read();
        let by_kind = topic.id().and_then(|_| patterns.kinds.get(topic.kind()));
        let mut chosen = Vec::with_capacity(run.len());
        let mut give = |ways: Ways<'_>| {
            let Some(conn) = ways.iter().flatten().next().map(|s| &s.conn) else {
                return;
            };
            chosen.clear();
            let mut holding = false;
            for (i, publication) in run.iter().enumerate() {
                if let Some(subscriber) = responsible(ways, &publication.event.event)
                    && !subscriber.seams.cover(publication)
                {
                    holding |= subscriber.held.is_some();
                    chosen.push(i);
                }
            }
            if chosen.is_empty() {
                return;
            }
            if !holding {
                push(conn, &chosen);
                return;
            }
            // A subscription whose replay is being read holds its frames:
            // each goes through the subscription responsible for it.
            for &i in &chosen {
                if let Some(subscriber) = responsible(ways, &run[i].event.event) {
                    offer(subscriber, &frames[i], &mut |conn| push(conn, &[i]));
                }
            }
        };
        let is_in = |map: Option<&HashMap<Arc<str>, Subscriber>>, id: &str| {
            map.is_some_and(|map| map.contains_key(id))
        };
        if let Some(subscribers) = &exact {
            for (id, subscriber) in subscribers.iter() {
                let kind = by_kind.and_then(|k| k.get(id));
                give([Some(subscriber), kind, patterns.all.get(id)]);
            }
        }
        if let Some(by_kind) = by_kind {
            for (id, subscriber) in by_kind {
                if !is_in(exact.as_deref(), id) {
                    give([None, Some(subscriber), patterns.all.get(id)]);
                }
            }
        }
        for (id, subscriber) in &patterns.all {
            if !is_in(exact.as_deref(), id) && !is_in(by_kind, id) {
                give([None, None, Some(subscriber)]);
            }
        }
    }
}

/// One connection's subscriptions covering a topic: exact, `kind:*`, `*`.
type Ways<'a> = [Option<&'a Subscriber>; 3];

/// The subscription responsible for `event` on a connection: the first of
/// its exact, `kind:*` and `*` subscriptions whose filter lets it through
/// (the rule [`Fanout::fan_out`] applies, one map at a time).
fn responsible<'a>(ways: Ways<'a>, event: &Event) -> Option<&'a Subscriber> {
    ways.into_iter()
        .flatten()
        .find(|subscriber| subscriber.passes(event))
}

/// The frame a publication's event goes out as.
fn event_frame(publication: &Publication<'_>) -> OutFrame {
    let event = &publication.event.event;
    OutFrame {
        text: publication.event.frame.clone(),
        event: Some(EventMeta {
            topic: event.topic.clone(),
            seq: event.seq,
            priority: event.priority,
            published: publication.stored_at,
        }),
    }
}

/// Hands `frame` to `push` for the subscriber, or holds it while the
/// subscription's replay is read.
fn offer(subscriber: &Subscriber, frame: &OutFrame, push: &mut impl FnMut(&ConnHandle)) {
    match &subscriber.held {
        None => push(&subscriber.conn),
        Some(held) => held.offer(&subscriber.conn, frame, push),
    }
}

/// Offers a control frame to one subscription's connection.
fn tell(subscriber: &Subscriber, frame: &OutFrame) {
    let mut push = |conn: &ConnHandle| {
        conn.outbox.push(frame.clone());
    };
    offer(subscriber, frame, &mut push);
}

/// What the broker calls on this node: publications go to the fan-out,
/// approval changes to whoever waits on them.
#[derive(Debug)]
pub(crate) struct NodeHandler {
    /// This node's id.
    pub(crate) node: String,
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) decisions: Arc<Decisions>,
}

impl BrokerHandler for NodeHandler {
    fn on_publication(&self, publication: &Publication<'_>) -> u32 {
        let fanout = &self.fanout;
        let event = &publication.event.event;
        let frame = event_frame(publication);
        // An approval request reaches someone only where it can be
        // answered: the approvals service counts those (`delivered_to`).
        let asks = (event.event_type == EventType::ApprovalRequested)
            .then(|| event.data.get("user_id").and_then(Value::as_str));
        // Counted locally and added once: no shared atomic per recipient.
        let (mut delivered, mut reached, mut shed, mut written) = (0u64, 0u32, 0u64, 0u64);
        // Written straight away only on a hub keeping up (nothing waits to be
        // written, and no write or fan-out ended within `BUSY`) and never a
        // batch's events, which leave each connection together.
        let pace = fanout.connections.pace();
        let quiet = !publication.together && pace.quiet_at(pace.now());
        let mut ages = fanout.metrics.publish_to_send.tally();
        fanout.fan_out(publication, &frame, &mut |conn: &ConnHandle| {
            let pushed = if publication.together {
                conn.outbox.push_together(frame.clone())
            } else {
                conn.outbox.deliver(&frame, quiet)
            };
            match pushed {
                Pushed::Closed => return,
                Pushed::Shed => {
                    let these = 1 + conn.outbox.take_folded();
                    shed += these;
                    conn.events_shed.fetch_add(these, Relaxed);
                }
                // Counted as the writer counts what it writes.
                Pushed::Written => {
                    written += 1;
                    conn.frames_sent.fetch_add(1, Relaxed);
                    ages.observe(publication.stored_at.elapsed());
                }
                Pushed::Queued => {}
            }
            delivered += 1;
            if asks.is_none_or(|user| conn.may_answer(user)) {
                reached += 1;
            }
        });
        drop(ages);
        pace.fanned_out();
        let metrics = &fanout.metrics;
        metrics.events_delivered.inc_by(delivered);
        if written > 0 {
            metrics.frames_out.inc_by(written);
            metrics.bytes_out.inc_by(written * frame.text.len() as u64);
        }
        if shed > 0 {
            metrics.events_shed.inc_by(shed);
        }
        reached
    }

    /// A run goes to each connection in one push: one lock and one wake-up
    /// per connection instead of one per event, and its writer finds the
    /// whole run queued; as one entry shared by every connection that takes
    /// all of it ([`Outbox::push_shared_run`]), framed once by the first
    /// writer that sends it whole (compressed connections and compat
    /// dialects render it frame by frame), its frames one by one otherwise
    /// ([`Outbox::push_run`]).
    /// Approval requests and events for a user or everyone go one by one.
    fn on_publications(&self, run: &[Publication<'_>]) -> Vec<u32> {
        let one_by_one = |publication: &Publication<'_>| {
            publication.audience != Audience::Subscribers
                || publication.event.event.event_type == EventType::ApprovalRequested
                || run
                    .first()
                    .is_some_and(|first| publication.event.event.topic != first.event.event.topic)
        };
        if run.len() < 2 || run.iter().any(one_by_one) {
            return run.iter().map(|p| self.on_publication(p)).collect();
        }
        let fanout = &self.fanout;
        let whole = Run::new(run.iter().map(event_frame).collect());
        let frames = &whole.frames;
        let mut reached = vec![0u32; run.len()];
        let (mut delivered, mut shed) = (0u64, 0u64);
        fanout.fan_out_run(run, frames, &mut |conn: &ConnHandle, chosen: &[usize]| {
            let pushed = if chosen.len() == frames.len() {
                conn.outbox.push_shared_run(&whole)
            } else {
                conn.outbox.push_run(chosen.iter().map(|&i| &frames[i]))
            };
            for &i in &chosen[..pushed.taken] {
                reached[i] += 1;
            }
            delivered += pushed.taken as u64;
            if pushed.shed > 0 {
                let these = pushed.shed + conn.outbox.take_folded();
                shed += these;
                conn.events_shed.fetch_add(these, Relaxed);
            }
        });
        fanout.connections.pace().fanned_out();
        let metrics = &fanout.metrics;
        metrics.events_delivered.inc_by(delivered);
        if shed > 0 {
            metrics.events_shed.inc_by(shed);
        }
        reached
    }

    fn on_approval(&self, record: &ApprovalRecord) {
        self.decisions.changed(record);
    }

    fn on_gap(&self, gap: &Gap) {
        let frame = OutFrame::control(ServerMessage::Gap(gap.clone()).encode());
        let restart = match gap.reason {
            GapReason::EpochChanged => gap.epoch.as_ref(),
            _ => None,
        };
        self.fanout.notify_subscribers(&gap.topic, &frame, restart);
    }

    fn on_stream_started(&self, topic: &Topic, epoch: &Epoch, forgotten: bool) {
        self.fanout.announce_stream(topic, epoch, forgotten);
    }

    fn on_node_question(&self, question: &NodeQuestion) -> NodeAnswer {
        let fanout = &self.fanout;
        cluster::answer(
            &self.node,
            question,
            &fanout.connections,
            || fanout.subscriber_counts(),
            || fanout.metrics.frames_out.get(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use herald_protocol::Priority;

    use super::*;
    use crate::core::outbox::{Entry, EventMeta, Queued};

    fn run_1() -> Topic {
        Topic::parse("run:1").unwrap()
    }

    /// Event `seq` of the stream `epoch`, its text naming both.
    fn event(epoch: &str, seq: u64) -> OutFrame {
        OutFrame {
            text: format!("{epoch}#{seq}").into(),
            event: Some(EventMeta {
                topic: run_1(),
                seq,
                priority: Priority::Normal,
                published: Instant::now(),
            }),
        }
    }

    fn hold_event(held: &Held, epoch: &str, seq: u64) {
        assert!(held.hold(|| HeldFrame::Frame(event(epoch, seq))));
    }

    fn announce(held: &Held, epoch: &str) {
        let gap = OutFrame::control(format!("gap {epoch}"));
        let told = Told {
            forgotten: false,
            elsewhere: false,
        };
        assert!(held.announce(&gap, &run_1(), &Epoch::new(epoch).unwrap(), told));
    }

    fn sent(conn: &ConnHandle) -> Vec<String> {
        let (entries, _) = conn.outbox.drain();
        entries
            .into_iter()
            .map(|queued| match queued {
                Queued::One(Entry::Frame(frame)) => {
                    String::from_utf8_lossy(&frame.text).into_owned()
                }
                other => panic!("not one frame: {other:?}"),
            })
            .collect()
    }

    /// A connection subscribed again to `run:1`, whose earlier subscription
    /// read it at `earlier`, and whose new read names `read`: the frames
    /// held before the read's early ones go, then `subscribed`, then those
    /// held after, then the release.
    fn subscribed_again(
        earlier: (&str, u64),
        read: Option<(&str, u64)>,
        before: impl FnOnce(&Held),
        after: impl FnOnce(&Held),
    ) -> Vec<String> {
        let seam = |(epoch, seq): (&str, u64)| Seam {
            epoch: Epoch::new(epoch).unwrap(),
            seq,
        };
        let held = Held::new(64, Some(Seams::One(seam(earlier))));
        let conn = ConnHandle::new(None, None, None, None, 64);
        let read = read.map(seam);
        let seam_of = |_: &Topic| read.as_ref();
        before(&held);
        held.send_early(&conn, seam_of);
        conn.outbox.push(OutFrame::control("subscribed"));
        after(&held);
        held.release(&conn, seam_of).unwrap();
        sent(&conn)
    }

    #[test]
    fn a_stream_announced_again_after_the_early_frames_loses_none_of_its_events() {
        let sent = subscribed_again(
            ("e1", 3),
            Some(("e2", 1)),
            |held| {
                hold_event(held, "e1", 4);
                announce(held, "e2");
                hold_event(held, "e2", 1);
                hold_event(held, "e2", 2);
            },
            |held| {
                announce(held, "e2");
                hold_event(held, "e2", 3);
            },
        );
        assert_eq!(
            sent,
            ["e1#4", "gap e2", "e2#1", "subscribed", "e2#2", "e2#3"]
        );
    }

    #[test]
    fn an_older_stream_announced_during_the_read_is_not_told_after_subscribed() {
        let sent = subscribed_again(
            ("e2", 3),
            Some(("e3", 1)),
            |held| {
                hold_event(held, "e2", 4);
                announce(held, "e2");
                announce(held, "e3");
                hold_event(held, "e3", 1);
            },
            |held| hold_event(held, "e3", 2),
        );
        assert_eq!(sent, ["e2#4", "gap e3", "e3#1", "subscribed", "e3#2"]);
    }

    /// A pattern subscribed again whose new read did not cover a topic the
    /// earlier one had read: a new stream of it is announced as the earlier
    /// subscription would have been told, even when the store did not
    /// forget the old one.
    #[test]
    fn a_topic_the_new_read_did_not_cover_is_told_of_a_new_stream_by_the_earlier_seam() {
        let sent = subscribed_again(
            ("e1", 6),
            None,
            |_| {},
            |held| {
                announce(held, "e2");
                hold_event(held, "e2", 1);
            },
        );
        assert_eq!(sent, ["subscribed", "gap e2", "e2#1"]);
    }
}
