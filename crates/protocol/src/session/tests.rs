//! The session under simulated time: a scripted hub, no sockets, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::event::{Epoch, Event, EventId, Label};
use crate::event_type::EventType;
use crate::frame::{
    Gap, GapReason, ReplayComplete, Since, Snapshot, Subscribe, Subscribed, Welcome,
};
use crate::priority::Priority;
use crate::topic::Topic;

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn pattern(name: &str) -> TopicPattern {
    TopicPattern::parse(name).unwrap()
}

fn epoch(name: &str) -> Epoch {
    Epoch::new(name).unwrap()
}

fn event(topic_name: &str, seq: u64) -> Event {
    Event {
        topic: topic(topic_name),
        seq,
        id: EventId::new(format!("{topic_name}-{seq}")).unwrap(),
        event_type: EventType::parse("execution.progress").unwrap(),
        priority: Priority::Normal,
        timestamp: 1_729_845_678_123,
        source: None,
        key: None,
        data: json!({"seq": seq}),
    }
}

fn welcome() -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        session_id: "s1".to_owned(),
        protocol: 1,
        heartbeat_ms: 30_000,
        server_version: "test".to_owned(),
        max_frame_bytes: None,
    })
}

fn subscribed(topic_name: &str, epoch_name: &str, seq: u64) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed {
        topic: pattern(topic_name),
        epoch: Some(epoch(epoch_name)),
        seq: Some(seq),
    })
}

fn no_jitter() -> SessionConfig {
    SessionConfig {
        jitter: false,
        ..SessionConfig::default()
    }
}

/// A session plus a simulated clock.
struct Harness {
    session: Session,
    now: Millis,
}

impl Harness {
    fn new(config: SessionConfig) -> Harness {
        Harness {
            session: Session::new(config, 7),
            now: Millis(0),
        }
    }

    /// Expects `Action::Connect`, opens the socket and sends `welcome`.
    fn open(&mut self) {
        assert_eq!(self.session.poll_action(), Some(Action::Connect));
        self.session.handle_connected(self.now);
        self.session.handle_frame(welcome(), self.now);
        assert_eq!(self.session.state(), &ConnectionState::Open);
    }

    fn recv(&mut self, message: ServerMessage) {
        self.session.handle_frame(message, self.now);
    }

    fn close(&mut self, code: Option<u16>) {
        self.session.handle_closed(code.map(CloseReason), self.now);
    }

    /// Advances the clock by `ms`, firing every deadline on the way.
    fn advance(&mut self, ms: u64) {
        let target = self.now.plus(ms);
        while let Some(deadline) = self.session.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            self.session.handle_timeout(self.now);
        }
        self.now = target;
    }

    /// Fires the pending reconnect, whatever its delay.
    fn fire_reconnect(&mut self) {
        let deadline = self
            .session
            .poll_timeout()
            .expect("a reconnect is scheduled");
        self.now = self.now.max(deadline);
        self.session.handle_timeout(self.now);
    }

    fn transmitted(&mut self) -> Vec<ClientFrame> {
        std::iter::from_fn(|| self.session.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    fn delivered_seqs(&mut self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Event(event) => Some(event.seq),
                _ => None,
            })
            .collect()
    }

    fn states(&mut self) -> Vec<ConnectionState> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::StateChanged(state) => Some(state),
                _ => None,
            })
            .collect()
    }
}

