//! One WebSocket connection: its handle (what fan-out and the admin API see),
//! a reader that answers frames, and a writer that owns the socket's sink.
//!
//! The writer feeds every queued frame and flushes once per wake-up; it also
//! sends the heartbeats (a protocol ping for the peer's WebSocket stack and an
//! app-level `ping` frame for scripts that cannot see protocol pings) and
//! closes connections that stopped answering. Reader and writer run in one
//! task: when either ends, the other is dropped with it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use herald_protocol::frame::{Ack, ErrorFrame, Gap, GapReason, Heartbeat, Since, Welcome};
use herald_protocol::payload::{ControlRequest, Payload};
use herald_protocol::{
    ClientFrame, ClientMessage, CloseReason, ErrorCode, EventFilter, EventType, PublishRequest,
    RequestId, ServerMessage, Topic, TopicPattern,
};
use parking_lot::Mutex;
use tokio::time::Sleep;

use crate::auth::Identity;
use crate::hub::{Audience, Hub, now_ms};
use crate::limits::{FrameLimiter, Verdict};
use crate::outbox::{Entry, OutFrame, Outbox};

/// The sending half of an upgraded connection.
pub(crate) type Sink = futures::stream::SplitSink<WebSocket, Message>;
/// The receiving half of an upgraded connection.
pub(crate) type Source = futures::stream::SplitStream<WebSocket>;

/// What the hub knows about one connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// The session id sent in `welcome`; also the id in the admin API.
    pub(crate) id: Arc<str>,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) outbox: Outbox,
    pub(crate) connected_at: Instant,
    pub(crate) connected_at_ms: u64,
    pub(crate) subscriptions: Mutex<HashMap<TopicPattern, EventFilter>>,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    /// When anything last arrived from the peer, in ms since `connected_at`.
    last_seen_ms: AtomicU64,
    /// With authentication: what the token allows, and when it expires (ms
    /// since the Unix epoch; replaced by an `auth` frame).
    access: Option<Mutex<Identity>>,
}

impl ConnHandle {
    /// A connection; with `identity`, its user is the token's `sub`.
    pub(crate) fn new(
        user_id: Option<String>,
        identity: Option<Identity>,
        remote: Option<SocketAddr>,
        queue_size: usize,
    ) -> ConnHandle {
        let user_id = identity.as_ref().map(|i| i.user.clone()).or(user_id);
        ConnHandle {
            id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            user_id: user_id.map(Arc::from),
            remote,
            outbox: Outbox::new(queue_size),
            connected_at: Instant::now(),
            connected_at_ms: now_ms(),
            subscriptions: Mutex::default(),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(0),
            access: identity.map(Mutex::new),
        }
    }

    /// Queues a control frame (never shed).
    pub(crate) fn send(&self, message: &ServerMessage) {
        self.outbox.push(OutFrame::control(message.encode()));
    }

    fn send_error(
        &self,
        hub: &Hub,
        code: ErrorCode,
        message: String,
        reference: Option<RequestId>,
    ) {
        hub.metrics().error(code);
        self.send(&ServerMessage::Error(ErrorFrame {
            code,
            message,
            reference,
        }));
    }

    /// The user an authenticated connection proved to be; `None` in open mode,
    /// where `?user_id=` is a name, not a proof.
    pub(crate) fn verified_user(&self) -> Option<&str> {
        self.access.as_ref().and(self.user_id.as_deref())
    }

    /// Whether the connection may subscribe to `pattern` (always, in open mode).
    pub(crate) fn may_subscribe(&self, pattern: &TopicPattern) -> bool {
        self.access
            .as_ref()
            .is_none_or(|access| access.lock().may_subscribe(pattern))
    }

    /// When the token expires (ms since the Unix epoch), with authentication.
    fn token_expires_at(&self) -> Option<u64> {
        self.access
            .as_ref()
            .map(|access| access.lock().expires_at_ms)
    }

