//! WebSocket frames in both directions.
//!
//! Client → server frames are JSON objects tagged by `action` (or, for clients
//! written against the seed documents, `type`); every frame may carry an `id`
//! that the hub echoes as `ref` in its `ack` or `error`. Unknown fields are
//! ignored. Server → client frames are tagged by `type`; clients ignore frame
//! and event types they do not know.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use ts_rs::TS;

use crate::error::{DecodeError, ErrorCode};
use crate::event::{CallbackId, Epoch, Event, Label};
use crate::filter::EventFilter;
use crate::topic::{Topic, TopicPattern};

/// The protocol version in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest `feedback` or `reason` text, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// A client's request id, echoed as `ref`: a string or a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, TS, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    Number(#[ts(type = "number")] u64),
    String(String),
}

/// One client → server frame: the optional request `id` and the message.
#[derive(Debug, Clone, PartialEq, Serialize, TS, JsonSchema)]
pub struct ClientFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub id: Option<RequestId>,
    #[serde(flatten)]
    pub message: ClientMessage,
}

/// What a client asks of the hub.
#[derive(Debug, Clone, PartialEq, Serialize, TS, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientMessage {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Replay(Replay),
    /// Alias `refresh`.
    RequestState(RequestState),
    Auth(Auth),
    Ping(Heartbeat),
    Pong(Heartbeat),
    Confirm(Confirm),
    Cancel(Control),
    Pause(Control),
    Resume(Control),
    Ack(AckRequest),
}

/// `subscribe`: topics or patterns, an optional filter, checkpoints to replay
/// from, and whether to send a snapshot first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct Subscribe {
    #[serde(alias = "subscriptions")]
    #[ts(as = "Vec<String>")]
    pub topics: Vec<TopicPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub filter: Option<EventFilter>,
    /// Per exact topic: replay what came after this checkpoint, then go live.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[ts(as = "BTreeMap<String, Since>")]
    pub since: BTreeMap<Topic, Since>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
}

/// A replay checkpoint: a seq (a plain number, or with the epoch of the
/// stream it came from), or a time for clients whose cursor is one.
///
/// On the wire: `42`, `{"seq": 42, "epoch": "..."}` or `{"time_ms": T}`.
#[derive(Debug, Clone, PartialEq, Eq, TS)]
#[ts(type = "number | { seq: number, epoch?: string } | { time_ms: number }")]
pub enum Since {
    /// The events after `seq` of the stream `epoch` names (of any stream
    /// when `None`: a plain number).
    Seq { seq: u64, epoch: Option<Epoch> },
    /// Every retained event whose `timestamp` is above `time_ms`
    /// (milliseconds since the Unix epoch), whatever the stream's epoch.
    Time { time_ms: u64 },
}

impl Since {
    /// A plain seq: the events after it, of whatever stream the topic has.
    pub fn seq(seq: u64) -> Since {
        Since::Seq { seq, epoch: None }
    }

    /// The events after `seq` of the stream `epoch`.
    pub fn in_epoch(seq: u64, epoch: Epoch) -> Since {
        Since::Seq {
            seq,
            epoch: Some(epoch),
        }
    }

    /// Every retained event newer than `time_ms` (ms since the Unix epoch).
    pub fn time_ms(time_ms: u64) -> Since {
        Since::Time { time_ms }
    }
}

/// The object form of a seq checkpoint: a seq and the epoch of its stream.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "only its JSON Schema is used")]
struct SinceCheckpoint {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<Epoch>,
}

/// A time cursor: every retained event whose `timestamp` is above `time_ms`.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "only its JSON Schema is used")]
struct SinceTime {
    /// Milliseconds since the Unix epoch.
    time_ms: u64,
}

impl JsonSchema for Since {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Since".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let checkpoint = generator.subschema_for::<SinceCheckpoint>();
        let time = generator.subschema_for::<SinceTime>();
        json_schema!({
            "description": "A replay checkpoint: a plain seq, a seq with the epoch of the stream it came from, or a time (every retained event with a later timestamp).",
            "anyOf": [
                {"type": "integer", "format": "uint64", "minimum": 0},
                checkpoint,
                time,
            ],
        })
    }
}

