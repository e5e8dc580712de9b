//! Typed payloads for the common events, with conversions to and from `data`.
//!
//! `data` is any JSON on the wire; these structs are the shapes Herald itself
//! emits (approvals, control requests) and the ones the seeds' producers send.
//! Unknown fields in `data` are ignored when reading a payload.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

use crate::event::{CallbackId, Event};
use crate::event_type::EventType;

/// A typed view of an event's `data`.
pub trait Payload: Serialize + DeserializeOwned {
    /// The payload as `data`.
    fn to_data(&self) -> Value {
        // These payloads only hold strings, numbers, bools and JSON values.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the payload from `data`.
    fn from_data(data: &Value) -> Result<Self, PayloadError> {
        Self::deserialize(data).map_err(|e| PayloadError(e.to_string()))
    }
}

/// `data` does not have the payload's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data does not match the payload: {0}")]
pub struct PayloadError(pub String);

impl Event {
    /// Reads the event's `data` as a typed payload.
    pub fn payload<P: Payload>(&self) -> Result<P, PayloadError> {
        P::from_data(&self.data)
    }
}

/// `*.progress`: how far along something is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct Progress {
    /// Percent, 0 to 100.
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub total: Option<u64>,
}
impl Payload for Progress {}

/// `state.changed` (and the seeds' `state_change`): a machine moved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct StateChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub machine_id: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub previous_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
}
impl Payload for StateChange {}

/// The seed's `TaskStepResult`: what a step produced (`task.step_result`, and
/// inside approval requests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct TaskStepResult {
    pub step: String,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub completed: bool,
    pub message: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub error_message: Option<String>,
}
impl Payload for TaskStepResult {}

/// `approval.requested`: a producer waits for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ApprovalRequested {
    pub callback_id: CallbackId,
    pub user_id: String,
    pub task_id: String,
    pub step: u32,
    pub step_result: TaskStepResult,
    #[ts(type = "number")]
    pub timeout_ms: u64,
    /// What the approval resolves to if nobody answers in time.
    pub default_proceed: bool,
    /// Milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub expires_at: u64,
}
impl Payload for ApprovalRequested {}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, TS, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    TimedOut,
    Cancelled,
}

impl ApprovalStatus {
    /// Whether the approval is decided (anything but pending).
    pub fn is_final(self) -> bool {
        self != ApprovalStatus::Pending
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::TimedOut => "timed_out",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}

/// An approval's decision (`GET /api/v1/approvals/{id}`, and the `data` of
/// `approval.resolved`). `proceed` is null while pending; `decided_by` is null
/// when the hub decided (timeout, cancel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ApprovalDecision {
    pub callback_id: CallbackId,
    pub status: ApprovalStatus,
    pub proceed: Option<bool>,
    pub feedback: Option<String>,
    pub decided_by: Option<String>,
    #[ts(type = "number | null")]
    pub decided_at: Option<u64>,
}
impl Payload for ApprovalDecision {}

/// `control.cancel`, `control.pause`, `control.resume`: a request for the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ControlRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    /// The user who asked, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub requested_by: Option<String>,
}
impl Payload for ControlRequest {}

/// `*.failed` and `system.error`: what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ErrorPayload {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub details: Option<Value>,
}
impl Payload for ErrorPayload {}

/// `metrics.updated` and `cost.updated`: named numbers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, TS, JsonSchema)]
pub struct Metrics {
    pub metrics: BTreeMap<String, f64>,
    /// The node whose figures these are (the hub's own `metrics.updated`:
    /// several nodes sharing a store each publish theirs on `metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub node: Option<String>,
}
impl Payload for Metrics {}

/// The body of `POST /api/v1/approvals`: ask a user to decide on a task's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct NewApproval {
    pub user_id: String,
    pub task_id: String,
    pub step: u32,
    pub step_result: TaskStepResult,
    /// How long to wait; the hub's `--approval-timeout` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "number")]
    pub timeout_ms: Option<u64>,
    /// What a timeout resolves to; the hub's `--approval-default-proceed` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub default_proceed: Option<bool>,
}

/// An approval's whole life, as `GET /api/v1/approvals` lists it: the request,
/// the decision, and how many connections the request reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ApprovalRecord {
    #[serde(flatten)]
    pub request: ApprovalRequested,
    pub status: ApprovalStatus,
    pub proceed: Option<bool>,
    pub feedback: Option<String>,
    pub decided_by: Option<String>,
    #[ts(type = "number | null")]
    pub decided_at: Option<u64>,
    #[ts(type = "number")]
    pub created_at: u64,
    /// Connections the `approval.requested` event was queued to when published.
    pub delivered_to: u32,
}
impl Payload for ApprovalRecord {}

