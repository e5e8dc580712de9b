//! Seed 000, the AIECS `WebSocketManager`, under `/compat/aiecs`: the
//! page's WebSocket at `/compat/aiecs/` (the seed's server took any path
//! on its port), and the manager's server-side calls as HTTP operations for
//! the producers that made them in-process:
//!
//! | seed call | here |
//! |---|---|
//! | `await notify_user(step_result, user_id, task_id, step)` | `POST /compat/aiecs/notify_user`: answers `{proceed, feedback}` once the user decides or the timeout's default applies |
//! | `await broadcast_message(message)` | `POST /compat/aiecs/broadcast_message` |
//! | `await send_to_user(user_id, message)` | `POST /compat/aiecs/send_to_user/{user_id}` |
//! | `await send_heartbeat(user_id, task_id, interval)` | `POST /compat/aiecs/send_heartbeat`: one heartbeat; the caller repeats it every `interval` |
//! | `get_status()` | `GET /compat/aiecs/status`: `running`, `host`, `port`, `active_connections`, `pending_callbacks` |
//! | `get_connection_count()` | `GET /compat/aiecs/connection_count`: a number |
//!
//! # Layout
//!
//! - this module: the routes and the HTTP operations.
//! - `socket`: the page's WebSocket dialect.
//! - `names`: message `type`s ↔ event types.

mod names;
mod socket;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_protocol::payload::{ApprovalStatus, NewApproval, TaskStepResult};
use herald_protocol::{ErrorCode, EventType, Priority, PublishRequest, Topic};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::socket::AiecsSocket;
use crate::core::approvals::{ApprovalError, DECISION_SLACK};
use crate::core::broker::Audience;
use crate::core::cluster;
use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;
use crate::transport::compat::now_seconds;
use crate::transport::http::Producer;
use crate::transport::http::body::Params;
use crate::transport::http::body::{decode, json};
use crate::transport::http::error::ApiError;
use crate::transport::http::events::limit;
use crate::transport::ws::handshake::Handshake;
use crate::transport::ws::upgrade::{Credentials, accept};

/// The WebSocket and the manager's operations.
pub(super) fn routes() -> Router<Hub> {
    Router::new()
        .route("/compat/aiecs", get(connect))
        .route("/compat/aiecs/", get(connect))
        .route("/compat/aiecs/notify_user", post(notify_user))
        .route("/compat/aiecs/broadcast_message", post(broadcast_message))
        .route("/compat/aiecs/send_to_user/{user_id}", post(send_to_user))
        .route("/compat/aiecs/send_heartbeat", post(send_heartbeat))
        .route("/compat/aiecs/status", get(status))
        .route("/compat/aiecs/connection_count", get(connection_count))
}

async fn connect(
    ws: Handshake,
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Params(credentials): Params<Credentials>,
) -> Response {
    accept(
        ws,
        hub,
        remote,
        &headers,
        credentials,
        AiecsSocket::default(),
    )
}

/// The arguments of the seed's `notify_user`, plus what it hard-coded: the
/// timeout (seconds; `--approval-timeout` when absent) and what a timeout
/// resolves to (`--approval-default-proceed` when absent).
#[derive(Debug, Deserialize)]
struct NotifyUser {
    step_result: TaskStepResult,
    user_id: String,
    task_id: String,
    step: u32,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    default_proceed: Option<bool>,
}

/// `POST /compat/aiecs/notify_user`: asks the user (pages see
/// `task_step_result`) and answers the seed's `UserConfirmation`
/// (`proceed`, `feedback`) once decided, with Herald's `callback_id`,
/// `status` and `decided_by`. A timeout answers its default, as the seed
/// did, but says so (`status: "timed_out"`), and an approval no page could
/// answer is counted and logged when asked.
async fn notify_user(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    limit(&hub, &producer, 1)?;
    // Asked and answered in one call: a draining hub asks no one (the
    // producer asks again elsewhere), and one asked already waits for its
    // answer (until shortly before --shutdown-grace runs out: then 503 and
    // the approval's id), as its producer cannot ask for it again without
    // asking the user twice.
    if hub.draining().is_cancelled() {
        return Err(ApiError::unavailable(
            "the hub is shutting down: ask again, on another node or here once it is back",
        ));
    }
    let asked: NotifyUser = decode(json(body)?)?;
    let timeout_ms = match asked.timeout {
        None => None,
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => Some((seconds * 1000.0) as u64),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "timeout must be a positive number of seconds",
            ));
        }
    };
    let request = NewApproval {
        user_id: asked.user_id,
        task_id: asked.task_id,
        step: asked.step,
        step_result: asked.step_result,
        timeout_ms,
        default_proceed: asked.default_proceed,
    };
    let refused = |e: ApprovalError| ApiError::new(e.code(), e.to_string());
    let approvals = hub.approvals();
    let record = approvals.create(request).await.map_err(refused)?;
    let id = record.request.callback_id.as_str();
    let limit = Duration::from_millis(record.request.timeout_ms) + DECISION_SLACK;
    let forever = CancellationToken::new();
    let decision = tokio::select! {
        decision = approvals.wait(id, limit, &forever) => decision,
        // Answered before shutdown drops the connection unanswered.
        () = grace_ending(&hub) => approvals.wait(id, Duration::ZERO, &forever).await,
    }
    .map_err(refused)?;
    let Some(proceed) = decision.proceed else {
        // Undecided: the hub is stopping, or past its timeout the store
        // failed to record the default.
        return Ok(ApiError::unavailable(format!(
            "approval {} is still undecided: read its decision at GET /api/v1/approvals/{} \
             on a node sharing the store, or ask again",
            decision.callback_id, decision.callback_id
        ))
        .into_response());
    };
    Ok(Json(json!({
        "proceed": proceed,
        "feedback": decision.feedback,
        "callback_id": decision.callback_id,
        "status": decision.status,
        "decided_by": decision.decided_by,
        "timed_out": decision.status == ApprovalStatus::TimedOut,
    }))
    .into_response())
}

