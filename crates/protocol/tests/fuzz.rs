//! Fuzzing on stable: the three entry points that take bytes from the network
//! (`ClientFrame::decode`; `Topic::parse`, `TopicPattern::parse` and
//! `TypePattern::parse`; `PublishBody` and per-item `PublishRequest` from an
//! HTTP body) get structured random inputs and must never panic. The
//! cargo-fuzz targets in `fuzz/` drive the same entry points with libFuzzer
//! where nightly exists (see `fuzz/README.md`).
//!
//! The inputs are shaped to get past the first checks: JSON objects with a
//! known or unknown `action`/`type`, the real field names with values of any
//! type, numbers beyond `u64` and `f64`, nesting past serde_json's recursion
//! limit, unicode in every string, and the JSON text of all that truncated or
//! with a byte spliced in. Where an input is accepted, what it decoded to
//! must encode and decode again to the same value.
//!
//! The case counts keep the whole file under a few seconds in a debug build;
//! `PROPTEST_CASES=100000 cargo test -p herald-protocol --test fuzz` runs longer.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_protocol::{ClientFrame, PublishBody, PublishRequest, Topic, TopicPattern, TypePattern};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2500;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // Failures are reported with their minimal input; no files are written.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Strings and numbers

/// Strings that stress validation: empty, control characters, unicode from
/// every plane, separators and wildcards, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-z]{1,8}(:[A-Za-z0-9_.@*-]{0,12})?",
        2 => "[a-z.*]{0,12}",
        1 => "\\PC{0,40}",
        1 => "[\u{0}-\u{1f}\u{7f}\u{200b}\u{feff}\u{1F600}é:*.]{0,16}",
        1 => Just(String::new()),
        1 => (1usize..5000).prop_map(|n| "a".repeat(n)),
        1 => (1usize..300).prop_map(|n| format!("execution:{}", "x".repeat(n))),
    ]
}

/// Number literals as text, many beyond what `u64` or `f64` hold.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e400".to_owned()),
        Just("-1e-400".to_owned()),
        Just("-0".to_owned()),
        Just("0.0".to_owned()),
        "[1-9][0-9]{20,80}",
        "-?[0-9]{1,3}\\.[0-9]{1,30}[eE][+-]?[0-9]{1,4}",
    ]
}

