//! WebSocket endpoints: `/ws` (frames or `?topics=`) and the seed shortcuts,
//! which subscribe on connect.
//!
//! With authentication configured, the upgrade needs a token (`?token=`,
//! `Authorization: Bearer`, or the subprotocols `herald.v1, bearer.<JWT>`,
//! answered with `herald.v1`): a missing or bad one gets HTTP 401 before the
//! upgrade. With `--allowed-origins`, a foreign `Origin` gets HTTP 403.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::{CloseReason, ErrorCode, Topic, TopicPattern};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::WebSocketConfig;

use super::coalesce::Outgoing;
use super::connection::{self, Admitted, Sending};
use super::dialect::Dialect;
use super::direct::FrameWriter;
use super::handshake::{Handshake, Raw, Socket};
use super::native::{Native, Opening};
use super::reader::{self, Lingering};
use super::writer;
use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::connections::{Capacity, Full};
use crate::core::hub::Hub;
use crate::operations::auth::Identity;
use crate::transport::deflate::Deflater;
use crate::transport::http::body::{Params, switch};
use crate::transport::http::error::ApiError;

/// The subprotocol the hub speaks (and answers with when a client offers it).
const SUBPROTOCOL: &str = "herald.v1";

/// Who a client says it is, in the query of any WebSocket endpoint (the
/// token may also come in a header or a subprotocol).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Credentials {
    /// The connection's user in open mode (with authentication, the token's `sub`).
    pub(crate) user_id: Option<String>,
    /// The subscriber's JWT.
    pub(crate) token: Option<String>,
}

/// Query parameters Herald's own endpoints accept.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConnectParams {
    /// Comma-separated topics or patterns to subscribe to on connect.
    topics: Option<String>,
    #[serde(flatten)]
    credentials: Credentials,
    /// `true`: a `snapshot` of each subscribed topic (of each topic a
    /// pattern covers) right after `subscribed`, as a `subscribe` frame with
    /// `"snapshot": true` would.
    #[serde(default, deserialize_with = "switch")]
    snapshot: bool,
}

type Upgrade = (
    Handshake,
    State<Hub>,
    ConnectInfo<SocketAddr>,
    HeaderMap,
    Params<ConnectParams>,
);

pub(crate) async fn any_topics(
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let mut topics = Vec::new();
    let mut bad = Vec::new();
    let names = params
        .topics
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    for name in names {
        match TopicPattern::parse(name) {
            Ok(pattern) => topics.push(pattern),
            Err(error) => bad.push(error.to_string()),
        }
    }
    native(ws, hub, remote, &headers, params, topics, bad)
}

fn shortcut(kind: &str, id: &str) -> (Vec<TopicPattern>, Vec<String>) {
    match Topic::with_id(kind, id) {
        Ok(topic) => (vec![TopicPattern::Exact(topic)], Vec::new()),
        Err(error) => (Vec::new(), vec![error.to_string()]),
    }
}

pub(crate) async fn execution(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("execution", &id);
    native(ws, hub, remote, &headers, params, topics, bad)
}

pub(crate) async fn crew(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("crew", &id);
    native(ws, hub, remote, &headers, params, topics, bad)
}

pub(crate) async fn run(
    Path(id): Path<String>,
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let (topics, bad) = shortcut("run", &id);
    native(ws, hub, remote, &headers, params, topics, bad)
}

pub(crate) async fn global(
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let topics = vec![TopicPattern::Exact(Topic::global())];
    native(ws, hub, remote, &headers, params, topics, Vec::new())
}

pub(crate) async fn metrics(
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    let topics = vec![TopicPattern::Exact(Topic::metrics())];
    native(ws, hub, remote, &headers, params, topics, Vec::new())
}

pub(crate) async fn events(
    (ws, State(hub), ConnectInfo(remote), headers, Params(params)): Upgrade,
) -> Response {
    native(
        ws,
        hub,
        remote,
        &headers,
        params,
        vec![TopicPattern::All],
        Vec::new(),
    )
}

