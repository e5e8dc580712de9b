//! Approvals over HTTP: a producer asks (and returns at once), long-polls
//! for the decision, and lists the audit trail.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_protocol::api::ApprovalList;
use herald_protocol::payload::{ApprovalDecision, ApprovalStatus, NewApproval};
use serde::Deserialize;

use super::Producer;
use super::body::{decode, json, query};
use super::error::ApiError;
use super::events::limit;
use crate::core::approvals::ApprovalError;
use crate::core::broker::ApprovalQuery;
use crate::core::hub::Hub;

/// The longest a long-poll waits, whatever `wait_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

fn refused(error: &ApprovalError) -> ApiError {
    match error {
        ApprovalError::Store(store) => ApiError::from(store),
        _ => ApiError::new(error.code(), error.to_string()),
    }
}

/// `POST /api/v1/approvals`: registers an approval and returns at once.
#[utoipa::path(
    post,
    path = "/api/v1/approvals",
    operation_id = "create_approval",
    tag = "approvals",
    summary = "Ask a user; returns at once with the pending record and its `callback_id`",
    description = "Publishes `approval.requested` on `user:{user_id}` (every connection of the \
        user) and `task:{task_id}`. Wait for the decision with `GET /api/v1/approvals/{id}`.",
    request_body = ref("#/components/schemas/NewApproval"),
    responses(
        (status = 201, description = "Registered and published", body = ref("#/components/schemas/ApprovalRecord")),
        (status = "4XX", description = "Refused", body = ref("#/components/schemas/ApiError")),
        (status = 429, description = "Over the publish rate limit (`--publish-rate-limit`: try again after `Retry-After`), or too many approvals pending for the user", body = ref("#/components/schemas/ApiError")),
        (status = "5XX", description = "The store failed (500) or is unavailable (503 with `Retry-After`)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]))
)]
pub(super) async fn create(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    limit(&hub, &producer, 1)?;
    let request: NewApproval = decode(json(body)?)?;
    let record = hub
        .approvals()
        .create(request)
        .await
        .map_err(|e| refused(&e))?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Query of `GET /api/v1/approvals/{id}`.
#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /api/v1/approvals/{id}?wait_ms=N`: the decision; long-polls while pending.
#[utoipa::path(
    get,
    path = "/api/v1/approvals/{id}",
    operation_id = "get_approval",
    tag = "approvals",
    summary = "The decision; long-polls up to `wait_ms` while pending",
    params(
        ("id" = String, Path, description = "The `callback_id`"),
        ("wait_ms" = Option<u64>, Query, description = "How long to wait while pending, at most 300000; 0 (default) answers at once"),
    ),
    responses(
        (status = 200, description = "The decision, or `status: pending` when the wait ran out", body = ref("#/components/schemas/ApprovalDecision")),
        (status = 404, description = "No such approval", body = ref("#/components/schemas/ApiError")),
        (status = "4XX", description = "Refused", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The store is unreachable, or the hub is shutting down while the approval is pending and `wait_ms` asked to wait: ask again after `Retry-After`", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]), ("api_key" = ["admin"]))
)]
pub(super) async fn get(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<ApprovalDecision>, ApiError> {
    let wait = Duration::from_millis(query(wait)?.wait_ms).min(MAX_WAIT);
    let decision = hub
        .approvals()
        .wait(&id, wait, hub.draining())
        .await
        .map_err(|e| refused(&e))?;
    // A draining hub holds no long-poll: the producer asks again, elsewhere
    // or here once restarted, after `Retry-After` (answering `pending` would
    // have it poll in a loop until the hub is gone).
    if !wait.is_zero() && !decision.status.is_final() && hub.draining().is_cancelled() {
        return Err(ApiError::unavailable(
            "the hub is shutting down: ask again, on another node or here once it is back",
        ));
    }
    Ok(Json(decision))
}

/// Query of `GET /api/v1/approvals`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    task_id: Option<String>,
    status: Option<ApprovalStatus>,
}

/// `GET /api/v1/approvals?task_id=&status=`: the audit trail, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    operation_id = "list_approvals",
    tag = "approvals",
    summary = "The audit trail, newest first",
    params(
        ("task_id" = Option<String>, Query, description = "Only this task's approvals"),
        ("status" = Option<String>, Query, description = "Only these: pending, approved, rejected, timed_out or cancelled"),
    ),
    responses(
        (status = 200, description = "Every pending approval and the most recent decided ones", body = ref("#/components/schemas/ApprovalList")),
        (status = "4XX", description = "Refused", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The shared store is unreachable", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]), ("api_key" = ["admin"]))
)]
pub(super) async fn list(
    State(hub): State<Hub>,
    filters: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ApprovalList>, ApiError> {
    let filters = query(filters)?;
    let approvals = hub
        .approvals()
        .list(&ApprovalQuery {
            task_id: filters.task_id,
            status: filters.status,
            ..ApprovalQuery::default()
        })
        .await
        .map_err(|e| refused(&e))?;
    Ok(Json(ApprovalList { approvals }))
}