impl Serialize for Since {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WithEpoch<'a> {
            seq: u64,
            epoch: &'a Epoch,
        }
        #[derive(Serialize)]
        struct AtTime {
            time_ms: u64,
        }
        match self {
            Since::Seq { seq, epoch: None } => serializer.serialize_u64(*seq),
            Since::Seq {
                seq,
                epoch: Some(epoch),
            } => WithEpoch { seq: *seq, epoch }.serialize(serializer),
            Since::Time { time_ms } => AtTime { time_ms: *time_ms }.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Seq(u64),
            Object {
                seq: Option<u64>,
                epoch: Option<Epoch>,
                time_ms: Option<u64>,
            },
        }
        let refused = || {
            serde::de::Error::custom(
                "since must map each topic to a seq (a non-negative integer), \
                 {\"seq\": N, \"epoch\": \"...\"} or {\"time_ms\": T}",
            )
        };
        match Wire::deserialize(deserializer).map_err(|_| refused())? {
            Wire::Seq(seq) => Ok(Since::seq(seq)),
            Wire::Object {
                seq: Some(seq),
                epoch,
                time_ms: None,
            } => Ok(Since::Seq { seq, epoch }),
            Wire::Object {
                seq: None,
                epoch: None,
                time_ms: Some(time_ms),
            } => Ok(Since::Time { time_ms }),
            Wire::Object { .. } => Err(refused()),
        }
    }
}

/// `unsubscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Unsubscribe {
    #[serde(alias = "subscriptions")]
    #[ts(as = "Vec<String>")]
    pub topics: Vec<TopicPattern>,
}

/// `replay`: a one-off read of retained events with `seq > since_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Replay {
    #[ts(as = "String")]
    pub topic: Topic,
    #[ts(type = "number")]
    pub since_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub epoch: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub limit: Option<u32>,
}

/// `request_state` (alias `refresh`): a `snapshot` per named topic, or per
/// subscribed topic when none are named.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct RequestState {
    #[serde(
        default,
        alias = "subscriptions",
        skip_serializing_if = "Option::is_none"
    )]
    #[ts(optional, as = "Option<Vec<String>>")]
    pub topics: Option<Vec<Topic>>,
}

/// `auth`: replace the connection's token before it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Auth {
    pub token: String,
}

/// `ping` / `pong`, in either direction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct Heartbeat {
    /// Milliseconds since the Unix epoch (seconds as a float are accepted too).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_timestamp"
    )]
    #[ts(optional, type = "number")]
    pub timestamp: Option<u64>,
}

fn lenient_timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Number>::deserialize(deserializer)?;
    Ok(value.and_then(|n| {
        n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // The seeds send seconds as floats; the contract wants milliseconds.
                .map(|f| {
                    if f < 1e11 {
                        (f * 1000.0) as u64
                    } else {
                        f as u64
                    }
                })
        })
    }))
}

/// `confirm`: answer an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Confirm {
    #[serde(alias = "approval_id")]
    pub callback_id: CallbackId,
    pub proceed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub feedback: Option<String>,
}

/// `cancel`, `pause`, `resume`: a control request for a task or a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct Control {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub task_id: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub run_id: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
}

impl Control {
    /// The topic the control event goes to: `task:{task_id}`, else `run:{run_id}`.
    pub fn target_topic(&self) -> Result<Topic, DecodeError> {
        let target = match (&self.task_id, &self.run_id) {
            (Some(task), _) => Topic::with_id("task", task.as_str()),
            (None, Some(run)) => Topic::with_id("run", run.as_str()),
            (None, None) => {
                return Err(DecodeError::InvalidRequest(
                    "a control request needs task_id or run_id".to_owned(),
                ));
            }
        };
        target.map_err(|e| DecodeError::InvalidTopic(e.to_string()))
    }
}

/// `ack`: acknowledges a delivery (`topic` + `seq`, or `message_id`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct AckRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, as = "Option<String>")]
    pub topic: Option<Topic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message_id: Option<String>,
}

/// A client frame that could not be decoded, with the request id when it
/// could be read, so the `error` reply can carry it as `ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FrameError {
    pub id: Option<RequestId>,
    pub error: DecodeError,
}

impl ClientFrame {
    /// A frame without a request id.
    pub fn new(message: ClientMessage) -> ClientFrame {
        ClientFrame { id: None, message }
    }

