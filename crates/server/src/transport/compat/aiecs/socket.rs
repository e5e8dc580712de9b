//! The AIECS page's socket (`new WebSocket('ws://host:8765')`, seed 000):
//! `{action: confirm|cancel|ping|subscribe}` in; `task_step_result`
//! questions, the producers' broadcasts and user messages, `heartbeat`,
//! `task_cancelled`, `pong`, `subscription_confirmed` and `error` out, in
//! seconds.
//!
//! On an open hub a page names no user and gets what the seed's manager
//! broadcast to everyone: every user's messages and questions (`user:*`,
//! `task:*`) and everything on `global` (the broadcasts, and what
//! producers publish there), the questions still pending first. With authentication, its token decides, as on every endpoint:
//! its own user's topic always, the rest as its claims allow.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use herald_protocol::frame::{ErrorFrame, GapReason, Heartbeat, Subscribe, check_text};
use herald_protocol::payload::{ApprovalRequested, ControlRequest, Payload as _};
use herald_protocol::{
    ErrorCode, Event, EventType, Priority, PublishRequest, ServerMessage, Topic, TopicPattern,
};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::names;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::core::publish::PublishOptions;
use crate::transport::compat::{self, Done, frame_of, gap_message, now_seconds, seconds, text};
use crate::transport::ws::commands::check_steering;
use crate::transport::ws::connection::send_error;
use crate::transport::ws::dialect::{Dialect, Rendered};
use crate::transport::ws::native::welcome;

/// How many approvals a socket remembers having shown (an approval comes
/// on its user's topic and its task's: the page sees it once).
const REMEMBERED: usize = 1024;

/// How many of a page's pings wait for their `pong` at most; past them (a
/// page pinging faster than its pongs go out) a pong echoes
/// `{"action": "ping"}` alone.
const PINGS_ECHOED: usize = 16;

/// One AIECS page's socket.
#[derive(Debug, Default)]
pub(crate) struct AiecsSocket {
    shown: Mutex<Recent>,
    /// The pings whose `pong` is queued, as the page sent them: each pong
    /// echoes its ping whole (`original_data`), as the seed's did.
    pings: Mutex<VecDeque<Map<String, Value>>>,
}

/// The callback ids of the questions and decisions shown lately.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    /// Whether `id` is new (it is then remembered, the oldest forgotten).
    fn first_time(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() == REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }
}

impl Dialect for AiecsSocket {
    fn greet(&self, hub: &Hub, conn: &ConnHandle) {
        // Rendered as `connection_established`: the seed's acknowledgment.
        welcome(hub, conn);
    }

