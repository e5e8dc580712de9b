//! Golden wire fixtures: `fixtures/<TsTypeName>/<case>.json`.
//!
//! Every fixture must decode with its Rust type and re-encode to the same JSON,
//! so renaming a frame, a field or a variant fails here. The directory names
//! are the TypeScript type names: `cargo xtask ci` also type-checks each
//! fixture against `ts-bindings/` with `tsc`.

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use herald_protocol::event::{PublishBody, PublishReceipt, PublishRequest};
use herald_protocol::frame::Since;
use herald_protocol::payload::{
    ApprovalDecision, ApprovalRequested, ControlRequest, ErrorPayload, Metrics, Progress,
    StateChange, TaskStepResult,
};
use herald_protocol::{ClientFrame, Event, EventFilter, ServerMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

struct Fixture {
    type_name: String,
    case: String,
    text: String,
}

impl Fixture {
    fn name(&self) -> String {
        format!("{}/{}.json", self.type_name, self.case)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", self.name()))
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixtures() -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    for type_dir in fs::read_dir(fixtures_dir()).unwrap() {
        let type_dir = type_dir.unwrap().path();
        let type_name = type_dir.file_name().unwrap().to_str().unwrap().to_owned();
        for file in fs::read_dir(&type_dir).unwrap() {
            let path = file.unwrap().path();
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("json"),
                "{} is not a .json fixture",
                path.display()
            );
            let case = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let text = fs::read_to_string(&path).unwrap();
            fixtures.push(Fixture {
                type_name: type_name.clone(),
                case,
                text,
            });
        }
    }
    fixtures.sort_by_key(Fixture::name);
    fixtures
}

fn fixtures_of(type_name: &str) -> Vec<Fixture> {
    fixtures()
        .into_iter()
        .filter(|f| f.type_name == type_name)
        .collect()
}

/// Decodes with `T` through serde and re-encodes.
fn via_serde<T: DeserializeOwned + Serialize>(text: &str) -> Result<Value, String> {
    let decoded: T = serde_json::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_value(&decoded).map_err(|e| e.to_string())
}

/// Decodes a fixture with the Rust type its directory names, the way the hub
/// and the clients do, and re-encodes it.
fn decode_and_encode(fixture: &Fixture) -> Result<Value, String> {
    let text = fixture.text.as_str();
    let encoded = match fixture.type_name.as_str() {
        "ClientFrame" => {
            let frame = ClientFrame::decode(text).map_err(|e| e.to_string())?;
            let via_serde: ClientFrame = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if via_serde != frame {
                return Err("ClientFrame::decode and serde disagree".to_owned());
            }
            frame.encode()
        }
        "ServerMessage" => ServerMessage::decode(text)
            .map_err(|e| e.to_string())?
            .ok_or("ServerMessage::decode does not know this frame type")?
            .encode(),
        "Event" => return via_serde::<Event>(text),
        "PublishRequest" => return via_serde::<PublishRequest>(text),
        "PublishBody" => return via_serde::<PublishBody>(text),
        "PublishReceipt" => return via_serde::<PublishReceipt>(text),
        "EventFilter" => return via_serde::<EventFilter>(text),
        "Since" => return via_serde::<Since>(text),
        "Progress" => return via_serde::<Progress>(text),
        "StateChange" => return via_serde::<StateChange>(text),
        "TaskStepResult" => return via_serde::<TaskStepResult>(text),
        "ApprovalRequested" => return via_serde::<ApprovalRequested>(text),
        "ApprovalDecision" => return via_serde::<ApprovalDecision>(text),
        "ControlRequest" => return via_serde::<ControlRequest>(text),
        "ErrorPayload" => return via_serde::<ErrorPayload>(text),
        "Metrics" => return via_serde::<Metrics>(text),
        other => {
            return Err(format!(
                "no Rust type is mapped to fixture directory {other:?}"
            ));
        }
    };
    serde_json::from_str(&encoded).map_err(|e| format!("encoded frame is not JSON: {e}"))
}

#[test]
fn every_fixture_decodes_and_re_encodes_to_identical_json() {
    let fixtures = fixtures();
    assert!(
        fixtures.len() > 50,
        "the fixtures went missing: {}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        match decode_and_encode(fixture) {
            Ok(encoded) if encoded == fixture.json() => {}
            Ok(encoded) => failures.push(format!(
                "{}: re-encodes differently:\n  fixture: {}\n  encoded: {}",
                fixture.name(),
                fixture.json(),
                encoded
            )),
            Err(error) => failures.push(format!("{}: {error}", fixture.name())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixture_directories_are_named_after_generated_typescript_types() {
    let generated: BTreeSet<String> = herald_protocol::bindings::declarations()
        .into_iter()
        .map(|(path, _)| path.trim_end_matches(".ts").to_owned())
        .collect();
    for fixture in fixtures() {
        assert!(
            generated.contains(&fixture.type_name),
            "{}: there is no ts-bindings/{}.ts for the tsc check",
            fixture.name(),
            fixture.type_name
        );
    }
}

fn tags(type_name: &str, tag: &str) -> BTreeSet<String> {
    fixtures_of(type_name)
        .iter()
        .filter_map(|f| f.json().get(tag).and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn fixtures_cover_every_client_action() {
    let expected = set(&[
        "subscribe",
        "unsubscribe",
        "replay",
        "request_state",
        "auth",
        "ping",
        "pong",
        "confirm",
        "cancel",
        "pause",
        "resume",
        "ack",
    ]);
    assert_eq!(tags("ClientFrame", "action"), expected);
    let with_id = fixtures_of("ClientFrame")
        .iter()
        .filter(|f| f.json().get("id").is_some())
        .count();
    assert!(with_id >= 5, "few client fixtures carry an id: {with_id}");
}

#[test]
fn fixtures_cover_every_server_frame_type_gap_reason_and_several_error_codes() {
    let expected = set(&[
        "welcome",
        "event",
        "subscribed",
        "snapshot",
        "replay_complete",
        "gap",
        "ping",
        "pong",
        "ack",
        "error",
    ]);
    assert_eq!(tags("ServerMessage", "type"), expected);
    assert_eq!(
        tags("ServerMessage", "reason"),
        set(&["trimmed", "shed", "epoch_changed"])
    );
    let codes = tags("ServerMessage", "code");
    assert!(codes.len() >= 5, "error fixtures cover only {codes:?}");
}

#[test]
fn encode_frame_is_byte_for_byte_the_event_frame() {
    let dir = fixtures_dir().join("ServerMessage");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        let message: ServerMessage = serde_json::from_str(&text).unwrap();
        if let ServerMessage::Event(event) = &message {
            assert_eq!(event.encode_frame(), message.encode());
            checked += 1;
        }
    }
    assert!(checked > 0, "no event fixture was checked");
}
