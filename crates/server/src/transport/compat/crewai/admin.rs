//! The CrewAI backend's HTTP management routes, in its response shapes:
//! `{status: "success", data | message}` (and FastAPI's `{detail}` for a
//! client that does not exist), connection ages and uptime in seconds,
//! times in ISO 8601.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_protocol::api::ConnectionInfo;
use herald_protocol::{ErrorCode, EventType, Priority, PublishRequest, Topic, TopicPattern};
use serde::Deserialize;
use serde_json::{Value, json};

use super::names;
use crate::core::broker::Audience;
use crate::core::clock::now_ms;
use crate::core::cluster::{self, Lookup};
use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;
use crate::transport::compat::iso8601;
use crate::transport::http::Producer;
use crate::transport::http::body::json;
use crate::transport::http::error::ApiError;
use crate::transport::http::events::limit;

/// When `DELETE /connections` last ran (ms since the epoch; 0: never).
#[derive(Debug, Default)]
pub(crate) struct Cleanups {
    last_ms: AtomicU64,
}

/// FastAPI's answer for a missing client; 503 when it is not on the nodes
/// that answered and some did not.
fn not_held(client_id: &str, lookup: Lookup) -> Response {
    let (status, detail) = match lookup {
        Lookup::NotFound => (
            StatusCode::NOT_FOUND,
            format!("Client {client_id} not found"),
        ),
        Lookup::Incomplete => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Client {client_id} is not on the nodes that answered, and not every node did: try again"
            ),
        ),
    };
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// A topic or pattern as the seed names subscriptions (`execution_123`).
fn subscription_name(pattern: &str) -> Option<String> {
    Some(names::name(&TopicPattern::parse(pattern).ok()?))
}

/// One connection as the seed described a client.
fn client(info: &ConnectionInfo) -> Value {
    let subscriptions: Vec<String> = info
        .subscriptions
        .iter()
        .filter_map(|pattern| subscription_name(pattern))
        .collect();
    json!({
        "client_id": info.id,
        "user_id": info.user_id,
        "subscriptions": subscriptions,
        "connected_at": iso8601(info.connected_at),
        "last_heartbeat": iso8601(info.last_heard_at),
        "duration_seconds": info.age_s,
        "messages_sent": info.messages_sent,
        "messages_received": info.messages_received,
        "node": info.node,
    })
}

/// `GET /connections`: the seed's statistics, subscriptions by their names,
/// for every node sharing the store.
pub(super) async fn connections(State(hub): State<Hub>) -> Json<Value> {
    let report = cluster::report(&hub, cluster::LISTED_BY_DEFAULT).await;
    let mut subscription_counts: BTreeMap<String, usize> = BTreeMap::new();
    for (pattern, n) in report.subscription_counts {
        if let Some(name) = subscription_name(&pattern) {
            *subscription_counts.entry(name).or_insert(0) += n;
        }
    }
    let total_messages_sent = report.frames_sent;
    let count = report.count;
    let average = if count == 0 {
        0.0
    } else {
        report.age_s_sum / count as f64
    };
    let clients: Vec<Value> = report.connections.iter().map(client).collect();
    let truncated = clients.len() < count;
    Json(json!({
        "status": "success",
        "data": {
            "active_connections": count,
            "subscription_counts": subscription_counts,
            "average_connection_duration": average,
            "uptime_statistics": {
                "connections": count,
                "average_duration_seconds": average,
            },
            "total_messages_sent": total_messages_sent,
            "clients": clients,
            "truncated": truncated,
        },
    }))
}

/// `GET /connections/{client_id}`.
pub(super) async fn connection(State(hub): State<Hub>, Path(client_id): Path<String>) -> Response {
    match cluster::find(&hub, &client_id).await {
        Ok(info) => Json(json!({"status": "success", "data": client(&info)})).into_response(),
        Err(lookup) => not_held(&client_id, lookup),
    }
}

