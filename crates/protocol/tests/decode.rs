//! How client frames decode: the seeds' frames, the aliases, and every failure
//! mapped to the right [`ErrorCode`] with a message that says what to change.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_protocol::event::CallbackId;
use herald_protocol::frame::{Confirm, Heartbeat, RequestState, Since, Subscribe, Unsubscribe};
use herald_protocol::{
    ClientFrame, ClientMessage, ErrorCode, FrameError, RequestId, ServerMessage, Topic,
    TopicPattern,
};

fn decode(text: &str) -> ClientMessage {
    match ClientFrame::decode(text) {
        Ok(frame) => frame.message,
        Err(error) => panic!("{text} does not decode: {error}"),
    }
}

fn fail(text: &str) -> FrameError {
    match ClientFrame::decode(text) {
        Ok(frame) => panic!("{text} decoded to {frame:?}"),
        Err(error) => error,
    }
}

fn topics(names: &[&str]) -> Vec<TopicPattern> {
    names
        .iter()
        .map(|n| TopicPattern::parse(n).unwrap())
        .collect()
}

// ---- Replay cursors ----

#[test]
fn since_takes_a_seq_a_seq_with_its_epoch_or_a_time() {
    let ClientMessage::Subscribe(subscribe) = decode(
        r#"{"action":"subscribe","topics":["run:*"],"since":{"run:a":4,
            "run:b":{"seq":5,"epoch":"e1"},"run:c":{"time_ms":1729845678123}}}"#,
    ) else {
        panic!("not a subscribe");
    };
    let cursor = |name: &str| subscribe.since[&Topic::parse(name).unwrap()].clone();
    assert_eq!(cursor("run:a"), Since::seq(4));
    assert_eq!(
        cursor("run:b"),
        Since::in_epoch(5, herald_protocol::Epoch::new("e1").unwrap())
    );
    assert_eq!(cursor("run:c"), Since::time_ms(1_729_845_678_123));
    assert_eq!(
        serde_json::to_string(&subscribe.since).unwrap(),
        r#"{"run:a":4,"run:b":{"seq":5,"epoch":"e1"},"run:c":{"time_ms":1729845678123}}"#
    );
}

// ---- The seed documents' frames ----

