//! Seed 003, the state machine engine's dashboard socket, at
//! `/compat/statemachine/ws/events`: `{type: "initial", machines: [...]}`
//! first, then `state_change` (and the machines' other events) as the
//! machines send them over the Unix socket (`--unix-socket`, which takes
//! their datagrams unchanged), `ping` every 10 s; the dashboard answers
//! `pong` and may ask for a fresh `initial` with `refresh`. Times are in
//! seconds.
//!
//! The machines' states are the snapshots of `machine:*` (their
//! `state.changed` events, keyed by machine). The socket subscribes to
//! `machine:*` with its snapshot between two markers; the frames between
//! them become the one `initial` message, and the live events that came
//! meanwhile follow it, those the snapshot already holds left out. A gap
//! (the dashboard fell behind and events were shed) sends a fresh
//! `initial`: the dashboard's state is the machines' state, so it is whole
//! again, and nothing is lost silently.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use herald_protocol::frame::{Ack, Heartbeat, Subscribe};
use herald_protocol::{ErrorCode, Event, EventType, RequestId, ServerMessage, Topic, TopicPattern};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tungstenite::Utf8Bytes;

use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::operations::config::Config;
use crate::transport::compat;
use crate::transport::compat::{fields_of, frame_of, now_seconds, seconds, text, underscored};
use crate::transport::http::body::Params;
use crate::transport::ws::connection::send_error;
use crate::transport::ws::dialect::{Dialect, Rendered};
use crate::transport::ws::handshake::Handshake;
use crate::transport::ws::upgrade::{Credentials, accept};

/// The seed's keepalive: a `ping` every 10 seconds (its dashboards time out
/// after 20–30 s without one). A shorter `--heartbeat-interval` wins.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The markers around the frames that make one `initial` message.
const BEGIN: &str = "compat:initial:begin";
const END: &str = "compat:initial:end";

/// The dashboard socket.
pub(super) fn routes() -> Router<Hub> {
    Router::new().route("/compat/statemachine/ws/events", get(connect))
}

async fn connect(
    ws: Handshake,
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Params(credentials): Params<Credentials>,
) -> Response {
    let dialect = StateMachineSocket {
        initial: Mutex::default(),
        refresh: AtomicBool::new(false),
        hold_limit: hub.config().queue_size,
    };
    accept(ws, hub, remote, &headers, credentials, dialect)
}

/// One dashboard's socket.
#[derive(Debug)]
pub(crate) struct StateMachineSocket {
    /// The `initial` message being assembled, between the markers.
    initial: Mutex<Option<Initial>>,
    /// A fresh `initial` is due (the dashboard missed events).
    refresh: AtomicBool,
    /// Most live events held while an `initial` is assembled.
    hold_limit: usize,
}

#[derive(Debug, Default)]
struct Initial {
    /// Each machine's entry, by machine id.
    machines: BTreeMap<String, Value>,
    /// Each machine topic's seq its snapshot is consistent with.
    heads: HashMap<Topic, u64>,
    /// Live events that came meanwhile, in order.
    held: Vec<Event>,
    /// More came than `hold_limit`: another `initial` is due.
    overflowed: bool,
}

fn marker(name: &'static str) -> ServerMessage {
    ServerMessage::Ack(Ack {
        reference: RequestId::String(name.to_owned()),
    })
}

fn machines() -> TopicPattern {
    TopicPattern::Kind("machine".into())
}

impl Dialect for StateMachineSocket {
    fn answers_approvals(&self) -> bool {
        false
    }

    fn follows(&self) -> Vec<TopicPattern> {
        vec![machines()]
    }

    fn greet(&self, _hub: &Hub, conn: &ConnHandle) {
        // Everything from here to the end marker is the `initial` message.
        conn.send(&marker(BEGIN));
    }

