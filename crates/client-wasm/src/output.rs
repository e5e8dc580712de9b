//! Session events encoded for JS: a kind and a JSON text, which the
//! TypeScript wrapper parses once and dispatches.

use herald_protocol::session::{ConnectionState, SessionEvent, StateReport};
use serde_json::json;

/// `(kind, json)` for the JS callback. Kinds: `event`, `gap`, `snapshot`,
/// `state`, `error`, `welcome`, `subscribed`, `replay_complete`, `ack`,
/// `dropped`.
pub(crate) fn encode(event: &SessionEvent) -> (&'static str, String) {
    let encoded = match event {
        SessionEvent::Event(event) => ("event", serde_json::to_string(event)),
        SessionEvent::Gap(gap) => ("gap", serde_json::to_string(gap)),
        SessionEvent::Snapshot(snapshot) => ("snapshot", serde_json::to_string(snapshot)),
        SessionEvent::StateChanged(state) => return ("state", state_json(state)),
        SessionEvent::Error(error) => ("error", serde_json::to_string(error)),
        SessionEvent::Welcome(welcome) => ("welcome", serde_json::to_string(welcome)),
        SessionEvent::Subscribed(subscribed) => ("subscribed", serde_json::to_string(subscribed)),
        SessionEvent::ReplayComplete(done) => ("replay_complete", serde_json::to_string(done)),
        SessionEvent::Ack(ack) => ("ack", serde_json::to_string(ack)),
        SessionEvent::FrameDropped(frame) => ("dropped", serde_json::to_string(frame)),
    };
    // These types serialize to JSON objects; a failure cannot happen, but is
    // still reported rather than hidden.
    let (kind, result) = encoded;
    (
        kind,
        result.unwrap_or_else(|error| json!({ "encode_error": error.to_string() }).to_string()),
    )
}

/// The state as JSON ([`StateReport`]: `{"state": "open"}`,
/// `{"state": "reconnecting", "attempt": N, "delay": MS}`, ...).
pub(crate) fn state_json(state: &ConnectionState) -> String {
    serde_json::to_string(&StateReport::from(state))
        .unwrap_or_else(|error| json!({ "encode_error": error.to_string() }).to_string())
}
