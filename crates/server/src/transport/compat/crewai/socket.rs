//! A CrewAI client's socket: `WebSocketEvent`s out (`connection.established`
//! first, with the client's id and subscriptions; the events of what it
//! follows; `connection.heartbeat`), and `{action: "subscribe" |
//! "unsubscribe", subscriptions: [...]}` and `ping` in.

use std::sync::{Arc, OnceLock};

use herald_protocol::frame::{GapReason, Heartbeat, Subscribe};
use herald_protocol::{ErrorCode, Priority, ServerMessage, TopicPattern};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tungstenite::Utf8Bytes;

use super::names;
use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::transport::compat::{self, Done, frame_of, gap_message, text};
use crate::transport::ws::connection::send_error;
use crate::transport::ws::dialect::{Dialect, Rendered};
use crate::transport::ws::native::welcome;

/// One CrewAI client's socket.
#[derive(Debug)]
pub(crate) struct CrewaiSocket {
    /// What its endpoint (or `?subscriptions=`) follows on connect.
    initial: Vec<TopicPattern>,
    /// Subscription names that are not one, reported after the greeting.
    /// Taken by [`Dialect::open`].
    refused: Mutex<Vec<String>>,
    /// The client's id (its session id), once greeted.
    client_id: OnceLock<String>,
    /// The socket is for `initial`, named by its path.
    follows: bool,
}

impl CrewaiSocket {
    pub(crate) fn new(initial: Vec<TopicPattern>, refused: Vec<String>) -> CrewaiSocket {
        CrewaiSocket {
            initial,
            refused: Mutex::new(refused),
            client_id: OnceLock::new(),
            follows: false,
        }
    }

    /// A socket for the one topic or pattern its path names.
    pub(crate) fn following(pattern: TopicPattern) -> CrewaiSocket {
        CrewaiSocket {
            follows: true,
            ..CrewaiSocket::new(vec![pattern], Vec::new())
        }
    }
}

impl Dialect for CrewaiSocket {
    fn answers_approvals(&self) -> bool {
        false
    }

    fn follows(&self) -> Vec<TopicPattern> {
        if self.follows {
            self.initial.clone()
        } else {
            Vec::new()
        }
    }

    fn greet(&self, hub: &Hub, conn: &ConnHandle) {
        let _ = self.client_id.set(conn.id.to_string());
        // Rendered as `connection.established`.
        welcome(hub, conn);
    }

    async fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        let refused = std::mem::take(&mut *self.refused.lock());
        for refused in refused {
            send_error(hub, conn, ErrorCode::InvalidTopic, refused, None);
        }
        if let Err((code, message)) = subscribe(hub, conn, self.initial.clone()).await {
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
        let action = message
            .get("action")
            .or_else(|| message.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // The names the message lists: each one Herald cannot take is
        // refused with an error of its own, and the others are carried out.
        let names = || -> Result<Vec<TopicPattern>, (ErrorCode, String)> {
            let list = message
                .get("subscriptions")
                .or_else(|| message.get("topics"))
                .and_then(Value::as_array)
                .ok_or((
                    ErrorCode::InvalidRequest,
                    format!("{action} needs \"subscriptions\": [..]"),
                ))?;
            let mut patterns = Vec::with_capacity(list.len());
            for name in list {
                match names::pattern(name.as_str().unwrap_or_default()) {
                    Ok(pattern) => patterns.push(pattern),
                    Err(refused) => send_error(hub, conn, ErrorCode::InvalidTopic, refused, None),
                }
            }
            Ok(patterns)
        };
        let done: Done = match action {
            "subscribe" => match names() {
                Ok(patterns) => subscribe(hub, conn, patterns).await,
                Err(refused) => Err(refused),
            },
            "unsubscribe" => match names() {
                Ok(patterns) => {
                    hub.subscriptions().unsubscribe(conn, &patterns).await;
                    Ok(())
                }
                Err(refused) => Err(refused),
            },
            "ping" => {
                conn.send(&ServerMessage::Pong(Heartbeat::default()));
                Ok(())
            }
            other => Err((
                ErrorCode::UnknownAction,
                format!("unknown action {other:?}: subscribe, unsubscribe or ping"),
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
                } => Rendered::One(
                    text(&missed(
                        &names::topic_name(&topic),
                        from_seq,
                        to_seq,
                        GapReason::Shed,
                    ))
                    .into(),
                ),
                Entry::Frame(_) => Rendered::Nothing,
            };
        };
        let mut out = Rendered::Nothing;
        match frame {
            ServerMessage::Welcome(welcome) => {
                let subscriptions: Vec<String> = self.initial.iter().map(names::name).collect();
                out.push(text(&names::notice(
                    "connection.established",
                    Priority::Normal,
                    now_ms(),
                    json!({"client_id": welcome.session_id, "subscriptions": subscriptions}),
                )));
            }
            ServerMessage::Event(event) => out.push(text(&names::event(&event))),
            ServerMessage::Subscribed(subscribed) => out.push(text(&json!({
                "type": "subscription_confirmed",
                "subscription": names::name(&subscribed.topic),
            }))),
            ServerMessage::Pong(_) => out.push(self.beat()),
            ServerMessage::Error(error) => out.push(text(&names::notice(
                "system.error",
                Priority::High,
                now_ms(),
                json!({"message": error.message, "code": error.code}),
            ))),
            ServerMessage::Gap(gap) => {
                out.push(text(&missed(
                    &names::topic_name(&gap.topic),
                    gap.from_seq,
                    gap.to_seq,
                    gap.reason,
                )));
            }
            ServerMessage::Snapshot(_)
            | ServerMessage::ReplayComplete(_)
            | ServerMessage::Ack(_)
            | ServerMessage::Ping(_) => {}
        }
        out
    }

    fn heartbeat(&self) -> Option<Utf8Bytes> {
        Some(self.beat())
    }
}

impl CrewaiSocket {
    /// `connection.heartbeat`: the seed's keepalive, and its answer to `ping`.
    fn beat(&self) -> Utf8Bytes {
        text(&names::notice(
            "connection.heartbeat",
            Priority::Low,
            now_ms(),
            json!({"client_id": self.client_id.get()}),
        ))
    }
}

/// Follows `patterns` (those the token allows; the rest are refused with
/// `forbidden`); each is confirmed by `subscription_confirmed`.
async fn subscribe(hub: &Hub, conn: &Arc<ConnHandle>, patterns: Vec<TopicPattern>) -> Done {
    if patterns.is_empty() {
        return Ok(());
    }
    let request = Subscribe {
        topics: patterns,
        ..Subscribe::default()
    };
    compat::subscribe(hub, conn, &request).await
}

/// Events a client will not get, or a history reset, as `system.error`.
fn missed(subscription: &str, from_seq: u64, to_seq: u64, reason: GapReason) -> Value {
    names::notice(
        "system.error",
        Priority::High,
        now_ms(),
        json!({
            "code": "events_missed",
            "message": gap_message(subscription, from_seq, to_seq, reason),
            "subscription": subscription,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "reason": reason,
        }),
    )
}
