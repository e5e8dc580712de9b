//! `POST /api/v1/events` bodies on arbitrary bytes: a `PublishBody` (one event
//! or a batch) and, for an array, each item as a `PublishRequest`, decode or
//! fail, and never panic.

#![no_main]

use herald_protocol::{PublishBody, PublishRequest};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<PublishBody>(data) {
        let _ = serde_json::to_vec(&body);
    }
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) {
        for item in items {
            let _ = serde_json::from_value::<PublishRequest>(item);
        }
    }
});