    async fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        let request = Subscribe {
            topics: vec![machines()],
            snapshot: true,
            ..Subscribe::default()
        };
        if let Err((code, message)) = compat::subscribe(hub, conn, &request).await {
            send_error(hub, conn, code, message, None);
        }
        conn.send(&marker(END));
    }

    async fn receive(&self, hub: &Hub, conn: &Arc<ConnHandle>, text: &str) {
        // The seed's server compared the raw text with `pong`; its
        // dashboards send `{"type": "pong"}`.
        if text.trim() == "pong" {
            return;
        }
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            let message = "Invalid JSON format".to_owned();
            return send_error(hub, conn, ErrorCode::InvalidJson, message, None);
        };
        match message.get("type").and_then(Value::as_str) {
            Some("pong") => {}
            Some("refresh") => send_initial(hub, conn).await,
            Some("ping") => conn.send(&ServerMessage::Pong(Heartbeat::default())),
            // The seed's server ignored anything else; a dashboard is told,
            // so a mistyped `refresh` does not go unnoticed.
            Some(other) => {
                let message =
                    format!("Unknown message type: {other:.100} (send pong, ping or refresh)");
                send_error(hub, conn, ErrorCode::UnknownAction, message, None);
            }
            None => {
                let message = "a message is a JSON object with a \"type\"".to_owned();
                send_error(hub, conn, ErrorCode::InvalidRequest, message, None);
            }
        }
    }

    fn resyncs_on_gap(&self) -> bool {
        true
    }

    fn render(&self, entry: Entry) -> Rendered {
        let Some(frame) = frame_of(&entry) else {
            if matches!(entry, Entry::Gap { .. }) {
                self.refresh.store(true, Relaxed);
            }
            return Rendered::Nothing;
        };
        let mut out = Rendered::Nothing;
        match frame {
            ServerMessage::Ack(Ack {
                reference: RequestId::String(name),
            }) if name == BEGIN => {
                *self.initial.lock() = Some(Initial::default());
            }
            ServerMessage::Ack(Ack {
                reference: RequestId::String(name),
            }) if name == END => {
                if let Some(initial) = self.initial.lock().take() {
                    self.finish(initial, &mut out);
                }
            }
            ServerMessage::Snapshot(snapshot) => {
                if let Some(initial) = self.initial.lock().as_mut() {
                    for event in &snapshot.events {
                        if event.event_type == EventType::StateChanged {
                            let (id, entry) = machine(event);
                            initial.machines.insert(id, entry);
                        }
                    }
                    initial.heads.insert(snapshot.topic, snapshot.seq);
                }
            }
            ServerMessage::Event(event) => {
                let mut initial = self.initial.lock();
                match initial.as_mut() {
                    Some(initial) if initial.held.len() < self.hold_limit => {
                        initial.held.push(event);
                    }
                    Some(initial) => initial.overflowed = true,
                    None => out.push(text(&message(&event))),
                }
            }
            // The hub never replays to this socket: a gap means it fell
            // behind, or the store's history was reset; either way the
            // dashboard gets a fresh `initial`.
            ServerMessage::Gap(_) => self.refresh.store(true, Relaxed),
            ServerMessage::Pong(_) => out.push(text(&json!({
                "type": "pong",
                "timestamp": now_seconds(),
            }))),
            ServerMessage::Error(error) => {
                // A dashboard not allowed to read the machines gets the
                // error alone: an empty `initial` would pass for an empty
                // fleet.
                if error.code == ErrorCode::Forbidden {
                    *self.initial.lock() = None;
                }
                // The hub's own advice for snapshots that did not fit
                // (`request_state`) is not this dialect's: here the remedy
                // is the queue's size.
                let message = if error.code == ErrorCode::TooLarge {
                    "some machines did not fit in this initial, which holds at most half \
                     of the hub's --queue-size machines: start the hub with a larger \
                     --queue-size"
                        .to_owned()
                } else {
                    error.message
                };
                out.push(text(&json!({
                    "type": "error",
                    "message": message,
                    "code": error.code,
                    "timestamp": now_seconds(),
                })));
            }
            _ => {}
        }
        out
    }

    fn heartbeat(&self) -> Option<Utf8Bytes> {
        Some(text(&json!({"type": "ping", "timestamp": now_seconds()})))
    }

    fn heartbeat_interval(&self, config: &Config) -> Duration {
        config.heartbeat_interval.min(PING_INTERVAL)
    }

    async fn after_batch(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        if self.refresh.swap(false, Relaxed) {
            send_initial(hub, conn).await;
        }
    }
}