fn subscribe_frames(frames: &[ClientFrame]) -> Vec<&Subscribe> {
    frames
        .iter()
        .filter_map(|f| match &f.message {
            ClientMessage::Subscribe(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn reconnecting(state: &ConnectionState) -> Option<(u32, u64)> {
    match state {
        ConnectionState::Reconnecting {
            attempt, delay_ms, ..
        } => Some((*attempt, *delay_ms)),
        _ => None,
    }
}

// ---- backoff ----

#[test]
fn backoff_without_jitter_doubles_from_initial_and_caps_at_max() {
    let mut h = Harness::new(no_jitter());
    let mut delays = Vec::new();
    let _ = h.actions();
    h.close(None); // the first connect attempt fails
    for _ in 0..8 {
        let state = h.session.state().clone();
        let (attempt, delay) = reconnecting(&state).unwrap();
        assert_eq!(attempt as usize, delays.len() + 1);
        delays.push(delay);
        h.fire_reconnect();
        assert_eq!(h.actions(), vec![Action::Connect]);
        h.close(None);
    }
    assert_eq!(
        delays,
        vec![1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
}

#[test]
fn backoff_with_jitter_stays_within_zero_and_cap() {
    let config = SessionConfig::default();
    for seed in 0..50 {
        let mut session = Session::new(config.clone(), seed);
        let mut now = Millis(0);
        let _ = session.poll_action();
        session.handle_closed(None, now);
        let mut delays = Vec::new();
        for attempt in 1..=12u32 {
            let state = session.state().clone();
            let (reported, delay) = reconnecting(&state).unwrap();
            assert_eq!(reported, attempt);
            assert!(
                delay <= config.reconnect_delay_cap(attempt),
                "{delay} > cap({attempt})"
            );
            assert!(delay <= 30_000);
            delays.push(delay);
            now = session.poll_timeout().unwrap();
            session.handle_timeout(now);
            assert_eq!(session.poll_action(), Some(Action::Connect));
            session.handle_closed(None, now);
        }
        // Jitter actually varies the delays.
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "seed {seed}: {delays:?}"
        );
    }
}

#[test]
fn delay_cap_formula_saturates_instead_of_overflowing() {
    let config = SessionConfig {
        initial_reconnect_delay: Duration::from_millis(u64::MAX / 2),
        max_reconnect_delay: Duration::from_millis(u64::MAX),
        ..SessionConfig::default()
    };
    assert_eq!(config.reconnect_delay_cap(1), u64::MAX / 2);
    assert_eq!(config.reconnect_delay_cap(3), u64::MAX);
    assert_eq!(config.reconnect_delay_cap(u32::MAX), u64::MAX);
    assert_eq!(SessionConfig::default().reconnect_delay_cap(0), 1000);
}

#[test]
fn attempts_stop_after_max_reconnect_attempts_with_closed_state() {
    let mut h = Harness::new(SessionConfig {
        max_reconnect_attempts: Some(3),
        ..no_jitter()
    });
    h.open();
    h.close(Some(1006));
    for _ in 0..3 {
        assert!(reconnecting(h.session.state()).is_some());
        h.fire_reconnect();
        assert_eq!(h.actions(), vec![Action::Connect]);
        h.close(None);
    }
    assert_eq!(
        h.session.state(),
        &ConnectionState::Closed {
            reason: ClosedReason::AttemptsExhausted { attempts: 3 }
        }
    );
    assert_eq!(h.session.poll_timeout(), None);
    assert!(h.actions().is_empty());
    assert_eq!(
        h.session.send(ClientMessage::Ping(Heartbeat::default())),
        Err(SessionError::Closed)
    );
}

#[test]
fn backoff_resets_after_a_stable_connection() {
    let mut h = Harness::new(SessionConfig {
        heartbeat_interval: Duration::ZERO,
        ..no_jitter()
    });
    h.open();
    // Three quick failures: 1000, 2000, 4000.
    h.close(None);
    for expected in [(1, 1000), (2, 2000)] {
        assert_eq!(reconnecting(h.session.state()), Some(expected));
        h.fire_reconnect();
        let _ = h.actions();
        h.close(None);
    }
    assert_eq!(reconnecting(h.session.state()), Some((3, 4000)));
    h.fire_reconnect();
    h.open();
    // An unstable connection (9.9 s) does not reset the count.
    h.advance(9_900);
    h.close(None);
    assert_eq!(reconnecting(h.session.state()), Some((4, 8000)));
    h.fire_reconnect();
    h.open();
    // A stable one (10 s) does.
    h.advance(10_000);
    h.close(None);
    assert_eq!(reconnecting(h.session.state()), Some((1, 1000)));
}

// ---- heartbeat ----

#[test]
fn heartbeat_pings_every_interval_and_answers_server_ping() {
    let mut h = Harness::new(SessionConfig::default());
    h.open();
    assert_eq!(h.session.poll_timeout(), Some(Millis(30_000)));
    h.advance(30_000);
    let frames = h.transmitted();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].encode(), r#"{"action":"ping","timestamp":30000}"#);
    h.recv(ServerMessage::Ping(Heartbeat { timestamp: Some(5) }));
    assert_eq!(
        h.transmitted()[0].encode(),
        r#"{"action":"pong","timestamp":5}"#
    );
}

#[test]
fn heartbeat_death_after_allowed_missed_pongs_closes_and_reconnects() {
    let mut h = Harness::new(no_jitter());
    h.open();
    let _ = h.events();
    // Pings at 30, 60, 90 s go unanswered; at 120 s the connection is dead.
    h.advance(119_999);
    assert_eq!(h.transmitted().len(), 3);
    assert!(h.actions().is_empty());
    assert_eq!(h.session.state(), &ConnectionState::Open);
    h.advance(1);
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            code: CloseReason::HEARTBEAT_TIMEOUT
        }]
    );
    assert_eq!(
        h.states(),
        vec![ConnectionState::Reconnecting {
            attempt: 1,
            delay_ms: 1000,
            code: Some(CloseReason::HEARTBEAT_TIMEOUT),
        }]
    );
    // The driver does not report the close it was asked for; the reconnect happens anyway.
    h.advance(1000);
    assert_eq!(h.actions(), vec![Action::Connect]);
}

#[test]
fn any_received_frame_counts_as_liveness() {
    let mut h = Harness::new(SessionConfig::default());
    h.open();
    h.recv(subscribed("run:r1", "e1", 0));
    for seq in 1..=20 {
        h.advance(29_000);
        // No pong ever, only events.
        h.recv(ServerMessage::Event(event("run:r1", seq)));
    }
    assert!(h.actions().is_empty());
    assert_eq!(h.session.state(), &ConnectionState::Open);
    // Undecodable and unknown frames count too.
    for _ in 0..10 {
        h.advance(29_000);
        assert!(
            h.session
                .handle_text(r#"{"type":"future_frame"}"#, h.now)
                .is_ok()
        );
        h.advance(29_000);
        assert!(h.session.handle_text("not json", h.now).is_err());
    }
    assert!(h.actions().is_empty());
}

#[test]
fn zero_heartbeat_interval_turns_the_heartbeat_off() {
    let mut h = Harness::new(SessionConfig {
        heartbeat_interval: Duration::ZERO,
        ..SessionConfig::default()
    });
    h.open();
    assert_eq!(h.session.poll_timeout(), None);
}

// ---- resubscribe, replay, de-duplication ----

#[test]
fn resubscribe_after_reconnect_carries_since_with_seq_and_epoch_per_topic() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(
            vec![pattern("execution:exec_1"), pattern("run:r1")],
            None,
            false,
        )
        .unwrap();
    h.session
        .subscribe(vec![pattern("crew:*")], None, true)
        .unwrap();
    h.open();
    let first = h.transmitted();
    assert_eq!(subscribe_frames(&first).len(), 2);
    assert!(subscribe_frames(&first).iter().all(|s| s.since.is_empty()));
    h.recv(subscribed("execution:exec_1", "ea", 10));
    h.recv(subscribed("run:r1", "eb", 0));
    h.recv(ServerMessage::Subscribed(Subscribed {
        topic: pattern("crew:*"),
        epoch: None,
        seq: None,
    }));
    h.recv(ServerMessage::Event(event("execution:exec_1", 11)));
    h.recv(ServerMessage::Event(event("execution:exec_1", 12)));
    h.recv(ServerMessage::Event(event("crew:c1", 4)));
    h.close(Some(1001));
    h.fire_reconnect();
    h.open();
    let frames = h.transmitted();
    let subs = subscribe_frames(&frames);
    assert_eq!(subs.len(), 2);
    let expected: BTreeMap<Topic, Since> = [
        (
            topic("execution:exec_1"),
            Since::Seq {
                seq: 12,
                epoch: Some(epoch("ea")),
            },
        ),
        (
            topic("run:r1"),
            Since::Seq {
                seq: 0,
                epoch: Some(epoch("eb")),
            },
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(subs[0].since, expected);
    assert_eq!(
        subs[0].topics,
        vec![pattern("execution:exec_1"), pattern("run:r1")]
    );
    let crew: BTreeMap<Topic, Since> = [(
        topic("crew:c1"),
        Since::Seq {
            seq: 4,
            epoch: None,
        },
    )]
    .into_iter()
    .collect();
    assert_eq!(subs[1].since, crew);
    assert!(subs[1].snapshot);
    assert!(
        frames[0]
            .encode()
            .contains(r#""execution:exec_1":{"seq":12,"epoch":"ea"}"#)
    );
}

#[test]
fn no_duplicate_events_at_the_seam_when_the_hub_replays_overlapping_events() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "e1", 0));
    for seq in 1..=5 {
        h.recv(ServerMessage::Event(event("run:r1", seq)));
    }
    h.close(None);
    h.fire_reconnect();
    h.open();
    // The hub replays from 3 (overlap 3..=5), a live event races in, then replays again.
    h.recv(subscribed("run:r1", "e1", 8));
    for seq in [3, 4, 5, 6, 7, 6, 8, 8, 2, 9] {
        h.recv(ServerMessage::Event(event("run:r1", seq)));
    }
    assert_eq!(h.delivered_seqs(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn epoch_change_forgets_the_checkpoint() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "old", 0));
    for seq in 1..=50 {
        h.recv(ServerMessage::Event(event("run:r1", seq)));
    }
    h.close(None);
    h.fire_reconnect();
    h.open();
    // The hub lost its history: a new epoch whose stream is at 3.
    h.recv(subscribed("run:r1", "new", 3));
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")),
        Some(&Checkpoint {
            seq: 3,
            epoch: Some(epoch("new"))
        })
    );
    h.recv(ServerMessage::Gap(Gap {
        topic: topic("run:r1"),
        from_seq: 1,
        to_seq: 3,
        reason: GapReason::EpochChanged,
        epoch: None,
    }));
    h.recv(ServerMessage::Event(event("run:r1", 4)));
    let seqs = h.delivered_seqs();
    assert_eq!(&seqs[seqs.len() - 1..], &[4]);
    // A seq-only checkpoint beyond the stream's latest seq is also from another stream.
    let mut stale = Checkpoints::new();
    stale.insert(
        topic("run:r2"),
        Checkpoint {
            seq: 99,
            epoch: None,
        },
    );
    h.session.restore_checkpoints(stale);
    h.recv(subscribed("run:r2", "x", 5));
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r2")).unwrap().seq,
        5
    );
}

