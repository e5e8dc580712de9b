//! Seed 004, cmbagent's run socket, at `/compat/cmbagent/ws/{run_id}`:
//! `{event_type: "workflow_started" | "step_completed" | …, timestamp,
//! run_id, data}` messages, the run's state on connect, the events missed
//! since a timestamp, and `ping`, `request_state`, `pause`, `resume` from
//! the UI on the run its socket is for. Times are in seconds.
//!
//! The run is the topic `run:{run_id}`. On connect the socket subscribes
//! to it with its snapshot (the run's state: the latest event of each key,
//! sent as those events) and, when the URL carries `?since=T` (the last
//! message's `timestamp`, in seconds or milliseconds), with a time cursor:
//! every retained event newer than `T` follows, those the state already
//! showed left out, then live events, none twice; when other events share
//! `T`'s millisecond, those are sent again too (a timestamp cannot say
//! which of them the UI had). A gap (the UI fell
//! behind) is reported as `error_occurred` and the state is sent again.
//! A cursor older than the run's stream (the stream began after it: the
//! hub lost its history, or the run started again) is another stream's:
//! the UI is told (`error_occurred`, `epoch_changed`) and gets the state and
//! every retained event of the stream there is.
//!
//! The UI resumes from its last message's `timestamp`, so a message that is
//! not one of the run's events after the state (`connected`, `heartbeat`,
//! `pong`, `error_occurred`, a broadcast) never moves that cursor: those
//! carry the time of the last event sent (or the `since` the UI came with),
//! and the state, whose events keep their own times, is followed by a
//! `heartbeat` at that time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_protocol::frame::{Gap, GapReason, Heartbeat, Since, Subscribe};
use herald_protocol::payload::{ControlRequest, Payload as _};
use herald_protocol::{
    ErrorCode, Event, EventFilter, EventType, Priority, PublishRequest, ServerMessage, Topic,
    TopicPattern,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tungstenite::Utf8Bytes;

use crate::core::broker::epoch_created_ms;
use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::core::publish::PublishOptions;
use crate::transport::compat;
use crate::transport::compat::{frame_of, gap_message, millis_from, seconds, text, underscored};
use crate::transport::http::body::Params;
use crate::transport::http::error::ApiError;
use crate::transport::ws::commands::check_steering;
use crate::transport::ws::connection::send_error;
use crate::transport::ws::dialect::{Dialect, Rendered};
use crate::transport::ws::handshake::Handshake;
use crate::transport::ws::native::welcome;
use crate::transport::ws::upgrade::{Credentials, accept};

/// The run socket.
pub(super) fn routes() -> Router<Hub> {
    Router::new().route("/compat/cmbagent/ws/{run_id}", get(connect))
}

/// Where a reconnecting UI left off: its last message's `timestamp`.
#[derive(Debug, Deserialize)]
struct Resume {
    since: Option<f64>,
}

async fn connect(
    Path(run_id): Path<String>,
    ws: Handshake,
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Params(credentials): Params<Credentials>,
    Params(resume): Params<Resume>,
) -> Response {
    let topic = match Topic::with_id("run", &run_id) {
        Ok(topic) => topic,
        Err(error) => {
            return ApiError::new(ErrorCode::InvalidTopic, error.to_string()).into_response();
        }
    };
    let cursor = match resume.since.map(millis_from) {
        None => None,
        Some(Some(ms)) => Some(ms),
        Some(None) => {
            return ApiError::new(
                ErrorCode::InvalidRequest,
                "since must be the last message's timestamp (seconds or milliseconds since the epoch)",
            )
            .into_response();
        }
    };
    let dialect = CmbagentSocket {
        run_id,
        topic,
        cursor,
        sync: Mutex::new(Sync {
            shown: HashSet::new(),
            replaying: cursor.is_some(),
        }),
        resync: AtomicBool::new(false),
        last_sent: AtomicU64::new(cursor.unwrap_or_else(now_ms)),
    };
    accept(ws, hub, remote, &headers, credentials, dialect)
}

/// How many retained events from the UI's last millisecond on are looked at
/// for others sharing it.
const SAME_MILLISECOND_LOOKAHEAD: usize = 64;

/// Where a UI whose last message was at `ms` resumes.
enum ResumePoint {
    /// Every retained event newer than this time.
    After(u64),
    /// The run's stream (of this epoch) began after `ms`: the UI's messages
    /// were another stream's.
    Replaced(herald_protocol::Epoch),
}

/// Where a UI whose last message was at `ms` resumes: after `ms` itself,
/// unless another retained event shares that millisecond (a batch, a
/// burst): the UI may have had only some of those and a timestamp cannot
/// say which, so they are all sent again from `ms - 1`, a repeat (each with
/// its `event_id`) rather than a silent hole. A stream that began after
/// `ms` and holds no event from `ms` or before (a producer may set a
/// time older than the stream) is another than the one the UI followed.
async fn resume_point(hub: &Hub, topic: &Topic, ms: u64) -> ResumePoint {
    let Some(before) = ms.checked_sub(1) else {
        return ResumePoint::After(ms);
    };
    let broker = hub.broker();
    let (position, read) = match broker
        .history(topic, &Since::time_ms(before), SAME_MILLISECOND_LOOKAHEAD)
        .await
    {
        Ok(found) => found,
        // The subscription that follows reads the same store and reports it.
        Err(_) => return ResumePoint::After(ms),
    };
    if epoch_created_ms(&position.epoch).is_some_and(|born| born > ms) {
        let oldest_is_newer = match broker.history(topic, &Since::seq(0), 1).await {
            Ok((_, oldest)) => oldest.events.first().is_none_or(|e| e.event.timestamp > ms),
            Err(_) => false,
        };
        if oldest_is_newer {
            return ResumePoint::Replaced(position.epoch);
        }
    }
    let shared = read
        .events
        .iter()
        .filter(|e| e.event.timestamp == ms)
        .count()
        > 1;
    ResumePoint::After(if shared { before } else { ms })
}

/// One UI's socket for one run.
#[derive(Debug)]
pub(crate) struct CmbagentSocket {
    run_id: String,
    topic: Topic,
    /// Milliseconds since the epoch: replay what is newer on connect.
    cursor: Option<u64>,
    sync: Mutex<Sync>,
    /// The state is due again (the UI missed events).
    resync: AtomicBool,
    /// The `timestamp` (ms) of the last of the run's events sent after the
    /// state, or the UI's `since` (the time it connected, without one):
    /// where the UI resumes if this socket's last message is not an event.
    last_sent: AtomicU64,
}

/// Where the connect-time state and replay stand.
#[derive(Debug)]
struct Sync {
    /// Seqs the state showed, left out of the replay that follows it.
    shown: HashSet<u64>,
    /// The replay after `since` is still coming.
    replaying: bool,
}

impl Dialect for CmbagentSocket {
    fn answers_approvals(&self) -> bool {
        false
    }

    fn follows(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::Exact(self.topic.clone())]
    }

    fn greet(&self, hub: &Hub, conn: &ConnHandle) {
        // Rendered as `connected`.
        welcome(hub, conn);
    }

    async fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        // The history is looked at only for a UI that may read it (the
        // subscription refuses the others).
        let readable = conn.may_subscribe(&TopicPattern::Exact(self.topic.clone()));
        let since = match self.cursor {
            Some(ms) if readable => match resume_point(hub, &self.topic, ms).await {
                ResumePoint::After(ms) => Some(Since::time_ms(ms)),
                ResumePoint::Replaced(epoch) => {
                    // The UI stands at the new stream's start from now on,
                    // so its next resume is not told of this again.
                    if let Some(born) = epoch_created_ms(&epoch) {
                        self.last_sent.fetch_max(born, Relaxed);
                    }
                    conn.send(&ServerMessage::Gap(Gap {
                        topic: self.topic.clone(),
                        from_seq: 1,
                        to_seq: 0,
                        reason: GapReason::EpochChanged,
                        epoch: Some(epoch),
                    }));
                    Some(Since::time_ms(0))
                }
            },
            Some(ms) => Some(Since::time_ms(ms)),
            None => None,
        };
        let since = since.map(|since| (self.topic.clone(), since));
        let request = Subscribe {
            topics: vec![TopicPattern::Exact(self.topic.clone())],
            snapshot: true,
            since: since.into_iter().collect(),
            ..Subscribe::default()
        };
        if let Err((code, message)) = compat::subscribe(hub, conn, &request).await {
            send_error(hub, conn, code, message, None);
        }
    }

    async fn receive(&self, hub: &Hub, conn: &Arc<ConnHandle>, text: &str) {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            send_error(
                hub,
                conn,
                ErrorCode::InvalidJson,
                "invalid JSON".to_owned(),
                None,
            );
            return;
        };
        let kind = message
            .get("type")
            .or_else(|| message.get("action"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let done = match kind {
            "ping" => {
                conn.send(&ServerMessage::Pong(Heartbeat::default()));
                Ok(())
            }
            "request_state" if !conn.may_subscribe(&TopicPattern::Exact(self.topic.clone())) => {
                Err((
                    ErrorCode::Forbidden,
                    format!("not allowed to read {}", self.topic),
                ))
            }
            "request_state" => hub
                .subscriptions()
                .send_snapshot(conn, &self.topic, &EventFilter::default())
                .await
                .map_err(|e| (e.code, e.message)),
            "pause" => {
                self.control(hub, conn, EventType::ControlPause, &message)
                    .await
            }
            "resume" => {
                self.control(hub, conn, EventType::ControlResume, &message)
                    .await
            }
            other => Err((
                ErrorCode::UnknownAction,
                format!("unknown message type {other:?}: ping, request_state, pause or resume"),
            )),
        };
        if let Err((code, message)) = done {
            send_error(hub, conn, code, message, None);
        }
    }

    fn render(&self, entry: Entry) -> Rendered {
        let Some(frame) = frame_of(&entry) else {
            return match entry {
                Entry::Gap {
                    topic,
                    from_seq,
                    to_seq,
                } => {
                    self.resync.store(true, Relaxed);
                    Rendered::One(
                        text(&self.missed(&topic, from_seq, to_seq, GapReason::Shed)).into(),
                    )
                }
                Entry::Frame(_) => Rendered::Nothing,
            };
        };
        let mut out = Rendered::Nothing;
        match frame {
            ServerMessage::Welcome(welcome) => out.push(text(&self.envelope(
                "connected",
                self.resume_time(),
                json!({"session_id": welcome.session_id, "message": "connected to Herald"}),
            ))),
            ServerMessage::Snapshot(snapshot) => {
                let mut sync = self.sync.lock();
                sync.shown = if sync.replaying {
                    snapshot.events.iter().map(|e| e.seq).collect()
                } else {
                    HashSet::new()
                };
                for event in &snapshot.events {
                    out.push(text(&self.message(event)));
                }
                // The state's events keep their own times, older than
                // where the UI is: its last message is this one.
                out.push(self.heartbeat_text());
            }
            ServerMessage::Event(event) => {
                let shown = {
                    let sync = self.sync.lock();
                    sync.replaying && event.topic == self.topic && sync.shown.contains(&event.seq)
                };
                if !shown {
                    if event.topic == self.topic {
                        self.last_sent.store(event.timestamp, Relaxed);
                    }
                    out.push(text(&self.message(&event)));
                }
            }
            ServerMessage::ReplayComplete(_) => {
                let mut sync = self.sync.lock();
                sync.replaying = false;
                sync.shown = HashSet::new();
            }
            ServerMessage::Gap(gap) => {
                let reason = gap.reason;
                out.push(text(&self.missed(
                    &gap.topic,
                    gap.from_seq,
                    gap.to_seq,
                    reason,
                )));
            }
            ServerMessage::Pong(_) => {
                out.push(text(&self.envelope("pong", self.resume_time(), json!({}))));
            }
            ServerMessage::Error(error) => out.push(text(&self.envelope(
                "error_occurred",
                self.resume_time(),
                json!({"message": error.message, "code": error.code}),
            ))),
            ServerMessage::Subscribed(_) | ServerMessage::Ack(_) | ServerMessage::Ping(_) => {}
        }
        out
    }

    fn heartbeat(&self) -> Option<Utf8Bytes> {
        Some(self.heartbeat_text())
    }

    async fn after_batch(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        if self.resync.swap(false, Relaxed)
            && let Err(error) = hub
                .subscriptions()
                .send_snapshot(conn, &self.topic, &EventFilter::default())
                .await
        {
            send_error(hub, conn, error.code, error.message, None);
        }
    }
}