    /// Decodes a text frame leniently where the contract says so (`type` as
    /// well as `action`; `subscriptions` for `topics`; `refresh` for
    /// `request_state`; `approval_id` for `callback_id`) and strictly
    /// everywhere else.
    pub fn decode(text: &str) -> Result<ClientFrame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: None,
            error: DecodeError::InvalidJson(e.to_string()),
        })?;
        ClientFrame::from_value(value)
    }

    /// [`ClientFrame::decode`] on an already parsed value.
    pub fn from_value(value: Value) -> Result<ClientFrame, FrameError> {
        let Value::Object(mut map) = value else {
            return Err(FrameError {
                id: None,
                error: DecodeError::InvalidRequest("a frame must be a JSON object".to_owned()),
            });
        };
        let id = match map.remove("id") {
            None | Some(Value::Null) => None,
            Some(raw) => {
                Some(
                    serde_json::from_value::<RequestId>(raw).map_err(|_| FrameError {
                        id: None,
                        error: DecodeError::InvalidRequest(
                            "id must be a string or a non-negative integer".to_owned(),
                        ),
                    })?,
                )
            }
        };
        let fail = |error: DecodeError| FrameError {
            id: id.clone(),
            error,
        };
        let tag = match map.get("action").or_else(|| map.get("type")) {
            Some(Value::String(tag)) => tag.clone(),
            Some(_) => {
                return Err(fail(DecodeError::InvalidRequest(
                    "action must be a string".to_owned(),
                )));
            }
            None => {
                return Err(fail(DecodeError::InvalidRequest(
                    "a frame needs an \"action\" (e.g. {\"action\":\"subscribe\",\"topics\":[\"global\"]})"
                        .to_owned(),
                )));
            }
        };
        let message = decode_message(&tag, map).map_err(fail)?;
        Ok(ClientFrame { id, message })
    }

    /// Only the request id of a text frame (`None` when it has none, or the
    /// text is not a frame): what a refusal that does not read the frame
    /// (e.g. `rate_limited`) still echoes as `ref`. Parses without keeping
    /// anything else.
    pub fn peek_id(text: &str) -> Option<RequestId> {
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: Option<RequestId>,
        }
        serde_json::from_str::<IdOnly>(text).ok()?.id
    }

    /// Whether a text frame is a `subscribe` or an `unsubscribe` (tagged by
    /// `action`, or by `type` in the seeds' form), without keeping anything
    /// else: a client resubscribing after a reconnect sends one per
    /// subscription at once.
    pub fn peek_is_subscription(text: &str) -> bool {
        #[derive(Deserialize)]
        struct TagOnly<'a> {
            #[serde(default, borrow)]
            action: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow, rename = "type")]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_str::<TagOnly<'_>>(text).is_ok_and(|frame| {
            frame
                .action
                .or(frame.kind)
                .is_some_and(|tag| tag == "subscribe" || tag == "unsubscribe")
        })
    }

    /// Encodes the frame as JSON text (canonical form: tagged by `action`).
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// How many bytes [`encode`](ClientFrame::encode) makes of the frame,
    /// counted without building the text.
    pub fn encoded_len(&self) -> usize {
        /// Counts what is written to it and keeps nothing.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        // As in `encode`: serializing these types cannot fail.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }
}

/// A free-text field a person writes (`feedback`, `reason`): at most
/// [`MAX_TEXT_LEN`] bytes, on every dialect.
pub fn check_text(field: &str, text: Option<&str>) -> Result<(), DecodeError> {
    match text {
        Some(text) if text.len() > MAX_TEXT_LEN => Err(DecodeError::InvalidRequest(format!(
            "{field} must be at most {MAX_TEXT_LEN} bytes"
        ))),
        _ => Ok(()),
    }
}

fn decode_message(tag: &str, map: Map<String, Value>) -> Result<ClientMessage, DecodeError> {
    fn body<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> Result<T, DecodeError> {
        serde_json::from_value(Value::Object(map)).map_err(|e| DecodeError::from_json(&e))
    }
    let message = match tag {
        "subscribe" => ClientMessage::Subscribe(body(map)?),
        "unsubscribe" => ClientMessage::Unsubscribe(body(map)?),
        "replay" => ClientMessage::Replay(body(map)?),
        "request_state" | "refresh" => ClientMessage::RequestState(body(map)?),
        "auth" => ClientMessage::Auth(body(map)?),
        "ping" => ClientMessage::Ping(body(map)?),
        "pong" => ClientMessage::Pong(body(map)?),
        "confirm" => {
            let mut map = map;
            // `approval_id` is another name for `callback_id`: both may be
            // given when they name the same approval.
            if let (Some(callback), Some(approval)) =
                (map.get("callback_id"), map.get("approval_id"))
            {
                if callback != approval {
                    return Err(DecodeError::InvalidRequest(
                        "callback_id and approval_id name different approvals: give one of them"
                            .to_owned(),
                    ));
                }
                map.remove("approval_id");
            }
            let confirm: Confirm = body(map)?;
            check_text("feedback", confirm.feedback.as_deref())?;
            ClientMessage::Confirm(confirm)
        }
        "cancel" | "pause" | "resume" => {
            let control: Control = body(map)?;
            control.target_topic()?;
            check_text("reason", control.reason.as_deref())?;
            match tag {
                "cancel" => ClientMessage::Cancel(control),
                "pause" => ClientMessage::Pause(control),
                _ => ClientMessage::Resume(control),
            }
        }
        "ack" => {
            let ack: AckRequest = body(map)?;
            let by_seq = ack.topic.is_some() && ack.seq.is_some();
            if !by_seq && ack.message_id.is_none() {
                return Err(DecodeError::InvalidRequest(
                    "ack needs topic and seq, or message_id".to_owned(),
                ));
            }
            ClientMessage::Ack(ack)
        }
        other => return Err(DecodeError::UnknownAction(other.to_owned())),
    };
    Ok(message)
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ClientFrame::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl Event {
    /// Encodes the event as its `event` frame, exactly as
    /// `ServerMessage::Event(event).encode()` would, without cloning it (the
    /// hub's publish path encodes every event once, with this).
    pub fn encode_frame(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.encode_frame_into(&mut out);
        // serde_json writes valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the event's `event` frame to `out`: lets a caller serialize
    /// into a reused buffer and copy the result out at its exact size.
    pub fn encode_frame_into(&self, out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct EventFrame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            event: &'a Event,
        }
        // Serializing an event cannot fail (every map key is a string, and
        // writing to a Vec cannot fail); were it to, `out` is left as it was.
        let start = out.len();
        let written = serde_json::to_writer(
            &mut *out,
            &EventFrame {
                kind: "event",
                event: self,
            },
        );
        if written.is_err() {
            out.truncate(start);
        }
    }
}

/// What the hub sends a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    Event(Event),
    Subscribed(Subscribed),
    Snapshot(Snapshot),
    ReplayComplete(ReplayComplete),
    Gap(Gap),
    Ping(Heartbeat),
    Pong(Heartbeat),
    Ack(Ack),
    Error(ErrorFrame),
}