#[test]
fn a_topic_under_a_pattern_whose_stream_restarted_delivers_the_new_streams_events() {
    // A memory hub restarted: `run:a` (reached through `run:*`, so it gets
    // no `subscribed` of its own) was at seq 4 and is now empty.
    let mut h = Harness::new(no_jitter());
    let mut old = Checkpoints::new();
    old.insert(
        topic("run:a"),
        Checkpoint {
            seq: 4,
            epoch: Some(epoch("old")),
        },
    );
    h.session.restore_checkpoints(old);
    h.session
        .subscribe(vec![pattern("run:*")], None, false)
        .unwrap();
    h.open();
    h.recv(ServerMessage::Subscribed(Subscribed {
        topic: pattern("run:*"),
        epoch: None,
        seq: None,
    }));
    h.recv(ServerMessage::Gap(Gap {
        topic: topic("run:a"),
        from_seq: 1,
        to_seq: 0,
        reason: GapReason::EpochChanged,
        epoch: None,
    }));
    for seq in 1..=5 {
        h.recv(ServerMessage::Event(event("run:a", seq)));
    }
    // Kept against the old stream's checkpoint, 1..=4 would pass for
    // duplicates and only 5 would arrive.
    assert_eq!(h.delivered_seqs(), [1, 2, 3, 4, 5]);
    assert_eq!(
        h.session.checkpoints().get(&topic("run:a")),
        Some(&Checkpoint {
            seq: 5,
            epoch: None
        })
    );
}