impl CmbagentSocket {
    /// `pause` / `resume` on the run this socket is for: `control.pause` /
    /// `control.resume` on its topic, for the workflow to act on (it then
    /// reports `workflow_paused` / `workflow_resumed`).
    async fn control(
        &self,
        hub: &Hub,
        conn: &ConnHandle,
        event_type: EventType,
        message: &Map<String, Value>,
    ) -> Result<(), (ErrorCode, String)> {
        let reason = match message.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(reason)) => Some(reason.clone()),
            Some(_) => {
                return Err((
                    ErrorCode::InvalidRequest,
                    "reason must be a string".to_owned(),
                ));
            }
        };
        check_steering(hub, conn, &self.topic, None).await?;
        let data = ControlRequest {
            task_id: None,
            run_id: Some(self.run_id.clone()),
            reason,
            requested_by: conn.user_id.as_deref().map(str::to_owned),
        }
        .to_data();
        let request =
            PublishRequest::new(self.topic.clone(), event_type, data).priority(Priority::High);
        hub.publish(request, PublishOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| (e.code(), e.to_string()))
    }

    /// A message in the seed's envelope, for this socket's run (a
    /// hub-wide notice too: the UI keeps what names its run).
    fn envelope(&self, event_type: &str, timestamp: f64, data: Value) -> Value {
        let mut message = json!({
            "event_type": event_type,
            "timestamp": timestamp,
            "run_id": self.run_id,
        });
        message["data"] = data;
        message
    }

    /// An event as cmbagent's message: its name with `_` (see
    /// [`event_name`]), the time in seconds (for an event of another topic,
    /// a broadcast, where the UI resumes from: see [`Self::resume_time`]),
    /// the run it belongs to, its `data`, and Herald's `event_id`.
    fn message(&self, event: &Event) -> Value {
        let timestamp = if event.topic == self.topic {
            seconds(event.timestamp)
        } else {
            self.resume_time()
        };
        let mut message = self.envelope(
            &event_name(&event.event_type),
            timestamp,
            event.data.clone(),
        );
        message["event_id"] = Value::from(event.id.as_str());
        message
    }

    /// Where the UI resumes from if the message it got last is not one of
    /// the run's events (in seconds, as messages carry it).
    fn resume_time(&self) -> f64 {
        seconds(self.last_sent.load(Relaxed))
    }

    fn heartbeat_text(&self) -> Utf8Bytes {
        text(&self.envelope("heartbeat", self.resume_time(), json!({})))
    }

    /// Events the UI will not get, or a history reset, as `error_occurred`.
    fn missed(&self, topic: &Topic, from_seq: u64, to_seq: u64, reason: GapReason) -> Value {
        let gap = gap_message(topic.as_str(), from_seq, to_seq, reason);
        self.envelope(
            "error_occurred",
            self.resume_time(),
            json!({
                "code": "events_missed",
                "message": format!("{gap}; the run's latest state follows if the hub holds one"),
                "reason": reason,
                "from_seq": from_seq,
                "to_seq": to_seq,
            }),
        )
    }
}

