//! One WebSocket connection's life: `welcome`, what its URL asked for, then
//! the reader and the writer until either ends, then its removal.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use herald_protocol::frame::{ErrorFrame, Welcome};
use herald_protocol::payload::ApprovalStatus;
use herald_protocol::{
    CloseReason, ErrorCode, EventFilter, RequestId, ServerMessage, Topic, TopicPattern,
};

use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::{reader, writer};
use crate::core::broker::ApprovalQuery;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::transport::deflate::Deflater;

/// The sending half of an upgraded connection over `S`.
pub(crate) type Sink<S> = futures::stream::SplitSink<WebSocketStream<S>, Message>;
/// The receiving half of an upgraded connection over `S`.
pub(crate) type Source<S> = futures::stream::SplitStream<WebSocketStream<S>>;

/// How a connection ended, for the log line.
#[derive(Debug)]
pub(crate) enum End {
    PeerClosed(Option<u16>),
    Closed(CloseReason, &'static str),
    HeartbeatTimeout,
    TokenExpired,
    WriteStalled,
    TooBig,
    Flooding,
    SocketError(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed(Some(code)) => write!(f, "closed by peer ({code})"),
            End::PeerClosed(None) => f.write_str("closed by peer"),
            End::Closed(code, reason) => write!(f, "closed by hub ({}: {reason})", code.0),
            End::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            End::TooBig => f.write_str("frame too large (1009)"),
            End::TokenExpired => f.write_str("token expired (4001)"),
            End::WriteStalled => f.write_str("peer stopped reading (write timed out)"),
            End::Flooding => f.write_str("sustained frame flood (4029)"),
            End::SocketError(error) => write!(f, "socket error: {error}"),
        }
    }
}

/// What a connection's URL asked for (`?topics=` or a shortcut path).
#[derive(Debug)]
pub(crate) struct Opening {
    /// Subscribed on connect.
    pub(crate) topics: Vec<TopicPattern>,
    /// Why each topic that is not one was refused (`invalid_topic`, sent
    /// right after `welcome`).
    pub(crate) bad_topics: Vec<String>,
    /// `?snapshot=true`: snapshots of the subscribed topics first.
    pub(crate) snapshot: bool,
}

/// Queues an `error` frame (and counts it).
pub(crate) fn send_error(
    hub: &Hub,
    conn: &ConnHandle,
    code: ErrorCode,
    message: String,
    reference: Option<RequestId>,
) {
    hub.metrics().error(code);
    conn.send(&ServerMessage::Error(ErrorFrame {
        code,
        message,
        reference,
    }));
}

/// Runs a connection to its end: welcome, initial subscriptions, then frames
/// both ways until the peer leaves, the hub closes it, or the hub shuts down.
/// With `deflater`, `permessage-deflate` was agreed: frames worth it are
/// sent compressed.
pub(crate) async fn run<S>(
    hub: Hub,
    (sink, stream): (Sink<S>, Source<S>),
    conn: Arc<ConnHandle>,
    opening: Opening,
    deflater: Option<&Deflater>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // `welcome` is queued before the connection is attached, so nothing
    // published to everyone or to its user can come first.
    conn.send(&ServerMessage::Welcome(Welcome {
        session_id: conn.id.to_string(),
        protocol: herald_protocol::frame::PROTOCOL_VERSION,
        heartbeat_ms: hub.config().heartbeat_interval.as_millis() as u64,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }));
    hub.attach(&conn).await;
    tracing::info!(session = %conn.id, user = conn.user_id.as_deref(), remote = ?conn.remote, "connection opened");
    // Boxed: the opening's awaits would otherwise size the future every
    // idle connection keeps.
    Box::pin(open(&hub, &conn, opening)).await;
    // Boxed: pinned in place, the two loops (1.1 KB together) made this
    // future 2.9 KB, and every idle connection carried that.
    let mut reader = Box::pin(reader::read_loop(&hub, &conn, stream));
    let mut writer = Box::pin(writer::write_loop(&hub, &conn, sink, deflater));
    let end = tokio::select! {
        end = &mut writer => end,
        end = &mut reader => match end {
            End::TooBig | End::Flooding => {
                let (code, reason) = match end {
                    End::TooBig => (CloseReason::TOO_BIG, "frame too large"),
                    _ => (CloseReason::RATE_LIMITED, "too many frames"),
                };
                // Flush first: the replies already queued (the `rate_limited`
                // errors above all) tell the client why it is being closed.
                conn.outbox.close(code, reason, true);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
                end
            }
            other => other,
        },
    };
    hub.detach(&conn).await;
    tracing::info!(
        session = %conn.id,
        reason = %end,
        age_s = conn.connected_at.elapsed().as_secs(),
        frames_sent = conn.frames_sent.load(Relaxed),
        "connection closed"
    );
}

/// What comes right after `welcome`: what was wrong with the URL, the
/// user's pending questions, and the URL's subscriptions.
async fn open(hub: &Hub, conn: &Arc<ConnHandle>, opening: Opening) {
    for message in opening.bad_topics {
        send_error(hub, conn, ErrorCode::InvalidTopic, message, None);
    }
    // Nobody misses a question: a user with pending approvals gets the snapshot
    // of their topic, which holds every pending `approval.requested`.
    if let Some(user) = conn.user_id.as_deref()
        && let Ok(topic) = Topic::user(user)
    {
        let query = ApprovalQuery {
            user_id: Some(user.to_owned()),
            status: Some(ApprovalStatus::Pending),
            ..ApprovalQuery::default()
        };
        let pending = hub
            .approvals()
            .list(&query)
            .await
            .is_ok_and(|pending| !pending.is_empty());
        if pending {
            let sent = hub
                .subscriptions()
                .send_snapshot(conn, &topic, &EventFilter::default())
                .await;
            if let Err(error) = sent {
                send_error(hub, conn, error.code, error.message, None);
            }
        }
    }
    let (allowed, denied): (Vec<TopicPattern>, Vec<TopicPattern>) = opening
        .topics
        .into_iter()
        .partition(|p| conn.may_subscribe(p));
    if let Err((code, message)) = conn.check_access(&denied) {
        send_error(hub, conn, code, message, None);
    }
    if !allowed.is_empty() {
        let request = herald_protocol::frame::Subscribe {
            topics: allowed,
            snapshot: opening.snapshot,
            ..Default::default()
        };
        if let Err(error) = hub.subscriptions().subscribe(conn, &request).await {
            send_error(hub, conn, error.code, error.message, None);
        }
    }
}
