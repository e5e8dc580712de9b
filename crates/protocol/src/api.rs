//! The answers of the hub's admin HTTP API that the console and other tools
//! read: topics, a topic's history, connections, status, the nodes and the
//! approval list. The hub builds them; `ts-bindings/api/` declares them for
//! TypeScript. Clients ignore fields they do not know.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::event::{Epoch, Event};
use crate::event_type::EventType;
use crate::payload::ApprovalRecord;
use crate::topic::Topic;

/// One topic, as `GET /api/v1/topics` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct TopicSummary {
    #[ts(as = "String")]
    pub topic: Topic,
    /// The stream's epoch (see the contract: a new epoch means a new stream).
    pub epoch: Epoch,
    /// The latest seq (0 if nothing was published).
    #[ts(type = "number")]
    pub seq: u64,
    /// Events retained for replay.
    pub retained: usize,
    /// Approximate bytes of the retained events and snapshot.
    pub retained_bytes: usize,
    /// Keys in the topic's snapshot (its latest event per key).
    pub snapshot_keys: usize,
    /// Connections on this node subscribed to exactly this topic.
    pub subscribers: usize,
    /// The newest retained event, if any.
    pub last_event: Option<LastEvent>,
}

/// The newest retained event of a topic, in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct LastEvent {
    #[ts(type = "number")]
    pub seq: u64,
    pub event_type: EventType,
    /// Milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub timestamp: u64,
}

/// The answer of `GET /api/v1/topics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct TopicList {
    /// In topic order.
    pub topics: Vec<TopicSummary>,
    /// More topics exist than `limit` allowed.
    pub truncated: bool,
}

/// The answer of `GET /api/v1/topics/{topic}/events`: retained history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct TopicHistory {
    #[ts(as = "String")]
    pub topic: Topic,
    pub epoch: Epoch,
    /// The topic's latest seq.
    #[ts(type = "number")]
    pub seq: u64,
    pub events: Vec<Event>,
}

/// One connection, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct ConnectionInfo {
    pub id: String,
    /// The `session_id` of its `welcome` (the same as `id`).
    pub session_id: String,
    pub user_id: Option<String>,
    /// The `Origin` the browser sent with the upgrade.
    pub origin: Option<String>,
    pub remote_addr: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub connected_at: u64,
    pub age_s: f64,
    /// Topics and patterns.
    pub subscriptions: Vec<String>,
    #[ts(type = "number")]
    pub messages_sent: u64,
    #[ts(type = "number")]
    pub messages_received: u64,
    /// Frames waiting in its queue now.
    pub queued: usize,
    /// Events shed from its queue (each reported to it with a `gap`).
    #[ts(type = "number")]
    pub shed: u64,
    /// When the hub last heard from the peer (a frame or a pong; its
    /// connection time until then), ms since the Unix epoch.
    #[serde(default)]
    #[ts(type = "number")]
    pub last_heard_at: u64,
    /// The node holding it (see `GET /api/v1/nodes`).
    #[serde(default)]
    pub node: String,
}

/// The answer of `GET /api/v1/connections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct ConnectionList {
    pub active_connections: usize,
    /// Subscribers per topic or pattern.
    pub subscription_counts: BTreeMap<String, usize>,
    pub average_connection_age_s: f64,
    /// Frames sent to the connections open now.
    #[ts(type = "number")]
    pub messages_sent: u64,
    /// Frames sent since the hub started.
    #[ts(type = "number")]
    pub total_messages_sent: u64,
    /// On several nodes: some node did not answer in time (or the shared
    /// store was unreachable), so its connections are missing.
    #[serde(default)]
    pub partial: bool,
    /// More connections are open (on the nodes that answered) than
    /// `connections` lists (see `limit`).
    #[serde(default)]
    pub truncated: bool,
    /// The oldest first.
    pub connections: Vec<ConnectionInfo>,
}

/// The answer of `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct HubStatus {
    pub running: bool,
    pub active_connections: usize,
    /// On several nodes: some node did not answer in time (or the shared
    /// store was unreachable), so its connections are not counted.
    #[serde(default)]
    pub partial: bool,
    pub pending_approvals: usize,
    #[ts(type = "number")]
    pub uptime_s: u64,
    pub topics: usize,
    pub version: String,
}

/// One node sharing the hub's store, as it last said of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct NodeInfo {
    /// The node's id (`--node-id`, or one it drew at start).
    pub node: String,
    /// When it started (ms since the Unix epoch).
    #[ts(type = "number")]
    pub started_at: u64,
    /// When it was last heard of (ms since the Unix epoch); on Redis every
    /// node says so every few seconds.
    #[ts(type = "number")]
    pub seen_at: u64,
}

/// The answer of `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct NodeList {
    /// The node that answered.
    pub node: String,
    /// The nodes sharing its store, oldest first (just itself on a store of
    /// its own).
    pub nodes: Vec<NodeInfo>,
}

/// The answer of `GET /api/v1/approvals`: the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalRecord>,
}

/// The answer of `GET /console/config` (no key needed): which credentials
/// the hub asks for, so the console knows what to ask its user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
#[ts(export_to = "api/")]
pub struct ConsoleConfig {
    /// The HTTP API needs an API key (`--api-keys`); the console needs one with `admin`.
    pub api_key_required: bool,
    /// WebSockets need a JWT (`--jwt-secret` / `--jwt-public-key`); the
    /// console needs one whose `topics` claim is `["*"]`.
    pub token_required: bool,
    pub version: String,
}
