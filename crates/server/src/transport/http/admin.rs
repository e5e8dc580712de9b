//! The admin side of the API: connections (list, one, disconnect), a
//! topic's retained history, status, health, metrics, and the JSON answers
//! for routes that do not exist.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::frame::Since;
use herald_protocol::{CloseReason, Epoch, ErrorCode, Event, Topic};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::body::query;
use super::error::ApiError;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::operations::metrics::{self, ScrapeFigures};

/// One connection, as the admin API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ConnectionInfo {
    id: String,
    session_id: String,
    user_id: Option<String>,
    remote_addr: Option<String>,
    /// Milliseconds since the Unix epoch.
    connected_at: u64,
    age_s: f64,
    subscriptions: Vec<String>,
    messages_sent: u64,
    messages_received: u64,
    queued: usize,
}

impl ConnectionInfo {
    fn of(conn: &ConnHandle) -> ConnectionInfo {
        let (sent, received) = conn.frame_counts();
        ConnectionInfo {
            id: conn.id.to_string(),
            session_id: conn.id.to_string(),
            user_id: conn.user_id.as_deref().map(str::to_owned),
            remote_addr: conn.remote.map(|r| r.to_string()),
            connected_at: conn.connected_at_ms,
            age_s: conn.connected_at.elapsed().as_secs_f64(),
            subscriptions: conn
                .subscriptions()
                .iter()
                .map(ToString::to_string)
                .collect(),
            messages_sent: sent,
            messages_received: received,
            queued: conn.queued(),
        }
    }
}

/// The answer of `GET /api/v1/connections`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ConnectionsReport {
    active_connections: usize,
    subscription_counts: HashMap<String, usize>,
    average_connection_age_s: f64,
    /// Frames sent to the connections open now.
    messages_sent: u64,
    /// Frames sent since the hub started.
    total_messages_sent: u64,
    connections: Vec<ConnectionInfo>,
}

/// `GET /api/v1/connections`: counts, per-topic subscribers, ages, messages sent.
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "admin",
    summary = "This node's connections: counts, per-topic subscribers, ages, messages sent",
    responses((status = 200, description = "The report", body = ref("#/components/schemas/ConnectionsReport"))),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn connections(State(hub): State<Hub>) -> Json<ConnectionsReport> {
    let connections: Vec<ConnectionInfo> = hub
        .connections()
        .all()
        .iter()
        .map(|conn| ConnectionInfo::of(conn))
        .collect();
    let count = connections.len();
    let total_age: f64 = connections.iter().map(|c| c.age_s).sum();
    Json(ConnectionsReport {
        active_connections: count,
        subscription_counts: hub.subscriptions().counts(),
        average_connection_age_s: if count == 0 {
            0.0
        } else {
            total_age / count as f64
        },
        messages_sent: connections.iter().map(|c| c.messages_sent).sum(),
        total_messages_sent: hub.metrics().frames_out.get(),
        connections,
    })
}

fn find(hub: &Hub, id: &str) -> Result<std::sync::Arc<ConnHandle>, ApiError> {
    hub.connections()
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no connection {id:?}")))
}