/// How long before `--shutdown-grace` runs out a waiting `notify_user` is
/// answered.
const ANSWER_BEFORE_GRACE_ENDS: Duration = Duration::from_secs(1);

/// Completes shortly before shutdown drops the connections still open.
async fn grace_ending(hub: &Hub) {
    hub.shutdown_token().cancelled().await;
    let grace = hub.config().shutdown_grace;
    tokio::time::sleep(grace.saturating_sub(ANSWER_BEFORE_GRACE_ENDS)).await;
}

/// Publishes `message` on `topic` to `audience`; answers who it reached.
async fn send(
    hub: &Hub,
    producer: &Producer,
    topic: Topic,
    body: Result<Bytes, BytesRejection>,
    audience: Audience,
) -> Result<Json<Value>, ApiError> {
    limit(hub, producer, 1)?;
    let Value::Object(message) = json(body)? else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a message is a JSON object with a \"type\"",
        ));
    };
    let request =
        names::request(topic, message).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
    publish(hub, request, audience).await
}

async fn publish(
    hub: &Hub,
    request: PublishRequest,
    audience: Audience,
) -> Result<Json<Value>, ApiError> {
    let published = hub
        .publish(request, PublishOptions::to(audience))
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let receipt = published.receipt;
    Ok(Json(json!({
        "id": receipt.id,
        "topic": receipt.topic,
        "seq": receipt.seq,
        "recipients": published.reached,
    })))
}

/// `POST /compat/aiecs/broadcast_message`: to every connection, on `global`.
async fn broadcast_message(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    send(&hub, &producer, Topic::global(), body, Audience::Everyone).await
}

/// `POST /compat/aiecs/send_to_user/{user_id}`: to that user's connections,
/// on `user:{user_id}` (an open hub's pages see every user's, with
/// `target_user_id`, as the seed broadcast them).
async fn send_to_user(
    State(hub): State<Hub>,
    Path(user_id): Path<String>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let topic =
        Topic::user(&user_id).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    send(&hub, &producer, topic, body, Audience::User).await
}

/// The body of `send_heartbeat`; `message` defaults to the seed's text.
#[derive(Debug, Deserialize)]
struct Heartbeat {
    user_id: String,
    task_id: String,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /compat/aiecs/send_heartbeat`: one `heartbeat` for a task still
/// running, to its user's connections (priority `low`).
async fn send_heartbeat(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    limit(&hub, &producer, 1)?;
    let beat: Heartbeat = decode(json(body)?)?;
    let topic = Topic::user(&beat.user_id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let data = json!({
        "status": "heartbeat",
        "message": beat.message.as_deref().unwrap_or("Task is still executing..."),
        "user_id": beat.user_id,
        "task_id": beat.task_id,
        "timestamp": now_seconds(),
    });
    let request =
        PublishRequest::new(topic, EventType::ConnectionHeartbeat, data).priority(Priority::Low);
    publish(&hub, request, Audience::User).await
}

/// `GET /compat/aiecs/status`: the seed's `get_status()`; `host` and `port`
/// as the caller reached the hub.
async fn status(State(hub): State<Hub>, headers: HeaderMap) -> Json<Value> {
    let bind = hub.config().bind;
    let (host, port) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
        .unwrap_or_else(|| (bind.ip().to_string(), bind.port()));
    let (stats, connections) = tokio::join!(hub.broker().current_stats(), cluster::count(&hub));
    Json(json!({
        "running": hub.running(),
        "host": host,
        "port": port,
        "active_connections": connections.0,
        "pending_callbacks": stats.pending_approvals,
    }))
}

/// `GET /compat/aiecs/connection_count`: the seed's `get_connection_count()`.
async fn connection_count(State(hub): State<Hub>) -> Json<usize> {
    Json(cluster::count(&hub).await.0)
}
