//! Property tests of the wire grammar and codecs: what must hold for every
//! input, not just the examples in the fixtures.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_protocol::event::{EventId, Label};
use herald_protocol::{
    ClientFrame, Event, EventType, Priority, PublishRequest, RequestId, ServerMessage, Topic,
    TopicPattern,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const KIND: &str = "[a-z][a-z0-9_.-]{0,31}";
const ID: &str = "[A-Za-z0-9_.@-]{1,128}";

/// The contract's grammar, written independently of the crate:
/// kind `[a-z][a-z0-9_.-]{0,31}`, id `[A-Za-z0-9_.@-]{1,128}`.
fn matches_grammar(topic: &str) -> bool {
    fn kind(k: &str) -> bool {
        let b = k.as_bytes();
        (1..=32).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
    }
    fn id(i: &str) -> bool {
        (1..=128).contains(&i.len())
            && i.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.@-".contains(&c))
    }
    match topic.split_once(':') {
        None => kind(topic),
        Some((k, i)) => kind(k) && id(i),
    }
}

fn valid_topic() -> impl Strategy<Value = String> {
    (KIND, proptest::option::of(ID)).prop_map(|(kind, id)| match id {
        Some(id) => format!("{kind}:{id}"),
        None => kind,
    })
}

/// Strings near the grammar (its characters plus a few that break it), so that
/// both sides of the boundary get exercised.
fn near_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@:*\\- ]{0,40}",
        "[a-z]{30,34}(:[a-z]{0,3})?",
        "[a-z]{1,3}:[A-Za-z0-9]{126,130}",
        "\\PC{0,20}",
        any::<String>(),
    ]
}

