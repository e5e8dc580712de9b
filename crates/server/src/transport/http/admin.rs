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
use herald_protocol::{CloseReason, ErrorCode, Event, Topic};
use serde::{Deserialize, Serialize};

use super::body::query;
use super::error::ApiError;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;

fn connection_info(conn: &ConnHandle) -> ConnectionInfo {
    let (sent, received) = conn.frame_counts();
    ConnectionInfo {
        id: conn.id.to_string(),
        session_id: conn.id.to_string(),
        user_id: conn.user_id.as_deref().map(str::to_owned),
        origin: conn.origin.as_deref().map(str::to_owned),
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
        shed: conn.shed(),
    }
}

/// `GET /api/v1/connections`: counts, per-topic subscribers, ages, messages
/// sent, and every connection (oldest first).
pub(super) async fn connections(State(hub): State<Hub>) -> Json<ConnectionList> {
    let mut connections: Vec<ConnectionInfo> = hub
        .connections()
        .all()
        .iter()
        .map(|conn| connection_info(conn))
        .collect();
    connections.sort_by_key(|c| c.connected_at);
    let count = connections.len();
    let total_age: f64 = connections.iter().map(|c| c.age_s).sum();
    Json(ConnectionList {
        active_connections: count,
        subscription_counts: hub.subscriptions().counts().into_iter().collect(),
        average_connection_age_s: if count == 0 {
            0.0
        } else {
            total_age / count as f64
        },
        messages_sent: connections.iter().map(|c| c.messages_sent).sum(),
        total_messages_sent: hub
            .metrics()
            .frames_out
            .load(std::sync::atomic::Ordering::Relaxed),
        connections,
    })
}

fn find(hub: &Hub, id: &str) -> Result<std::sync::Arc<ConnHandle>, ApiError> {
    hub.connections()
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no connection {id:?}")))
}

/// `GET /api/v1/connections/{id}`.
pub(super) async fn connection(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionInfo>, ApiError> {
    let conn = find(&hub, &id)?;
    Ok(Json(connection_info(&conn)))
}

/// The answer of `DELETE /api/v1/connections/{id}`.
#[derive(Debug, Serialize)]
pub(super) struct Disconnected {
    disconnected: String,
}

/// `DELETE /api/v1/connections/{id}`: closes it with 4500 (do not reconnect).
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
pub(super) async fn status(State(hub): State<Hub>) -> Json<HubStatus> {
    let stats = hub.broker().stats();
    Json(HubStatus {
        running: !hub.shutdown_token().is_cancelled(),
        active_connections: hub.connections().count(),
        pending_approvals: stats.pending_approvals,
        uptime_s: hub.uptime_s(),
        topics: stats.topics,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize)]
pub(super) struct Health {
    status: &'static str,
    active_connections: usize,
    uptime_s: u64,
}

/// `GET /health`: 200 while running, 503 once shutting down or while the
/// store is unreachable.
pub(super) async fn health(State(hub): State<Hub>) -> Response {
    let running = !hub.shutdown_token().is_cancelled();
    let store = hub.broker().ready();
    let status = if running && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: match (running, store) {
            (false, _) => "shutting_down",
            (true, false) => "store_unavailable",
            (true, true) => "healthy",
        },
        active_connections: hub.connections().count(),
        uptime_s: hub.uptime_s(),
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(hub): State<Hub>) -> Response {
    let stats = hub.broker().stats();
    let extra = [
        (
            "herald_topics",
            "Topics held in memory.",
            stats.topics as f64,
        ),
        (
            "herald_retained_bytes",
            "Approximate bytes of retained history.",
            stats.retained_bytes as f64,
        ),
        (
            "herald_uptime_seconds",
            "Seconds since the hub started.",
            hub.uptime_s() as f64,
        ),
        (
            "herald_approvals_pending",
            "Approvals waiting for a decision.",
            stats.pending_approvals as f64,
        ),
        (
            "herald_store_ready",
            "1 while the store takes publishes (a shared store can be unreachable), else 0.",
            if hub.broker().ready() { 1.0 } else { 0.0 },
        ),
        (
            "herald_store_reconnects",
            "Times this node's feed from a shared store was lost and connected again.",
            stats.reconnects as f64,
        ),
        (
            "herald_store_catch_up_reads",
            "Times this node read a stream for events its feed did not bring.",
            stats.catch_up_reads as f64,
        ),
    ];
    let mut body = hub.metrics().render(&extra);
    hub.approvals().render_metrics(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
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