    /// Replaces the token (the `auth` frame): same user, new claims and expiry.
    fn reauthenticate(&self, hub: &Hub, token: &str) -> Result<(), (ErrorCode, String)> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let identity = hub
            .config()
            .auth
            .verify(token)
            .map_err(|e| (ErrorCode::Unauthorized, e.to_string()))?;
        if Some(identity.user.as_str()) != self.user_id.as_deref() {
            return Err((
                ErrorCode::Forbidden,
                "the new token is for another user".to_owned(),
            ));
        }
        *access.lock() = identity;
        Ok(())
    }

    /// Refuses subscriptions outside the token's claims: `forbidden` names them.
    pub(crate) fn check_access(
        &self,
        patterns: &[TopicPattern],
    ) -> Result<(), (ErrorCode, String)> {
        let denied: Vec<String> = patterns
            .iter()
            .filter(|p| !self.may_subscribe(p))
            .map(ToString::to_string)
            .collect();
        if denied.is_empty() {
            Ok(())
        } else {
            Err((
                ErrorCode::Forbidden,
                format!("not allowed to subscribe to {}", denied.join(", ")),
            ))
        }
    }

    fn saw_peer(&self) {
        self.last_seen_ms
            .store(self.connected_at.elapsed().as_millis() as u64, Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Relaxed));
        self.connected_at.elapsed().saturating_sub(last)
    }
}

