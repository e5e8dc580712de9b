//! The dialects of the systems Herald replaces, each under its own prefix
//! with its seed document's own paths below it, so a client written for
//! that system changes only its base URL:
//!
//! | prefix | seed | speaks |
//! |---|---|---|
//! | `/compat/aiecs` | 000, AIECS `WebSocketManager` | `task_step_result` questions answered by `confirm`, broadcasts, heartbeats; `notify_user` and the manager's other calls over HTTP |
//! | `/compat/crewai/api/v1/websocket` | 002, CrewAI backend | `WebSocketEvent`s on `/ws/executions/{id}`, `/ws/crews/{id}`, `/ws/global`, `/ws/metrics`, `/ws/custom`; its admin routes |
//! | `/compat/statemachine` | 003, state machine engine | `initial`, `state_change`, `ping` on `/ws/events`; `pong`, `refresh` |
//! | `/compat/cmbagent` | 004, cmbagent | `workflow_started`, `step_completed`, … on `/ws/{run_id}`, state on connect, missed events since a timestamp, `pause`/`resume` |
//!
//! Each dialect is a translation at the edge over the one hub: its sockets
//! are ordinary core connections, subscribed through the core, whose
//! outgoing Herald frames its [`Dialect`](super::ws::dialect::Dialect)
//! renders as the seed's messages, and whose client messages it carries out
//! through the same publish path, subscriptions and approvals service as
//! Herald's own frames. Authentication, origins and limits apply to them as
//! to every other route.
//!
//! # Layout
//!
//! - this module: [`router`], [`scope_for`], and what the dialects share
//!   (subscribing, reading the core's frames, seconds and ISO 8601 times,
//!   names).
//! - `aiecs`, `crewai`, `statemachine`, `cmbagent`: one per system.

mod aiecs;
mod cmbagent;
mod crewai;
mod statemachine;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use herald_protocol::frame::{GapReason, Subscribe};
use herald_protocol::session::RETRY_AFTER_MS;
use herald_protocol::{ErrorCode, Event, EventType, ServerMessage, Topic};
use serde_json::{Map, Value};
use tungstenite::Utf8Bytes;

use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::operations::auth::Scope;

/// Every dialect's routes, under their prefixes.
pub(crate) fn router() -> Router<Hub> {
    Router::new()
        .merge(aiecs::routes())
        .merge(crewai::routes())
        .merge(statemachine::routes())
        .merge(cmbagent::routes())
}

/// The API-key scope a dialect's HTTP route needs (`path` without
/// `/compat/`), as Herald's own API would for the same operation:
/// `publish` to publish or ask, `admin` to look at or drop connections;
/// WebSocket endpoints and health checks need none.
pub(crate) fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (
            &Method::POST,
            [
                "aiecs",
                "notify_user" | "broadcast_message" | "send_heartbeat",
            ],
        )
        | (&Method::POST, ["aiecs", "send_to_user", _])
        | (&Method::POST, ["crewai", "api", "v1", "websocket", "broadcast", ..]) => {
            Some(Scope::Publish)
        }
        (&Method::GET, ["aiecs", "status" | "connection_count"])
        | (&Method::GET, ["crewai", "api", "v1", "websocket", "connections", ..])
        | (&Method::POST, ["crewai", "api", "v1", "websocket", "disconnect", _])
        | (&Method::DELETE, ["crewai", "api", "v1", "websocket", "connections"]) => {
            Some(Scope::Admin)
        }
        _ => None,
    }
}

/// What a dialect's request came to: done, or refused with an error code
/// and a message the dialect renders its own way.
pub(crate) type Done = Result<(), (ErrorCode, String)>;

/// Subscribes a dialect's connection through the core, as Herald's own
/// `subscribe` frame does: only to what its token allows (`forbidden`
/// otherwise).
pub(crate) async fn subscribe(hub: &Hub, conn: &Arc<ConnHandle>, request: &Subscribe) -> Done {
    conn.check_access(&request.topics)?;
    hub.subscriptions()
        .subscribe(conn, request)
        .await
        .map_err(|e| (e.code, e.message))
}

/// A queued entry as the Herald frame it holds; `None` for a shed-events
/// marker (see [`Entry::Gap`]), a frame that does not decode, and another
/// node's shutdown notice: the seeds' clients knew one server, and would
/// take it for their own server leaving (this node's own notice carries
/// each connection's retry hint, and is shown).
pub(crate) fn frame_of(entry: &Entry) -> Option<ServerMessage> {
    let Entry::Frame(frame) = entry else {
        return None;
    };
    match serde_json::from_slice::<ServerMessage>(&frame.text) {
        Ok(ServerMessage::Event(event)) if another_nodes_notice(&event) => None,
        Ok(message) => Some(message),
        Err(error) => {
            tracing::error!(%error, "a queued frame does not decode; not translated");
            None
        }
    }
}

/// Whether `event` is another node's drain notice as stored: on `global`,
/// naming its node, without the retry hint each of that node's own
/// connections gets (a producer's own `system.shutdown` is not one).
fn another_nodes_notice(event: &Event) -> bool {
    event.event_type == EventType::SystemShutdown
        && event.topic == Topic::global()
        && event.data.get(RETRY_AFTER_MS).is_none()
        && event.data.pointer("/details/node").is_some()
}

