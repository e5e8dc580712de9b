//! Approvals over HTTP: a producer asks (and returns at once), long-polls
//! for the decision, and lists the audit trail.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_protocol::payload::{ApprovalDecision, ApprovalRecord, ApprovalStatus, NewApproval};
use serde::{Deserialize, Serialize};

use super::Producer;
use super::body::{decode, json, query};
use super::error::ApiError;
use super::events::limit;
use crate::core::approvals::ApprovalError;
use crate::core::broker::ApprovalQuery;
use crate::core::hub::Hub;

/// The longest a long-poll waits, whatever `wait_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

fn refused(hub: &Hub, error: &ApprovalError) -> ApiError {
    hub.metrics().error(error.code());
    match error {
        ApprovalError::Store(store) => ApiError::from(store),
        _ => ApiError::new(error.code(), error.to_string()),
    }
}

/// `POST /api/v1/approvals`: registers an approval and returns at once.
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
        .map_err(|e| refused(&hub, &e))?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Query of `GET /api/v1/approvals/{id}`.
#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /api/v1/approvals/{id}?wait_ms=N`: the decision; long-polls while pending.
pub(super) async fn get(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<ApprovalDecision>, ApiError> {
    let wait = Duration::from_millis(query(wait)?.wait_ms).min(MAX_WAIT);
    let decision = hub
        .approvals()
        .wait(&id, wait)
        .await
        .map_err(|e| refused(&hub, &e))?;
    Ok(Json(decision))
}

/// Query of `GET /api/v1/approvals`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    task_id: Option<String>,
    status: Option<ApprovalStatus>,
}

/// The answer of `GET /api/v1/approvals`.
#[derive(Debug, Serialize)]
pub(super) struct ApprovalList {
    approvals: Vec<ApprovalRecord>,
}

/// `GET /api/v1/approvals?task_id=&status=`: the audit trail, newest first.
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
        .map_err(|e| refused(&hub, &e))?;
    Ok(Json(ApprovalList { approvals }))
}
