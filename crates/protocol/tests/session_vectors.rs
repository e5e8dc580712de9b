//! The session core's behaviour as shared vectors: `session_vectors.json`
//! holds scenarios (inputs with explicit times, and the outputs expected)
//! that this test runs against [`herald_protocol::session::Session`] and the
//! Python client's tests run against its port (`herald._session`), so both
//! clients provably behave the same. The format is described in the file's
//! `format` field; both runners implement exactly these steps.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use herald_protocol::session::{
    Action, Checkpoints, ClosedReason, ConnectionState, Millis, Session, SessionConfig,
    SessionError, SessionEvent,
};
use herald_protocol::{ClientFrame, CloseReason, EventFilter, RequestId, TopicPattern};
use serde_json::{Map, Value, json};

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/session_vectors.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn config(spec: &Value) -> SessionConfig {
    let mut config = SessionConfig::default();
    let Some(spec) = spec.as_object() else {
        return config;
    };
    let ms = |key: &str| {
        spec.get(key)
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
    };
    if let Some(d) = ms("initial_reconnect_delay_ms") {
        config.initial_reconnect_delay = d;
    }
    if let Some(d) = ms("max_reconnect_delay_ms") {
        config.max_reconnect_delay = d;
    }
    if let Some(d) = ms("stable_after_ms") {
        config.stable_after = d;
    }
    if let Some(d) = ms("heartbeat_interval_ms") {
        config.heartbeat_interval = d;
    }
    if let Some(n) = spec.get("max_reconnect_attempts") {
        config.max_reconnect_attempts = n.as_u64().map(|n| u32::try_from(n).unwrap());
    }
    if let Some(n) = spec.get("missed_pongs_allowed").and_then(Value::as_u64) {
        config.missed_pongs_allowed = u32::try_from(n).unwrap();
    }
    if let Some(n) = spec.get("offline_queue_capacity").and_then(Value::as_u64) {
        config.offline_queue_capacity = usize::try_from(n).unwrap();
    }
    if let Some(jitter) = spec.get("jitter").and_then(Value::as_bool) {
        config.jitter = jitter;
    }
    if let Some(n) = spec.get("endpoints").and_then(Value::as_u64) {
        config.endpoints = usize::try_from(n).unwrap();
    }
    if let Some(n) = spec.get("max_checkpoints").and_then(Value::as_u64) {
        config.max_checkpoints = usize::try_from(n).unwrap();
    }
    if let Some(n) = spec.get("max_since_bytes").and_then(Value::as_u64) {
        config.max_since_bytes = usize::try_from(n).unwrap();
    }
    if let Some(n) = spec.get("max_frame_bytes").and_then(Value::as_u64) {
        config.max_frame_bytes = usize::try_from(n).unwrap();
    }
    for key in spec.keys() {
        assert!(
            [
                "initial_reconnect_delay_ms",
                "max_reconnect_delay_ms",
                "stable_after_ms",
                "heartbeat_interval_ms",
                "max_reconnect_attempts",
                "missed_pongs_allowed",
                "offline_queue_capacity",
                "jitter",
                "endpoints",
                "max_checkpoints",
                "max_since_bytes",
                "max_frame_bytes",
            ]
            .contains(&key.as_str()),
            "unknown config key {key}"
        );
    }
    config
}

/// The canonical event frame of the `receive_events` shorthand (its
/// `event_type` and `priority` when the step gives them).
fn event_frame(spec: &Value, seq: u64) -> Value {
    let topic = spec["topic"].as_str().unwrap();
    let event_type = spec["event_type"].as_str().unwrap_or("execution.progress");
    let priority = spec["priority"].as_str().unwrap_or("normal");
    json!({
        "type": "event", "topic": topic, "seq": seq, "id": format!("{topic}-{seq}"),
        "event_type": event_type, "priority": priority,
        "timestamp": 1_729_845_678_123u64, "data": {"seq": seq},
    })
}

fn state_json(state: &ConnectionState) -> Value {
    match state {
        ConnectionState::Connecting => json!("connecting"),
        ConnectionState::Open => json!("open"),
        ConnectionState::Reconnecting {
            attempt,
            delay_ms,
            code,
        } => match code {
            Some(code) => {
                json!({"reconnecting": {"attempt": attempt, "delay_ms": delay_ms, "code": code.0}})
            }
            None => json!({"reconnecting": {"attempt": attempt, "delay_ms": delay_ms}}),
        },
        ConnectionState::Closed { reason } => match reason {
            ClosedReason::Disconnected => json!({"closed": "disconnected"}),
            ClosedReason::Terminal(code) => json!({"closed": {"terminal": code.0}}),
            ClosedReason::AttemptsExhausted { attempts } => {
                json!({"closed": {"attempts_exhausted": attempts}})
            }
        },
    }
}