impl ApprovalRecord {
    /// The decision part, as `GET /api/v1/approvals/{id}` answers it.
    pub fn decision(&self) -> ApprovalDecision {
        ApprovalDecision {
            callback_id: self.request.callback_id.clone(),
            status: self.status,
            proceed: self.proceed,
            feedback: self.feedback.clone(),
            decided_by: self.decided_by.clone(),
            decided_at: self.decided_at,
        }
    }
}

/// The `data` of `approval.resolved`: the decision plus the task it was for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS, JsonSchema)]
pub struct ApprovalResolved {
    #[serde(flatten)]
    pub decision: ApprovalDecision,
    pub task_id: String,
    pub user_id: String,
}
impl Payload for ApprovalResolved {}

/// A payload type Herald defines, named as in Rust and TypeScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    Progress,
    StateChange,
    TaskStepResult,
    ApprovalRequested,
    ApprovalResolved,
    ControlRequest,
    ErrorPayload,
    Metrics,
}

impl PayloadKind {
    /// The typed payload of `data` for events of `event_type`, if Herald
    /// defines one (every other type's `data` is any JSON).
    pub fn of(event_type: &EventType) -> Option<PayloadKind> {
        use EventType as T;
        Some(match event_type {
            T::ExecutionProgress | T::TaskProgress | T::StepProgress => PayloadKind::Progress,
            T::StateChanged => PayloadKind::StateChange,
            T::TaskStepResult => PayloadKind::TaskStepResult,
            T::ApprovalRequested => PayloadKind::ApprovalRequested,
            T::ApprovalResolved => PayloadKind::ApprovalResolved,
            T::ControlCancel | T::ControlPause | T::ControlResume => PayloadKind::ControlRequest,
            T::ExecutionFailed
            | T::TaskFailed
            | T::WorkflowFailed
            | T::StepFailed
            | T::QueueTaskFailed
            | T::SystemError => PayloadKind::ErrorPayload,
            T::MetricsUpdated | T::CostUpdated => PayloadKind::Metrics,
            _ => return None,
        })
    }

    /// The type's name (the TypeScript declaration in `ts-bindings/`).
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Progress => "Progress",
            PayloadKind::StateChange => "StateChange",
            PayloadKind::TaskStepResult => "TaskStepResult",
            PayloadKind::ApprovalRequested => "ApprovalRequested",
            PayloadKind::ApprovalResolved => "ApprovalResolved",
            PayloadKind::ControlRequest => "ControlRequest",
            PayloadKind::ErrorPayload => "ErrorPayload",
            PayloadKind::Metrics => "Metrics",
        }
    }

    /// Whether `data` has this payload's shape; the error says where it
    /// does not.
    pub fn check(self, data: &Value) -> Result<(), PayloadError> {
        match self {
            PayloadKind::Progress => Progress::from_data(data).map(drop),
            PayloadKind::StateChange => StateChange::from_data(data).map(drop),
            PayloadKind::TaskStepResult => TaskStepResult::from_data(data).map(drop),
            PayloadKind::ApprovalRequested => ApprovalRequested::from_data(data).map(drop),
            PayloadKind::ApprovalResolved => ApprovalResolved::from_data(data).map(drop),
            PayloadKind::ControlRequest => ControlRequest::from_data(data).map(drop),
            PayloadKind::ErrorPayload => ErrorPayload::from_data(data).map(drop),
            PayloadKind::Metrics => Metrics::from_data(data).map(drop),
        }
    }

    /// A small valid `data` of this shape, as JSON text, to start from.
    pub fn example(self) -> &'static str {
        match self {
            PayloadKind::Progress => r#"{"progress": 50, "message": "halfway"}"#,
            PayloadKind::StateChange => r#"{"state": "running", "previous_state": "idle"}"#,
            PayloadKind::TaskStepResult => {
                r#"{"step": "train", "message": "step finished", "status": "completed", "completed": true, "result": null}"#
            }
            PayloadKind::ApprovalRequested => {
                r#"{"callback_id": "cb-1", "user_id": "u1", "task_id": "t1", "step": 1, "step_result": {"step": "train", "message": "retry?", "status": "failed"}, "timeout_ms": 60000, "default_proceed": true, "expires_at": 0}"#
            }
            PayloadKind::ApprovalResolved => {
                r#"{"callback_id": "cb-1", "status": "approved", "proceed": true, "feedback": null, "decided_by": "u1", "decided_at": 0, "task_id": "t1", "user_id": "u1"}"#
            }
            PayloadKind::ControlRequest => r#"{"run_id": "r1", "reason": "maintenance"}"#,
            PayloadKind::ErrorPayload => r#"{"message": "something failed", "code": "E001"}"#,
            PayloadKind::Metrics => r#"{"metrics": {"total_usd": 0.42}}"#,
        }
    }
}

/// Checks `data` against the typed payload of `event_type`, if it has one
/// (see [`PayloadKind::of`]).
pub fn check(event_type: &EventType, data: &Value) -> Result<(), PayloadError> {
    PayloadKind::of(event_type).map_or(Ok(()), |kind| kind.check(data))
}