fn valid_event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            EventType::KNOWN
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect::<Vec<_>>()
        ),
        "[a-z][a-z0-9_-]{0,10}(\\.[a-z][a-z0-9_-]{0,10}){1,3}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Words the decoder reacts to, so arbitrary JSON reaches deep paths.
        proptest::sample::select(vec![
            "subscribe",
            "unsubscribe",
            "replay",
            "request_state",
            "refresh",
            "auth",
            "ping",
            "pong",
            "confirm",
            "cancel",
            "pause",
            "resume",
            "ack",
            "global",
            "execution:*",
            "*",
            "execution:exec_1",
            "Bad Topic",
            "execution.*",
            "high",
            "",
            "cb-1",
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

/// Arbitrary JSON without floats (serde_json's default float parsing is not
/// guaranteed to round-trip every f64 bit for bit).
fn json() -> impl Strategy<Value = Value> {
    let keys = proptest::sample::select(vec![
        "id",
        "action",
        "type",
        "topics",
        "subscriptions",
        "topic",
        "filter",
        "types",
        "min_priority",
        "since",
        "seq",
        "epoch",
        "snapshot",
        "since_seq",
        "limit",
        "token",
        "timestamp",
        "callback_id",
        "approval_id",
        "proceed",
        "feedback",
        "task_id",
        "run_id",
        "reason",
        "message_id",
        "other",
    ]);
    json_leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object that looks like a client frame: an action and some fields.
fn frame_like() -> impl Strategy<Value = Value> {
    (json(), json_leaf(), proptest::option::of(json_leaf())).prop_map(|(body, action, id)| {
        let mut map = match body {
            Value::Object(map) => map,
            other => Map::from_iter([("topics".to_owned(), other)]),
        };
        map.insert("action".to_owned(), action);
        if let Some(id) = id {
            map.insert("id".to_owned(), id);
        }
        Value::Object(map)
    })
}

/// A client frame built from plausible fields (each present or not, some
/// replaced by arbitrary JSON), so that every action decodes often.
fn plausible_frame() -> impl Strategy<Value = Value> {
    let action = proptest::sample::select(vec![
        "subscribe",
        "unsubscribe",
        "replay",
        "request_state",
        "refresh",
        "auth",
        "ping",
        "pong",
        "confirm",
        "cancel",
        "pause",
        "resume",
        "ack",
    ]);
    let topic = proptest::sample::select(vec![
        "global",
        "metrics",
        "execution:exec_1",
        "run:run-123",
        "user:u@x.io",
        "execution:*",
        "*",
    ]);
    let since = prop_oneof![
        any::<u64>().prop_map(Value::from),
        (any::<u64>(), "[a-z0-9-]{1,8}")
            .prop_map(|(seq, epoch)| serde_json::json!({"seq": seq, "epoch": epoch})),
        any::<u64>().prop_map(|time_ms| serde_json::json!({"time_ms": time_ms})),
    ];
    let field = |strategy: BoxedStrategy<Value>| {
        proptest::option::weighted(0.6, prop_oneof![8 => strategy, 1 => json()])
    };
    (
        action,
        proptest::option::of(prop_oneof![
            any::<u64>().prop_map(Value::from),
            "[a-z0-9-]{0,6}".prop_map(Value::from)
        ]),
        field(
            proptest::collection::vec(topic.clone(), 0..4)
                .prop_map(|t| serde_json::json!(t))
                .boxed(),
        ),
        field(
            (
                proptest::collection::vec(
                    proptest::sample::select(vec!["*", "execution.*", "task.progress", "a.b.*"]),
                    0..3,
                ),
                proptest::option::of(priority()),
            )
                .prop_map(|(types, min)| serde_json::json!({"types": types, "min_priority": min}))
                .prop_map(|mut v| {
                    if v["min_priority"].is_null() {
                        v.as_object_mut().unwrap().remove("min_priority");
                    }
                    v
                })
                .boxed(),
        ),
        field(
            proptest::collection::btree_map(
                proptest::sample::select(vec!["global", "run:run-123", "execution:exec_1"]),
                since,
                0..3,
            )
            .prop_map(|m| serde_json::json!(m))
            .boxed(),
        ),
        field(any::<bool>().prop_map(Value::from).boxed()),
        field(topic.prop_map(Value::from).boxed()),
        field(any::<u64>().prop_map(Value::from).boxed()),
        field(
            prop_oneof![
                any::<u64>().prop_map(Value::from),
                (0.0..2e12f64).prop_map(Value::from)
            ]
            .boxed(),
        ),
        field("[A-Za-z0-9 _.-]{0,10}".prop_map(Value::from).boxed()),
    )
        .prop_map(
            |(action, id, topics, filter, since, flag, topic, number, timestamp, text)| {
                let mut map = Map::new();
                map.insert("action".to_owned(), Value::from(action));
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        map.insert(key.to_owned(), value);
                    }
                };
                put("id", id);
                put("topics", topics);
                put("filter", filter);
                put("since", since);
                put("snapshot", flag.clone());
                put("proceed", flag);
                put("topic", topic);
                put("since_seq", number.clone());
                put("seq", number.clone());
                put(
                    "limit",
                    number.map(|n| Value::from(n.as_u64().map_or(0, |n| n % 1000))),
                );
                put("timestamp", timestamp);
                put("token", text.clone());
                put("callback_id", text.clone());
                put("feedback", text.clone());
                put("task_id", text.clone());
                put("reason", text.clone());
                put("message_id", text);
                Value::Object(map)
            },
        )
}

fn label() -> impl Strategy<Value = Label> {
    "\\PC{1,40}".prop_map(|s| Label::new(s).unwrap())
}

fn priority() -> impl Strategy<Value = Priority> {
    proptest::sample::select(Priority::ALL.to_vec())
}

fn event() -> impl Strategy<Value = Event> {
    (
        valid_topic(),
        any::<u64>(),
        "[A-Za-z0-9-]{1,36}",
        valid_event_type(),
        priority(),
        any::<u64>(),
        proptest::option::of(label()),
        proptest::option::of(label()),
        json(),
    )
        .prop_map(
            |(topic, seq, id, event_type, priority, timestamp, source, key, data)| Event {
                topic: Topic::parse(&topic).unwrap(),
                seq,
                id: EventId::new(id).unwrap(),
                event_type: EventType::parse(&event_type).unwrap(),
                priority,
                timestamp,
                source,
                key,
                data,
            },
        )
}

fn publish_request() -> impl Strategy<Value = PublishRequest> {
    (
        valid_topic(),
        valid_event_type(),
        json(),
        priority(),
        proptest::option::of(label()),
        proptest::option::of(label()),
        proptest::option::of("[A-Za-z0-9-]{1,36}"),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(topic, event_type, data, priority, key, source, id, timestamp)| PublishRequest {
                topic: Topic::parse(&topic).unwrap(),
                event_type: EventType::parse(&event_type).unwrap(),
                data,
                priority,
                key,
                source,
                id: id.map(|id| EventId::new(id).unwrap()),
                timestamp,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // ---- Topics ----

    #[test]
    fn every_topic_in_the_grammar_parses_and_round_trips(name in valid_topic()) {
        let topic = Topic::parse(&name).unwrap();
        prop_assert_eq!(topic.as_str(), name.as_str());
        prop_assert_eq!(topic.to_string(), name.clone());
        let (kind, id) = match name.split_once(':') {
            Some((kind, id)) => (kind, Some(id)),
            None => (name.as_str(), None),
        };
        prop_assert_eq!(topic.kind(), kind);
        prop_assert_eq!(topic.id(), id);
        let json = serde_json::to_string(&topic).unwrap();
        prop_assert_eq!(serde_json::from_str::<Topic>(&json).unwrap(), topic.clone());
        prop_assert_eq!(TopicPattern::parse(&name).unwrap(), TopicPattern::Exact(topic));
    }

    #[test]
    fn a_string_parses_as_a_topic_exactly_when_it_matches_the_grammar(name in near_topic()) {
        let parsed = Topic::parse(&name);
        prop_assert_eq!(parsed.is_ok(), matches_grammar(&name), "{:?} -> {:?}", name, parsed);
        if let Ok(topic) = parsed {
            prop_assert_eq!(topic.as_str(), name.as_str());
        }
    }

    #[test]
    fn kind_wildcard_matches_exactly_the_topics_of_that_kind_with_an_id(
        pattern_kind in "[ab][ab.]{0,2}",
        topic_kind in "[ab][ab.]{0,2}",
        id in proptest::option::of("[ab]{1,3}"),
    ) {
        let pattern = TopicPattern::parse(&format!("{pattern_kind}:*")).unwrap();
        let topic = match &id {
            Some(id) => Topic::with_id(&topic_kind, id).unwrap(),
            None => Topic::parse(&topic_kind).unwrap(),
        };
        prop_assert_eq!(pattern.matches(&topic), topic_kind == pattern_kind && id.is_some());
        prop_assert_eq!(pattern.to_string(), format!("{pattern_kind}:*"));
    }

    #[test]
    fn star_matches_every_topic(name in valid_topic()) {
        let topic = Topic::parse(&name).unwrap();
        prop_assert!(TopicPattern::All.matches(&topic));
        prop_assert!(TopicPattern::parse("*").unwrap().matches(&topic));
        prop_assert!(TopicPattern::All.covers(&TopicPattern::Exact(topic)));
    }

    #[test]
    fn an_exact_pattern_matches_only_its_topic(a in valid_topic(), b in valid_topic()) {
        let pattern = TopicPattern::parse(&a).unwrap();
        prop_assert_eq!(pattern.matches(&Topic::parse(&b).unwrap()), a == b);
    }

    #[test]
    fn pattern_parsing_never_panics_and_accepted_patterns_round_trip(text in near_topic()) {
        if let Ok(pattern) = TopicPattern::parse(&text) {
            prop_assert_eq!(pattern.to_string(), text.clone());
            let json = serde_json::to_string(&pattern).unwrap();
            prop_assert_eq!(serde_json::from_str::<TopicPattern>(&json).unwrap(), pattern);
        }
    }

    #[test]
    fn a_pattern_covers_what_it_matches(a in "[ab]{1,2}(:[ab*]{1,2})?|\\*", b in "[ab]{1,2}(:[ab]{1,2})?") {
        if let Ok(pattern) = TopicPattern::parse(&a) {
            let topic = Topic::parse(&b).unwrap();
            prop_assert_eq!(pattern.covers(&TopicPattern::Exact(topic.clone())), pattern.matches(&topic));
        }
    }

    // ---- Event types ----

    #[test]
    fn event_type_names_round_trip(name in valid_event_type()) {
        let parsed = EventType::parse(&name).unwrap();
        prop_assert_eq!(parsed.as_str(), name.as_str());
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), parsed);
    }

    #[test]
    fn event_type_parsing_never_panics_and_keeps_the_name(text in "\\PC{0,24}|[a-z._-]{0,16}") {
        if let Ok(parsed) = EventType::parse(&text) {
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }
    }

    // ---- Client frames ----

    #[test]
    fn client_frame_decode_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = ClientFrame::decode(&text);
    }

    #[test]
    fn client_frame_decode_never_panics_on_arbitrary_json(value in json()) {
        let _ = ClientFrame::decode(&value.to_string());
    }

    #[test]
    fn decoded_frames_re_encode_to_an_equal_frame(value in prop_oneof![frame_like(), plausible_frame()]) {
        if let Ok(frame) = ClientFrame::decode(&value.to_string()) {
            let encoded = frame.encode();
            prop_assert_eq!(ClientFrame::decode(&encoded), Ok(frame), "{}", encoded);
        }
    }

    #[test]
    fn a_readable_id_is_kept_when_decoding_fails(value in prop_oneof![frame_like(), plausible_frame()], id in prop_oneof![
        any::<u64>().prop_map(RequestId::Number),
        "\\PC{0,10}".prop_map(RequestId::String),
    ]) {
        let Value::Object(mut map) = value else { unreachable!() };
        map.insert("id".to_owned(), serde_json::to_value(&id).unwrap());
        match ClientFrame::decode(&Value::Object(map).to_string()) {
            Ok(frame) => prop_assert_eq!(frame.id, Some(id)),
            Err(error) => prop_assert_eq!(error.id, Some(id)),
        }
    }

    // ---- Events ----

    #[test]
    fn events_round_trip_through_json(event in event()) {
        let json = serde_json::to_string(&event).unwrap();
        prop_assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
    }

    #[test]
    fn publish_requests_round_trip_through_json(request in publish_request()) {
        let json = serde_json::to_string(&request).unwrap();
        prop_assert_eq!(serde_json::from_str::<PublishRequest>(&json).unwrap(), request);
    }

    // ---- Floats ----

    #[test]
    fn floats_in_data_reach_subscribers_bit_for_bit(
        values in proptest::collection::vec(prop_oneof![
            // `time.time()`: seconds with microseconds, as Python prints them.
            (1_000_000_000u64..4_000_000_000u64, 0u64..1_000_000)
                .prop_map(|(s, us)| s as f64 + us as f64 / 1e6),
            any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
        ], 1..8),
        spelling in 0..3usize,
    ) {
        // A producer may spell a float however it likes (shortest, as
        // Python's repr and Rust's Display do, or with 17 significant
        // digits, or with an exponent): each is one f64, which must reach
        // the subscriber unchanged.
        let spelled: Vec<String> = values.iter().map(|v| match spelling {
            0 => format!("{v:?}"),
            1 => format!("{v:.16e}"),
            _ => format!("{v:e}"),
        }).collect();
        let body = format!(
            r#"{{"topic":"run:r1","event_type":"step.progress","data":{{"timestamp":{},"values":[{}]}}}}"#,
            spelled[0],
            spelled.join(","),
        );
        let request: PublishRequest = serde_json::from_str(&body).unwrap();
        let event = Event {
            topic: request.topic,
            seq: 1,
            id: EventId::new("e1").unwrap(),
            event_type: request.event_type,
            priority: request.priority,
            timestamp: 0,
            source: None,
            key: None,
            data: request.data,
        };
        let Some(ServerMessage::Event(received)) = ServerMessage::decode(&event.encode_frame()).unwrap() else {
            panic!("not an event frame");
        };
        let bits = |data: &Value| -> Vec<u64> {
            data["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap().to_bits()).collect()
        };
        prop_assert_eq!(bits(&received.data), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(received.data["timestamp"].as_f64().unwrap().to_bits(), values[0].to_bits());
    }
}