#[test]
fn seed_ping_with_millisecond_timestamp_is_a_ping() {
    assert_eq!(
        decode(r#"{"action":"ping","timestamp":1729845678123}"#),
        ClientMessage::Ping(Heartbeat {
            timestamp: Some(1_729_845_678_123)
        })
    );
}

#[test]
fn seed_ping_with_float_seconds_becomes_milliseconds() {
    assert_eq!(
        decode(r#"{"action":"ping","timestamp":1729845678.5}"#),
        ClientMessage::Ping(Heartbeat {
            timestamp: Some(1_729_845_678_500)
        })
    );
}

#[test]
fn seed_type_pong_is_a_pong() {
    assert_eq!(
        decode(r#"{"type":"pong"}"#),
        ClientMessage::Pong(Heartbeat::default())
    );
}

#[test]
fn seed_type_refresh_is_request_state_for_every_subscribed_topic() {
    assert_eq!(
        decode(r#"{"type":"refresh"}"#),
        ClientMessage::RequestState(RequestState { topics: None })
    );
    assert_eq!(
        decode(r#"{"action":"refresh"}"#),
        ClientMessage::RequestState(RequestState { topics: None })
    );
}

#[test]
fn seed_subscriptions_is_an_alias_of_topics() {
    assert_eq!(
        decode(r#"{"action":"subscribe","subscriptions":["execution_123","task_updates"]}"#),
        ClientMessage::Subscribe(Subscribe {
            topics: topics(&["execution_123", "task_updates"]),
            ..Subscribe::default()
        })
    );
    // Wherever a frame takes `topics`.
    assert_eq!(
        decode(r#"{"action":"unsubscribe","subscriptions":["run:a"]}"#),
        ClientMessage::Unsubscribe(Unsubscribe {
            topics: topics(&["run:a"]),
        })
    );
    for action in ["request_state", "refresh"] {
        assert_eq!(
            decode(&format!(
                r#"{{"action":"{action}","subscriptions":["run:a"]}}"#
            )),
            ClientMessage::RequestState(RequestState {
                topics: Some(vec![Topic::parse("run:a").unwrap()]),
            })
        );
    }
}

#[test]
fn seed_confirm_answers_an_approval() {
    let expected = ClientMessage::Confirm(Confirm {
        callback_id: CallbackId::new("cb-1").unwrap(),
        proceed: true,
        feedback: Some("ok".to_owned()),
    });
    assert_eq!(
        decode(r#"{"action":"confirm","callback_id":"cb-1","proceed":true,"feedback":"ok"}"#),
        expected
    );
    assert_eq!(
        decode(r#"{"action":"confirm","approval_id":"cb-1","proceed":true,"feedback":"ok"}"#),
        expected
    );
}

#[test]
fn a_confirm_may_name_its_approval_by_both_names_only_when_they_agree() {
    assert_eq!(
        decode(r#"{"action":"confirm","callback_id":"cb-1","approval_id":"cb-1","proceed":false}"#),
        ClientMessage::Confirm(Confirm {
            callback_id: CallbackId::new("cb-1").unwrap(),
            proceed: false,
            feedback: None,
        })
    );
    let refused = ClientFrame::decode(
        r#"{"action":"confirm","callback_id":"cb-1","approval_id":"cb-2","proceed":true}"#,
    )
    .unwrap_err();
    assert!(
        refused.error.to_string().contains("different approvals"),
        "{refused}"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        decode(r#"{"action":"pong","timestamp":5,"client":"seed-ui","extra":{"a":1}}"#),
        ClientMessage::Pong(Heartbeat { timestamp: Some(5) })
    );
}

#[test]
fn action_wins_over_type_when_both_are_present() {
    assert_eq!(
        decode(r#"{"action":"ping","type":"pong"}"#),
        ClientMessage::Ping(Heartbeat::default())
    );
}

#[test]
fn request_id_is_kept_as_number_or_string() {
    let frame = ClientFrame::decode(r#"{"id":7,"action":"ping"}"#).unwrap();
    assert_eq!(frame.id, Some(RequestId::Number(7)));
    let frame = ClientFrame::decode(r#"{"id":"x-1","action":"ping"}"#).unwrap();
    assert_eq!(frame.id, Some(RequestId::String("x-1".to_owned())));
    let frame = ClientFrame::decode(r#"{"id":null,"action":"ping"}"#).unwrap();
    assert_eq!(frame.id, None);
}

// ---- Failures: the code, the ref, and a helpful message ----

#[track_caller]
#[allow(clippy::needless_pass_by_value)] // `Some(RequestId::Number(5))` reads best at the call sites.
fn assert_fails(text: &str, code: ErrorCode, reference: Option<RequestId>, mentions: &[&str]) {
    let error = fail(text);
    assert_eq!(error.error.code(), code, "{text}: {error}");
    assert_eq!(
        error.id, reference,
        "{text}: the id must be kept as ref when readable"
    );
    let message = error.to_string();
    for needle in mentions {
        assert!(
            message.contains(needle),
            "{text}: message {message:?} does not mention {needle:?}"
        );
    }
}

#[test]
fn malformed_json_is_invalid_json() {
    assert_fails("{", ErrorCode::InvalidJson, None, &["invalid JSON"]);
    assert_fails(
        r#"{"action":"ping",}"#,
        ErrorCode::InvalidJson,
        None,
        &["invalid JSON"],
    );
    assert_fails("", ErrorCode::InvalidJson, None, &["invalid JSON"]);
}

#[test]
fn json_that_is_not_an_object_is_invalid_request() {
    assert_fails("[1,2]", ErrorCode::InvalidRequest, None, &["object"]);
    assert_fails("\"ping\"", ErrorCode::InvalidRequest, None, &["object"]);
}

#[test]
fn unknown_action_is_unknown_action_and_names_it() {
    assert_fails(
        r#"{"id":5,"action":"dance"}"#,
        ErrorCode::UnknownAction,
        Some(RequestId::Number(5)),
        &["dance"],
    );
    assert_fails(
        r#"{"type":"shout"}"#,
        ErrorCode::UnknownAction,
        None,
        &["shout"],
    );
}

#[test]
fn frame_without_action_is_invalid_request_with_an_example() {
    assert_fails(
        r#"{"id":"q","topics":["global"]}"#,
        ErrorCode::InvalidRequest,
        Some(RequestId::String("q".into())),
        &["action"],
    );
    assert_fails(
        r#"{"action":5}"#,
        ErrorCode::InvalidRequest,
        None,
        &["action must be a string"],
    );
}

#[test]
fn bad_topic_is_invalid_topic_and_quotes_the_grammar() {
    let sub1 = Some(RequestId::String("sub-1".into()));
    assert_fails(
        r#"{"id":"sub-1","action":"subscribe","topics":["Bad Topic"]}"#,
        ErrorCode::InvalidTopic,
        sub1,
        &["Bad Topic", "[a-z]"],
    );
    assert_fails(
        r#"{"action":"subscribe","topics":["execution:exec 1"]}"#,
        ErrorCode::InvalidTopic,
        None,
        &["exec 1"],
    );
    assert_fails(
        r#"{"action":"subscribe","topics":["exec*"]}"#,
        ErrorCode::InvalidTopic,
        None,
        &["exec*", "kind:*"],
    );
    assert_fails(
        r#"{"action":"unsubscribe","topics":[""]}"#,
        ErrorCode::InvalidTopic,
        None,
        &["empty"],
    );
    assert_fails(
        r#"{"action":"replay","topic":"a:b:c","since_seq":1}"#,
        ErrorCode::InvalidTopic,
        None,
        &["a:b:c"],
    );
    assert_fails(
        r#"{"action":"request_state","topics":["execution:*"]}"#,
        ErrorCode::InvalidTopic,
        None,
        &["execution:*"],
    );
    assert_fails(
        r#"{"id":3,"action":"subscribe","topics":["run:r1"],"since":{"RUN:r1":4}}"#,
        ErrorCode::InvalidTopic,
        Some(RequestId::Number(3)),
        &["RUN:r1"],
    );
    assert_fails(
        r#"{"action":"cancel","task_id":"has space"}"#,
        ErrorCode::InvalidTopic,
        None,
        &["has space"],
    );
}

#[test]
fn missing_or_mistyped_field_is_invalid_request_naming_the_problem() {
    let id = Some(RequestId::Number(9));
    assert_fails(
        r#"{"id":9,"action":"subscribe"}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["topics"],
    );
    assert_fails(
        r#"{"id":9,"action":"replay","topic":"global"}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["since_seq"],
    );
    assert_fails(
        r#"{"id":9,"action":"auth"}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["token"],
    );
    assert_fails(
        r#"{"id":9,"action":"confirm","callback_id":"cb-1"}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["proceed"],
    );
    assert_fails(
        r#"{"id":9,"action":"confirm","callback_id":"","proceed":true}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["empty"],
    );
    assert_fails(
        r#"{"id":9,"action":"replay","topic":"global","since_seq":-1}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["-1"],
    );
    assert_fails(
        r#"{"id":9,"action":"subscribe","topics":"global"}"#,
        ErrorCode::InvalidRequest,
        id.clone(),
        &["sequence"],
    );
    assert_fails(
        r#"{"action":"subscribe","topics":["global"],"filter":{"types":["Execution"]}}"#,
        ErrorCode::InvalidRequest,
        None,
        &["Execution"],
    );
    assert_fails(
        r#"{"action":"subscribe","topics":["global"],"filter":{"min_priority":"urgent"}}"#,
        ErrorCode::InvalidRequest,
        None,
        &["urgent"],
    );
    assert_fails(
        r#"{"action":"subscribe","topics":["global"],"since":{"global":"yesterday"}}"#,
        ErrorCode::InvalidRequest,
        None,
        &["since"],
    );
    // A cursor is a seq or a time, never both.
    assert_fails(
        r#"{"action":"subscribe","topics":["global"],"since":{"global":{"seq":3,"time_ms":9}}}"#,
        ErrorCode::InvalidRequest,
        None,
        &["time_ms"],
    );
}

#[test]
fn control_without_target_is_invalid_request() {
    let id = Some(RequestId::String("c".into()));
    assert_fails(
        r#"{"id":"c","action":"pause","reason":"x"}"#,
        ErrorCode::InvalidRequest,
        id,
        &["task_id or run_id"],
    );
}

#[test]
fn ack_without_seq_and_topic_or_message_id_is_invalid_request() {
    assert_fails(
        r#"{"action":"ack","seq":3}"#,
        ErrorCode::InvalidRequest,
        None,
        &["message_id"],
    );
    assert_fails(
        r#"{"action":"ack"}"#,
        ErrorCode::InvalidRequest,
        None,
        &["message_id"],
    );
}

#[test]
fn oversized_feedback_or_reason_is_invalid_request() {
    let long = "x".repeat(herald_protocol::frame::MAX_TEXT_LEN + 1);
    let text = format!(
        r#"{{"action":"confirm","callback_id":"cb-1","proceed":true,"feedback":"{long}"}}"#
    );
    assert_fails(&text, ErrorCode::InvalidRequest, None, &["feedback"]);
    let text = format!(r#"{{"action":"cancel","task_id":"t1","reason":"{long}"}}"#);
    assert_fails(&text, ErrorCode::InvalidRequest, None, &["reason"]);
}

#[test]
fn unreadable_id_is_invalid_request_without_ref() {
    assert_fails(
        r#"{"id":{"n":1},"action":"ping"}"#,
        ErrorCode::InvalidRequest,
        None,
        &["id"],
    );
    assert_fails(
        r#"{"id":-1,"action":"ping"}"#,
        ErrorCode::InvalidRequest,
        None,
        &["id"],
    );
}

// ---- Server frames ----

#[test]
fn unknown_server_frame_types_are_ignored_not_errors() {
    assert_eq!(
        ServerMessage::decode(r#"{"type":"presence","who":["a"]}"#),
        Ok(None)
    );
    assert_eq!(ServerMessage::decode(r#"{"no_type":1}"#), Ok(None));
}

#[test]
fn broken_known_server_frame_is_an_error() {
    let error = ServerMessage::decode(r#"{"type":"gap","topic":"global"}"#).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
    assert_eq!(
        ServerMessage::decode("{").unwrap_err().code(),
        ErrorCode::InvalidJson
    );
}

#[test]
fn control_target_prefers_task_over_run() {
    let ClientMessage::Cancel(control) =
        decode(r#"{"action":"cancel","task_id":"t1","run_id":"r1"}"#)
    else {
        panic!("not a cancel");
    };
    assert_eq!(
        control.target_topic().unwrap(),
        Topic::parse("task:t1").unwrap()
    );
}

#[test]
fn peek_id_reads_only_the_frames_own_id() {
    let peek = ClientFrame::peek_id;
    assert_eq!(
        peek(r#"{"action":"ping","id":7}"#),
        Some(RequestId::Number(7))
    );
    assert_eq!(
        peek(r#"{"id":"x-1","action":"subscribe","topics":["run:a"]}"#),
        Some(RequestId::String("x-1".to_owned()))
    );
    // An id inside another field is not the frame's.
    assert_eq!(peek(r#"{"action":"publish","data":{"id":9}}"#), None);
    // One the frame could not carry, a duplicate key, or no frame at all.
    for text in [
        r#"{"action":"ping","id":-1}"#,
        r#"{"action":"ping","id":true}"#,
        r#"{"action":"ping","id":1,"id":2}"#,
        r#"["ping",1]"#,
        "not json",
    ] {
        assert_eq!(peek(text), None, "{text}");
    }
}

#[test]
fn a_subscription_frame_is_told_from_others_without_decoding_it() {
    for text in [
        r#"{"action":"subscribe","topics":["run:r1"]}"#,
        r#"{"id":"7","action":"unsubscribe","topics":["run:r1"]}"#,
        r#"{"type":"subscribe","subscriptions":["run:r1"]}"#,
    ] {
        assert!(ClientFrame::peek_is_subscription(text), "{text}");
    }
    for text in [
        r#"{"action":"ping"}"#,
        "not json",
        r#"{"topics":["subscribe"]}"#,
    ] {
        assert!(!ClientFrame::peek_is_subscription(text), "{text}");
    }
}