/// The token a client sent, from wherever it put it.
fn token<'a>(headers: &'a HeaderMap, credentials: &'a Credentials) -> Option<&'a str> {
    if let Some(token) = credentials.token.as_deref().filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    if bearer.is_some() {
        return bearer;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer."))
}

/// Checks the token before the upgrade.
fn authenticate(
    hub: &Hub,
    headers: &HeaderMap,
    credentials: &Credentials,
) -> Result<Option<Identity>, ApiError> {
    // `Origin` was checked by the router's `authorize`, as for every route.
    let config = hub.config();
    if !config.auth.requires_token() {
        return Ok(None);
    }
    let token = token(headers, credentials).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            crate::operations::auth::AuthError::MissingToken.to_string(),
        )
    })?;
    config
        .auth
        .verify(token)
        .map(Some)
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))
}

/// One of Herald's own endpoints: subscribes to `topics` on connect.
fn native(
    ws: Handshake,
    hub: Hub,
    remote: SocketAddr,
    headers: &HeaderMap,
    params: ConnectParams,
    topics: Vec<TopicPattern>,
    bad_topics: Vec<String>,
) -> Response {
    let opening = Opening {
        topics,
        bad_topics,
        snapshot: params.snapshot,
    };
    accept(
        ws,
        hub,
        remote,
        headers,
        params.credentials,
        Native::new(opening),
    )
}

/// Takes a WebSocket (not draining, its token checked; the connection
/// limits are checked once it is upgraded, in `open`), answers the handshake (with `permessage-deflate` when `--compression` is on and
/// the client offers it) and runs the connection in `dialect`.
pub(crate) fn accept<D: Dialect>(
    ws: Handshake,
    hub: Hub,
    remote: SocketAddr,
    headers: &HeaderMap,
    credentials: Credentials,
    dialect: D,
) -> Response {
    if hub.draining().is_cancelled() {
        return draining();
    }
    let identity = match authenticate(&hub, headers, &credentials) {
        Ok(identity) => identity,
        Err(error) => {
            // Counted by the router's middleware, as every error answer.
            tracing::info!(%remote, code = %error.code, "websocket upgrade refused: {}", error.message);
            return error.into_response();
        }
    };
    if let Some(identity) = &identity
        && let Some(pattern) = dialect
            .follows()
            .into_iter()
            .find(|pattern| !identity.may_subscribe(pattern))
    {
        let error = ApiError::new(
            ErrorCode::Forbidden,
            format!("the token's topics do not include {pattern}, which this socket follows"),
        );
        tracing::info!(%remote, code = %error.code, "websocket upgrade refused: {}", error.message);
        return error.into_response();
    }
    let config = hub.config();
    let socket_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_size))
        .max_frame_size(Some(config.max_frame_size))
        // Small read buffers keep idle connections cheap (tungstenite reads
        // at most this much per call, so a large client frame takes several
        // reads; clients mostly send short control frames). Each frame goes
        // straight to the socket's `Coalescing` writer, which gathers those
        // fed between flushes into one write of up to `WRITE_LIMIT` and then
        // lets its buffer go (tungstenite's would keep its largest size).
        .read_buffer_size(256)
        .write_buffer_size(0);
    let (response, agreed) = ws.accept(SUBPROTOCOL, config.compression);
    let tasks = hub.tasks().clone();
    let opened = Opened {
        user_id: credentials.user_id.filter(|u| !u.is_empty()),
        identity,
        remote,
        origin: headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    // This task only sees the upgrade through: the connection's life is a
    // task of its own (spawned by `open`), so an idle connection carries
    // none of the upgrade's state.
    tasks.spawn(async move {
        let Some((socket, out)) = agreed.socket(socket_config, WRITE_LIMIT).await else {
            return;
        };
        match socket {
            Socket::Plain(socket) => {
                let direct = FrameWriter::new(out.direct());
                let sending = Sending {
                    deflater: None,
                    direct: Some(Box::new(direct)),
                };
                open(hub, (out, socket), opened, dialect, sending).await;
            }
            Socket::Deflate(socket) => {
                let sending = Sending {
                    deflater: Some(&*DEFLATER),
                    direct: None,
                };
                open(hub, (out, socket), opened, dialect, sending).await;
            }
        }
    });
    response
}