    async fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        let allowed = |name: &str| -> Vec<TopicPattern> {
            TopicPattern::parse(name)
                .into_iter()
                .filter(|pattern| conn.may_subscribe(pattern))
                .collect()
        };
        // The questions still pending come first, in their users' snapshots.
        let mut asked = allowed("user:*");
        // Tasks, and whatever is published on `global` (broadcasts reach
        // every connection anyway).
        let mut tasks = allowed("task:*");
        tasks.extend(allowed("global"));
        if asked.is_empty()
            && let Some(own) = conn.user_id.as_deref().and_then(|u| Topic::user(u).ok())
        {
            asked.push(TopicPattern::Exact(own));
        }
        for (topics, snapshot) in [(asked, true), (tasks, false)] {
            if topics.is_empty() {
                continue;
            }
            let request = Subscribe {
                topics,
                snapshot,
                ..Subscribe::default()
            };
            if let Err(error) = hub.subscriptions().subscribe(conn, &request).await {
                send_error(hub, conn, error.code, error.message, None);
            }
        }
    }

    async fn receive(&self, hub: &Hub, conn: &Arc<ConnHandle>, text: &str) {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            refuse(
                hub,
                conn,
                ErrorCode::InvalidJson,
                "Invalid JSON format".to_owned(),
            );
            return;
        };
        let action = message.get("action").and_then(Value::as_str).unwrap_or("");
        let done = match action {
            "confirm" => confirm(hub, conn, &message).await,
            "cancel" => cancel(hub, conn, &message).await,
            "ping" => {
                let timestamp = message
                    .get("timestamp")
                    .and_then(Value::as_f64)
                    .and_then(compat::millis_from);
                {
                    let mut pings = self.pings.lock();
                    if pings.len() < PINGS_ECHOED {
                        pings.push_back(message.clone());
                    }
                }
                conn.send(&ServerMessage::Pong(Heartbeat { timestamp }));
                Ok(())
            }
            "subscribe" => subscribe(hub, conn, &message).await,
            other => Err((ErrorCode::UnknownAction, format!("Unknown action: {other}"))),
        };
        if let Err((code, message)) = done {
            refuse(hub, conn, code, message);
        }
    }

    fn render(&self, entry: Entry) -> Rendered {
        let Some(frame) = frame_of(&entry) else {
            return match entry {
                Entry::Gap {
                    topic,
                    from_seq,
                    to_seq,
                } => Rendered::One(text(&missed(&topic, from_seq, to_seq, GapReason::Shed)).into()),
                Entry::Frame(_) => Rendered::Nothing,
            };
        };
        let mut out = Rendered::Nothing;
        match frame {
            ServerMessage::Welcome(welcome) => out.push(text(&json!({
                "type": "connection_established",
                "session_id": welcome.session_id,
                "timestamp": now_seconds(),
            }))),
            ServerMessage::Event(event) => {
                if let Some(message) = self.message(&event) {
                    out.push(text(&message));
                }
            }
            ServerMessage::Snapshot(snapshot) => {
                // Only the questions still pending: the rest is history.
                for event in &snapshot.events {
                    if event.event_type == EventType::ApprovalRequested
                        && let Some(message) = self.message(event)
                    {
                        out.push(text(&message));
                    }
                }
            }
            ServerMessage::Subscribed(subscribed) => {
                if let TopicPattern::Exact(topic) = &subscribed.topic
                    && topic.kind() == "user"
                {
                    out.push(text(&json!({
                        "type": "subscription_confirmed",
                        "user_id": topic.id(),
                    })));
                }
            }
            ServerMessage::Pong(_) => {
                let original = self
                    .pings
                    .lock()
                    .pop_front()
                    .map_or_else(|| json!({"action": "ping"}), Value::Object);
                out.push(text(&json!({
                    "type": "pong",
                    "timestamp": now_seconds(),
                    "original_data": original,
                })));
            }
            ServerMessage::Error(ErrorFrame { message, code, .. }) => out.push(text(&json!({
                "type": "error",
                "message": message,
                "code": code,
                "timestamp": now_seconds(),
            }))),
            ServerMessage::Gap(gap) => {
                out.push(text(&missed(
                    &gap.topic,
                    gap.from_seq,
                    gap.to_seq,
                    gap.reason,
                )));
            }
            ServerMessage::ReplayComplete(_) | ServerMessage::Ack(_) | ServerMessage::Ping(_) => {}
        }
        out
    }

    fn heartbeat(&self) -> Option<tungstenite::Utf8Bytes> {
        // The seed's server sent none: protocol pings keep the page alive.
        None
    }
}

impl AiecsSocket {
    /// An event as the message the seed's manager would have sent, or
    /// `None` for an approval already shown.
    fn message(&self, event: &Event) -> Option<Value> {
        match event.event_type {
            EventType::ApprovalRequested => {
                let asked = event.payload::<ApprovalRequested>().ok()?;
                let fresh = self
                    .shown
                    .lock()
                    .first_time(format!("asked:{}", asked.callback_id));
                fresh.then(|| question(&asked, event.timestamp))
            }
            EventType::ApprovalResolved => {
                let id = event.data.get("callback_id")?.as_str()?;
                let fresh = self.shown.lock().first_time(format!("resolved:{id}"));
                fresh.then(|| names::message(event))
            }
            EventType::ControlCancel => {
                let control = event.payload::<ControlRequest>().ok()?;
                Some(json!({
                    "type": "task_cancelled",
                    "user_id": control.requested_by,
                    "task_id": control.task_id,
                    "timestamp": seconds(event.timestamp),
                }))
            }
            _ => Some(names::message(event)),
        }
    }
}

/// An approval request as the seed's `task_step_result`, with what Herald
/// adds (`completed`, the step's name, the timeout in seconds and what it
/// resolves to).
fn question(asked: &ApprovalRequested, timestamp: u64) -> Value {
    let result = &asked.step_result;
    json!({
        "type": "task_step_result",
        "callback_id": asked.callback_id,
        "step": asked.step,
        "message": result.message,
        "result": result.result,
        "status": result.status,
        "error_code": result.error_code,
        "error_message": result.error_message,
        "user_id": asked.user_id,
        "task_id": asked.task_id,
        "timestamp": seconds(timestamp),
        "completed": result.completed,
        "step_name": result.step,
        "timeout": seconds(asked.timeout_ms),
        "default_proceed": asked.default_proceed,
    })
}