fn event_json(event: &SessionEvent) -> Value {
    match event {
        SessionEvent::Event(event) => json!({"event": [event.topic.as_str(), event.seq]}),
        SessionEvent::Gap(gap) => json!({"gap": to_json(gap)}),
        SessionEvent::Snapshot(snapshot) => json!({"snapshot": {
            "topic": snapshot.topic.as_str(), "epoch": snapshot.epoch.as_str(),
            "seq": snapshot.seq, "events": snapshot.events.len(),
        }}),
        SessionEvent::StateChanged(state) => json!({"state": state_json(state)}),
        SessionEvent::Error(error) => json!({"error": to_json(error)}),
        SessionEvent::Welcome(welcome) => json!({"welcome": welcome.session_id}),
        SessionEvent::Subscribed(subscribed) => json!({"subscribed": to_json(subscribed)}),
        SessionEvent::ReplayComplete(done) => json!({"replay_complete": to_json(done)}),
        SessionEvent::Ack(ack) => json!({"ack": to_json(&ack.reference)}),
        SessionEvent::FrameDropped(frame) => {
            json!({"frame_dropped": serde_json::from_str::<Value>(&frame.encode()).unwrap()})
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn session_error(error: &SessionError) -> &'static str {
    match error {
        SessionError::Closed => "closed",
        SessionError::NoTopics => "no_topics",
        SessionError::TimeCursor => "time_cursor",
        SessionError::FrameTooLarge { .. } => "frame_too_large",
    }
}

fn patterns(value: &Value) -> Vec<TopicPattern> {
    serde_json::from_value(value.clone()).unwrap()
}

/// Runs one scenario; panics naming the step that went wrong.
fn run(scenario: &Value) {
    let name = scenario["name"].as_str().unwrap();
    let seed = scenario.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let mut session = Session::new(config(&scenario["config"]), seed);
    let mut now = Millis(0);
    for (index, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
        let at = |step: &Value, now: Millis| {
            step.get("at")
                .and_then(Value::as_u64)
                .map_or(now, |t| now.max(Millis(t)))
        };
        let context = format!("{name}, step {index}: {step}");
        let op = step.as_object().unwrap();
        let mut result: Result<(), &str> = Ok(());
        if let Some(spec) = op.get("subscribe") {
            let filter: Option<EventFilter> = spec
                .get("filter")
                .map(|f| serde_json::from_value(f.clone()).unwrap());
            let snapshot = spec
                .get("snapshot")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            result = session
                .subscribe(patterns(&spec["topics"]), filter, snapshot)
                .map_err(|e| session_error(&e));
        } else if let Some(topics) = op.get("unsubscribe") {
            result = session
                .unsubscribe(patterns(topics))
                .map_err(|e| session_error(&e));
        } else if let Some(id) = op.get("end_subscription") {
            let id: RequestId = serde_json::from_value(id.clone()).unwrap();
            result = session.end_subscription(&id).map_err(|e| session_error(&e));
        } else if let Some(frame) = op.get("send") {
            let frame = ClientFrame::decode(&frame.to_string()).unwrap();
            result = session.send_frame(frame).map_err(|e| session_error(&e));
        } else if let Some(frame) = op.get("unsent") {
            let frame = ClientFrame::decode(&frame.to_string()).unwrap();
            session.handle_unsent(frame);
        } else if let Some(t) = op.get("connected") {
            now = now.max(Millis(t.as_u64().unwrap()));
            session.handle_connected(now);
        } else if let Some(frame) = op.get("receive") {
            now = at(step, now);
            result = session
                .handle_text(&frame.to_string(), now)
                .map_err(|_| "decode_error");
        } else if let Some(text) = op.get("receive_text") {
            now = at(step, now);
            result = session
                .handle_text(text.as_str().unwrap(), now)
                .map_err(|_| "decode_error");
        } else if let Some(events) = op.get("receive_events") {
            now = at(step, now);
            for seq in events["seqs"].as_array().unwrap() {
                let frame = event_frame(events, seq.as_u64().unwrap());
                session.handle_text(&frame.to_string(), now).unwrap();
            }
        } else if let Some(code) = op.get("closed") {
            now = at(step, now);
            let reason = code
                .as_u64()
                .map(|c| CloseReason(u16::try_from(c).unwrap()));
            session.handle_closed(reason, now);
        } else if let Some(t) = op.get("timeout") {
            now = now.max(Millis(t.as_u64().unwrap()));
            session.handle_timeout(now);
        } else if let Some(target) = op.get("advance_to") {
            let target = Millis(target.as_u64().unwrap());
            while let Some(deadline) = session.poll_timeout() {
                if deadline > target {
                    break;
                }
                now = now.max(deadline);
                session.handle_timeout(now);
            }
            now = now.max(target);
        } else if let Some(expected) = op.get("fire_deadline") {
            let deadline = session.poll_timeout();
            assert_eq!(
                deadline.map(|d| json!(d.0)).unwrap_or(Value::Null),
                *expected,
                "{context}: deadline"
            );
            now = now.max(deadline.unwrap());
            session.handle_timeout(now);
        } else if op.contains_key("disconnect") {
            session.disconnect();
        } else if op.contains_key("reconnect") {
            session.reconnect();
        } else if let Some(checkpoints) = op.get("restore_checkpoints") {
            let checkpoints: Checkpoints = serde_json::from_value(checkpoints.clone()).unwrap();
            session.restore_checkpoints(checkpoints);
        } else if let Some(expect) = op.get("expect") {
            check(&mut session, expect.as_object().unwrap(), &context);
        } else {
            panic!("{context}: unknown step");
        }
        let expected_error = op.get("error").and_then(Value::as_str);
        assert_eq!(result.err(), expected_error, "{context}: result");
    }
}

fn check(session: &mut Session, expect: &Map<String, Value>, context: &str) {
    for (key, expected) in expect {
        let actual = match key.as_str() {
            "actions" => Value::Array(
                std::iter::from_fn(|| session.poll_action())
                    .map(|action| match action {
                        Action::Connect => json!("connect"),
                        Action::Close { code } => json!({"close": code.0}),
                    })
                    .collect(),
            ),
            "transmit" => Value::Array(
                std::iter::from_fn(|| session.poll_transmit())
                    .map(|frame| serde_json::from_str(&frame.encode()).unwrap())
                    .collect(),
            ),
            "events" => Value::Array(
                std::iter::from_fn(|| session.poll_event())
                    .map(|e| event_json(&e))
                    .collect(),
            ),
            "delivered" => Value::Array(
                std::iter::from_fn(|| session.poll_event())
                    .filter_map(|e| match e {
                        SessionEvent::Event(event) => {
                            Some(json!([event.topic.as_str(), event.seq]))
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            "state" => state_json(session.state()),
            "timeout" => session
                .poll_timeout()
                .map(|t| json!(t.0))
                .unwrap_or(Value::Null),
            "checkpoints" => serde_json::to_value(session.checkpoints()).unwrap(),
            "queued_frames" => json!(session.queued_frames()),
            "dropped_frames" => json!(session.dropped_frames()),
            "session_id" => json!(session.session_id()),
            "endpoint" => json!(session.endpoint()),
            other => panic!("{context}: unknown expectation {other}"),
        };
        assert_eq!(&actual, expected, "{context}: {key}");
    }
}

#[test]
fn the_session_core_passes_every_shared_vector() {
    let vectors = vectors();
    assert_eq!(vectors["version"], json!(1));
    let scenarios = vectors["scenarios"].as_array().unwrap();
    assert!(
        scenarios.len() >= 20,
        "vectors went missing: {}",
        scenarios.len()
    );
    let mut names = std::collections::BTreeSet::new();
    for scenario in scenarios {
        assert!(
            names.insert(scenario["name"].as_str().unwrap()),
            "duplicate scenario name {}",
            scenario["name"]
        );
        run(scenario);
    }
}

#[test]
fn a_wrong_expectation_fails_the_runner() {
    // The runner itself must be able to fail: a vector expecting the wrong
    // first action is caught.
    let scenario = json!({
        "name": "wrong", "steps": [{"expect": {"actions": [{"close": 1000}]}}],
    });
    let outcome = std::panic::catch_unwind(|| run(&scenario));
    assert!(outcome.is_err());
}