// ---------------------------------------------------------------------------
// JSON values

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` levels in arrays or objects (deeper than
/// serde_json's recursion limit of 128 at the top of the range).
fn deep() -> impl Strategy<Value = String> {
    (1usize..300, any::<bool>(), leaf()).prop_map(|(depth, arrays, leaf)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
    })
}

// ---------------------------------------------------------------------------
// Frames

const ACTIONS: &[&str] = &[
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
];

const FRAME_FIELDS: &[&str] = &[
    "id",
    "topics",
    "subscriptions",
    "topic",
    "filter",
    "types",
    "priority",
    "min_priority",
    "since",
    "since_seq",
    "epoch",
    "limit",
    "snapshot",
    "token",
    "timestamp",
    "callback_id",
    "approval_id",
    "proceed",
    "feedback",
    "task_id",
    "run_id",
    "reason",
    "ref",
    "seq",
];

/// A value for a frame field: plausible (topics, patterns, seqs) or anything.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json(),
        2 => prop::collection::vec(nasty_string().prop_map(Value::String), 0..6)
            .prop_map(Value::Array),
        1 => prop::collection::vec(
            (nasty_string(), any::<u64>()).prop_map(|(t, s)| (t, Value::from(s))),
            0..4,
        )
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        1 => prop::collection::vec(
            ("[a-z]{1,4}\\.[a-z*]{1,4}|\\*", "low|normal|high|critical|[a-z]{0,6}"),
            0..3,
        )
        .prop_map(|pairs| {
            let mut filter = Map::new();
            filter.insert(
                "types".to_owned(),
                Value::Array(pairs.iter().map(|(t, _)| Value::from(t.as_str())).collect()),
            );
            if let Some((_, p)) = pairs.first() {
                filter.insert("min_priority".to_owned(), Value::from(p.as_str()));
            }
            Value::Object(filter)
        }),
    ]
}

/// A JSON object shaped like a client frame.
fn frame_value() -> impl Strategy<Value = Value> {
    let tag = prop_oneof![
        4 => prop::sample::select(ACTIONS).prop_map(str::to_owned),
        1 => nasty_string(),
    ];
    (
        prop::sample::select(&["action", "type", "action"][..]),
        tag,
        prop::collection::vec((prop::sample::select(FRAME_FIELDS), field_value()), 0..6),
        prop::collection::vec((nasty_string(), json()), 0..2),
    )
        .prop_map(|(key, tag, fields, extra)| {
            let mut map = Map::new();
            map.insert(key.to_owned(), Value::String(tag));
            for (name, value) in fields {
                map.insert(name.to_owned(), value);
            }
            for (name, value) in extra {
                map.insert(name, value);
            }
            Value::Object(map)
        })
}

/// Frame text: a frame's JSON, a frame with a huge number or deep value
/// spliced into a field, damaged JSON, or arbitrary text.
fn frame_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => frame_value().prop_map(|v| v.to_string()),
        2 => (
            prop::sample::select(ACTIONS),
            prop::sample::select(FRAME_FIELDS),
            number_text(),
        )
            .prop_map(|(action, field, number)| {
                format!(r#"{{"action":"{action}","topic":"execution:e1","{field}":{number}}}"#)
            }),
        1 => (prop::sample::select(ACTIONS), prop::sample::select(FRAME_FIELDS), deep())
            .prop_map(|(action, field, deep)| format!(r#"{{"action":"{action}","{field}":{deep}}}"#)),
        1 => deep(),
        2 => (frame_value(), any::<prop::sample::Index>(), any::<char>())
            .prop_map(|(v, at, c)| damage(&v.to_string(), at, c)),
        1 => any::<String>(),
    ]
}

/// `text` with `c` spliced in, or cut short, at a char boundary.
fn damage(text: &str, at: prop::sample::Index, c: char) -> String {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let cut = bounds[at.index(bounds.len())];
    if c.is_ascii_digit() {
        text[..cut].to_owned()
    } else {
        format!("{}{c}{}", &text[..cut], &text[cut..])
    }
}

// ---------------------------------------------------------------------------
// Publish bodies

const EVENT_TYPES: &[&str] = &[
    "execution.progress",
    "execution.completed",
    "crew.updated",
    "approval.requested",
    "custom.thing",
    "",
    "Not.Valid",
    "a..b",
];

/// A JSON object shaped like a published event.
fn event_value() -> impl Strategy<Value = Value> {
    let topic = prop_oneof![
        2 => "(execution|crew|run|user|global)(:[A-Za-z0-9_.@-]{1,12})?".prop_map(Value::String),
        1 => field_value(),
    ];
    let event_type = prop_oneof![
        2 => prop::sample::select(EVENT_TYPES).prop_map(Value::from),
        1 => field_value(),
    ];
    let optional = prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "priority",
                    "key",
                    "source",
                    "id",
                    "timestamp",
                    "data",
                    "seq",
                    "epoch",
                    "type",
                ][..],
            ),
            prop_oneof![
                prop::sample::select(&["low", "normal", "high", "critical", "urgent"][..])
                    .prop_map(Value::from),
                field_value(),
            ],
        ),
        0..5,
    );
    (topic, event_type, json(), optional, any::<(bool, bool)>()).prop_map(
        |(topic, event_type, data, optional, (drop_topic, drop_type))| {
            let mut map = Map::new();
            if !drop_topic {
                map.insert("topic".to_owned(), topic);
            }
            if !drop_type {
                map.insert("event_type".to_owned(), event_type);
            }
            map.insert("data".to_owned(), data);
            for (name, value) in optional {
                map.insert(name.to_owned(), value);
            }
            Value::Object(map)
        },
    )
}

/// Body bytes: one event, a batch, a batch with junk items, a huge number,
/// damaged JSON, or arbitrary bytes.
fn publish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => event_value().prop_map(|v| v.to_string().into_bytes()),
        3 => prop::collection::vec(
            prop_oneof![4 => event_value(), 1 => json()],
            0..8,
        )
        .prop_map(|items| Value::Array(items).to_string().into_bytes()),
        1 => (prop::sample::select(&["timestamp", "priority", "data", "id"][..]), number_text())
            .prop_map(|(field, number)| {
                format!(
                    r#"{{"topic":"execution:e1","event_type":"execution.progress","{field}":{number}}}"#
                )
                .into_bytes()
            }),
        1 => deep().prop_map(String::into_bytes),
        1 => (event_value(), any::<prop::sample::Index>(), any::<char>())
            .prop_map(|(v, at, c)| damage(&v.to_string(), at, c).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

// ---------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config())]

    /// `ClientFrame::decode` never panics; an accepted frame re-encodes to
    /// JSON that decodes to the same frame.
    #[test]
    fn client_frame_decode_never_panics(text in frame_text()) {
        if let Ok(frame) = ClientFrame::decode(&text) {
            let encoded = serde_json::to_string(&frame).expect("a decoded frame encodes");
            let again = ClientFrame::decode(&encoded);
            prop_assert_eq!(again.as_ref().ok(), Some(&frame), "re-encoded as {}", encoded);
        }
    }

    /// The topic, topic pattern and type pattern parsers never panic, and
    /// what they accept prints back as the text it came from.
    #[test]
    fn topic_and_pattern_parsers_never_panic(text in prop_oneof![
        4 => nasty_string(),
        1 => any::<prop::sample::Index>().prop_map(|i| {
            // A topic at the length limits.
            let kind = "k".repeat(i.index(40) + 1);
            format!("{kind}:{}", "i".repeat(i.index(140)))
        }),
    ]) {
        if let Ok(topic) = Topic::parse(&text) {
            prop_assert_eq!(topic.to_string(), text.clone());
            let pattern = TopicPattern::parse(&text);
            prop_assert_eq!(pattern.ok(), Some(TopicPattern::Exact(topic)));
        }
        if let Ok(pattern) = TopicPattern::parse(&text) {
            prop_assert_eq!(pattern.to_string(), text.clone());
            prop_assert!(pattern.covers(&pattern));
        }
        let _ = TypePattern::parse(&text);
    }

    /// A publish body decodes or fails without panicking, and so does each
    /// item of a batch as a `PublishRequest`; an accepted body round-trips.
    #[test]
    fn publish_body_decode_never_panics(bytes in publish_bytes()) {
        if let Ok(body) = serde_json::from_slice::<PublishBody>(&bytes) {
            let encoded = serde_json::to_vec(&body).expect("a decoded body encodes");
            let again = serde_json::from_slice::<PublishBody>(&encoded);
            prop_assert!(again.is_ok(), "re-encoded body refused: {:?}", again);
            let again = again.unwrap();
            prop_assert_eq!(requests(&again).len(), requests(&body).len());
            for (a, b) in requests(&again).into_iter().zip(requests(&body)) {
                prop_assert!(same_request(a, b), "{:?} != {:?}", a, b);
            }
        }
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) {
            for item in items {
                if let Ok(request) = serde_json::from_value::<PublishRequest>(item) {
                    let value = serde_json::to_value(&request).expect("a request encodes");
                    let again = serde_json::from_value::<PublishRequest>(value);
                    prop_assert!(again.is_ok(), "re-encoded request refused: {:?}", again);
                    let again = again.unwrap();
                    prop_assert!(same_request(&again, &request), "{:?} != {:?}", again, request);
                }
            }
        }
    }
}

fn requests(body: &PublishBody) -> Vec<&PublishRequest> {
    match body {
        PublishBody::Batch(items) => items.iter().collect(),
        PublishBody::One(one) => vec![one],
    }
}

/// Equal requests, except that floats in `data` may differ in the last
/// place: serde_json without its `float_roundtrip` feature does not parse
/// every float it prints back to the same bits (e.g. `-3.0068776810532433e-176`).
fn same_request(a: &PublishRequest, b: &PublishRequest) -> bool {
    if has_float(&a.data) || has_float(&b.data) {
        let mut a = a.clone();
        let mut b = b.clone();
        a.data = Value::Null;
        b.data = Value::Null;
        a == b
    } else {
        a == b
    }
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}
