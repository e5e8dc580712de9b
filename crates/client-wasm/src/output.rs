//! Session events encoded for JS: a kind and a JSON text, which the
//! TypeScript wrapper parses once and dispatches.

use herald_protocol::session::{ClosedReason, ConnectionState, SessionEvent};
use serde_json::{Value, json};

/// `(kind, json)` for the JS callback. Kinds: `event`, `gap`, `snapshot`,
/// `state`, `error`, `welcome`, `subscribed`, `replay_complete`, `ack`,
/// `dropped`.
pub(crate) fn encode(event: &SessionEvent) -> (&'static str, String) {
    let encoded = match event {
        SessionEvent::Event(event) => ("event", serde_json::to_string(event)),
        SessionEvent::Gap(gap) => ("gap", serde_json::to_string(gap)),
        SessionEvent::Snapshot(snapshot) => ("snapshot", serde_json::to_string(snapshot)),
        SessionEvent::StateChanged(state) => return ("state", state_json(state).to_string()),
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

/// `{"state": "connecting" | "open"}`,
/// `{"state": "reconnecting", "attempt": N, "delay": MS}`,
/// `{"state": "closed", "reason": "disconnected" | "terminal" | "attempts_exhausted", ...}`.
pub(crate) fn state_json(state: &ConnectionState) -> Value {
    match state {
        ConnectionState::Connecting => json!({ "state": "connecting" }),
        ConnectionState::Open => json!({ "state": "open" }),
        ConnectionState::Reconnecting { attempt, delay_ms } => {
            json!({ "state": "reconnecting", "attempt": attempt, "delay": delay_ms })
        }
        ConnectionState::Closed { reason } => match reason {
            ClosedReason::Disconnected => json!({ "state": "closed", "reason": "disconnected" }),
            ClosedReason::Terminal(code) => {
                json!({ "state": "closed", "reason": "terminal", "code": code.0 })
            }
            ClosedReason::AttemptsExhausted { attempts } => {
                json!({ "state": "closed", "reason": "attempts_exhausted", "attempts": attempts })
            }
        },
    }
}
