//! The TypeScript bindings, as `cargo xtask bindings` writes them. (The
//! comparison with `ts-bindings/` on disk lives in xtask; these tests check the
//! shape of what is generated.)

// Test helpers panic to report a failure; clippy only exempts `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use herald_protocol::bindings::{HEADER, declarations};

fn files() -> BTreeMap<String, String> {
    declarations().into_iter().collect()
}

#[test]
fn every_wire_type_has_a_file() {
    let files = files();
    for name in [
        "Event",
        "PublishRequest",
        "PublishBody",
        "PublishReceipt",
        "EventType",
        "KnownEventType",
        "Priority",
        "EventFilter",
        "ErrorCode",
        "ClientFrame",
        "ClientMessage",
        "Subscribe",
        "Unsubscribe",
        "Replay",
        "RequestState",
        "Auth",
        "Heartbeat",
        "Confirm",
        "Control",
        "AckRequest",
        "Since",
        "RequestId",
        "ServerMessage",
        "Welcome",
        "Subscribed",
        "Snapshot",
        "ReplayComplete",
        "Gap",
        "GapReason",
        "Ack",
        "ErrorFrame",
        "Progress",
        "StateChange",
        "TaskStepResult",
        "ApprovalRequested",
        "ApprovalStatus",
        "ApprovalDecision",
        "ControlRequest",
        "ErrorPayload",
        "Metrics",
        "index",
    ] {
        let file = format!("{name}.ts");
        assert!(files.contains_key(&file), "{file} is not generated");
        if name != "index" {
            let index = &files["index.ts"];
            assert!(
                index.contains(&format!("export type {{ {name} }} from \"./{name}\";")),
                "index.ts does not export {name}"
            );
        }
    }
}

#[test]
fn every_file_starts_with_the_do_not_edit_header() {
    for (path, contents) in files() {
        assert!(contents.starts_with(HEADER), "{path} lacks the header");
        assert!(
            !contents.contains("ts-rs"),
            "{path} still has ts-rs's own note"
        );
    }
}

#[test]
fn every_import_names_a_generated_file() {
    let files = files();
    for (path, contents) in &files {
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        for line in contents.lines().filter(|l| l.starts_with("import ")) {
            let target = line.split('"').nth(1).unwrap();
            let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
            for part in target.split('/') {
                match part {
                    "." => {}
                    ".." => assert!(
                        parts.pop().is_some(),
                        "{path}: `{line}` leaves ts-bindings/"
                    ),
                    name => parts.push(name),
                }
            }
            let resolved = format!("{}.ts", parts.join("/"));
            assert!(
                files.contains_key(&resolved),
                "{path}: `{line}` does not resolve ({resolved})"
            );
        }
    }
}

#[test]
fn sixty_four_bit_integers_are_numbers_not_bigints() {
    for (path, contents) in files() {
        assert!(
            !contents.contains("bigint"),
            "{path} uses bigint:\n{contents}"
        );
    }
    let event = &files()["Event.ts"];
    assert!(event.contains("seq: number"), "{event}");
    assert!(event.contains("timestamp: number"), "{event}");
}

#[test]
fn event_type_is_open_over_the_known_names() {
    let files = files();
    let event_type = &files["EventType.ts"];
    assert!(
        event_type.contains("import type { KnownEventType } from \"./KnownEventType\";"),
        "{event_type}"
    );
    assert!(
        event_type.contains("export type EventType = KnownEventType | (string & {});"),
        "{event_type}"
    );
    assert!(files["KnownEventType.ts"].contains("| \"execution.progress\""));
}

#[test]
fn omitted_fields_are_optional_in_typescript() {
    let files = files();
    for (file, field) in [
        ("Event.ts", "source?: Label"),
        ("Event.ts", "key?: Label"),
        ("PublishRequest.ts", "priority?: Priority"),
        ("PublishRequest.ts", "data?: JsonValue"),
        ("PublishRequest.ts", "timestamp?: number"),
        ("ClientFrame.ts", "id?: RequestId"),
        ("Subscribe.ts", "snapshot?: boolean"),
        ("Subscribe.ts", "filter?: EventFilter"),
        ("EventFilter.ts", "types?: Array<string>"),
    ] {
        assert!(
            files[file].contains(field),
            "{file} lacks `{field}`:\n{}",
            files[file]
        );
    }
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(declarations(), declarations());
}

#[test]
fn every_typed_payload_example_is_valid_for_its_event_types() {
    use herald_protocol::EventType;
    use herald_protocol::payload::{PayloadKind, check};
    let mut typed = 0;
    for event_type in EventType::KNOWN {
        if let Some(kind) = PayloadKind::of(event_type) {
            typed += 1;
            let example: serde_json::Value = serde_json::from_str(kind.example()).unwrap();
            check(event_type, &example).unwrap_or_else(|e| panic!("{event_type}: {e}"));
            assert!(
                check(event_type, &serde_json::json!("a string")).is_err(),
                "{event_type} accepts data of another shape"
            );
        } else {
            assert!(check(event_type, &serde_json::json!(["any", 1])).is_ok());
        }
    }
    assert_eq!(typed, 18, "the event types with a typed payload");
}

#[test]
fn the_payload_map_names_each_typed_event_type_once() {
    let files = files();
    let map = &files["client/PayloadMap.ts"];
    for (name, kind) in [
        ("approval.requested", "ApprovalRequested"),
        ("approval.resolved", "ApprovalResolved"),
        ("execution.progress", "Progress"),
        ("cost.updated", "Metrics"),
        ("control.pause", "ControlRequest"),
        ("system.error", "ErrorPayload"),
    ] {
        assert_eq!(
            map.matches(&format!("\"{name}\": {kind},")).count(),
            1,
            "{name}"
        );
    }
    assert!(files["KnownEventType.ts"].contains("export const KNOWN_EVENT_TYPES"));
    assert!(files["index.ts"].contains("export { KNOWN_EVENT_TYPES } from \"./KnownEventType\";"));
}
