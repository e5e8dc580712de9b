//! The admin side of the API: connections (list, one, disconnect), a
//! topic's retained history, status, health, metrics, and the JSON answers
//! for routes that do not exist.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::api::{
    ConnectionInfo, ConnectionList, HubStatus, NodeInfo, NodeList, TopicHistory,
};
use herald_protocol::frame::Since;
use herald_protocol::{ErrorCode, Event, Topic};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::body::query;
use super::error::ApiError;
use crate::core::cluster::{self, Lookup};
use crate::core::hub::Hub;
use crate::operations::metrics::{self, ScrapeFigures};

/// `GET /api/v1/connections`: counts, per-topic subscribers, ages, messages
/// sent, and the connections (oldest first, `limit` of them), of every node
/// sharing the store.
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    operation_id = "list_connections",
    tag = "admin",
    summary = "Every node's connections: counts, per-topic subscribers, ages, messages sent",
    params(
        ("limit" = Option<usize>, Query, description = "List at most this many connections, the oldest first (default 1000, at most 10000); the figures count them all"),
    ),
    responses(
        (status = 200, description = "The report", body = ref("#/components/schemas/ConnectionList")),
        (status = 400, description = "A limit that is not a number", body = ref("#/components/schemas/ApiError")),
        (status = "4XX", description = "Refused: no API key (401), or one without the admin scope (403)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn connections(
    State(hub): State<Hub>,
    listing: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConnectionList>, ApiError> {
    let limit = query(listing)?
        .limit
        .unwrap_or(cluster::LISTED_BY_DEFAULT)
        .min(cluster::LISTED_AT_MOST);
    let report = cluster::report(&hub, limit).await;
    let count = report.count;
    Ok(Json(ConnectionList {
        active_connections: count,
        subscription_counts: report.subscription_counts,
        average_connection_age_s: if count == 0 {
            0.0
        } else {
            report.age_s_sum / count as f64
        },
        messages_sent: report.messages_sent_sum,
        total_messages_sent: report.frames_sent,
        partial: !report.complete,
        truncated: report.connections.len() < count,
        connections: report.connections,
    }))
}

/// Query of `GET /api/v1/connections`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
}

/// The answer for a connection not found (or not closed) on any node.
fn not_held(id: &str, lookup: Lookup) -> ApiError {
    match lookup {
        Lookup::NotFound => ApiError::not_found(format!("no connection {id:?} on any node")),
        Lookup::Incomplete => ApiError::unavailable(format!(
            "no connection {id:?} on the nodes that answered, and not every node did: try again"
        )),
    }
}

/// `GET /api/v1/connections/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}",
    operation_id = "get_connection",
    tag = "admin",
    summary = "One connection",
    params(("id" = String, Path, description = "The `session_id` from its `welcome`")),
    responses(
        (status = 200, description = "The connection", body = ref("#/components/schemas/ConnectionInfo")),
        (status = 404, description = "No such connection on any node", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "Not on the nodes that answered, and some did not (or the shared store is unreachable): try again", body = ref("#/components/schemas/ApiError")),
        (status = "4XX", description = "Refused: no API key (401), or one without the admin scope (403)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn connection(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionInfo>, ApiError> {
    cluster::find(&hub, &id)
        .await
        .map(Json)
        .map_err(|lookup| not_held(&id, lookup))
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
    operation_id = "disconnect_connection",
    tag = "admin",
    summary = "Disconnect a connection (close 4500: do not reconnect)",
    params(("id" = String, Path, description = "The `session_id` from its `welcome`")),
    responses(
        (status = 200, description = "Closing", body = ref("#/components/schemas/Disconnected")),
        (status = 404, description = "No such connection on any node", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "Not on the nodes that answered, and some did not (or the shared store is unreachable): try again", body = ref("#/components/schemas/ApiError")),
        (status = "4XX", description = "Refused: no API key (401), or one without the admin scope (403)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn disconnect(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ApiError> {
    cluster::disconnect(&hub, &id)
        .await
        .map_err(|lookup| not_held(&id, lookup))?;
    Ok(Json(Disconnected { disconnected: id }))
}

/// Query of `GET /api/v1/topics/{topic}/events`: after a seq (`since`), or
/// newer than a time (`time_ms`, ms since the Unix epoch).
#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    since: Option<u64>,
    time_ms: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/topics/{topic}/events?since=&limit=` (or `?time_ms=`):
/// retained history.
#[utoipa::path(
    get,
    path = "/api/v1/topics/{topic}/events",
    operation_id = "topic_history",
    tag = "admin",
    summary = "A topic's retained history after a seq, or newer than a time",
    params(
        ("topic" = String, Path, description = "An exact topic, `kind` or `kind:id`"),
        ("since" = Option<u64>, Query, description = "Events with a seq above this (default 0: all retained)"),
        ("time_ms" = Option<u64>, Query, description = "Instead of `since`: the retained events whose `timestamp` is after this time (ms since the Unix epoch)"),
        ("limit" = Option<usize>, Query, description = "At most this many (default --history-size)"),
    ),
    responses(
        (status = 200, description = "The retained events and the topic's position", body = ref("#/components/schemas/TopicHistory")),
        (status = "4XX", description = "Refused: invalid_topic, invalid_request, or the API key (401, 403)", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The shared store is unreachable", body = ref("#/components/schemas/ApiError")),
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
    let since = match (history.since, history.time_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give since (a seq) or time_ms, not both",
            ));
        }
        (seq, None) => Since::seq(seq.unwrap_or(0)),
        (None, Some(time_ms)) => Since::time_ms(time_ms),
    };
    let (position, read) = hub
        .broker()
        .history(&topic, &since, limit)
        .await
        .map_err(|e| ApiError::from(&e))?;
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

/// `GET /api/v1/nodes`: the nodes sharing this node's store, as they last
/// said of themselves (on Redis, every few seconds).
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    operation_id = "list_nodes",
    tag = "admin",
    summary = "The nodes sharing this node's store (itself alone on memory or SQLite)",
    responses(
        (status = 200, description = "The nodes, oldest first", body = ref("#/components/schemas/NodeList")),
        (status = "4XX", description = "Refused: no API key (401), or one without the admin scope (403)", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The shared store is unreachable", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn nodes(State(hub): State<Hub>) -> Result<Json<NodeList>, ApiError> {
    let mut nodes = hub.broker().nodes().await.map_err(|e| ApiError::from(&e))?;
    if nodes.is_empty() {
        let now = crate::core::clock::now_ms();
        nodes.push(NodeInfo {
            node: hub.node_id().to_owned(),
            started_at: now.saturating_sub(hub.uptime_s() * 1000),
            seen_at: now,
        });
    }
    Ok(Json(NodeList {
        node: hub.node_id().to_owned(),
        nodes,
    }))
}

/// `GET /api/v1/status`.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    operation_id = "get_status",
    tag = "admin",
    summary = "Whether the hub runs, its connections, pending approvals and uptime",
    responses(
        (status = 200, description = "The status", body = ref("#/components/schemas/HubStatus")),
        (status = "4XX", description = "Refused: no API key (401), or one without the admin scope (403)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn status(State(hub): State<Hub>) -> Json<HubStatus> {
    let (stats, connections) = tokio::join!(hub.broker().current_stats(), cluster::count(&hub));
    Json(HubStatus {
        running: hub.running(),
        active_connections: connections.0,
        partial: !connections.1,
        pending_approvals: stats.pending_approvals,
        uptime_s: hub.uptime_s(),
        topics: stats.topics,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct Health {
    /// `healthy`, `shutting_down` (draining or stopping) or
    /// `store_unavailable` (the store cannot take publishes).
    status: &'static str,
    active_connections: usize,
    uptime_s: u64,
}

/// What readiness found: ready, draining, or the store unreachable.
fn readiness(hub: &Hub) -> Result<(), (&'static str, &'static str)> {
    if !hub.running() {
        return Err(("shutting_down", "the hub is draining"));
    }
    if !hub.broker().ready() {
        return Err((
            "store_unavailable",
            "the store cannot take publishes now (a shared store unreachable, or a file whose writes fail)",
        ));
    }
    Ok(())
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
        (status = 503, description = "Draining, or the store cannot take publishes", body = ref("#/components/schemas/Health")),
    )
)]
pub(super) async fn health(State(hub): State<Hub>) -> Response {
    let verdict = readiness(&hub);
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
    /// `ready`, `shutting_down` or `store_unavailable`.
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
        (status = 503, description = "Do not: draining, or the store cannot take publishes", body = ref("#/components/schemas/Readiness")),
    )
)]
pub(super) async fn ready(State(hub): State<Hub>) -> Response {
    let verdict = readiness(&hub);
    let ready = verdict.is_ok();
    let body = match verdict {
        Ok(()) => Readiness {
            status: "ready",
            reason: None,
        },
        Err((status, reason)) => Readiness {
            status,
            reason: Some(reason.to_owned()),
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
        engine_up: hub.broker().ready(),
        draining: hub.draining().is_cancelled(),
        store_reconnects: stats.reconnects,
        store_catch_up_reads: stats.catch_up_reads,
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
    let mut response = error.into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
