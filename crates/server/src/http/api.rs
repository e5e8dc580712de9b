//! The JSON API under `/api/v1`, plus `/health` and `/metrics`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::payload::{ApprovalDecision, ApprovalStatus, NewApproval};
use herald_protocol::{
    CloseReason, DecodeError, ErrorCode, EventType, Priority, PublishReceipt, PublishRequest, Topic,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Producer;
use super::error::ApiError;
use crate::connection::ConnHandle;
use crate::hub::{Audience, Hub};

/// Reads a JSON body, mapping an over-limit body to 413 and bad JSON to 400.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::TooLarge,
                "request body is over the size limit (--max-body-size)",
            )
        } else {
            ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()).into())
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    // serde would also take a struct as an array of its fields in order.
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "expected a JSON object with named fields",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let error = DecodeError::from_json(&e);
        // A well-formed body with a bad field is `invalid_request`, whatever the field.
        ApiError::new(ErrorCode::InvalidRequest, error.to_string())
    })
}

/// `POST /api/v1/events`: one event (object) or a batch (array), validated
/// whole before anything is published.
pub(crate) async fn publish_events(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    match json_body(body)? {
        Value::Array(items) => {
            limit(&hub, &producer, items.len())?;
            let mut requests = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                requests.push(decode::<PublishRequest>(item).map_err(|e| e.at(index))?);
            }
            let receipts = hub.publish_many(requests).await.map_err(|e| {
                hub.metrics().error(e.code());
                ApiError::new(e.code(), e.to_string())
            })?;
            Ok(Json(receipts).into_response())
        }
        value @ Value::Object(_) => {
            limit(&hub, &producer, 1)?;
            let request = decode::<PublishRequest>(value)?;
            Ok(Json(publish(&hub, request, Audience::Subscribers).await?).into_response())
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "body must be an event object or an array of events",
        )),
    }
}

/// Applies the producer's publish rate limit (`--publish-rate-limit`).
fn limit(hub: &Hub, producer: &Producer, events: usize) -> Result<(), ApiError> {
    if hub.publish_limiter().allow(&producer.0, events) {
        return Ok(());
    }
    hub.metrics().error(ErrorCode::RateLimited);
    Err(ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "publish rate limit: at most {} events a second",
            hub.config().publish_rate_limit
        ),
    ))
}

async fn publish(
    hub: &Hub,
    request: PublishRequest,
    audience: Audience,
) -> Result<PublishReceipt, ApiError> {
    hub.publish_to(request, audience).await.map_err(|e| {
        hub.metrics().error(e.code());
        ApiError::new(e.code(), e.to_string())
    })
}

/// The body of broadcasts and user messages.
#[derive(Debug, Deserialize)]
struct Notice {
    event_type: EventType,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    key: Option<herald_protocol::Label>,
    #[serde(default)]
    source: Option<herald_protocol::Label>,
}

impl Notice {
    fn into_request(self, topic: Topic) -> PublishRequest {
        let mut request =
            PublishRequest::new(topic, self.event_type, self.data).priority(self.priority);
        request.key = self.key;
        request.source = self.source;
        request
    }
}

