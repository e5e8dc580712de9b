//! The HTTP side: the router, the JSON API, and the WebSocket endpoints.

mod api;
pub mod error;
mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::hub::Hub;

/// Every route of the hub.
pub fn router(hub: Hub) -> Router {
    let body_limit = hub.config().max_body_size;
    Router::new()
        .route("/ws", get(ws::any_topics))
        .route("/ws/executions/{id}", get(ws::execution))
        .route("/ws/crews/{id}", get(ws::crew))
        .route("/ws/runs/{id}", get(ws::run))
        .route("/ws/global", get(ws::global))
        .route("/ws/metrics", get(ws::metrics))
        .route("/ws/events", get(ws::events))
        .route("/api/v1/events", post(api::publish_events))
        .route("/api/v1/broadcast", post(api::broadcast))
        .route("/api/v1/users/{user_id}/messages", post(api::user_message))
        .route(
            "/api/v1/approvals",
            post(api::create_approval).get(api::list_approvals),
        )
        .route("/api/v1/approvals/{id}", get(api::get_approval))
        .route("/api/v1/connections", get(api::connections))
        .route(
            "/api/v1/connections/{id}",
            get(api::connection).delete(api::disconnect),
        )
        .route("/api/v1/topics/{topic}/events", get(api::topic_events))
        .route("/api/v1/status", get(api::status))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(hub)
}