#[test]
fn gap_is_surfaced_and_advances_the_checkpoint() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "e1", 10));
    let gap = Gap {
        topic: topic("run:r1"),
        from_seq: 11,
        to_seq: 20,
        reason: GapReason::Shed,
        epoch: None,
    };
    h.recv(ServerMessage::Gap(gap.clone()));
    assert!(h.events().contains(&SessionEvent::Gap(gap)));
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")).unwrap().seq,
        20
    );
    h.recv(ServerMessage::Event(event("run:r1", 15)));
    h.recv(ServerMessage::Event(event("run:r1", 21)));
    assert_eq!(h.delivered_seqs(), vec![21]);
}

#[test]
fn a_snapshot_ahead_of_the_checkpoint_lets_the_replay_deliver_what_it_does_not_hold() {
    let mut h = Harness::new(no_jitter());
    let mut restored = Checkpoints::new();
    restored.insert(
        topic("run:r1"),
        Checkpoint {
            seq: 3,
            epoch: Some(epoch("e1")),
        },
    );
    h.session.restore_checkpoints(restored);
    h.session
        .subscribe(vec![pattern("run:r1")], None, true)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "e1", 7));
    // Same stream: the checkpoint keeps 3 so the replay can fill 4..=7...
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")).unwrap().seq,
        3
    );
    let keyed = |seq: u64, key: &str| {
        let mut event = event("run:r1", seq);
        event.key = Some(Label::new(key).unwrap());
        event
    };
    h.recv(ServerMessage::Snapshot(Snapshot {
        topic: topic("run:r1"),
        epoch: epoch("e1"),
        seq: 7,
        events: vec![keyed(7, "status")],
    }));
    // ...and through the snapshot: the replay delivers what the snapshot
    // does not hold (an unkeyed event), not what it shows newer.
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")).unwrap().seq,
        3
    );
    h.recv(ServerMessage::Event(event("run:r1", 5)));
    h.recv(ServerMessage::Event(keyed(6, "status")));
    h.recv(ServerMessage::Event(event("run:r1", 8)));
    assert_eq!(h.delivered_seqs(), vec![5, 8]);
    h.recv(ServerMessage::ReplayComplete(ReplayComplete {
        topic: topic("run:r1"),
        from_seq: 8,
        to_seq: 12,
    }));
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")).unwrap().seq,
        12
    );
    // "Nothing missed" (to < from) moves nothing.
    h.recv(ServerMessage::ReplayComplete(ReplayComplete {
        topic: topic("run:r1"),
        from_seq: 30,
        to_seq: 29,
    }));
    assert_eq!(
        h.session.checkpoints().get(&topic("run:r1")).unwrap().seq,
        12
    );
    assert!(h.delivered_seqs().is_empty());
}

#[test]
fn checkpoints_round_trip_through_json_and_restore() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "e1", 3));
    h.recv(ServerMessage::Event(event("run:r1", 4)));
    let json = serde_json::to_string(h.session.checkpoints()).unwrap();
    assert_eq!(json, r#"{"run:r1":{"seq":4,"epoch":"e1"}}"#);

    // A reloaded page restores, subscribes, and resumes from 4.
    let mut page = Harness::new(no_jitter());
    page.session
        .restore_checkpoints(serde_json::from_str(&json).unwrap());
    page.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    page.open();
    let frames = page.transmitted();
    assert!(
        frames[0]
            .encode()
            .contains(r#""since":{"run:r1":{"seq":4,"epoch":"e1"}}"#)
    );
    assert!(serde_json::from_str::<Checkpoints>(r#"{"not a topic":{"seq":1}}"#).is_err());
}

#[test]
fn unsubscribe_forgets_uncovered_checkpoints() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("run:r1"), pattern("run:r2")], None, false)
        .unwrap();
    h.open();
    h.recv(subscribed("run:r1", "e1", 3));
    h.recv(subscribed("run:r2", "e2", 3));
    let _ = h.transmitted();
    h.session.unsubscribe(vec![pattern("run:r1")]).unwrap();
    assert_eq!(
        h.transmitted()[0].encode(),
        r#"{"action":"unsubscribe","topics":["run:r1"]}"#
    );
    assert!(h.session.checkpoints().get(&topic("run:r1")).is_none());
    assert!(h.session.checkpoints().get(&topic("run:r2")).is_some());
    assert_eq!(h.session.subscriptions()[0].topics, vec![pattern("run:r2")]);
    assert_eq!(h.session.unsubscribe(vec![]), Err(SessionError::NoTopics));
    assert_eq!(
        h.session.subscribe(vec![], None, false),
        Err(SessionError::NoTopics)
    );
}