impl StateMachineSocket {
    /// The assembled `initial`, then the events held meanwhile that it
    /// does not already hold.
    fn finish(&self, initial: Initial, out: &mut Rendered) {
        out.push(text(&json!({
            "type": "initial",
            "machines": initial.machines.into_values().collect::<Vec<_>>(),
            "timestamp": now_seconds(),
        })));
        for event in initial.held {
            let head = initial.heads.get(&event.topic).copied().unwrap_or(0);
            if event.seq > head {
                out.push(text(&message(&event)));
            }
        }
        if initial.overflowed {
            self.refresh.store(true, Relaxed);
        }
    }
}

/// Asks for a fresh `initial`: the snapshots of what the socket follows,
/// between the markers.
async fn send_initial(hub: &Hub, conn: &Arc<ConnHandle>) {
    conn.send(&marker(BEGIN));
    if let Err(error) = hub.subscriptions().send_state(conn, None).await {
        send_error(hub, conn, error.code, error.message, None);
    }
    conn.send(&marker(END));
}

/// A machine's entry in `initial`, from its latest `state.changed`.
fn machine(event: &Event) -> (String, Value) {
    let id = event
        .data
        .get("machine_id")
        .cloned()
        .unwrap_or_else(|| Value::from(event.topic.id().unwrap_or_default()));
    let key = match &id {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    let entry = json!({
        "id": id,
        "current_state": event.data.get("state"),
        "last_activity": seconds(event.timestamp),
    });
    (key, entry)
}

/// An event as the seed broadcast it: `state.changed` is `state_change`,
/// `machine.{type}` is `{type}` (the machine's own datagram type), anything
/// else its name with `_`; the `data` fields, then `timestamp` in seconds.
fn message(event: &Event) -> Value {
    let name = event.event_type.as_str();
    let kind = if event.event_type == EventType::StateChanged {
        "state_change".to_owned()
    } else if let Some(kind) = name.strip_prefix("machine.") {
        kind.to_owned()
    } else {
        underscored(name)
    };
    let mut fields = fields_of(&event.data);
    if event.topic.kind() == "machine"
        && let Some(id) = event.topic.id()
    {
        fields
            .entry("machine_id")
            .or_insert_with(|| Value::from(id));
    }
    fields.insert("type".to_owned(), Value::from(kind));
    fields.insert(
        "timestamp".to_owned(),
        Value::from(seconds(event.timestamp)),
    );
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use herald_protocol::frame::Snapshot;
    use herald_protocol::{Epoch, EventId, Priority};

    use super::*;
    use crate::core::outbox::OutFrame;

    fn state_change(machine: &str, seq: u64, state: &str) -> Event {
        Event {
            topic: Topic::with_id("machine", machine).unwrap(),
            seq,
            id: EventId::new(format!("{machine}-{seq}")).unwrap(),
            event_type: EventType::StateChanged,
            priority: Priority::Normal,
            timestamp: 1_729_845_678_123,
            source: None,
            key: None,
            data: json!({"machine_id": machine, "state": state, "previous_state": "idle",
                "data": {"job_id": "task-456"}}),
        }
    }

    fn entry(message: &ServerMessage) -> Entry {
        Entry::Frame(OutFrame::control(message.encode()))
    }

    fn texts(rendered: Rendered) -> Vec<Value> {
        let texts = match rendered {
            Rendered::One(one) => vec![one],
            Rendered::Many(many) => many,
            Rendered::Nothing => vec![],
        };
        texts
            .iter()
            .map(|t| serde_json::from_slice(t).unwrap())
            .collect()
    }

    #[test]
    fn machines_that_did_not_fit_in_the_initial_are_told_to_take_a_larger_queue() {
        let socket = StateMachineSocket {
            initial: Mutex::default(),
            refresh: AtomicBool::new(false),
            hold_limit: 8,
        };
        let overrun = ServerMessage::Error(herald_protocol::frame::ErrorFrame {
            code: ErrorCode::TooLarge,
            message: "3 topics' snapshots did not fit: ask for them with request_state".to_owned(),
            reference: None,
        });
        let told = texts(socket.render(entry(&overrun)));
        let message = told[0]["message"].as_str().unwrap();
        assert!(message.contains("--queue-size"), "{message}");
        assert!(!message.contains("request_state"), "{message}");
    }

    #[test]
    fn a_dashboard_not_allowed_the_machines_gets_the_error_and_no_initial() {
        let socket = StateMachineSocket {
            initial: Mutex::default(),
            refresh: AtomicBool::new(false),
            hold_limit: 8,
        };
        let forbidden = ServerMessage::Error(herald_protocol::frame::ErrorFrame {
            code: ErrorCode::Forbidden,
            message: "not allowed to read machine:*".to_owned(),
            reference: None,
        });
        assert!(texts(socket.render(entry(&marker(BEGIN)))).is_empty());
        let told = texts(socket.render(entry(&forbidden)));
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0]["type"], "error");
        assert_eq!(told[0]["code"], "forbidden");
        let out = texts(socket.render(entry(&marker(END))));
        assert!(out.is_empty(), "an initial after the refusal: {out:?}");
    }

    #[test]
    fn one_initial_holds_every_machine_and_the_live_events_it_covers_are_left_out() {
        let socket = StateMachineSocket {
            initial: Mutex::default(),
            refresh: AtomicBool::new(false),
            hold_limit: 8,
        };
        let snapshot = |machine: &str, seq: u64, state: &str| {
            ServerMessage::Snapshot(Snapshot {
                topic: Topic::with_id("machine", machine).unwrap(),
                epoch: Epoch::new("e").unwrap(),
                seq,
                events: vec![state_change(machine, seq, state)],
            })
        };
        assert!(texts(socket.render(entry(&marker(BEGIN)))).is_empty());
        // A live event of w1 arrives before its snapshot, which holds it.
        let early = ServerMessage::Event(state_change("w1", 2, "processing"));
        assert!(texts(socket.render(entry(&early))).is_empty());
        socket.render(entry(&snapshot("w1", 2, "processing")));
        socket.render(entry(&snapshot("w2", 5, "idle")));
        let late = ServerMessage::Event(state_change("w2", 6, "busy"));
        socket.render(entry(&late));
        let out = texts(socket.render(entry(&marker(END))));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["type"], "initial");
        let ids: Vec<&str> = out[0]["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["w1", "w2"]);
        assert_eq!(out[0]["machines"][0]["current_state"], "processing");
        assert_eq!(out[0]["machines"][0]["last_activity"], 1_729_845_678.123);
        assert_eq!(out[1]["type"], "state_change");
        assert_eq!(out[1]["state"], "busy");
        // After the initial, events go straight out.
        let next = ServerMessage::Event(state_change("w1", 3, "done"));
        assert_eq!(texts(socket.render(entry(&next)))[0]["state"], "done");
    }

    #[test]
    fn a_dashboard_that_fell_behind_gets_a_fresh_initial() {
        let socket = StateMachineSocket {
            initial: Mutex::default(),
            refresh: AtomicBool::new(false),
            hold_limit: 1,
        };
        socket.render(Entry::Gap {
            topic: Topic::with_id("machine", "w1").unwrap(),
            from_seq: 3,
            to_seq: 4,
        });
        assert!(socket.refresh.swap(false, Relaxed));
        // Too many live events while assembling: another initial is due.
        socket.render(entry(&marker(BEGIN)));
        socket.render(entry(&ServerMessage::Event(state_change("w1", 1, "a"))));
        socket.render(entry(&ServerMessage::Event(state_change("w1", 2, "b"))));
        socket.render(entry(&marker(END)));
        assert!(socket.refresh.load(Relaxed));
    }
}