/// What a gap in `subject`'s events means, in the words a dialect shows
/// its users. An `epoch_changed` gap is not events lost on the way: the
/// store's history was reset (`1..0`: nothing held yet) or restored from an
/// older copy (`1..N`: that copy's events, which may differ from what was
/// shown).
pub(crate) fn gap_message(subject: &str, from_seq: u64, to_seq: u64, reason: GapReason) -> String {
    match reason {
        GapReason::EpochChanged if to_seq == 0 => {
            format!("the hub's history of {subject} was reset: its events start again from 1")
        }
        GapReason::EpochChanged => format!(
            "the hub's history of {subject} was reset or restored from an older copy: it now holds events 1..{to_seq}, which may differ from those shown"
        ),
        GapReason::Trimmed => format!(
            "events {from_seq}..{to_seq} of {subject} are no longer retained and will not be delivered"
        ),
        GapReason::Shed => format!(
            "events {from_seq}..{to_seq} of {subject} will not be delivered (the connection fell behind)"
        ),
    }
}

/// A JSON value as one text frame.
pub(crate) fn text(value: &Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

/// Milliseconds since the Unix epoch as the seeds' seconds (a float, as
/// Python's `time.time()` gives them).
pub(crate) fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn now_seconds() -> f64 {
    seconds(now_ms())
}

/// A cursor or timestamp a seed client sent, as milliseconds since the
/// Unix epoch: seconds (Python's `time.time()`, up to year 5138) or
/// milliseconds (JavaScript's `Date.now()`); `None` if it is neither.
pub(crate) fn millis_from(number: f64) -> Option<u64> {
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let ms = if number < 1e11 {
        number * 1000.0
    } else {
        number
    };
    // To the nearest millisecond: the seconds a client read from Herald are
    // whole milliseconds, which `ms / 1000` then `* 1000` may miss by a hair.
    Some(ms.round() as u64)
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC with milliseconds
/// (`2024-01-15T10:30:00.123Z`), as the CrewAI backend's datetimes read.
pub(crate) fn iso8601(ms: u64) -> String {
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// An event's `data` as the fields of a flat message: an object's own
/// fields, anything else under `data`.
pub(crate) fn fields_of(data: &Value) -> Map<String, Value> {
    match data {
        Value::Object(fields) => fields.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("data".to_owned(), other.clone())]),
    }
}

/// A dotted event type as the seeds spell names: `task.progress` →
/// `task_progress` (only the first dot: the action keeps its own).
pub(crate) fn underscored(event_type: &str) -> String {
    event_type.replacen('.', "_", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_nodes_shutdown_notice_is_not_shown_and_this_nodes_is() {
        let notice = |data: Value| {
            let event = Event {
                topic: Topic::global(),
                seq: 3,
                id: herald_protocol::EventId::new("n").unwrap(),
                event_type: EventType::SystemShutdown,
                priority: herald_protocol::Priority::Critical,
                timestamp: 0,
                source: None,
                key: None,
                data,
            };
            let frame =
                crate::core::outbox::OutFrame::control(ServerMessage::Event(event).encode());
            frame_of(&Entry::Frame(frame))
        };
        let stored = serde_json::json!({"message": "the hub is shutting down", "code": "shutdown",
            "details": {"node": "n1"}});
        assert!(notice(stored.clone()).is_none(), "another node's notice");
        let mut own = stored;
        own[RETRY_AFTER_MS] = serde_json::json!(1200);
        assert!(notice(own).is_some(), "this node's notice, with its hint");
        let producers = serde_json::json!({"message": "maintenance at noon"});
        assert!(
            notice(producers).is_some(),
            "a producer's own system.shutdown"
        );
    }

    #[test]
    fn iso8601_reads_as_the_calendar_says() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_705_314_600_000), "2024-01-15T10:30:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_cursor_in_seconds_or_milliseconds_is_milliseconds() {
        assert_eq!(millis_from(1_729_845_678.123), Some(1_729_845_678_123));
        assert_eq!(millis_from(1_729_845_678_123.0), Some(1_729_845_678_123));
        // Every millisecond read back from its seconds is that millisecond.
        for ms in (1_768_400_000_000u64..1_768_400_001_000).step_by(7) {
            assert_eq!(millis_from(ms as f64 / 1000.0), Some(ms));
        }
        assert_eq!(millis_from(-1.0), None);
        assert_eq!(millis_from(f64::NAN), None);
    }

    #[test]
    fn scopes_follow_the_operation() {
        assert_eq!(
            scope_for(&Method::POST, "aiecs/notify_user"),
            Some(Scope::Publish)
        );
        assert_eq!(
            scope_for(&Method::POST, "aiecs/send_to_user/u1"),
            Some(Scope::Publish)
        );
        assert_eq!(scope_for(&Method::GET, "aiecs/status"), Some(Scope::Admin));
        assert_eq!(scope_for(&Method::GET, "aiecs/"), None);
        assert_eq!(
            scope_for(&Method::POST, "crewai/api/v1/websocket/broadcast/crew_1"),
            Some(Scope::Publish)
        );
        assert_eq!(
            scope_for(&Method::DELETE, "crewai/api/v1/websocket/connections"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_for(&Method::GET, "crewai/api/v1/websocket/health"),
            None
        );
        assert_eq!(
            scope_for(&Method::GET, "crewai/api/v1/websocket/ws/global"),
            None
        );
        assert_eq!(scope_for(&Method::GET, "statemachine/ws/events"), None);
    }
}