#[test]
fn a_time_cursor_is_refused_and_leaves_no_subscription_or_checkpoint() {
    let mut h = Harness::new(no_jitter());
    let subscribe = Subscribe {
        topics: vec![pattern("run:r1")],
        since: [
            (topic("run:r1"), Since::seq(3)),
            (topic("run:r2"), Since::time_ms(1_729_845_678_123)),
        ]
        .into_iter()
        .collect(),
        ..Subscribe::default()
    };
    assert_eq!(
        h.session.send(ClientMessage::Subscribe(subscribe)),
        Err(SessionError::TimeCursor)
    );
    assert!(h.session.subscriptions().is_empty());
    assert!(h.session.checkpoints().is_empty());
}

// ---- offline queue ----

fn cancel(n: u64) -> ClientMessage {
    ClientMessage::Cancel(crate::frame::Control {
        task_id: Some(Label::new(format!("t{n}")).unwrap()),
        run_id: None,
        reason: None,
    })
}

#[test]
fn offline_queue_is_bounded_and_flushed_in_order_after_resubscribe() {
    let mut h = Harness::new(SessionConfig {
        offline_queue_capacity: 3,
        ..no_jitter()
    });
    h.session
        .subscribe(vec![pattern("run:r1")], None, false)
        .unwrap();
    for n in 1..=5 {
        h.session.send(cancel(n)).unwrap();
    }
    assert_eq!(h.session.queued_frames(), 3);
    assert_eq!(h.session.dropped_frames(), 2);
    let dropped: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::FrameDropped(frame) => Some(frame.message),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, vec![cancel(1), cancel(2)]);
    // Nothing goes out before welcome.
    assert_eq!(h.session.poll_action(), Some(Action::Connect));
    h.session.handle_connected(h.now);
    h.session.send(cancel(6)).unwrap();
    assert!(h.transmitted().is_empty());
    h.recv(welcome());
    let messages: Vec<_> = h.transmitted().into_iter().map(|f| f.message).collect();
    assert!(matches!(messages[0], ClientMessage::Subscribe(_)));
    assert_eq!(&messages[1..], &[cancel(4), cancel(5), cancel(6)]);
    // Open: sent directly.
    h.session.send(cancel(7)).unwrap();
    assert_eq!(h.transmitted()[0].message, cancel(7));
}

#[test]
fn frames_not_yet_transmitted_survive_a_disconnect() {
    let mut h = Harness::new(no_jitter());
    h.open();
    h.session.send(cancel(1)).unwrap();
    h.session.send(cancel(2)).unwrap();
    h.close(None);
    assert_eq!(h.session.queued_frames(), 2);
    h.fire_reconnect();
    h.open();
    let messages: Vec<_> = h.transmitted().into_iter().map(|f| f.message).collect();
    assert_eq!(messages, vec![cancel(1), cancel(2)]);
}

// ---- closing ----

#[test]
fn terminal_close_codes_stop_reconnecting() {
    for code in [1000, 1002, 1007, 1008, 1009, 4500, 4503, 4999] {
        let mut h = Harness::new(no_jitter());
        h.open();
        h.close(Some(code));
        assert_eq!(
            h.session.state(),
            &ConnectionState::Closed {
                reason: ClosedReason::Terminal(CloseReason(code))
            }
        );
        h.advance(600_000);
        assert!(h.actions().is_empty(), "code {code}");
    }
    for code in [1001, 1006, 1011, 1013, 4000, 4001, 4029] {
        let mut h = Harness::new(no_jitter());
        h.open();
        h.close(Some(code));
        assert!(reconnecting(h.session.state()).is_some(), "code {code}");
    }
}

#[test]
fn disconnect_does_not_reconnect_until_asked() {
    let mut h = Harness::new(no_jitter());
    h.open();
    h.session.disconnect();
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            code: CloseReason::NORMAL
        }]
    );
    assert_eq!(
        h.session.state(),
        &ConnectionState::Closed {
            reason: ClosedReason::Disconnected
        }
    );
    // The socket's close arriving afterwards changes nothing.
    h.close(Some(1006));
    h.advance(600_000);
    assert!(h.actions().is_empty());
    assert_eq!(h.session.send(cancel(1)), Err(SessionError::Closed));
    h.session.reconnect();
    h.open();
}

#[test]
fn reconnect_skips_the_backoff_and_restarts_the_count() {
    let mut h = Harness::new(no_jitter());
    h.open();
    h.close(None);
    h.fire_reconnect();
    let _ = h.actions();
    h.close(None);
    assert_eq!(reconnecting(h.session.state()), Some((2, 2000)));
    h.session.reconnect();
    h.open();
    h.close(None);
    assert_eq!(reconnecting(h.session.state()), Some((1, 1000)));
}