/// cmbagent's name of an event type: the contract's name with `_`
/// (`workflow.started` is `workflow_started`), but for the names its
/// stage 5 protocol gives differently.
fn event_name(event_type: &EventType) -> String {
    let name = event_type.as_str();
    match name {
        "connection.established" => "connected".to_owned(),
        "connection.lost" => "disconnected".to_owned(),
        "connection.reconnected" => "reconnected".to_owned(),
        "connection.heartbeat" => "heartbeat".to_owned(),
        "approval.resolved" => "approval_received".to_owned(),
        "cost.updated" => "cost_update".to_owned(),
        "metrics.updated" => "metric_update".to_owned(),
        "system.error" => "error_occurred".to_owned(),
        other => underscored(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_5_names_are_the_contracts_with_underscores_but_a_few() {
        for (dotted, name) in [
            ("workflow.started", "workflow_started"),
            ("workflow.paused", "workflow_paused"),
            ("step.completed", "step_completed"),
            ("dag.node_status_changed", "dag_node_status_changed"),
            ("agent.tool_call", "agent_tool_call"),
            ("approval.requested", "approval_requested"),
            ("approval.resolved", "approval_received"),
            ("cost.updated", "cost_update"),
            ("metrics.updated", "metric_update"),
            ("file.created", "file_created"),
            ("system.error", "error_occurred"),
            ("connection.established", "connected"),
        ] {
            assert_eq!(event_name(&EventType::parse(dotted).unwrap()), name);
        }
    }
}
