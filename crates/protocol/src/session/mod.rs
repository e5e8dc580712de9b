//! The sans-IO client session: reconnection, heartbeat, resubscription with
//! replay, de-duplication and the offline queue, written once for the native
//! client and the browser client.
//!
//! A [`Session`] never touches a socket or a clock. Its driver feeds it what
//! happened (`handle_*`, each with the current time as [`Millis`] on the
//! driver's monotonic clock) and carries out what it asks (`poll_*`): the
//! shape of `quinn-proto`.
//!
//! # Guarantees
//!
//! - Per topic, [`SessionEvent::Event`]s come in `seq` order, never twice:
//!   an event with `seq <=` the topic's [`Checkpoint`] is dropped (replay
//!   overlapping live traffic, a resent event, an old one-off `replay`).
//! - After every `welcome`, each [`Subscription`] is re-sent with `since`
//!   `{seq, epoch}` for the checkpointed topics it covers, those it names
//!   first, then the most recently advanced, as many as fit in
//!   [`SessionConfig::max_since_bytes`]; the offline queue then flushes in
//!   order. Checkpoints are kept for at most
//!   [`SessionConfig::max_checkpoints`] topics: the named ones, and the most
//!   recently advanced of the others.
//! - A `subscribed` or `snapshot` naming another epoch than the checkpoint's
//!   forgets the checkpoint (the hub sends `gap` `epoch_changed`); an
//!   `epoch_changed` gap up to seq 0 behind the checkpoint (a stream that
//!   changed under a live subscription) or of a topic reached through a
//!   pattern restarts the checkpoint at the gap's `to_seq`, epoch unknown,
//!   so the new stream's first seqs are delivered; an `epoch_changed` gap
//!   that names its `epoch` puts the checkpoint at `to_seq` of that stream,
//!   whatever it was; `gap`s are surfaced and move the checkpoint past them.
//! - A `snapshot` ahead of the checkpoint (it comes before the replay of
//!   what was missed) leaves the checkpoint where it is: the replayed events
//!   up to the snapshot's seq are delivered, except a keyed event the
//!   snapshot holds a newer or the same event of (its state is already
//!   shown; delivering it would go back in time). Unkeyed events (a log
//!   line, a progress message) are never in a snapshot, so none is lost.
//! - A command with a request id (`confirm`, `cancel`, `pause`, `resume`)
//!   is kept once transmitted until the hub answers it (`ack` or `error`
//!   with its id as `ref`): if the connection is lost first, it goes back in
//!   front of the offline queue and is sent again after the next `welcome`.
//!   A write that fails or a link that dies unnoticed loses no answer to an
//!   approval; the price is that a command the hub carried out just before
//!   the link went may be carried out twice (the hub acknowledges the same
//!   user's same answer again; a control request is published again).
//!   At most [`SessionConfig::offline_queue_capacity`] are kept: past it,
//!   the one sent longest ago is not sent again.
//! - Reconnect delays: attempt `n` (1-based since the last stable connection)
//!   waits uniform `[0, min(max, initial * 2^(n-1))]` ms with jitter, the cap
//!   itself without; see [`SessionConfig::reconnect_delay_cap`].
//! - A hub that drains for a deploy sends `system.shutdown` on `global` with
//!   `data.retry_after_ms` ([`RETRY_AFTER_MS`]) before it closes the
//!   connection: when that connection then closes with a code that
//!   reconnects, the first reconnect waits exactly that long (at most
//!   `max_reconnect_delay`), counted as attempt 1, instead of the backoff's
//!   delay. The hint lasts for that one connection only.
//! - Nothing a hub sends makes a session panic.
//!
//! # Driving it
//!
//! ```
//! use herald_protocol::session::{Action, Millis, Session, SessionConfig, SessionEvent};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut session = Session::new(SessionConfig::default(), /* seed */ 42);
//! session.subscribe(vec!["execution:exec_123".parse()?], None, true)?;
//! let now = Millis(0); // the driver's monotonic clock
//!
//! // One turn of the driver loop (run after every input):
//! while let Some(action) = session.poll_action() {
//!     match action {
//!         Action::Connect => { /* open a WebSocket; on open: */ session.handle_connected(now) }
//!         Action::Close { code } => { /* close the socket with code.0; drop it */ let _ = code; }
//!     }
//! }
//! # session.handle_text(r#"{"type":"welcome","session_id":"s1","protocol":1,"heartbeat_ms":30000,"server_version":"0.1.0"}"#, now)?;
//! while let Some(frame) = session.poll_transmit() {
//!     let _text = frame.encode(); // socket.send(text); if that fails:
//!     // session.handle_unsent(frame); session.handle_closed(None, now);
//! }
//! while let Some(event) = session.poll_event() {
//!     match event {
//!         SessionEvent::Event(event) => { /* deliver */ let _ = event; }
//!         SessionEvent::Gap(_) => { /* re-read state */ }
//!         _ => {}
//!     }
//! }
//! // Then wait for whichever comes first: a text frame (`handle_text`), the
//! // socket closing (`handle_closed`), the deadline `poll_timeout()`
//! // (`handle_timeout`), or an application call; and turn the loop again.
//! let _next_deadline = session.poll_timeout();
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`SessionConfig`] and the backoff formula.
//! - `backoff`: attempt counting and the caller-seeded xorshift PRNG for jitter.
//! - [`checkpoint`]: [`Checkpoint`] and the persistable [`Checkpoints`].
//! - [`subscription`]: [`Subscription`], replayed on every connection.
//! - `outbox`: the bounded offline queue.
//! - `unanswered`: commands sent and not yet answered, sent again after a
//!   lost link.
//! - `covered`: what a `snapshot` ahead of the checkpoint holds, while the
//!   replay behind it comes.
//! - [`output`]: [`Millis`], [`ConnectionState`], [`SessionEvent`], [`Action`].
//! - [`error`]: [`SessionError`], what an application call can refuse.

