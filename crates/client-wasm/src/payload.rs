//! The protocol's typed payloads for JS: which event types have one, a valid
//! example of each, and a check of a `data` against it, so a page validates
//! what it is about to publish with the same types the hub and the clients
//! read.

use herald_protocol::EventType;
use herald_protocol::payload::PayloadKind;
use wasm_bindgen::prelude::*;

fn kind(event_type: &str) -> Option<PayloadKind> {
    PayloadKind::of(&EventType::parse(event_type).ok()?)
}

/// The name of `eventType`'s typed payload (`"Progress"`, ...), or
/// `undefined` when its `data` may be any JSON.
#[wasm_bindgen(js_name = payloadType)]
pub fn payload_type(event_type: &str) -> Option<String> {
    kind(event_type).map(|kind| kind.name().to_owned())
}

/// A small valid `data` for `eventType`, as JSON, or `undefined` when its
/// `data` may be any JSON.
#[wasm_bindgen(js_name = payloadExample)]
pub fn payload_example(event_type: &str) -> Option<String> {
    kind(event_type).map(|kind| kind.example().to_owned())
}

/// Checks an event before it is published: `undefined` if `eventType` is a
/// well-formed type and `data` (JSON text) is valid JSON of its typed
/// payload, else what is wrong.
#[wasm_bindgen(js_name = checkEvent)]
pub fn check_event(event_type: &str, data: &str) -> Option<String> {
    let event_type = match EventType::parse(event_type) {
        Ok(event_type) => event_type,
        Err(error) => return Some(error.to_string()),
    };
    let data: serde_json::Value = match serde_json::from_str(data) {
        Ok(data) => data,
        Err(error) => return Some(format!("not JSON: {error}")),
    };
    herald_protocol::payload::check(&event_type, &data)
        .err()
        .map(|error| error.to_string())
}
