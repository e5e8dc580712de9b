//! Seed 002, the CrewAI backend's WebSocket router, mounted as the seed
//! mounts it (`{api_v1_str}/websocket`) under `/compat/crewai`:
//!
//! | seed route | Herald topic or action |
//! |---|---|
//! | `/ws/executions/{execution_id}` | `execution:{execution_id}` |
//! | `/ws/crews/{crew_id}` | `crew:{crew_id}` |
//! | `/ws/global` | `global` (and every broadcast) |
//! | `/ws/metrics` | `metrics` (the hub's own `metrics.updated`) |
//! | `/ws/custom` | what `?subscriptions=a,b` and `subscribe` frames name |
//! | `GET /connections`, `GET /connections/{client_id}` | the connections, in `{status, data}` |
//! | `POST /broadcast`, `POST /broadcast/{subscription}` | publish to everyone, or to a subscription's topic |
//! | `POST /disconnect/{client_id}` | close it (4500) |
//! | `DELETE /connections` | close the stale ones (silent for two heartbeats) |
//! | `GET /health` | `status`, `active_connections`, `total_messages_sent`, `uptime_seconds`, `last_cleanup` |
//!
//! # Layout
//!
//! - this module: the routes and the WebSocket endpoints.
//! - `socket`: the client's WebSocket dialect.
//! - `admin`: the HTTP management routes.
//! - `names`: subscriptions ↔ topics, events ↔ `WebSocketEvent`s.

mod admin;
mod names;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use herald_protocol::{Topic, TopicPattern};
use serde::Deserialize;

use self::socket::CrewaiSocket;
use crate::core::hub::Hub;
use crate::transport::http::body::Params;
use crate::transport::ws::handshake::Handshake;
use crate::transport::ws::upgrade::{Credentials, accept};

/// Where the seed mounted its router.
const PREFIX: &str = "/compat/crewai/api/v1/websocket";

/// The WebSocket endpoints and the management routes.
pub(super) fn routes() -> Router<Hub> {
    let at = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(&at("/ws/executions/{execution_id}"), get(execution))
        .route(&at("/ws/crews/{crew_id}"), get(crew))
        .route(&at("/ws/global"), get(global))
        .route(&at("/ws/metrics"), get(metrics))
        .route(&at("/ws/custom"), get(custom))
        .route(
            &at("/connections"),
            get(admin::connections).delete(admin::cleanup),
        )
        .route(&at("/connections/{client_id}"), get(admin::connection))
        .route(&at("/broadcast"), post(admin::broadcast))
        .route(&at("/broadcast/{subscription}"), post(admin::broadcast_to))
        .route(&at("/disconnect/{client_id}"), post(admin::disconnect))
        .route(&at("/health"), get(admin::health))
        .layer(Extension(Arc::new(admin::Cleanups::default())))
}

/// What every WebSocket endpoint reads from the upgrade request.
type Upgrade = (
    Handshake,
    State<Hub>,
    ConnectInfo<SocketAddr>,
    HeaderMap,
    Params<Credentials>,
);

fn open(
    (ws, State(hub), ConnectInfo(remote), headers, Params(credentials)): Upgrade,
    initial: Vec<TopicPattern>,
    refused: Vec<String>,
) -> Response {
    let dialect = CrewaiSocket::new(initial, refused);
    accept(ws, hub, remote, &headers, credentials, dialect)
}

/// A socket for the one topic its path names (see [`Dialect::follows`]).
///
/// [`Dialect::follows`]: crate::transport::ws::dialect::Dialect::follows
fn following(
    (ws, State(hub), ConnectInfo(remote), headers, Params(credentials)): Upgrade,
    topic: Topic,
) -> Response {
    let dialect = CrewaiSocket::following(TopicPattern::Exact(topic));
    accept(ws, hub, remote, &headers, credentials, dialect)
}

fn by_id(kind: &str, id: &str, upgrade: Upgrade) -> Response {
    match Topic::with_id(kind, id) {
        Ok(topic) => following(upgrade, topic),
        Err(error) => open(upgrade, Vec::new(), vec![error.to_string()]),
    }
}

async fn execution(Path(id): Path<String>, upgrade: Upgrade) -> Response {
    by_id("execution", &id, upgrade)
}

async fn crew(Path(id): Path<String>, upgrade: Upgrade) -> Response {
    by_id("crew", &id, upgrade)
}

/// Not refused at the upgrade for a token without `global`: broadcasts
/// reach every connection live, as on Herald's own `/ws/global`.
async fn global(upgrade: Upgrade) -> Response {
    open(
        upgrade,
        vec![TopicPattern::Exact(Topic::global())],
        Vec::new(),
    )
}

async fn metrics(upgrade: Upgrade) -> Response {
    following(upgrade, Topic::metrics())
}

/// `?subscriptions=a,b` on `/ws/custom`.
#[derive(Debug, Deserialize)]
struct Custom {
    subscriptions: Option<String>,
}

async fn custom(Params(custom): Params<Custom>, upgrade: Upgrade) -> Response {
    let (mut initial, mut refused) = (Vec::new(), Vec::new());
    let names = custom.subscriptions.unwrap_or_default();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match names::pattern(name) {
            Ok(pattern) => initial.push(pattern),
            Err(error) => refused.push(error),
        }
    }
    open(upgrade, initial, refused)
}