mod backoff;
pub mod checkpoint;
pub mod config;
mod covered;
pub mod error;
mod outbox;
pub mod output;
pub mod subscription;
mod unanswered;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::{CloseReason, DecodeError, ErrorCode};
use crate::event::{Epoch, Event};
use crate::event_type::EventType;
use crate::filter::EventFilter;
use crate::frame::{
    ClientFrame, ClientMessage, ErrorFrame, Gap, GapReason, Heartbeat, RequestId, ServerMessage,
    Since,
};
use crate::topic::{Topic, TopicPattern};

use self::backoff::Backoff;
use self::config::millis;
use self::covered::Covered;
use self::outbox::Outbox;
use self::subscription::{FrameLimits, as_sent, resubscription_order, resumer, sent};
use self::unanswered::Unanswered;

pub use self::checkpoint::{Checkpoint, Checkpoints};
pub use self::config::SessionConfig;
pub use self::error::SessionError;
pub use self::output::{
    Action, ClosedReason, ClosedReport, ConnectionState, Millis, SessionEvent, StateReport,
};
pub use self::subscription::Subscription;

/// The field of a `system.shutdown` event's `data` that says how long to
/// wait, once the hub has closed the connection, before reconnecting.
pub const RETRY_AFTER_MS: &str = "retry_after_ms";

/// The client side of one logical Herald connection, across reconnects.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    state: ConnectionState,
    backoff: Backoff,
    subscriptions: Vec<Subscription>,
    checkpoints: Checkpoints,
    outbox: Outbox,
    transmit: VecDeque<ClientFrame>,
    /// Commands transmitted and not yet answered.
    unanswered: Unanswered,
    events: VecDeque<SessionEvent>,
    actions: VecDeque<Action>,
    session_id: Option<String>,
    /// The frame limit the hub's last `welcome` gave, if it gave one.
    hub_frame_limit: Option<usize>,
    /// Which of the driver's URLs the next [`Action::Connect`] is for.
    endpoint: usize,
}

#[derive(Debug, Clone)]
enum Phase {
    /// `Action::Connect` issued; waiting for `handle_connected`.
    Connecting,
    /// A socket is open.
    Open(Link),
    /// Backing off until `until`.
    Waiting { until: Millis },
    /// Stopped until `reconnect()`.
    Closed,
}

#[derive(Debug, Clone)]
struct Link {
    connected_at: Millis,
    welcomed: bool,
    /// Pings sent since the last frame received.
    unanswered: u32,
    /// When the next heartbeat tick is due (`None`: heartbeat off).
    next_ping: Option<Millis>,
    /// The hub's `retry_after_ms` from its `system.shutdown` notice.
    retry_after: Option<u64>,
    /// The last `gap` surfaced per topic on this link, until an event of the
    /// topic: the same gap again (two subscriptions covering the topic each
    /// resumed with `since`) tells nothing new.
    gaps: BTreeMap<Topic, Gap>,
    /// Checkpointed topics this link's subscriptions cover but could not
    /// resume (their `since` did not fit in the frames): what they missed
    /// is reported as a `trimmed` gap at their first event or `subscribed`.
    unresumed: BTreeSet<Topic>,
    /// Per topic, a `snapshot` received ahead of the checkpoint, while the
    /// replay up to its seq comes.
    snapshots: BTreeMap<Topic, Covered>,
}

impl Session {
    /// A session that starts connecting at once: its first
    /// [`poll_action`](Session::poll_action) is [`Action::Connect`]. `seed`
    /// drives the reconnect jitter (pass something random, e.g. from
    /// `getrandom` or `Math.random()`, so clients do not reconnect in lockstep).
    pub fn new(config: SessionConfig, seed: u64) -> Session {
        let outbox = Outbox::new(config.offline_queue_capacity);
        let unanswered = Unanswered::new(config.offline_queue_capacity);
        let mut session = Session {
            config,
            phase: Phase::Connecting,
            state: ConnectionState::Connecting,
            backoff: Backoff::new(seed),
            subscriptions: Vec::new(),
            checkpoints: Checkpoints::new(),
            outbox,
            transmit: VecDeque::new(),
            unanswered,
            events: VecDeque::new(),
            actions: VecDeque::new(),
            session_id: None,
            hub_frame_limit: None,
            endpoint: 0,
        };
        session.actions.push_back(Action::Connect);
        session
            .events
            .push_back(SessionEvent::StateChanged(ConnectionState::Connecting));
        session
    }