#[test]
fn nothing_a_hub_sends_panics_or_counts_when_not_open() {
    let mut h = Harness::new(no_jitter());
    // Frames before the socket is open are ignored.
    h.recv(ServerMessage::Event(event("run:r1", 1)));
    assert!(h.session.checkpoints().is_empty());
    h.open();
    for text in [
        "",
        "[]",
        "{}",
        r#"{"type":"event"}"#,
        r#"{"type":"subscribed","topic":"run:r1","epoch":null,"seq":null}"#,
        r#"{"type":"gap","topic":"run:r1","from_seq":18446744073709551615,"to_seq":18446744073709551615,"reason":"trimmed"}"#,
        r#"{"type":"welcome","session_id":"again","protocol":99,"heartbeat_ms":0,"server_version":""}"#,
    ] {
        let _ = h.session.handle_text(text, h.now);
    }
    assert_eq!(h.session.session_id(), Some("s1"));
    h.recv(ServerMessage::Event(event("run:r1", u64::MAX)));
    assert!(h.delivered_seqs().is_empty());
}

// ---- randomized schedule ----

#[derive(Debug, Clone)]
enum Step {
    Publish(usize),
    Drop,
    ResendOld(usize, u64),
    Reset(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize).prop_map(Step::Publish),
        1 => Just(Step::Drop),
        1 => (0..2usize, 0..10u64).prop_map(|(t, back)| Step::ResendOld(t, back)),
        1 => (0..2usize).prop_map(Step::Reset),
        2 => (0..70_000u64).prop_map(Step::Wait),
    ]
}

/// A hub with two topics, each a stream (`epoch`, events 1..=latest).
struct FakeHub {
    topics: [Topic; 2],
    epochs: [u32; 2],
    latest: [u64; 2],
    subscribed: bool,
    overlap: u64,
}

impl FakeHub {
    fn stream(&self, i: usize) -> Epoch {
        epoch(&format!("e{}", self.epochs[i]))
    }

    /// Answers a `subscribe` like the contract says, replaying `overlap`
    /// already-seen events too (a sloppy hub the client must tolerate).
    fn answer(&mut self, subscribe: &Subscribe) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        for i in 0..2 {
            let topic = self.topics[i].clone();
            out.push(ServerMessage::Subscribed(Subscribed {
                topic: topic.clone().into(),
                epoch: Some(self.stream(i)),
                seq: Some(self.latest[i]),
            }));
            if let Some(Since::Seq { seq: since, epoch }) = subscribe.since.get(&topic) {
                let since = *since;
                let same =
                    epoch.as_ref().is_none_or(|e| *e == self.stream(i)) && since <= self.latest[i];
                if same {
                    let from = since.saturating_sub(self.overlap).max(1);
                    for seq in from..=self.latest[i] {
                        out.push(ServerMessage::Event(event(topic.as_str(), seq)));
                    }
                } else {
                    out.push(ServerMessage::Gap(Gap {
                        topic: topic.clone(),
                        from_seq: 1,
                        to_seq: self.latest[i],
                        reason: GapReason::EpochChanged,
                        epoch: None,
                    }));
                }
                out.push(ServerMessage::ReplayComplete(ReplayComplete {
                    topic,
                    from_seq: since + 1,
                    to_seq: self.latest[i],
                }));
            }
        }
        self.subscribed = true;
        out
    }
}