/// The body of a broadcast: a `WebSocketEvent` (`event_type`, `data`,
/// `priority` in the seed's spelling), or just a `message`, sent as a
/// `system.notification`.
#[derive(Debug, Deserialize)]
struct Broadcast {
    #[serde(default)]
    event_type: Option<EventType>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Broadcast {
    fn into_request(self, topic: Topic) -> Result<PublishRequest, ApiError> {
        let priority = match self.priority.as_deref() {
            Some(spelled) => names::parse_priority(spelled)
                .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?,
            None => Priority::Normal,
        };
        let data = match (self.data, self.message) {
            (Some(data), _) => data,
            (None, Some(message)) => json!({"message": message}),
            (None, None) => json!({}),
        };
        let event_type = self.event_type.unwrap_or(EventType::SystemNotification);
        Ok(PublishRequest::new(topic, event_type, data).priority(priority))
    }
}

fn decode(body: Result<Bytes, BytesRejection>) -> Result<Broadcast, ApiError> {
    crate::transport::http::body::decode(json(body)?)
}

async fn publish(
    hub: &Hub,
    request: PublishRequest,
    audience: Audience,
    to: &str,
) -> Result<Json<Value>, ApiError> {
    let published = hub
        .publish(request, PublishOptions::to(audience))
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(Json(json!({
        "status": "success",
        "message": format!("Event broadcasted to {} clients of {to}", published.reached),
        "data": {
            "recipients": published.reached,
            "event_id": published.receipt.id,
            "seq": published.receipt.seq,
        },
    })))
}

/// `POST /broadcast`: to every client, on `global`.
pub(super) async fn broadcast(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    limit(&hub, &producer, 1)?;
    let request = decode(body)?.into_request(Topic::global())?;
    publish(&hub, request, Audience::Everyone, "all").await
}

/// `POST /broadcast/{subscription}`: to the clients subscribed to it (a
/// topic: `execution_123`, `crew_456`, `global`; not a `_updates` pattern).
pub(super) async fn broadcast_to(
    State(hub): State<Hub>,
    Path(subscription): Path<String>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    limit(&hub, &producer, 1)?;
    let topic = match names::pattern(&subscription) {
        Ok(TopicPattern::Exact(topic)) => topic,
        Ok(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "{subscription:?} names many topics: broadcast to one (e.g. execution_123)"
                ),
            ));
        }
        Err(error) => return Err(ApiError::new(ErrorCode::InvalidTopic, error)),
    };
    let request = decode(body)?.into_request(topic)?;
    publish(&hub, request, Audience::Subscribers, &subscription).await
}

/// `POST /disconnect/{client_id}`: closes it with 4500 (do not reconnect).
pub(super) async fn disconnect(State(hub): State<Hub>, Path(client_id): Path<String>) -> Response {
    if let Err(lookup) = cluster::disconnect(&hub, &client_id).await {
        return not_held(&client_id, lookup);
    }
    Json(json!({
        "status": "success",
        "message": format!("Client {client_id} disconnected"),
    }))
    .into_response()
}

/// `DELETE /connections`: closes every connection silent for longer than
/// two heartbeat intervals (it missed two pings: its peer is gone or
/// frozen) with 4000, which clients may reconnect after.
pub(super) async fn cleanup(
    State(hub): State<Hub>,
    Extension(cleanups): Extension<Arc<Cleanups>>,
) -> Json<Value> {
    let stale_after = hub.config().heartbeat_interval * 2;
    let cleaned = cluster::close_stale(&hub, stale_after).await;
    cleanups.last_ms.store(now_ms(), Relaxed);
    Json(json!({
        "status": "success",
        "message": format!("Cleaned up {cleaned} stale connections"),
        "data": {"cleaned_up": cleaned},
    }))
}

/// `GET /health`: 200 while running, 503 once draining or shutting down.
pub(super) async fn health(
    State(hub): State<Hub>,
    Extension(cleanups): Extension<Arc<Cleanups>>,
) -> Response {
    let running = hub.running();
    let last = cleanups.last_ms.load(Relaxed);
    let body = json!({
        "status": if running { "healthy" } else { "unhealthy" },
        "active_connections": hub.connections().count(),
        "total_messages_sent": hub.metrics().frames_out.get(),
        "uptime_seconds": hub.uptime_s(),
        "last_cleanup": (last > 0).then(|| iso8601(last)),
    });
    let status = if running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