impl ServerMessage {
    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a server frame. Unknown frame types are `Ok(None)`: clients
    /// ignore what they do not know.
    pub fn decode(text: &str) -> Result<Option<ServerMessage>, DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        let known = matches!(
            value.get("type").and_then(Value::as_str),
            Some(
                "welcome"
                    | "event"
                    | "subscribed"
                    | "snapshot"
                    | "replay_complete"
                    | "gap"
                    | "ping"
                    | "pong"
                    | "ack"
                    | "error"
            )
        );
        if !known {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| DecodeError::from_json(&e))
    }
}

/// `welcome`: the first frame of every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Welcome {
    /// Also the connection's id in the admin API.
    pub session_id: String,
    pub protocol: u32,
    #[ts(type = "number")]
    pub heartbeat_ms: u64,
    pub server_version: String,
    /// The largest frame the hub reads (its `--max-frame-size`, in bytes):
    /// a larger one closes the connection with 1009. Clients check what
    /// they send against it. Absent from hubs that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub max_frame_bytes: Option<u64>,
}

/// `subscribed`: one per topic of every subscription. For a pattern, `topic`
/// is the pattern and `epoch`/`seq` are null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Subscribed {
    #[ts(as = "String")]
    pub topic: TopicPattern,
    pub epoch: Option<Epoch>,
    /// The topic's latest seq now (0 if none).
    #[ts(type = "number | null")]
    pub seq: Option<u64>,
}

/// `snapshot`: the latest event per `key`, consistent with `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Snapshot {
    #[ts(as = "String")]
    pub topic: Topic,
    pub epoch: Epoch,
    #[ts(type = "number")]
    pub seq: u64,
    pub events: Vec<Event>,
}

/// `replay_complete`: the end of a replay; `to_seq < from_seq` when nothing was missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ReplayComplete {
    #[ts(as = "String")]
    pub topic: Topic,
    #[ts(type = "number")]
    pub from_seq: u64,
    #[ts(type = "number")]
    pub to_seq: u64,
}

/// `gap`: events `from_seq..=to_seq` of `topic` that the client will not get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Gap {
    #[ts(as = "String")]
    pub topic: Topic,
    #[ts(type = "number")]
    pub from_seq: u64,
    #[ts(type = "number")]
    pub to_seq: u64,
    pub reason: GapReason,
    /// On an `epoch_changed` gap: the epoch of the topic's stream now, of
    /// which `from_seq..=to_seq` are missed, so a client resumes from
    /// `to_seq` of that stream (and its next `since` names the epoch).
    /// Absent on other gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub epoch: Option<Epoch>,
}

/// Why a `gap` happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, TS, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// History no longer holds them (size or age limit).
    Trimmed,
    /// The connection's queue was full and they were low or normal priority.
    Shed,
    /// The client's checkpoint comes from another stream of the topic.
    EpochChanged,
}

/// `ack`: the frame with this `id` was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Ack {
    #[serde(rename = "ref")]
    pub reference: RequestId,
}

/// `error`: what went wrong, and the `id` of the frame it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(rename = "ref", default)]
    pub reference: Option<RequestId>,
}