/// `POST /api/v1/broadcast`: on topic `global`, to every connection.
pub(crate) async fn broadcast(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReceipt>, ApiError> {
    limit(&hub, &producer, 1)?;
    let notice: Notice = decode(json_body(body)?)?;
    Ok(Json(
        publish(
            &hub,
            notice.into_request(Topic::global()),
            Audience::Everyone,
        )
        .await?,
    ))
}

/// `POST /api/v1/users/{user_id}/messages`: on `user:{user_id}`, to every
/// connection of that user.
pub(crate) async fn user_message(
    State(hub): State<Hub>,
    Path(user_id): Path<String>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReceipt>, ApiError> {
    limit(&hub, &producer, 1)?;
    let topic =
        Topic::user(&user_id).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let notice: Notice = decode(json_body(body)?)?;
    Ok(Json(
        publish(&hub, notice.into_request(topic), Audience::User(user_id)).await?,
    ))
}

fn describe(conn: &ConnHandle) -> Value {
    let subscriptions: Vec<String> = conn
        .subscriptions
        .lock()
        .keys()
        .map(ToString::to_string)
        .collect();
    json!({
        "id": &*conn.id,
        "session_id": &*conn.id,
        "user_id": conn.user_id.as_deref(),
        "remote_addr": conn.remote.map(|r| r.to_string()),
        "connected_at": conn.connected_at_ms,
        "age_s": conn.connected_at.elapsed().as_secs_f64(),
        "subscriptions": subscriptions,
        "messages_sent": conn.frames_sent.load(std::sync::atomic::Ordering::Relaxed),
        "messages_received": conn.frames_received.load(std::sync::atomic::Ordering::Relaxed),
        "queued": conn.outbox.len(),
    })
}

/// `GET /api/v1/connections`: counts, per-topic subscribers, ages, messages sent.
pub(crate) async fn connections(State(hub): State<Hub>) -> Json<Value> {
    let connections = hub.connections();
    let count = connections.len();
    let total_age: f64 = connections
        .iter()
        .map(|c| c.connected_at.elapsed().as_secs_f64())
        .sum();
    let sent: u64 = connections
        .iter()
        .map(|c| c.frames_sent.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let counts: HashMap<String, usize> = hub.subscriber_counts();
    Json(json!({
        "active_connections": count,
        "subscription_counts": counts,
        "average_connection_age_s": if count == 0 { 0.0 } else { total_age / count as f64 },
        "messages_sent": sent,
        "total_messages_sent": hub.metrics().frames_out.load(std::sync::atomic::Ordering::Relaxed),
        "connections": connections.iter().map(|c| describe(c)).collect::<Vec<_>>(),
    }))
}

/// `GET /api/v1/connections/{id}`.
pub(crate) async fn connection(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = hub
        .connection(&id)
        .ok_or_else(|| ApiError::not_found(format!("no connection {id:?}")))?;
    Ok(Json(describe(&conn)))
}

/// `DELETE /api/v1/connections/{id}`: closes it with 4500 (do not reconnect).
pub(crate) async fn disconnect(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = hub
        .connection(&id)
        .ok_or_else(|| ApiError::not_found(format!("no connection {id:?}")))?;
    conn.outbox.close(
        CloseReason::DISCONNECTED_BY_ADMIN,
        "disconnected by an admin",
        false,
    );
    Ok(Json(json!({ "disconnected": id })))
}

/// Query of `GET /api/v1/topics/{topic}/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// `GET /api/v1/topics/{topic}/events?since=&limit=`: retained history.
pub(crate) async fn topic_events(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let topic =
        Topic::parse(&topic).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let limit = query.limit.unwrap_or(hub.config().history_size);
    let (epoch, seq, events) = hub.history(&topic, query.since, limit);
    Ok(Json(
        json!({ "topic": topic, "epoch": epoch, "seq": seq, "events": events }),
    ))
}

/// `POST /api/v1/approvals`: registers an approval and returns at once.
pub(crate) async fn create_approval(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    limit(&hub, &producer, 1)?;
    let request: NewApproval = decode(json_body(body)?)?;
    let record = hub.create_approval(request).await.map_err(|e| {
        hub.metrics().error(e.code());
        ApiError::new(e.code(), e.to_string())
    })?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Query of `GET /api/v1/approvals/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

/// The longest a long-poll waits, whatever `wait_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// `GET /api/v1/approvals/{id}?wait_ms=N`: the decision; long-polls while pending.
pub(crate) async fn get_approval(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApprovalDecision>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let wait = Duration::from_millis(query.wait_ms).min(MAX_WAIT);
    let decision = hub
        .approvals()
        .wait(&id, wait)
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(Json(decision))
}

/// Query of `GET /api/v1/approvals`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    task_id: Option<String>,
    status: Option<ApprovalStatus>,
}

/// `GET /api/v1/approvals?task_id=&status=`: the audit trail.
pub(crate) async fn list_approvals(
    State(hub): State<Hub>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let approvals = hub.approvals().list(query.task_id.as_deref(), query.status);
    Ok(Json(json!({ "approvals": approvals })))
}

/// `GET /api/v1/status`.
pub(crate) async fn status(State(hub): State<Hub>) -> Json<Value> {
    Json(json!({
        "running": !hub.shutdown_token().is_cancelled(),
        "active_connections": hub.connection_count(),
        "pending_approvals": hub.approvals().pending(),
        "uptime_s": hub.uptime_s(),
        "topics": hub.topic_count(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /health`: 200 while running, 503 once shutting down.
pub(crate) async fn health(State(hub): State<Hub>) -> Response {
    let running = !hub.shutdown_token().is_cancelled();
    let status = if running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if running { "healthy" } else { "shutting_down" },
        "active_connections": hub.connection_count(),
        "uptime_s": hub.uptime_s(),
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(hub): State<Hub>) -> Response {
    let extra = [
        (
            "herald_topics",
            "Topics held in memory.",
            hub.topic_count() as f64,
        ),
        (
            "herald_retained_bytes",
            "Approximate bytes of retained history.",
            hub.retained_bytes() as f64,
        ),
        (
            "herald_uptime_seconds",
            "Seconds since the hub started.",
            hub.uptime_s() as f64,
        ),
        (
            "herald_approvals_pending",
            "Approvals waiting for a decision.",
            hub.approvals().pending() as f64,
        ),
    ];
    let mut body = hub.metrics().render(&extra);
    hub.approvals().render_metrics(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Anything else: 404 with a JSON body.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route: see the HTTP API in the README")
}

/// A route asked with a method it does not take: 405, with the same JSON
/// error body as every other refusal (`invalid_request`).
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let error = ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "{} does not take {method}: see the HTTP API in the README",
            uri.path()
        ),
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}
