//! WebSocket endpoints: `/ws` (frames or `?topics=`) and the seed shortcuts,
//! which subscribe on connect.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::Response;
use herald_protocol::{CloseReason, ErrorCode, ServerMessage, Topic, TopicPattern};
use serde::Deserialize;

use crate::connection::{self, ConnHandle};
use crate::hub::Hub;

/// Query parameters every WebSocket endpoint accepts.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConnectParams {
    /// Comma-separated topics or patterns to subscribe to on connect.
    topics: Option<String>,
    /// The connection's user (until authentication names it).
    user_id: Option<String>,
}

type Upgrade = (
    WebSocketUpgrade,
    State<Hub>,
    ConnectInfo<SocketAddr>,
    Query<ConnectParams>,
);

pub(crate) async fn any_topics(
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    let mut topics = Vec::new();
    let mut bad = Vec::new();
    for name in params
        .topics
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match TopicPattern::parse(name) {
            Ok(pattern) => topics.push(pattern),
            Err(error) => bad.push(error.to_string()),
        }
    }
    accept(ws, hub, remote, params.user_id, topics, bad)
}

fn shortcut(kind: &str, id: &str) -> (Vec<TopicPattern>, Vec<String>) {
    match Topic::with_id(kind, id) {
        Ok(topic) => (vec![TopicPattern::Exact(topic)], Vec::new()),
        Err(error) => (Vec::new(), vec![error.to_string()]),
    }
}

pub(crate) async fn execution(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("execution", &id);
    accept(ws, hub, remote, params.user_id, topics, bad)
}

pub(crate) async fn crew(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("crew", &id);
    accept(ws, hub, remote, params.user_id, topics, bad)
}

pub(crate) async fn run(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("run", &id);
    accept(ws, hub, remote, params.user_id, topics, bad)
}

pub(crate) async fn global(
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    accept(
        ws,
        hub,
        remote,
        params.user_id,
        vec![TopicPattern::Exact(Topic::global())],
        Vec::new(),
    )
}

pub(crate) async fn metrics(
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    let topics = TopicPattern::parse("metrics").into_iter().collect();
    accept(ws, hub, remote, params.user_id, topics, Vec::new())
}

pub(crate) async fn events(
    (ws, State(hub), ConnectInfo(remote), Query(params)): Upgrade,
) -> Response {
    accept(
        ws,
        hub,
        remote,
        params.user_id,
        vec![TopicPattern::All],
        Vec::new(),
    )
}

fn accept(
    ws: WebSocketUpgrade,
    hub: Hub,
    remote: SocketAddr,
    user_id: Option<String>,
    topics: Vec<TopicPattern>,
    bad_topics: Vec<String>,
) -> Response {
    let config = hub.config();
    let ws = ws
        .max_message_size(config.max_frame_size)
        .max_frame_size(config.max_frame_size)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let tasks = hub.tasks().clone();
    ws.on_upgrade(move |socket| {
        tasks.track_future(async move {
            if hub.connection_count() >= hub.config().max_connections {
                reject_over_limit(&hub, socket).await;
                return;
            }
            let user_id = user_id.filter(|u| !u.is_empty());
            let conn = Arc::new(ConnHandle::new(
                user_id,
                Some(remote),
                hub.config().queue_size,
            ));
            for message in bad_topics {
                hub.metrics().error(ErrorCode::InvalidTopic);
                conn.send(&ServerMessage::Error(herald_protocol::frame::ErrorFrame {
                    code: ErrorCode::InvalidTopic,
                    message,
                    reference: None,
                }));
            }
            connection::run(hub, socket, conn, topics).await;
        })
    })
}

async fn reject_over_limit(hub: &Hub, mut socket: WebSocket) {
    hub.metrics()
        .connections_rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        limit = hub.config().max_connections,
        "connection refused: limit reached"
    );
    let close = Message::Close(Some(CloseFrame {
        code: CloseReason::TRY_AGAIN_LATER.0,
        reason: "server connection limit reached".into(),
    }));
    let _ = socket.send(close).await;
}
