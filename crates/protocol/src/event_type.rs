//! Event types: the dotted `domain.action` names of the contract, plus custom ones.

use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest event type name accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Why a string is not a well-formed event type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    #[error("event type is empty")]
    Empty,
    #[error("event type is longer than {MAX_EVENT_TYPE_LEN} bytes")]
    TooLong,
    #[error(
        "event type {0:?} is not a dotted lower-case name like \"execution.progress\" \
         (segments of [a-z][a-z0-9_-]*, at least two)"
    )]
    Malformed(String),
}

macro_rules! event_types {
    ($($variant:ident => $name:literal,)+) => {
        /// An event's type, serialized as its dotted name.
        ///
        /// Every type the contract names is a variant; any other well-formed dotted
        /// name is [`EventType::Custom`] and passes through unchanged. Clients
        /// ignore types they do not know.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum EventType {
            $(#[doc = concat!("`", $name, "`")] $variant,)+
            /// A well-formed dotted name the contract does not list.
            Custom(CustomEventType),
        }

        impl EventType {
            /// Every type the contract names, in contract order.
            pub const KNOWN: &'static [EventType] = &[$(EventType::$variant,)+];

            /// The dotted name, as on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventType::$variant => $name,)+
                    EventType::Custom(custom) => custom.as_str(),
                }
            }

            fn known(name: &str) -> Option<EventType> {
                match name {
                    $($name => Some(EventType::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

event_types! {
    ExecutionStarted => "execution.started",
    ExecutionProgress => "execution.progress",
    ExecutionCompleted => "execution.completed",
    ExecutionFailed => "execution.failed",
    ExecutionCancelled => "execution.cancelled",
    TaskAssigned => "task.assigned",
    TaskProgress => "task.progress",
    TaskCompleted => "task.completed",
    TaskFailed => "task.failed",
    TaskStepResult => "task.step_result",
    TaskCancelled => "task.cancelled",
    WorkflowStarted => "workflow.started",
    WorkflowPaused => "workflow.paused",
    WorkflowResumed => "workflow.resumed",
    WorkflowCompleted => "workflow.completed",
    WorkflowFailed => "workflow.failed",
    StepStarted => "step.started",
    StepProgress => "step.progress",
    StepCompleted => "step.completed",
    StepFailed => "step.failed",
    DagCreated => "dag.created",
    DagUpdated => "dag.updated",
    DagNodeStatusChanged => "dag.node_status_changed",
    AgentCreated => "agent.created",
    AgentUpdated => "agent.updated",
    AgentDeleted => "agent.deleted",
    AgentMessage => "agent.message",
    AgentThinking => "agent.thinking",
    AgentToolCall => "agent.tool_call",
    ManagerDelegationStarted => "manager.delegation_started",
    ManagerCoordinationUpdate => "manager.coordination_update",
    ManagerDecisionMade => "manager.decision_made",
    QueueTaskAdded => "queue.task_added",
    QueueTaskProcessed => "queue.task_processed",
    QueueTaskFailed => "queue.task_failed",
    QueueCleared => "queue.cleared",
    MemoryStored => "memory.stored",
    MemoryRetrieved => "memory.retrieved",
    MemoryUpdated => "memory.updated",
    MemoryCleared => "memory.cleared",
    CrewCreated => "crew.created",
    CrewUpdated => "crew.updated",
    CrewDeleted => "crew.deleted",
    StateChanged => "state.changed",
    ApprovalRequested => "approval.requested",
    ApprovalResolved => "approval.resolved",
    ControlCancel => "control.cancel",
    ControlPause => "control.pause",
    ControlResume => "control.resume",
    CostUpdated => "cost.updated",
    MetricsUpdated => "metrics.updated",
    FileCreated => "file.created",
    FileUpdated => "file.updated",
    SystemStartup => "system.startup",
    SystemShutdown => "system.shutdown",
    SystemError => "system.error",
    SystemHealthCheck => "system.health_check",
    SystemNotification => "system.notification",
    ConnectionEstablished => "connection.established",
    ConnectionLost => "connection.lost",
    ConnectionHeartbeat => "connection.heartbeat",
    ConnectionReconnected => "connection.reconnected",
}

impl EventType {
    /// Parses a dotted name: a known type, or a well-formed custom one.
    pub fn parse(name: &str) -> Result<EventType, EventTypeError> {
        if let Some(known) = EventType::known(name) {
            return Ok(known);
        }
        CustomEventType::parse(name).map(EventType::Custom)
    }

    /// The part before the first dot (`execution` for `execution.progress`).
    pub fn domain(&self) -> &str {
        let name = self.as_str();
        name.split_once('.').map_or(name, |(domain, _)| domain)
    }
}

/// A well-formed event type name that the contract does not list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomEventType(String);

impl CustomEventType {
    fn parse(name: &str) -> Result<CustomEventType, EventTypeError> {
        validate_dotted_name(name)?;
        Ok(CustomEventType(name.to_owned()))
    }

    /// The dotted name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_dotted_name(name: &str) -> Result<(), EventTypeError> {
    if name.is_empty() {
        return Err(EventTypeError::Empty);
    }
    if name.len() > MAX_EVENT_TYPE_LEN {
        return Err(EventTypeError::TooLong);
    }
    let mut segments = 0;
    for segment in name.split('.') {
        segments += 1;
        let mut chars = segment.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !well_formed {
            return Err(EventTypeError::Malformed(name.to_owned()));
        }
    }
    if segments < 2 {
        return Err(EventTypeError::Malformed(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = EventTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::parse(s)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        EventType::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A custom event type name as a regular expression (for the JSON Schema):
/// dot-separated segments of `[a-z][a-z0-9_-]*`, at least two.
pub const CUSTOM_EVENT_TYPE_REGEX: &str = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$";

/// Every event type the contract names, as one JSON Schema `enum` (the
/// definition `KnownEventType`).
struct KnownEventTypes;

impl JsonSchema for KnownEventTypes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KnownEventType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = EventType::KNOWN.iter().map(EventType::as_str).collect();
        json_schema!({
            "description": "Every event type the contract names, in contract order.",
            "type": "string",
            "enum": names,
        })
    }
}

impl JsonSchema for EventType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventType".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let known = generator.subschema_for::<KnownEventTypes>();
        json_schema!({
            "description": "An event's type: one the contract names, or any other well-formed dotted name (a custom type, passed through unchanged).",
            "anyOf": [
                known,
                {
                    "type": "string",
                    "pattern": CUSTOM_EVENT_TYPE_REGEX,
                    "maxLength": MAX_EVENT_TYPE_LEN,
                },
            ],
        })
    }
}

impl ts_rs::TS for EventType {
    type WithoutGenerics = EventType;
    type OptionInnerType = EventType;
    fn name(_: &ts_rs::Config) -> String {
        "EventType".to_owned()
    }
    fn decl_concrete(config: &ts_rs::Config) -> String {
        Self::decl(config)
    }
    fn decl(_: &ts_rs::Config) -> String {
        "type EventType = KnownEventType | (string & {});".to_owned()
    }
    fn inline(_: &ts_rs::Config) -> String {
        "KnownEventType | (string & {})".to_owned()
    }
    fn output_path() -> Option<std::path::PathBuf> {
        Some(std::path::PathBuf::from("EventType.ts"))
    }
}

/// The TypeScript union of every event type the contract names, and the
/// same names as a constant array (for pickers and validation at run time).
pub fn known_event_types_ts() -> String {
    let names: Vec<String> = EventType::KNOWN
        .iter()
        .map(|t| format!("\"{}\"", t.as_str()))
        .collect();
    format!(
        "export type KnownEventType =\n  | {};\n\n\
         /** Every event type the contract names, in contract order. */\n\
         export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = [\n  {},\n];\n",
        names.join("\n  | "),
        names.join(",\n  ")
    )
}
