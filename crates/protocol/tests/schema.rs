//! The JSON Schema, as `cargo xtask bindings` writes it (the comparison with
//! the committed file lives in xtask; these tests check what is generated).

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use herald_protocol::schema::{HEADER, OMIT_DEFAULT, json_schema, render};
use serde_json::Value;

fn defs() -> serde_json::Map<String, Value> {
    json_schema()["$defs"].as_object().unwrap().clone()
}

#[test]
fn every_fixture_type_and_typescript_type_has_a_definition() {
    let defs = defs();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            defs.contains_key(&name),
            "no $defs/{name} for the fixtures of {name}"
        );
    }
    for (path, _) in herald_protocol::bindings::declarations() {
        let name = path.trim_end_matches(".ts");
        if name != "index" && !name.contains('/') {
            assert!(
                defs.contains_key(name),
                "ts-bindings has {name}, the schema does not"
            );
        }
    }
}

#[test]
fn the_62_known_event_types_are_one_enum_and_custom_names_a_pattern() {
    let defs = defs();
    let known = defs["KnownEventType"]["enum"].as_array().unwrap();
    assert_eq!(known.len(), herald_protocol::EventType::KNOWN.len());
    assert_eq!(known.len(), 62);
    let event_type = defs["EventType"]["anyOf"].as_array().unwrap();
    assert_eq!(event_type[0]["$ref"], "#/$defs/KnownEventType");
    assert!(event_type[1]["pattern"].is_string());
}

#[test]
fn omitted_defaults_are_marked_exactly_where_serde_skips_them() {
    let defs = defs();
    let marked = |def: &str, property: &str| {
        defs[def]["properties"][property].get(OMIT_DEFAULT) == Some(&Value::Bool(true))
    };
    // skip_serializing_if: left out at their default.
    assert!(marked("PublishRequest", "priority"));
    assert!(marked("PublishRequest", "data"));
    assert!(marked("Event", "key"));
    assert!(marked("Subscribe", "since"));
    assert!(marked("ErrorPayload", "details"));
    // Always written, even when null or default.
    assert!(!marked("Event", "data"));
    assert!(!marked("ApprovalDecision", "proceed"));
    assert!(!marked("ErrorFrame", "ref"));
    assert!(!marked("TaskStepResult", "completed"));
    assert_eq!(
        defs["PublishRequest"]["properties"]["priority"]["default"],
        "normal"
    );
}

#[test]
fn rendering_is_deterministic_and_carries_the_header() {
    let text = render();
    assert_eq!(text, render());
    assert!(text.ends_with("}\n"));
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["$comment"], HEADER);
}