/// `GET /api/v1/connections/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}",
    tag = "admin",
    summary = "One connection",
    params(("id" = String, Path, description = "The `session_id` from its `welcome`")),
    responses(
        (status = 200, description = "The connection", body = ref("#/components/schemas/ConnectionInfo")),
        (status = 404, description = "No such connection on this node", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn connection(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionInfo>, ApiError> {
    let conn = find(&hub, &id)?;
    Ok(Json(ConnectionInfo::of(&conn)))
}

/// The answer of `DELETE /api/v1/connections/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Disconnected {
    disconnected: String,
}

/// `DELETE /api/v1/connections/{id}`: closes it with 4500 (do not reconnect).
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    tag = "admin",
    summary = "Disconnect a connection (close 4500: do not reconnect)",
    params(("id" = String, Path, description = "The `session_id` from its `welcome`")),
    responses(
        (status = 200, description = "Closing", body = ref("#/components/schemas/Disconnected")),
        (status = 404, description = "No such connection on this node", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn disconnect(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ApiError> {
    find(&hub, &id)?.outbox.close(
        CloseReason::DISCONNECTED_BY_ADMIN,
        "disconnected by an admin",
        false,
    );
    Ok(Json(Disconnected { disconnected: id }))
}

/// Query of `GET /api/v1/topics/{topic}/events`.
#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// The answer of `GET /api/v1/topics/{topic}/events`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct TopicHistory {
    topic: Topic,
    epoch: Epoch,
    /// The topic's latest seq.
    seq: u64,
    events: Vec<Event>,
}

/// `GET /api/v1/topics/{topic}/events?since=&limit=`: retained history.
#[utoipa::path(
    get,
    path = "/api/v1/topics/{topic}/events",
    tag = "admin",
    summary = "A topic's retained history after a seq",
    params(
        ("topic" = String, Path, description = "An exact topic, `kind` or `kind:id`"),
        ("since" = Option<u64>, Query, description = "Events with a seq above this (default 0: all retained)"),
        ("limit" = Option<usize>, Query, description = "At most this many (default --history-size)"),
    ),
    responses(
        (status = 200, description = "The retained events and the topic's position", body = ref("#/components/schemas/TopicHistory")),
        (status = "4XX", description = "Refused (invalid_topic)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn topic_events(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    history: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<TopicHistory>, ApiError> {
    let history = query(history)?;
    let topic =
        Topic::parse(&topic).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let limit = history.limit.unwrap_or(hub.config().history_size);
    let since = Since {
        seq: history.since,
        epoch: None,
    };
    let (position, read) = hub
        .broker()
        .history(&topic, &since, limit)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(Json(TopicHistory {
        topic,
        epoch: position.epoch,
        seq: position.seq,
        events: read
            .events
            .into_iter()
            .map(|encoded| Event::clone(&encoded.event))
            .collect(),
    }))
}

/// The answer of `GET /api/v1/status`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Status {
    running: bool,
    active_connections: usize,
    pending_approvals: usize,
    uptime_s: u64,
    topics: usize,
    version: &'static str,
}

/// `GET /api/v1/status`.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "admin",
    summary = "Whether the hub runs, its connections, pending approvals and uptime",
    responses((status = 200, description = "The status", body = ref("#/components/schemas/Status"))),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn status(State(hub): State<Hub>) -> Json<Status> {
    let stats = hub.broker().stats();
    Json(Status {
        running: !hub.shutdown_token().is_cancelled(),
        active_connections: hub.connections().count(),
        pending_approvals: stats.pending_approvals,
        uptime_s: hub.uptime_s(),
        topics: stats.topics,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Health {
    /// `healthy`, `shutting_down` (draining or stopping) or `unavailable`
    /// (the engine cannot serve).
    status: &'static str,
    active_connections: usize,
    uptime_s: u64,
}

/// What readiness found: ready, draining, or the engine unavailable (why).
async fn readiness(hub: &Hub) -> Result<(), (&'static str, String)> {
    if hub.draining().is_cancelled() || hub.shutdown_token().is_cancelled() {
        return Err(("shutting_down", "the hub is draining".to_owned()));
    }
    hub.broker()
        .health()
        .await
        .map_err(|error| ("unavailable", error.to_string()))
}

fn status_code(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /health`: 200 while serving; 503 once draining or when the engine
/// cannot serve (the same verdict as `/health/ready`, with figures).
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Health with figures: 503 once draining or while the engine cannot serve",
    responses(
        (status = 200, description = "Serving", body = ref("#/components/schemas/Health")),
        (status = 503, description = "Draining, or the engine is unavailable", body = ref("#/components/schemas/Health")),
    )
)]
pub(super) async fn health(State(hub): State<Hub>) -> Response {
    let verdict = readiness(&hub).await;
    let body = Health {
        status: verdict
            .as_ref()
            .map_or_else(|(status, _)| *status, |()| "healthy"),
        active_connections: hub.connections().count(),
        uptime_s: hub.uptime_s(),
    };
    (status_code(verdict.is_ok()), Json(body)).into_response()
}

/// The answer of `GET /health/live`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Liveness {
    /// Always `alive`: the process answers.
    status: &'static str,
    uptime_s: u64,
}

/// `GET /health/live`: 200 as long as the process answers, draining
/// included (restart it only when this fails).
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    summary = "Liveness: 200 as long as the process answers, draining included",
    responses((status = 200, description = "Alive", body = ref("#/components/schemas/Liveness")))
)]
pub(super) async fn live(State(hub): State<Hub>) -> Json<Liveness> {
    Json(Liveness {
        status: "alive",
        uptime_s: hub.uptime_s(),
    })
}

/// The answer of `GET /health/ready`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Readiness {
    /// `ready`, `shutting_down` or `unavailable`.
    status: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /health/ready`: 200 when this node should get traffic; 503 from
/// the moment it starts draining, and while its engine cannot serve.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    summary = "Readiness: 503 from the start of a drain, and while the engine cannot serve",
    responses(
        (status = 200, description = "Send traffic here", body = ref("#/components/schemas/Readiness")),
        (status = 503, description = "Do not: draining, or the engine is unavailable", body = ref("#/components/schemas/Readiness")),
    )
)]
pub(super) async fn ready(State(hub): State<Hub>) -> Response {
    let verdict = readiness(&hub).await;
    let ready = verdict.is_ok();
    let body = match verdict {
        Ok(()) => Readiness {
            status: "ready",
            reason: None,
        },
        Err((status, reason)) => Readiness {
            status,
            reason: Some(reason),
        },
    };
    (status_code(ready), Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics (text format 0.0.4)",
    responses((status = 200, description = "The exposition", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String))
)]
pub(super) async fn metrics(State(hub): State<Hub>) -> Response {
    let stats = hub.broker().stats();
    let (mut outbox_frames, mut outbox_deepest) = (0, 0);
    for conn in hub.connections().all() {
        let queued = conn.queued();
        outbox_frames += queued;
        outbox_deepest = outbox_deepest.max(queued);
    }
    let figures = ScrapeFigures {
        topics: stats.topics,
        retained_bytes: stats.retained_bytes,
        uptime_s: hub.uptime_s(),
        approvals_pending: stats.pending_approvals,
        outbox_frames,
        outbox_deepest,
        engine_up: hub.broker().health().await.is_ok(),
        draining: hub.draining().is_cancelled(),
    };
    let body = hub.metrics().render(figures);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// Anything else: 404 with a JSON body.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such route: see the HTTP API in the README")
}

/// A route asked with a method it does not take: 405, with the same JSON
/// error body as every other refusal (`invalid_request`).
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let error = ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "{} does not take {method}: see the HTTP API in the README",
            uri.path()
        ),
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}