/// Events the page will not get, or a history reset, as the seed's
/// `error` message.
fn missed(topic: &Topic, from_seq: u64, to_seq: u64, reason: GapReason) -> Value {
    let gap = gap_message(topic.as_str(), from_seq, to_seq, reason);
    json!({
        "type": "error",
        "message": format!("{gap}; reload to see the current state"),
        "code": "events_missed",
        "timestamp": now_seconds(),
    })
}

/// Queues the seed's `error` message (as a Herald `error` frame).
fn refuse(hub: &Hub, conn: &ConnHandle, code: ErrorCode, message: String) {
    send_error(hub, conn, code, message, None);
}

fn string_field<'a>(message: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    message
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A free-text field (`feedback`, `reason`), bounded as the native
/// protocol bounds it.
fn text_field(
    message: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, (ErrorCode, String)> {
    let text = string_field(message, field);
    check_text(field, text).map_err(|e| (e.code(), e.to_string()))?;
    Ok(text.map(str::to_owned))
}

/// `{action: "confirm", callback_id, proceed, feedback}`: the first answer
/// wins (`proceed` absent is `false`, as the seed read it).
async fn confirm(hub: &Hub, conn: &ConnHandle, message: &Map<String, Value>) -> Done {
    let callback_id = string_field(message, "callback_id").ok_or((
        ErrorCode::InvalidRequest,
        "confirm needs a callback_id".to_owned(),
    ))?;
    let proceed = message
        .get("proceed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let feedback = text_field(message, "feedback")?;
    let decided_by = conn
        .user_id
        .as_deref()
        .map_or_else(|| format!("session:{}", conn.id), str::to_owned);
    hub.approvals()
        .decide(
            callback_id,
            proceed,
            feedback,
            Some(decided_by),
            conn.verified_user(),
        )
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}

/// `{action: "cancel", user_id, task_id}`: the task's pending questions are
/// cancelled and `control.cancel` goes to `task:{task_id}` for the
/// producer; pages see it as `task_cancelled`.
async fn cancel(hub: &Hub, conn: &ConnHandle, message: &Map<String, Value>) -> Done {
    let task_id = string_field(message, "task_id").ok_or((
        ErrorCode::InvalidRequest,
        "cancel needs a task_id".to_owned(),
    ))?;
    let reason = text_field(message, "reason")?;
    let topic =
        Topic::with_id("task", task_id).map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
    check_steering(hub, conn, &topic, Some(task_id)).await?;
    // With a token, the user is who the token says; open, who the page says.
    let requested_by = conn
        .verified_user()
        .or_else(|| string_field(message, "user_id"))
        .map(str::to_owned);
    hub.approvals().cancel_task(task_id).await;
    let data = ControlRequest {
        task_id: Some(task_id.to_owned()),
        run_id: None,
        reason,
        requested_by,
    }
    .to_data();
    let request =
        PublishRequest::new(topic, EventType::ControlCancel, data).priority(Priority::High);
    hub.publish(request, PublishOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}

/// `{action: "subscribe", user_id}`: that user's messages and questions
/// (what the token allows, with authentication); `subscription_confirmed`.
async fn subscribe(hub: &Hub, conn: &Arc<ConnHandle>, message: &Map<String, Value>) -> Done {
    let user = string_field(message, "user_id").ok_or((
        ErrorCode::InvalidRequest,
        "subscribe needs a user_id".to_owned(),
    ))?;
    let topic = Topic::user(user).map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
    let request = Subscribe {
        topics: vec![TopicPattern::Exact(topic)],
        snapshot: true,
        ..Subscribe::default()
    };
    compat::subscribe(hub, conn, &request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_remembered_once_and_the_oldest_is_forgotten() {
        let mut recent = Recent::default();
        assert!(recent.first_time("a".to_owned()));
        assert!(!recent.first_time("a".to_owned()));
        for n in 0..REMEMBERED {
            recent.first_time(n.to_string());
        }
        assert!(recent.first_time("a".to_owned()), "forgotten by now");
        assert_eq!(recent.order.len(), REMEMBERED);
    }
}