/// How a connection ended, for the log line.
#[derive(Debug)]
enum End {
    PeerClosed(Option<u16>),
    Closed(CloseReason, &'static str),
    HeartbeatTimeout,
    TokenExpired,
    WriteStalled,
    TooBig,
    Flooding,
    SocketError(String),
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

/// Runs a connection to its end: welcome, initial subscriptions, then frames
/// both ways until the peer leaves, the hub closes it, or the hub shuts down.
pub(crate) async fn run(
    hub: Hub,
    (sink, stream): (Sink, Source),
    conn: Arc<ConnHandle>,
    opening: Opening,
) {
    // `welcome` is queued before the connection is attached, so nothing
    // published to everyone or to its user can come first.
    conn.send(&ServerMessage::Welcome(Welcome {
        session_id: conn.id.to_string(),
        protocol: herald_protocol::frame::PROTOCOL_VERSION,
        heartbeat_ms: hub.config().heartbeat_interval.as_millis() as u64,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }));
    hub.attach(&conn);
    tracing::info!(session = %conn.id, user = conn.user_id.as_deref(), remote = ?conn.remote, "connection opened");
    // `welcome` is always the first frame; what was wrong with the URL
    // comes right after it.
    for message in opening.bad_topics {
        conn.send_error(&hub, ErrorCode::InvalidTopic, message, None);
    }
    // Nobody misses a question: a user with pending approvals gets the snapshot
    // of their topic, which holds every pending `approval.requested`.
    if let Some(user) = conn.user_id.as_deref()
        && hub.approvals().pending_of_user(user) > 0
        && let Ok(topic) = Topic::user(user)
    {
        conn.send(&hub.snapshot(&topic, &EventFilter::default()));
    }
    let (allowed, denied): (Vec<TopicPattern>, Vec<TopicPattern>) = opening
        .topics
        .into_iter()
        .partition(|p| conn.may_subscribe(p));
    if let Err((code, message)) = conn.check_access(&denied) {
        conn.send_error(&hub, code, message, None);
    }
    if !allowed.is_empty() {
        let request = herald_protocol::frame::Subscribe {
            topics: allowed,
            snapshot: opening.snapshot,
            ..Default::default()
        };
        if let Err(error) = hub.subscribe(&conn, &request) {
            conn.send_error(&hub, error.code, error.message, None);
        }
    }
    // Boxed: pinned in place, the two loops (1.1 KB together) made this
    // future 2.9 KB, and every idle connection carried that.
    let mut reader = Box::pin(read_loop(&hub, &conn, stream));
    let mut writer = Box::pin(write_loop(&hub, &conn, sink));
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
    hub.detach(&conn);
    tracing::info!(
        session = %conn.id,
        reason = %end,
        age_s = conn.connected_at.elapsed().as_secs(),
        frames_sent = conn.frames_sent.load(Relaxed),
        "connection closed"
    );
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

async fn read_loop(hub: &Hub, conn: &Arc<ConnHandle>, mut stream: Source) -> End {
    let mut limiter = FrameLimiter::new(hub.config().client_rate_limit);
    while let Some(message) = stream.next().await {
        conn.saw_peer();
        let message = match message {
            Ok(message) => message,
            Err(error) => return read_error(error),
        };
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            match limiter.check(Instant::now()) {
                Verdict::Allow => {}
                Verdict::Refuse => {
                    // Not carried out, but named: the client learns which
                    // request to send again.
                    let reference = match &message {
                        Message::Text(text) => ClientFrame::peek_id(text.as_str()),
                        _ => None,
                    };
                    conn.send_error(
                        hub,
                        ErrorCode::RateLimited,
                        format!(
                            "too many frames: at most {} a second",
                            hub.config().client_rate_limit
                        ),
                        reference,
                    );
                    continue;
                }
                Verdict::Close => return End::Flooding,
            }
        }
        let metrics = hub.metrics();
        metrics.frames_in.fetch_add(1, Relaxed);
        conn.frames_received.fetch_add(1, Relaxed);
        match message {
            Message::Text(text) => {
                metrics.bytes_in.fetch_add(text.len() as u64, Relaxed);
                handle_text(hub, conn, text.as_str()).await;
            }
            Message::Binary(bytes) => {
                metrics.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
                conn.send_error(
                    hub,
                    ErrorCode::InvalidRequest,
                    "binary frames are not part of the protocol: send JSON text frames".to_owned(),
                    None,
                );
            }
            Message::Close(frame) => return End::PeerClosed(frame.map(|f| f.code)),
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    End::PeerClosed(None)
}

fn read_error(error: axum::Error) -> End {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => End::TooBig,
        _ => End::SocketError(inner.to_string()),
    }
}

async fn handle_text(hub: &Hub, conn: &Arc<ConnHandle>, text: &str) {
    let frame = match ClientFrame::decode(text) {
        Ok(frame) => frame,
        Err(error) => {
            conn.send_error(hub, error.error.code(), error.error.to_string(), error.id);
            return;
        }
    };
    let reference = frame.id;
    // Boxed: the reader's future would otherwise be sized for the deepest
    // await of any frame (approval decisions, durable publishes), and every
    // idle connection would carry that size.
    match Box::pin(dispatch(hub, conn, frame.message)).await {
        Ok(()) => {
            if let Some(reference) = reference {
                conn.send(&ServerMessage::Ack(Ack { reference }));
            }
        }
        Err((code, message)) => conn.send_error(hub, code, message, reference),
    }
}

/// Carries out one client message.
async fn dispatch(
    hub: &Hub,
    conn: &Arc<ConnHandle>,
    message: ClientMessage,
) -> Result<(), (ErrorCode, String)> {
    match message {
        ClientMessage::Subscribe(request) => {
            conn.check_access(&request.topics)?;
            hub.subscribe(conn, &request)
                .map_err(|e| (e.code, e.message))
        }
        ClientMessage::Unsubscribe(request) => {
            hub.unsubscribe(conn, &request.topics);
            Ok(())
        }
        ClientMessage::Replay(request) => {
            conn.check_access(&[TopicPattern::Exact(request.topic.clone())])?;
            let limit = request.limit.map_or(usize::MAX, |l| l as usize);
            let since = Since {
                seq: request.since_seq,
                epoch: request.epoch,
            };
            hub.replay(conn, &request.topic, &since, limit);
            Ok(())
        }
        ClientMessage::RequestState(request) => {
            let subscriptions = conn.subscriptions.lock().clone();
            let filter_of = |topic: &Topic| {
                subscriptions
                    .get(&TopicPattern::Exact(topic.clone()))
                    .cloned()
                    .unwrap_or_default()
            };
            // Named topics; or every subscribed topic and each topic a
            // subscribed pattern covers (those with state).
            let (topics, patterns): (Vec<Topic>, Vec<(&TopicPattern, &EventFilter)>) =
                match request.topics {
                    Some(topics) => (topics, Vec::new()),
                    None => (
                        subscriptions
                            .keys()
                            .filter_map(|p| p.as_topic().cloned())
                            .collect(),
                        subscriptions
                            .iter()
                            .filter(|(p, _)| p.as_topic().is_none())
                            .collect(),
                    ),
                };
            // Access to all of it is checked before any snapshot is sent.
            let asked: Vec<TopicPattern> = topics
                .iter()
                .cloned()
                .map(TopicPattern::Exact)
                .chain(patterns.iter().map(|(p, _)| (*p).clone()))
                .collect();
            conn.check_access(&asked)?;
            let mut budget = hub.snapshot_budget();
            for topic in &topics {
                if budget.take() {
                    conn.send(&hub.snapshot(topic, &filter_of(topic)));
                }
            }
            for (pattern, filter) in patterns {
                for snapshot in hub.snapshots_under(pattern, filter, &mut budget) {
                    conn.send(&snapshot);
                }
            }
            match budget.overrun() {
                Some(error) => Err((error.code, error.message)),
                None => Ok(()),
            }
        }
        ClientMessage::Ping(ping) => {
            conn.send(&ServerMessage::Pong(Heartbeat {
                timestamp: ping.timestamp.or(Some(now_ms())),
            }));
            Ok(())
        }
        ClientMessage::Pong(_) | ClientMessage::Ack(_) => Ok(()),
        // In open mode there is no token to replace.
        ClientMessage::Auth(auth) => conn.reauthenticate(hub, &auth.token),
        ClientMessage::Confirm(confirm) => {
            let decided_by = conn
                .user_id
                .as_deref()
                .map_or_else(|| format!("session:{}", conn.id), str::to_owned);
            hub.decide_approval(
                confirm.callback_id.as_str(),
                confirm.proceed,
                confirm.feedback,
                Some(decided_by),
                conn.verified_user(),
            )
            .await
            .map(|_| ())
            .map_err(|e| (e.code(), e.to_string()))
        }
        ClientMessage::Cancel(control) => {
            if let Some(task) = &control.task_id {
                hub.cancel_task_approvals(task.as_str()).await;
            }
            publish_control(hub, conn, EventType::ControlCancel, control).await
        }
        ClientMessage::Pause(control) => {
            publish_control(hub, conn, EventType::ControlPause, control).await
        }
        ClientMessage::Resume(control) => {
            publish_control(hub, conn, EventType::ControlResume, control).await
        }
    }
}

async fn publish_control(
    hub: &Hub,
    conn: &ConnHandle,
    event_type: EventType,
    control: herald_protocol::frame::Control,
) -> Result<(), (ErrorCode, String)> {
    let topic = control
        .target_topic()
        .map_err(|e| (e.code(), e.to_string()))?;
    let data = ControlRequest {
        task_id: control.task_id.map(|t| t.to_string()),
        run_id: control.run_id.map(|r| r.to_string()),
        reason: control.reason,
        requested_by: conn.user_id.as_deref().map(str::to_owned),
    }
    .to_data();
    let request =
        PublishRequest::new(topic, event_type, data).priority(herald_protocol::Priority::High);
    hub.publish_to(request, Audience::Subscribers)
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}

async fn write_loop(hub: &Hub, conn: &ConnHandle, mut sink: Sink) -> End {
    let config = hub.config();
    // Registered once: a wake-up of this loop costs no new waiter on the
    // token every connection shares.
    let shutdown = hub.shutdown_token().clone();
    let mut shutdown = std::pin::pin!(shutdown.cancelled_owned());
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = false;
    // The token's expiry timer, reset only when an `auth` frame changed it;
    // only a connection with a token has one, so one without carries no
    // timer (boxed, since it is optional).
    let mut expiry_at = None;
    let mut expiry: Option<Pin<Box<Sleep>>> = None;
    loop {
        if conn.token_expires_at() != expiry_at {
            expiry_at = conn.token_expires_at();
            let deadline = tokio::time::Instant::now() + until(expiry_at);
            match expiry.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => expiry = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        tokio::select! {
            // Stopping and liveness before frames, so a connection that
            // always has frames queued still shuts down and still pings.
            biased;
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                conn.outbox.close(CloseReason::GOING_AWAY, "server shutting down", true);
            }
            () = expired(&mut expiry), if expiry_at.is_some() => {
                // Read afresh: an `auth` frame without an `id` replaces the
                // token without queueing a reply, so nothing woke this loop.
                expiry_at = conn.token_expires_at();
                if expiry_at.is_some_and(|at| at <= now_ms()) {
                    let _ = sink.send(close_message(CloseReason::TOKEN_EXPIRED, "token expired")).await;
                    return End::TokenExpired;
                }
                // Refreshed, or woken before the millisecond it expires in.
                if let Some(timer) = expiry.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + until(expiry_at));
                }
            }
            _ = heartbeat.tick() => {
                if conn.silent_for() > config.heartbeat_timeout {
                    let _ = sink
                        .send(close_message(CloseReason::HEARTBEAT_TIMEOUT, "heartbeat timeout"))
                        .await;
                    return End::HeartbeatTimeout;
                }
                let ping = ServerMessage::Ping(Heartbeat { timestamp: Some(now_ms()) }).encode();
                let beat = async {
                    sink.feed(Message::Ping(bytes::Bytes::new())).await?;
                    sink.send(Message::Text(Utf8Bytes::from(ping))).await
                };
                match tokio::time::timeout(config.heartbeat_timeout, beat).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return End::SocketError(error.to_string()),
                    Err(_) => return End::WriteStalled,
                }
            }
            () = conn.outbox.ready() => {}
        }
        let (batch, closing) = conn.outbox.drain();
        // A peer that stops reading fills its TCP window and the write stalls;
        // it gets as long as a silent peer would before the connection goes.
        let written = tokio::time::timeout(
            config.heartbeat_timeout,
            // Boxed, like the frame dispatch: an idle connection's task does
            // not carry the size of a write in progress.
            Box::pin(write_batch(hub, conn, &mut sink, batch)),
        );
        match written.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return End::SocketError(error.to_string()),
            Err(_) => return End::WriteStalled,
        }
        if let Some(closing) = closing {
            let _ = sink.send(close_message(closing.code, closing.reason)).await;
            if closing.code == CloseReason::TRY_AGAIN_LATER {
                hub.metrics().slow_consumer_closes.fetch_add(1, Relaxed);
            }
            return End::Closed(closing.code, closing.reason);
        }
    }
}