proptest! {
    // Deterministic and self-contained: no regression files written next to the sources.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn randomized_schedule_never_delivers_a_duplicate_or_out_of_order_seq(
        steps in proptest::collection::vec(step(), 1..120),
        overlap in 0..4u64,
        seed in any::<u64>(),
    ) {
        let config = SessionConfig { max_reconnect_attempts: None, ..SessionConfig::default() };
        let mut session = Session::new(config, seed);
        let mut now = Millis(0);
        let mut hub = FakeHub {
            topics: [topic("run:a"), topic("run:b")],
            epochs: [0, 0],
            latest: [0, 0],
            subscribed: false,
            overlap,
        };
        session.subscribe(vec![pattern("run:a"), pattern("run:b")], None, false).unwrap();
        // Per topic: the epoch the client is on, and the last seq delivered in it.
        let mut seen: BTreeMap<Topic, (u32, u64)> = BTreeMap::new();
        let mut open = false;

        for step in steps.into_iter().chain([Step::Wait(60_000), Step::Wait(60_000)]) {
            match step {
                Step::Publish(i) => {
                    hub.latest[i] += 1;
                    if open && hub.subscribed {
                        session.handle_frame(ServerMessage::Event(event(hub.topics[i].as_str(), hub.latest[i])), now);
                    }
                }
                Step::Drop => {
                    if open {
                        session.handle_closed(Some(CloseReason(1006)), now);
                        open = false;
                        hub.subscribed = false;
                    }
                }
                Step::ResendOld(i, back) => {
                    if open && hub.subscribed && hub.latest[i] > 0 {
                        let seq = hub.latest[i].saturating_sub(back).max(1);
                        session.handle_frame(ServerMessage::Event(event(hub.topics[i].as_str(), seq)), now);
                    }
                }
                Step::Reset(i) => {
                    hub.epochs[i] += 1;
                    hub.latest[i] = 0;
                    if open {
                        // Losing history drops the connections too.
                        session.handle_closed(Some(CloseReason(1011)), now);
                        open = false;
                        hub.subscribed = false;
                    }
                }
                Step::Wait(ms) => {
                    let target = now.plus(ms);
                    while let Some(deadline) = session.poll_timeout() {
                        if deadline > target { break; }
                        now = now.max(deadline);
                        session.handle_timeout(now);
                        // The driver connects at once; the hub answers pings.
                        while let Some(action) = session.poll_action() {
                            match action {
                                Action::Connect => {
                                    session.handle_connected(now);
                                    session.handle_frame(welcome(), now);
                                    open = true;
                                }
                                Action::Close { .. } => { open = false; hub.subscribed = false; }
                            }
                        }
                    }
                    now = target;
                }
            }
            // Drain: answer subscribes, check deliveries.
            loop {
                let mut replies = Vec::new();
                while let Some(frame) = session.poll_transmit() {
                    if let ClientMessage::Subscribe(subscribe) = &frame.message {
                        replies.extend(hub.answer(subscribe));
                    }
                    if matches!(frame.message, ClientMessage::Ping(_)) {
                        replies.push(ServerMessage::Pong(Heartbeat::default()));
                    }
                }
                while let Some(action) = session.poll_action() {
                    match action {
                        Action::Connect => {
                            session.handle_connected(now);
                            session.handle_frame(welcome(), now);
                            open = true;
                        }
                        Action::Close { .. } => { open = false; hub.subscribed = false; }
                    }
                }
                while let Some(event) = session.poll_event() {
                    match event {
                        SessionEvent::Subscribed(Subscribed { topic: TopicPattern::Exact(topic), seq: Some(seq), .. }) => {
                            let i = hub.topics.iter().position(|t| *t == topic).unwrap();
                            // A new stream (or the first subscription) starts at the hub's latest seq.
                            let entry = seen.entry(topic).or_insert((hub.epochs[i], seq));
                            if entry.0 != hub.epochs[i] {
                                *entry = (hub.epochs[i], seq);
                            }
                        }
                        SessionEvent::Gap(gap) => {
                            if let Some(entry) = seen.get_mut(&gap.topic) {
                                entry.1 = entry.1.max(gap.to_seq);
                            }
                        }
                        SessionEvent::Event(event) => {
                            let entry = seen.get_mut(&event.topic).unwrap();
                            prop_assert!(event.seq > entry.1, "{} seq {} after {}", event.topic, event.seq, entry.1);
                            // Nothing missing either: the hub retains everything.
                            prop_assert_eq!(event.seq, entry.1 + 1);
                            entry.1 = event.seq;
                        }
                        _ => {}
                    }
                }
                if replies.is_empty() { break; }
                for reply in replies {
                    session.handle_frame(reply, now);
                }
            }
        }
    }
}

/// A dashboard following `execution:*` for a long time sees a topic per
/// execution: the session keeps checkpoints for the most recent ones only,
/// and its resubscription stays below the hub's default 64 KiB frame limit
/// (over it the hub closes with 1009, which ends the session), resuming the
/// most recently advanced topics, even with the longest topics and seqs.
#[test]
fn a_resubscription_after_thousands_of_topics_under_a_pattern_stays_below_the_frame_limit() {
    let mut h = Harness::new(no_jitter());
    h.session
        .subscribe(vec![pattern("execution:*")], None, false)
        .unwrap();
    h.open();
    let longest = |i: usize| format!("execution:{i:0>128}");
    let topics = 10_000;
    for i in 0..topics {
        let mut event = event("execution:e", u64::MAX);
        event.topic = topic(&longest(i));
        h.recv(ServerMessage::Event(event));
    }
    let config = SessionConfig::default();
    let kept = h.session.checkpoints().len();
    assert!(kept <= config.max_checkpoints, "{kept} checkpoints");
    assert!(kept > config.max_checkpoints * 7 / 8, "{kept} checkpoints");
    assert!(h.session.checkpoints().get(&topic(&longest(0))).is_none());
    h.transmitted();
    h.close(Some(1001));
    h.fire_reconnect();
    h.open();
    let frames = h.transmitted();
    let [frame] = frames.as_slice() else {
        panic!("one subscribe frame, got {frames:?}");
    };
    assert!(
        frame.encode().len() < 64 * 1024,
        "{} bytes",
        frame.encode().len()
    );
    let resumed = &subscribe_frames(&frames)[0].since;
    assert!(resumed.len() > 100, "only {} topics resume", resumed.len());
    let newest = (topics - resumed.len()..topics).map(|i| topic(&longest(i)));
    assert!(newest.into_iter().all(|t| resumed.contains_key(&t)));
}