/// At most this many bytes of frames gather before a write goes out.
const WRITE_LIMIT: usize = 64 * 1024;

/// Compressed frames, shared by every compressed connection of the process
/// (frames are found by the identity of their bytes, whichever hub made them).
static DEFLATER: LazyLock<Deflater> = LazyLock::new(Deflater::default);

/// Who a new connection is.
#[derive(Debug)]
struct Opened {
    user_id: Option<String>,
    identity: Option<Identity>,
    remote: SocketAddr,
    origin: Option<String>,
}

/// Starts an upgraded connection in `dialect` on a task of its own,
/// unless the hub is draining or full.
async fn open<S, D>(
    hub: Hub,
    (mut out, mut socket): (Outgoing<Raw>, WebSocketStream<S>),
    opened: Opened,
    dialect: D,
    sending: Sending,
) where
    S: Lingering + Send + 'static,
    D: Dialect,
{
    let conn = ConnHandle::new(
        opened.user_id,
        opened.identity,
        Some(opened.remote),
        opened.origin,
        hub.config().queue_size,
    );
    let conn = if dialect.answers_approvals() {
        conn
    } else {
        conn.without_answers()
    };
    let conn = Arc::new(conn);
    // Greeted before it is admitted, and so before any fan-out can reach
    // it: the greeting is the first frame it gets.
    dialect.greet(&hub, &conn);
    let capacity = Capacity {
        total: hub.config().max_connections,
        per_user: hub.config().max_connections_per_user,
    };
    if let Err(full) = hub.connections().admit(&conn, capacity) {
        hub.metrics().connections_rejected.inc();
        match full {
            Full::Node => {
                if hub.connections().log_refusal(now_ms()) {
                    let limit = capacity.total;
                    tracing::warn!(
                        limit,
                        "connections refused: {full} (logged at most every 10 s; herald_connections_rejected_total counts them)"
                    );
                }
            }
            // A user's client that reconnects against its own limit would
            // fill the log: counted, and logged at debug.
            Full::User => tracing::debug!(
                user = conn.user_id.as_deref(),
                limit = capacity.per_user,
                "connection refused: {full}"
            ),
        }
        refuse(
            &mut out,
            &mut socket,
            CloseReason::TRY_AGAIN_LATER,
            full.reason(),
        )
        .await;
        return;
    }
    if hub.draining().is_cancelled() {
        // Upgraded while the drain began (it may have listed the
        // connections to close without this one): told at once, like the
        // rest.
        hub.connections().remove(&conn);
        refuse(
            &mut out,
            &mut socket,
            CloseReason::GOING_AWAY,
            "server shutting down",
        )
        .await;
        return;
    }
    let tasks = hub.tasks().clone();
    let run = connection::run(
        Admitted { hub, conn },
        (out, Box::new(socket)),
        dialect,
        sending,
    );
    tasks.spawn(run);
}

/// Closes a connection the hub does not take, with `code`, reading what
/// the peer still sends until it answers (for a second at most), so that
/// its answer does not reset the socket.
async fn refuse<S: Lingering>(
    out: &mut Outgoing<Raw>,
    socket: &mut WebSocketStream<S>,
    code: CloseReason,
    reason: &'static str,
) {
    reader::linger(socket, writer::send_close(out, code, reason)).await;
}

/// How long a client refused during a drain is told to wait: by then the
/// load balancer has seen readiness fail and routes it elsewhere.
const DRAINING_RETRY_AFTER_S: u64 = 1;

/// A new connection while the hub drains: 503 with `Retry-After`.
fn draining() -> Response {
    ApiError {
        retry_after: Some(DRAINING_RETRY_AFTER_S),
        ..ApiError::new(
            ErrorCode::Internal,
            "the hub is shutting down: connect again (to another node)",
        )
    }
    .into_response()
}