/// Completes when the token's timer fires; never for a connection without one.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// How long until `expiry` (ms since the epoch); a year when there is none.
fn until(expiry: Option<u64>) -> Duration {
    expiry.map_or(Duration::from_secs(365 * 24 * 3600), |at| {
        Duration::from_millis(at.saturating_sub(now_ms()))
    })
}

async fn write_batch(
    hub: &Hub,
    conn: &ConnHandle,
    sink: &mut Sink,
    batch: VecDeque<Entry>,
) -> Result<(), axum::Error> {
    let metrics = hub.metrics();
    let now = Instant::now();
    let mut ages = metrics.publish_to_send.tally();
    let (mut frames, mut bytes) = (0u64, 0u64);
    for entry in batch {
        let text = match entry {
            Entry::Frame(frame) => {
                if let Some(meta) = &frame.event {
                    ages.observe(now.saturating_duration_since(meta.published));
                }
                frame.text
            }
            Entry::Gap {
                topic,
                from_seq,
                to_seq,
            } => Utf8Bytes::from(
                ServerMessage::Gap(Gap {
                    topic,
                    from_seq,
                    to_seq,
                    reason: GapReason::Shed,
                })
                .encode(),
            ),
        };
        frames += 1;
        bytes += text.len() as u64;
        sink.feed(Message::Text(text)).await?;
    }
    if frames > 0 {
        sink.flush().await?;
        metrics.frames_out.fetch_add(frames, Relaxed);
        metrics.bytes_out.fetch_add(bytes, Relaxed);
        conn.frames_sent.fetch_add(frames, Relaxed);
    }
    Ok(())
}

fn close_message(code: CloseReason, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.0,
        reason: Utf8Bytes::from_static(reason),
    }))
}