/// A frame the hub would close the connection for (1009) is refused when
/// the application makes it, and the connection and every other
/// subscription carry on: sent, a subscription's frame would close the
/// connection again on every reconnect.
#[test]
fn a_frame_over_the_hubs_limit_is_refused_and_the_connection_carries_on() {
    let mut h = Harness::new(SessionConfig {
        max_frame_bytes: 1024,
        ..no_jitter()
    });
    h.session
        .subscribe(vec![pattern("execution:a")], None, false)
        .unwrap();
    h.open();
    h.transmitted();
    let many: Vec<TopicPattern> = (0..100)
        .map(|i| pattern(&format!("execution:{i:0>8}")))
        .collect();
    let refused = h.session.subscribe(many.clone(), None, false);
    assert!(
        matches!(refused, Err(SessionError::FrameTooLarge { bytes, limit: 1024 }) if bytes > 1024),
        "{refused:?}"
    );
    assert!(matches!(
        h.session.unsubscribe(many),
        Err(SessionError::FrameTooLarge { .. })
    ));
    let confirm = ClientMessage::Confirm(crate::frame::Confirm {
        callback_id: "cb-1".parse().unwrap(),
        proceed: true,
        feedback: Some("x".repeat(2000)),
    });
    assert!(matches!(
        h.session.send(confirm),
        Err(SessionError::FrameTooLarge { .. })
    ));
    assert!(h.transmitted().is_empty());
    assert_eq!(h.session.subscriptions().len(), 1);
    assert_eq!(h.session.state(), &ConnectionState::Open);
    // A frame at the limit is sent.
    let fits: Vec<TopicPattern> = (0..10)
        .map(|i| pattern(&format!("execution:{i:0>8}")))
        .collect();
    h.session.subscribe(fits, None, false).unwrap();
    let frames = h.transmitted();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].encode().len() <= 1024);
    assert_eq!(frames[0].encoded_len(), frames[0].encode().len());
}

/// A resubscription resumes as many topics as fit in the hub's frame limit
/// when that is tighter than `max_since_bytes`.
#[test]
fn a_resubscriptions_since_is_cut_to_the_hubs_frame_limit() {
    let mut h = Harness::new(SessionConfig {
        max_frame_bytes: 2048,
        ..no_jitter()
    });
    h.session
        .subscribe(vec![pattern("execution:*")], None, false)
        .unwrap();
    h.open();
    for i in 0..200 {
        let mut event = event("execution:e", 7);
        event.topic = topic(&format!("execution:{i:0>40}"));
        h.recv(ServerMessage::Event(event));
    }
    h.transmitted();
    h.close(Some(1001));
    h.fire_reconnect();
    h.open();
    let frames = h.transmitted();
    let [frame] = frames.as_slice() else {
        panic!("one subscribe frame, got {frames:?}");
    };
    let bytes = frame.encode().len();
    assert!(bytes <= 2048, "{bytes} bytes");
    let resumed = subscribe_frames(&frames)[0].since.len();
    assert!((10..200).contains(&resumed), "{resumed} topics resume");
}

/// `reconnecting` says how the last connection ended, so an application
/// can tell an expired token (4001) from a network failure.
#[test]
fn reconnecting_carries_the_close_code_the_connection_ended_with() {
    let mut h = Harness::new(no_jitter());
    h.open();
    h.events();
    h.close(Some(4001));
    assert_eq!(
        h.states(),
        vec![ConnectionState::Reconnecting {
            attempt: 1,
            delay_ms: 1000,
            code: Some(CloseReason::TOKEN_EXPIRED),
        }]
    );
    h.fire_reconnect();
    assert_eq!(h.session.poll_action(), Some(Action::Connect));
    // The next attempt fails before a socket opens: no close code.
    h.close(None);
    assert_eq!(
        h.states(),
        vec![
            ConnectionState::Connecting,
            ConnectionState::Reconnecting {
                attempt: 2,
                delay_ms: 2000,
                code: None,
            }
        ]
    );
    assert_eq!(
        StateReport::from(&ConnectionState::Reconnecting {
            attempt: 1,
            delay_ms: 1000,
            code: Some(CloseReason::TOKEN_EXPIRED),
        }),
        serde_json::from_value::<StateReport>(
            json!({"state": "reconnecting", "attempt": 1, "delay": 1000, "code": 4001})
        )
        .unwrap()
    );
    let without = serde_json::to_value(StateReport::from(&ConnectionState::Reconnecting {
        attempt: 2,
        delay_ms: 2000,
        code: None,
    }))
    .unwrap();
    assert_eq!(
        without,
        json!({"state": "reconnecting", "attempt": 2, "delay": 2000})
    );
}

proptest! {
    /// `since_bytes` never counts less than the entry takes in the frame,
    /// so a frame's `since` never outgrows `max_since_bytes`.
    #[test]
    fn since_bytes_bounds_what_a_checkpoint_takes_in_a_subscribe_frame(
        id in "[a-z0-9_.@-]{1,128}",
        seq in any::<u64>(),
        epoch_name in proptest::option::of("[a-f0-9]{1,64}"),
    ) {
        let topic = topic(&format!("execution:{id}"));
        let checkpoint = Checkpoint { seq, epoch: epoch_name.map(|e| epoch(&e)) };
        let alone = |since: BTreeMap<Topic, Since>| {
            ClientFrame::new(ClientMessage::Subscribe(Subscribe {
                topics: vec![pattern("execution:*")],
                since,
                ..Subscribe::default()
            }))
            .encode()
            .len()
        };
        let other = (self::topic("zz:other"), Since::Seq { seq: 0, epoch: None });
        let with = alone(BTreeMap::from([other.clone(), (topic.clone(), checkpoint.since())]));
        let without = alone(BTreeMap::from([other]));
        prop_assert!(with - without <= checkpoint::since_bytes(&topic, &checkpoint));
    }
}