    // ---- inputs from the driver ----

    /// The socket asked for by [`Action::Connect`] is open. Reported at any
    /// other time, it is ignored.
    pub fn handle_connected(&mut self, now: Millis) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        let interval = millis(self.config.heartbeat_interval);
        self.phase = Phase::Open(Link {
            connected_at: now,
            welcomed: false,
            unanswered: 0,
            next_ping: (interval > 0).then(|| now.plus(interval)),
            retry_after: None,
            gaps: BTreeMap::new(),
            unresumed: BTreeSet::new(),
            snapshots: BTreeMap::new(),
        });
    }

    /// A text frame arrived: decodes it and hands it to
    /// [`handle_frame`](Session::handle_frame). Frame types this version
    /// does not know are ignored; a frame that does not decode is returned
    /// as an error. Either way it counts as liveness.
    pub fn handle_text(&mut self, text: &str, now: Millis) -> Result<(), DecodeError> {
        self.heard(now);
        if let Some(message) = ServerMessage::decode(text)? {
            self.handle_frame(message, now);
        }
        Ok(())
    }

    /// A frame arrived on the open socket. Ignored unless a socket is open.
    pub fn handle_frame(&mut self, message: ServerMessage, now: Millis) {
        if !self.heard(now) {
            return;
        }
        match message {
            ServerMessage::Welcome(welcome) => {
                let mut refused = Vec::new();
                if self.mark_welcomed() {
                    self.session_id = Some(welcome.session_id.clone());
                    self.set_state(ConnectionState::Open);
                    self.hub_frame_limit = welcome
                        .max_frame_bytes
                        .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
                    refused = self.refuse_oversized_subscriptions();
                    let limits = self.frame_limits();
                    let mut resumed = BTreeSet::new();
                    let mut left_out = BTreeSet::new();
                    let sent = as_sent(&self.subscriptions, limits.max_frame_bytes);
                    for index in resubscription_order(&sent) {
                        let subscription = &sent[index];
                        let resumes = |topic: &Topic| resumer(&sent, topic) == Some(index);
                        let (frame, missed) =
                            subscription.frame(&self.checkpoints, limits, resumes);
                        if let ClientMessage::Subscribe(subscribe) = &frame.message {
                            resumed.extend(subscribe.since.keys().cloned());
                        }
                        left_out.extend(missed);
                        self.transmit.push_back(frame);
                    }
                    if let Phase::Open(link) = &mut self.phase {
                        link.unresumed = &left_out - &resumed;
                    }
                    let queued: Vec<ClientFrame> = self.outbox.drain().collect();
                    for frame in queued {
                        match self.check_size(&frame) {
                            Ok(()) => self.transmit.push_back(frame),
                            Err(error) => refused.push(too_large(&error, frame.id)),
                        }
                    }
                }
                self.events.push_back(SessionEvent::Welcome(welcome));
                self.events
                    .extend(refused.into_iter().map(SessionEvent::Error));
            }
            ServerMessage::Event(event) => {
                if let (Some(hint), Phase::Open(link)) = (shutdown_hint(&event), &mut self.phase) {
                    link.retry_after = Some(hint);
                }
                if self.take_unresumed(&event.topic)
                    && let Some(checkpoint) = self.checkpoints.get(&event.topic)
                    && event.seq > checkpoint.seq.saturating_add(1)
                {
                    self.events.push_back(SessionEvent::Gap(Gap {
                        topic: event.topic.clone(),
                        from_seq: checkpoint.seq + 1,
                        to_seq: event.seq - 1,
                        reason: GapReason::Trimmed,
                        epoch: None,
                    }));
                }
                let covered = self.covered_by_snapshot(&event);
                if self.checkpoints.accept_event(&event.topic, event.seq) {
                    if let Phase::Open(link) = &mut self.phase {
                        link.gaps.remove(&event.topic);
                    }
                    if !covered && self.wanted(&event) {
                        self.events.push_back(SessionEvent::Event(event));
                    }
                }
            }
            ServerMessage::Subscribed(subscribed) => {
                if let (TopicPattern::Exact(topic), Some(epoch), Some(seq)) =
                    (&subscribed.topic, &subscribed.epoch, subscribed.seq)
                {
                    let missed = self.take_unresumed(topic);
                    let before = self.checkpoints.get(topic).cloned();
                    self.checkpoints.adopt_stream(topic, epoch, seq);
                    if let (true, Some(before)) = (missed, before) {
                        self.report_unresumed(topic, &before, epoch, seq);
                    }
                }
                self.events.push_back(SessionEvent::Subscribed(subscribed));
            }
            ServerMessage::Snapshot(snapshot) => {
                let checkpoint =
                    self.checkpoints
                        .adopt_stream(&snapshot.topic, &snapshot.epoch, snapshot.seq);
                if checkpoint.seq < snapshot.seq
                    && let Phase::Open(link) = &mut self.phase
                {
                    let covered = Covered::of(&snapshot);
                    link.snapshots.insert(snapshot.topic.clone(), covered);
                }
                self.events.push_back(SessionEvent::Snapshot(snapshot));
            }
            ServerMessage::ReplayComplete(done) => {
                if let Phase::Open(link) = &mut self.phase {
                    link.snapshots.remove(&done.topic);
                }
                if done.to_seq >= done.from_seq {
                    self.checkpoints.advance(&done.topic, done.to_seq);
                }
                self.events.push_back(SessionEvent::ReplayComplete(done));
            }
            ServerMessage::Gap(gap) => {
                self.take_unresumed(&gap.topic);
                if let Phase::Open(link) = &mut self.phase {
                    if link.gaps.get(&gap.topic) == Some(&gap) {
                        return;
                    }
                    link.gaps.insert(gap.topic.clone(), gap.clone());
                }
                let exact = TopicPattern::Exact(gap.topic.clone());
                let subscribed_exactly =
                    self.subscriptions.iter().any(|s| s.topics.contains(&exact));
                // An exact topic's resume learns a new stream from its
                // `subscribed` (adopted above) and this gap follows it, up
                // to that stream's seq: the checkpoint is there already. A
                // gap up to 0 behind the checkpoint is the hub telling a
                // live subscription that the stream changed under it (a
                // Redis that lost its data), and a topic reached through a
                // pattern gets no `subscribed` of its own: then this gap is
                // the only sign of the new stream, so the old checkpoint
                // (and epoch) goes, or the new stream's first seqs would
                // pass for duplicates.
                let behind = gap.to_seq == 0
                    && self
                        .checkpoints
                        .get(&gap.topic)
                        .is_some_and(|checkpoint| checkpoint.seq > 0);
                let restarted = behind || !subscribed_exactly;
                if gap.reason == GapReason::EpochChanged
                    && let Some(epoch) = &gap.epoch
                {
                    // The hub names the stream the topic has now.
                    self.checkpoints
                        .restart(&gap.topic, gap.to_seq, Some(epoch.clone()));
                } else if gap.reason == GapReason::EpochChanged && restarted {
                    self.checkpoints.restart(&gap.topic, gap.to_seq, None);
                } else {
                    self.checkpoints.advance(&gap.topic, gap.to_seq);
                }
                self.events.push_back(SessionEvent::Gap(gap));
            }
            ServerMessage::Ping(ping) => {
                let pong = ClientMessage::Pong(Heartbeat {
                    timestamp: ping.timestamp,
                });
                self.transmit.push_back(ClientFrame::new(pong));
            }
            ServerMessage::Pong(_) => {}
            ServerMessage::Ack(ack) => {
                self.unanswered.forget(&ack.reference);
                self.events.push_back(SessionEvent::Ack(ack));
            }
            ServerMessage::Error(error) => {
                if let Some(reference) = &error.reference {
                    self.unanswered.forget(reference);
                }
                self.events.push_back(SessionEvent::Error(error));
            }
        }
        self.trim_checkpoints();
    }

    /// The socket closed, or the connect attempt failed, without the session
    /// asking (`None`: no close frame, e.g. 1006). Reconnects with backoff
    /// unless [`CloseReason::should_reconnect`] says the close is terminal.
    pub fn handle_closed(&mut self, reason: Option<CloseReason>, now: Millis) {
        let hint = match &self.phase {
            Phase::Open(link) => link.retry_after,
            _ => None,
        };
        self.lose_link(now);
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        match reason {
            Some(code) if !code.should_reconnect() => {
                self.close(ClosedReason::Terminal(code));
            }
            _ => self.schedule_reconnect(now, hint, reason),
        }
    }

    /// The deadline from [`poll_timeout`](Session::poll_timeout) passed (calling
    /// it early or late is harmless): reconnects, or runs a heartbeat tick.
    pub fn handle_timeout(&mut self, now: Millis) {
        match &mut self.phase {
            Phase::Waiting { until } if now >= *until => {
                self.phase = Phase::Connecting;
                self.actions.push_back(Action::Connect);
                self.set_state(ConnectionState::Connecting);
            }
            Phase::Open(link) => {
                let Some(due) = link.next_ping else { return };
                if now < due {
                    return;
                }
                if link.unanswered <= self.config.missed_pongs_allowed {
                    link.unanswered = link.unanswered.saturating_add(1);
                    link.next_ping = Some(now.plus(millis(self.config.heartbeat_interval)));
                    // The timestamp is the driver's clock (Unix ms if that is what it passes).
                    let ping = ClientMessage::Ping(Heartbeat {
                        timestamp: Some(now.0),
                    });
                    self.transmit.push_back(ClientFrame::new(ping));
                    return;
                }
                // Dead: missed_pongs_allowed + 1 pings and not a single frame since.
                let code = CloseReason::HEARTBEAT_TIMEOUT;
                self.actions.push_back(Action::Close { code });
                self.handle_closed(Some(code), now);
            }
            _ => {}
        }
    }

    // ---- outputs to the driver ----

    /// The next frame to send on the open socket. A command with a request
    /// id is kept until the hub answers it (see the guarantees above).
    pub fn poll_transmit(&mut self) -> Option<ClientFrame> {
        let frame = self.transmit.pop_front()?;
        self.unanswered.sent(&frame);
        Some(frame)
    }

    /// A frame taken from [`poll_transmit`](Session::poll_transmit) could
    /// not be sent (the write failed, or there was no socket to write it
    /// to): it goes back in front, to be transmitted next, or, once the
    /// link is lost ([`handle_closed`](Session::handle_closed), before or
    /// after this call), to be queued for the next connection like every
    /// unsent frame.
    pub fn handle_unsent(&mut self, frame: ClientFrame) {
        if let Some(id) = &frame.id {
            self.unanswered.forget(id);
        }
        let welcomed = self.is_welcomed();
        // A command kept for its answer was queued when the link went.
        if !welcomed && self.outbox.contains(&frame) {
            return;
        }
        self.transmit.push_front(frame);
        if !welcomed {
            // The link it was taken for is gone: nothing is sent before
            // the next `welcome`.
            self.requeue_unsent();
        }
    }

    /// When to call [`handle_timeout`](Session::handle_timeout) next, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match &self.phase {
            Phase::Waiting { until } => Some(*until),
            Phase::Open(link) => link.next_ping,
            Phase::Connecting | Phase::Closed => None,
        }
    }

    /// The next thing for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The next thing to do with the socket.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- application calls ----

    /// Subscribes to `topics` (exact topics or patterns) and keeps the
    /// subscription across reconnects. Sent now when open, on the next
    /// `welcome` otherwise, with `since` for every checkpointed topic it covers.
    pub fn subscribe(
        &mut self,
        topics: Vec<TopicPattern>,
        filter: Option<EventFilter>,
        snapshot: bool,
    ) -> Result<(), SessionError> {
        self.add_subscription(
            Subscription {
                topics,
                filter,
                snapshot,
                id: None,
            },
            Checkpoints::new(),
        )
    }

    /// Removes `topics` from every subscription and forgets the checkpoints
    /// of topics no subscription covers any more.
    pub fn unsubscribe(&mut self, topics: Vec<TopicPattern>) -> Result<(), SessionError> {
        self.remove_topics(topics, None)
    }

    /// Ends the subscription made with request id `id` (the first, if
    /// several share it); an unknown id does nothing. The topics and
    /// patterns it lists that no other subscription lists are unsubscribed
    /// on the hub; the checkpoints of topics no subscription covers any more
    /// are forgotten. From now on only the others' filters let events
    /// through (the hub, which keeps one filter per topic and connection,
    /// goes on sending what the ended one asked for until the next
    /// connection, and the session holds it back).
    pub fn end_subscription(&mut self, id: &RequestId) -> Result<(), SessionError> {
        let Some(index) = self
            .subscriptions
            .iter()
            .position(|subscription| subscription.id.as_ref() == Some(id))
        else {
            return Ok(());
        };
        let listed_by_others = |pattern: &TopicPattern| {
            self.subscriptions
                .iter()
                .enumerate()
                .any(|(other, s)| other != index && s.topics.contains(pattern))
        };
        let gone: Vec<TopicPattern> = self.subscriptions[index]
            .topics
            .iter()
            .filter(|pattern| !listed_by_others(pattern))
            .cloned()
            .collect();
        let frame = (!gone.is_empty()).then(|| {
            ClientFrame::new(ClientMessage::Unsubscribe(crate::frame::Unsubscribe {
                topics: gone,
            }))
        });
        if let Some(frame) = &frame {
            self.check_size(frame)?;
        }
        let ended = self.subscriptions.remove(index);
        self.forget_uncovered(&ended.topics);
        if let Some(frame) = frame
            && self.is_welcomed()
        {
            self.transmit.push_back(frame);
        }
        Ok(())
    }

    /// Sends a frame now when open, or queues it (bounded) until the next
    /// `welcome`. `subscribe`/`unsubscribe` frames go through
    /// [`subscribe`](Session::subscribe)/[`unsubscribe`](Session::unsubscribe)
    /// (a `since` they carry becomes the checkpoint). Refused when closed.
    pub fn send(&mut self, message: ClientMessage) -> Result<(), SessionError> {
        self.send_frame(ClientFrame::new(message))
    }

    /// [`send`](Session::send) with a request id (the hub answers `ack` or
    /// `error` with it as `ref`). A subscription keeps its id: every
    /// connection's `subscribe` for it carries it, so the hub's answer names
    /// it whenever it is sent.
    pub fn send_frame(&mut self, frame: ClientFrame) -> Result<(), SessionError> {
        match frame.message {
            ClientMessage::Subscribe(subscribe) => {
                let mut since = Checkpoints::new();
                for (topic, cursor) in subscribe.since {
                    let Since::Seq { seq, epoch } = cursor else {
                        return Err(SessionError::TimeCursor);
                    };
                    since.insert(topic, Checkpoint { seq, epoch });
                }
                let subscription = Subscription {
                    topics: subscribe.topics,
                    filter: subscribe.filter,
                    snapshot: subscribe.snapshot,
                    id: frame.id,
                };
                self.add_subscription(subscription, since)
            }
            ClientMessage::Unsubscribe(unsubscribe) => {
                self.remove_topics(unsubscribe.topics, frame.id)
            }
            message => {
                let frame = ClientFrame {
                    id: frame.id,
                    message,
                };
                if !matches!(self.phase, Phase::Closed) {
                    self.check_size(&frame)?;
                }
                match &self.phase {
                    Phase::Closed => Err(SessionError::Closed),
                    Phase::Open(link) if link.welcomed => {
                        self.transmit.push_back(frame);
                        Ok(())
                    }
                    _ => {
                        let dropped = self.outbox.push(frame);
                        self.report_dropped(dropped);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Closes the connection for good (code 1000): no reconnect until
    /// [`reconnect`](Session::reconnect). Subscriptions, checkpoints and the
    /// offline queue are kept.
    pub fn disconnect(&mut self) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if matches!(self.phase, Phase::Open(_) | Phase::Connecting) {
            self.actions.push_back(Action::Close {
                code: CloseReason::NORMAL,
            });
        }
        self.requeue_unsent();
        self.close(ClosedReason::Disconnected);
    }

    /// Connects again now, whatever the state: closes the current socket (code
    /// 1000) if there is one, and starts the backoff from attempt 1.
    pub fn reconnect(&mut self) {
        if matches!(self.phase, Phase::Open(_) | Phase::Connecting) {
            self.actions.push_back(Action::Close {
                code: CloseReason::NORMAL,
            });
        }
        self.requeue_unsent();
        self.backoff.reset();
        self.phase = Phase::Connecting;
        self.actions.push_back(Action::Connect);
        self.set_state(ConnectionState::Connecting);
    }

    // ---- state ----

    /// The connection state last reported.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The subscriptions replayed on every connection.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// The per-topic checkpoints, to persist (they serialize with serde).
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Restores persisted checkpoints (restored entries win over current
    /// ones). Call before subscribing so the first `subscribe` carries them.
    pub fn restore_checkpoints(&mut self, checkpoints: Checkpoints) {
        self.checkpoints.merge(checkpoints);
        self.trim_checkpoints();
    }

    /// Which of the driver's URLs (`0..endpoints`, see
    /// [`SessionConfig::endpoints`]) an [`Action::Connect`] is for.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The current connection's `session_id` from `welcome`.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Frames waiting in the offline queue.
    pub fn queued_frames(&self) -> usize {
        self.outbox.len()
    }

    /// Frames dropped because the offline queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.outbox.dropped()
    }

    // ---- internals ----

    /// Records liveness; false when no socket is open (the frame is stale).
    fn heard(&mut self, _now: Millis) -> bool {
        match &mut self.phase {
            Phase::Open(link) => {
                link.unanswered = 0;
                true
            }
            _ => false,
        }
    }

    /// Marks the link welcomed; false if it already was.
    fn mark_welcomed(&mut self) -> bool {
        match &mut self.phase {
            Phase::Open(link) if !link.welcomed => {
                link.welcomed = true;
                true
            }
            _ => false,
        }
    }

    /// The socket is gone: resets the backoff if it was stable and puts
    /// untransmitted frames back in the queue. Leaves the phase `Connecting`
    /// if there was a socket or an attempt, unchanged otherwise.
    fn lose_link(&mut self, now: Millis) {
        match &self.phase {
            Phase::Open(link) => {
                if now.since(link.connected_at) >= millis(self.config.stable_after) {
                    self.backoff.reset();
                }
                self.session_id = None;
                self.requeue_unsent();
                self.phase = Phase::Connecting;
            }
            Phase::Connecting => self.requeue_unsent(),
            Phase::Waiting { .. } | Phase::Closed => {}
        }
    }

    /// Waits before the next attempt: the hub's hint when it gave one (the
    /// close was planned, so the count starts again), else the backoff's.
    fn schedule_reconnect(&mut self, now: Millis, hint: Option<u64>, code: Option<CloseReason>) {
        let (attempt, delay_ms) = match hint {
            // The close was planned: the hub's hint, counted as attempt 1.
            Some(hint) => (
                self.backoff.restart_at_one(),
                hint.min(millis(self.config.max_reconnect_delay)),
            ),
            None => {
                let attempts = self.backoff.attempts();
                if self
                    .config
                    .max_reconnect_attempts
                    .is_some_and(|max| attempts >= max)
                {
                    self.close(ClosedReason::AttemptsExhausted { attempts });
                    return;
                }
                self.backoff.next_delay(&self.config)
            }
        };
        // The next attempt goes to the next URL: a node that went away (is
        // draining, or cannot be reached) is not waited for.
        self.endpoint = (self.endpoint + 1) % self.config.endpoints.max(1);
        self.phase = Phase::Waiting {
            until: now.plus(delay_ms),
        };
        self.set_state(ConnectionState::Reconnecting {
            attempt,
            delay_ms,
            code,
        });
    }

    fn close(&mut self, reason: ClosedReason) {
        self.phase = Phase::Closed;
        self.session_id = None;
        self.set_state(ConnectionState::Closed { reason });
    }

    /// Commands the hub has not answered, then frames the driver never
    /// took, go back in front of the offline queue, in the order they were
    /// sent; heartbeats and (un)subscribes are dropped (subscriptions are
    /// re-sent from state on the next `welcome`).
    fn requeue_unsent(&mut self) {
        let unsent: Vec<ClientFrame> = self
            .unanswered
            .drain()
            .chain(self.transmit.drain(..))
            .filter(|frame| {
                !matches!(
                    frame.message,
                    ClientMessage::Ping(_)
                        | ClientMessage::Pong(_)
                        | ClientMessage::Subscribe(_)
                        | ClientMessage::Unsubscribe(_)
                )
            })
            .collect();
        let dropped = self.outbox.requeue_front(unsent.into_iter());
        self.report_dropped(dropped);
    }

    fn report_dropped(&mut self, dropped: Vec<ClientFrame>) {
        self.events
            .extend(dropped.into_iter().map(SessionEvent::FrameDropped));
    }

    /// Whether a subscription covering `event`'s topic lets it through with
    /// its own filter: the hub filters by what all the subscriptions sharing
    /// a topic let through, which is wider than each. Broadcasts (`global`)
    /// and users' messages (`user:…`) come to a connection by their
    /// audience, whatever it subscribed to, so events on those topics are
    /// all delivered (one a filter would hold back included); an event no
    /// subscription covers (a `replay` of another topic) was asked for.
    fn wanted(&self, event: &Event) -> bool {
        if event.topic == Topic::global() || event.topic.as_str().starts_with("user:") {
            return true;
        }
        let mut covering = self
            .subscriptions
            .iter()
            .filter(|subscription| subscription.covers(&event.topic))
            .peekable();
        covering.peek().is_none()
            || covering.any(|subscription| {
                subscription
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(event))
            })
    }

    fn is_welcomed(&self) -> bool {
        matches!(&self.phase, Phase::Open(link) if link.welcomed)
    }

    fn add_subscription(
        &mut self,
        subscription: Subscription,
        since: Checkpoints,
    ) -> Result<(), SessionError> {
        if subscription.topics.is_empty() {
            return Err(SessionError::NoTopics);
        }
        self.check_size(&subscription.frame_without_since())?;
        let wide = sent(&self.subscriptions, &subscription, self.frame_limit());
        let resumed = !since.is_empty();
        self.checkpoints.merge(since);
        if self.is_welcomed() {
            let (frame, missed) = wide.frame(&self.checkpoints, self.frame_limits(), |_| true);
            // A topic another subscription covers is live already.
            let missed: Vec<Topic> = missed
                .into_iter()
                .filter(|topic| !self.subscriptions.iter().any(|s| s.covers(topic)))
                .collect();
            if let Phase::Open(link) = &mut self.phase {
                link.unresumed.extend(missed);
            }
            self.transmit.push_back(frame);
        }
        self.subscriptions.push(subscription);
        if resumed {
            self.trim_checkpoints();
        }
        Ok(())
    }

    fn remove_topics(
        &mut self,
        topics: Vec<TopicPattern>,
        id: Option<RequestId>,
    ) -> Result<(), SessionError> {
        if topics.is_empty() {
            return Err(SessionError::NoTopics);
        }
        let frame = ClientFrame {
            id,
            message: ClientMessage::Unsubscribe(crate::frame::Unsubscribe { topics }),
        };
        self.check_size(&frame)?;
        if let ClientMessage::Unsubscribe(unsubscribe) = &frame.message {
            self.forget_topics(&unsubscribe.topics);
        }
        if self.is_welcomed() {
            self.transmit.push_back(frame);
        }
        Ok(())
    }

    /// Removes `topics` from every subscription and forgets the checkpoints
    /// of topics no subscription covers any more.
    fn forget_topics(&mut self, topics: &[TopicPattern]) {
        for subscription in &mut self.subscriptions {
            subscription
                .topics
                .retain(|pattern| !topics.contains(pattern));
        }
        self.subscriptions
            .retain(|subscription| !subscription.topics.is_empty());
        self.forget_uncovered(topics);
    }

    /// Forgets the checkpoints of the topics under `topics` (patterns no
    /// longer subscribed to) that no subscription covers any more.
    fn forget_uncovered(&mut self, topics: &[TopicPattern]) {
        let subscriptions = &self.subscriptions;
        let kept = |topic: &Topic| {
            !topics.iter().any(|removed| removed.matches(topic))
                || subscriptions.iter().any(|s| s.covers(topic))
        };
        self.checkpoints.retain(kept);
        if let Phase::Open(link) = &mut self.phase {
            link.unresumed.retain(kept);
        }
    }

    /// Whether `event` is replayed behind a `snapshot` that holds a newer
    /// or the same event of its key (then it is not delivered). Forgets the
    /// snapshot once the replay has passed it.
    fn covered_by_snapshot(&mut self, event: &Event) -> bool {
        let Phase::Open(link) = &mut self.phase else {
            return false;
        };
        let Some(covered) = link.snapshots.get(&event.topic) else {
            return false;
        };
        if covered.passed_by(event) {
            link.snapshots.remove(&event.topic);
            return false;
        }
        covered.holds(event)
    }

    /// Whether `topic` was left out of this link's resubscriptions and has
    /// not been heard of since (then it no longer is).
    fn take_unresumed(&mut self, topic: &Topic) -> bool {
        match &mut self.phase {
            Phase::Open(link) => link.unresumed.remove(topic),
            _ => false,
        }
    }

    /// An exact topic resubscribed without `since` is at `seq` of `epoch`
    /// while its checkpoint was `before`: what lies between will not come.
    fn report_unresumed(&mut self, topic: &Topic, before: &Checkpoint, epoch: &Epoch, seq: u64) {
        // A checkpoint past the stream's seq is from another stream too
        // (`adopt_stream` restarts it there).
        let same_stream =
            before.epoch.as_ref().is_none_or(|known| known == epoch) && before.seq <= seq;
        let (from_seq, reason) = if same_stream {
            (before.seq + 1, GapReason::Trimmed)
        } else {
            (1, GapReason::EpochChanged)
        };
        if seq >= from_seq {
            self.checkpoints.advance(topic, seq);
            self.events.push_back(SessionEvent::Gap(Gap {
                topic: topic.clone(),
                from_seq,
                to_seq: seq,
                reason,
                epoch: None,
            }));
        }
    }

    /// Refuses a frame the hub would close the connection for (1009).
    fn check_size(&self, frame: &ClientFrame) -> Result<(), SessionError> {
        let bytes = frame.encoded_len();
        let limit = self.frame_limit();
        if bytes > limit {
            return Err(SessionError::FrameTooLarge { bytes, limit });
        }
        Ok(())
    }

    /// The largest frame to send: [`SessionConfig::max_frame_bytes`], or
    /// the hub's own limit from its `welcome` if that is lower.
    fn frame_limit(&self) -> usize {
        let configured = self.config.max_frame_bytes;
        self.hub_frame_limit
            .map_or(configured, |hub| hub.min(configured))
    }

    fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_since_bytes: self.config.max_since_bytes,
            max_frame_bytes: self.frame_limit(),
        }
    }

    /// Removes the subscriptions whose smallest frame is over the frame
    /// limit (the hub's `welcome` gave a lower one than they were checked
    /// against): sent, each would close the connection with 1009 on every
    /// reconnect. Returns a `too_large` refusal for each, naming its id.
    fn refuse_oversized_subscriptions(&mut self) -> Vec<ErrorFrame> {
        let mut refused = Vec::new();
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.subscriptions.len());
        for subscription in std::mem::take(&mut self.subscriptions) {
            match self.check_size(&subscription.frame_without_since()) {
                Ok(()) => kept.push(subscription),
                Err(error) => {
                    refused.push(too_large(&error, subscription.id.clone()));
                    removed.extend(subscription.topics);
                }
            }
        }
        self.subscriptions = kept;
        // The refused subscriptions' topics stay in the others that name
        // them too: only what no subscription covers any more is forgotten.
        self.forget_uncovered(&removed);
        refused
    }

    /// Keeps checkpoints for at most [`SessionConfig::max_checkpoints`]
    /// topics, forgetting the least recently advanced first and never one
    /// a subscription names.
    fn trim_checkpoints(&mut self) {
        let subscriptions = &self.subscriptions;
        self.checkpoints
            .keep_most_recent(self.config.max_checkpoints, |topic| {
                subscriptions.iter().any(|s| s.names(topic))
            });
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state.clone();
            self.events.push_back(SessionEvent::StateChanged(state));
        }
    }
}

/// The refusal of a frame the session did not send because it is over the
/// hub's frame limit, as the hub would have named it.
fn too_large(error: &SessionError, reference: Option<RequestId>) -> ErrorFrame {
    ErrorFrame {
        code: ErrorCode::TooLarge,
        message: format!("not sent: {error}"),
        reference,
    }
}

/// The `retry_after_ms` of a hub's `system.shutdown` notice on `global`.
fn shutdown_hint(event: &Event) -> Option<u64> {
    (event.event_type == EventType::SystemShutdown && event.topic == Topic::global())
        .then(|| {
            event
                .data
                .get(RETRY_AFTER_MS)
                .and_then(serde_json::Value::as_u64)
        })
        .flatten()
}
