//! The connection task: carries out what the [`Session`] asks over a
//! tokio-tungstenite socket, feeds it frames and the time, and hands its
//! events to the [`Subscriber`](super::Subscriber) through a bounded queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use herald_protocol::frame::Auth;
use herald_protocol::session::{
    Action, Checkpoints, ConnectionState, Millis, Session, SessionError, SessionEvent,
};
use herald_protocol::{ClientFrame, ClientMessage, CloseReason, EventFilter, TopicPattern};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::SubscriberItem;
use super::unread::Unread;
use crate::error::SubscribeError;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes read per `read` call. tungstenite zero-fills its whole free read
/// buffer before every read, so its 128 KiB default costs a 128 KiB memset
/// per frame when frames arrive one at a time.
const READ_BUFFER: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<(), SessionError>>;

/// How long closing a socket may take before it is just dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// What the [`Subscriber`](super::Subscriber) asks of its task.
#[derive(Debug)]
pub(super) enum Command {
    Subscribe {
        topics: Vec<TopicPattern>,
        filter: Option<EventFilter>,
        snapshot: bool,
        reply: Reply,
    },
    Unsubscribe {
        topics: Vec<TopicPattern>,
        reply: Reply,
    },
    Send {
        frame: ClientFrame,
        reply: Reply,
    },
    SetToken {
        token: String,
        reply: Reply,
    },
    Close,
}

/// How long one frame may take to send: a hub that has not read it by then
/// (its TCP window stayed full) is as good as gone, and the session
/// reconnects and resubscribes, rather than the task waiting on it while
/// no timer of the session runs.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the task woke up.
enum Wake {
    Command(Option<Command>),
    Delivered,
    ConsumerGone,
    Message(Option<Result<Message, WsError>>),
    Timeout,
}

/// What the subscriber can read without asking the task.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shared {
    pub(super) checkpoints: Checkpoints,
    pub(super) state: ConnectionState,
    pub(super) session_id: Option<String>,
}

impl Shared {
    pub(super) fn of(session: &Session) -> Shared {
        Shared {
            checkpoints: session.checkpoints().clone(),
            state: session.state().clone(),
            session_id: session.session_id().map(str::to_owned),
        }
    }
}

/// The state of one subscriber's connection task.
pub(super) struct Driver {
    session: Session,
    /// The hub's WebSocket URLs; the session says which one to connect to.
    urls: Vec<String>,
    /// Sent as `Authorization: Bearer` on every connection.
    token: Option<String>,
    /// TLS for a `wss://` URL (built once, shared by every attempt).
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    /// The origin of the session's clock.
    clock: Instant,
    socket: Option<Socket>,
    /// Items the consumer has not taken yet; the socket is not read while
    /// this holds `capacity` items.
    pending: VecDeque<SubscriberItem>,
    capacity: usize,
    items: mpsc::Sender<SubscriberItem>,
    /// What is queued for the consumer and not read yet, item by item.
    unread: Unread,
    commands: mpsc::Receiver<Command>,
    shared: watch::Sender<Shared>,
    /// Told once: the first connection was welcomed, or its attempts at
    /// every URL failed.
    ready: Option<oneshot::Sender<Result<(), SubscribeError>>>,
    /// The URLs the first connection has yet to try after a failed attempt.
    untried: usize,
    /// The close code the last connection ended with: a failed attempt has
    /// none of its own, and `Reconnecting` goes on saying it (4001: the
    /// token expired) while the attempts fail.
    ended_with: Option<CloseReason>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("urls", &self.urls)
            .field("state", self.session.state())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Driver {
    #[allow(
        clippy::too_many_arguments,
        reason = "the task's parts, wired once by the builder"
    )]
    pub(super) fn new(
        session: Session,
        urls: Vec<String>,
        token: Option<String>,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        capacity: usize,
        (items, unread): (mpsc::Sender<SubscriberItem>, Unread),
        commands: mpsc::Receiver<Command>,
        shared: watch::Sender<Shared>,
        ready: oneshot::Sender<Result<(), SubscribeError>>,
    ) -> Driver {
        let urls_len = urls.len();
        Driver {
            session,
            urls,
            token,
            tls,
            connect_timeout,
            clock: Instant::now(),
            socket: None,
            pending: VecDeque::new(),
            capacity,
            items,
            unread,
            commands,
            shared,
            untried: urls_len.saturating_sub(1),
            ready: Some(ready),
            ended_with: None,
        }
    }

    /// Runs until the subscriber closes or drops, or the session closes for
    /// good and the consumer has taken every item.
    pub(super) async fn run(mut self) {
        loop {
            self.turn().await;
            let closed = matches!(self.session.state(), ConnectionState::Closed { .. });
            if closed && self.socket.is_none() && self.pending.is_empty() {
                return;
            }
            let deadline = self.session.poll_timeout().map(|at| self.instant(at));
            let readable = self.socket.is_some() && self.pending.len() < self.capacity;
            let wake = tokio::select! {
                command = self.commands.recv() => Wake::Command(command),
                permit = self.items.reserve(), if !self.pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(item) = self.pending.pop_front() {
                            permit.send(item);
                        }
                        Wake::Delivered
                    }
                    Err(_) => Wake::ConsumerGone,
                },
                message = next_message(&mut self.socket), if readable => Wake::Message(message),
                () = sleep_until(deadline), if deadline.is_some() => Wake::Timeout,
            };
            match wake {
                Wake::Command(Some(Command::Close) | None) | Wake::ConsumerGone => {
                    self.pending.clear();
                    self.session.disconnect();
                    self.turn().await;
                    return;
                }
                Wake::Command(Some(command)) => self.command(command),
                Wake::Delivered => {}
                Wake::Message(message) => self.received(message).await,
                Wake::Timeout => {
                    let now = self.now();
                    self.session.handle_timeout(now);
                }
            }
        }
    }

    /// Carries out everything the session asks until it asks nothing more.
    async fn turn(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.session.poll_action() {
                busy = true;
                match action {
                    Action::Connect => self.open().await,
                    Action::Close { code } => self.close_socket(code).await,
                }
            }
            while let Some(frame) = self.session.poll_transmit() {
                let Some(socket) = &mut self.socket else {
                    // Kept for the next connection, once the session hears
                    // this one is gone.
                    self.session.handle_unsent(frame);
                    break;
                };
                busy = true;
                let send = socket.send(Message::text(frame.encode()));
                let failure = match tokio::time::timeout(SEND_TIMEOUT, send).await {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error.to_string()),
                    Err(_) => Some(format!("a frame took over {SEND_TIMEOUT:?} to send")),
                };
                if let Some(error) = failure {
                    tracing::debug!(%error, "sending failed; the connection is lost");
                    self.socket = None;
                    // The frame goes again on the next connection (a
                    // command) or is made anew (a subscription, a ping).
                    self.session.handle_unsent(frame);
                    let now = self.now();
                    self.session.handle_closed(None, now);
                }
            }
            while let Some(event) = self.session.poll_event() {
                busy = true;
                if let SessionEvent::StateChanged(ConnectionState::Reconnecting {
                    code: Some(code),
                    ..
                }) = &event
                {
                    self.ended_with = Some(*code);
                }
                if matches!(event, SessionEvent::Welcome(_)) {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                let item = SubscriberItem::from(event);
                self.unread.queued(&item);
                self.pending.push_back(item);
            }
            if !busy {
                break;
            }
        }
        let now = Shared::of(&self.session);
        self.shared.send_if_modified(|shared| {
            let changed = *shared != now;
            if changed {
                *shared = now;
            }
            changed
        });
    }

    async fn open(&mut self) {
        let url = self
            .urls
            .get(self.session.endpoint())
            .or(self.urls.first())
            .cloned()
            .unwrap_or_default();
        let mut request = match url.as_str().into_client_request() {
            Ok(request) => request,
            Err(error) => {
                self.attempt_failed(SubscribeError::Connect {
                    url,
                    source: Box::new(error),
                });
                return;
            }
        };
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let attempt = tokio::time::timeout(
            self.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER)),
                true,
                Some(Connector::Rustls(self.tls.clone())),
            ),
        )
        .await;
        let failure = match attempt {
            Ok(Ok((socket, _response))) => {
                self.socket = Some(socket);
                self.ended_with = None;
                let now = self.now();
                self.session.handle_connected(now);
                return;
            }
            Ok(Err(WsError::Http(response))) => SubscribeError::Rejected {
                status: response.status().as_u16(),
                message: refusal_message(response.body().as_deref()),
                url,
            },
            Ok(Err(error)) => SubscribeError::Connect {
                url: url.clone(),
                source: Box::new(error),
            },
            Err(_) => SubscribeError::ConnectTimeout {
                url,
                timeout: self.connect_timeout,
            },
        };
        self.attempt_failed(failure);
    }

    /// Whether the first connection, not welcomed yet, has a URL left to
    /// try: each is tried once, without waiting, before `connect` fails
    /// (one node down is not the hub down). Takes that URL.
    fn next_url_first(&mut self) -> bool {
        if self.ready.is_none() || self.untried == 0 {
            return false;
        }
        self.untried -= 1;
        true
    }

    fn attempt_failed(&mut self, failure: SubscribeError) {
        // The error and its causes: `Connect`'s message leaves its cause to
        // the chain.
        let cause = std::error::Error::source(&failure).map(ToString::to_string);
        tracing::debug!(error = %failure, cause, "connection attempt failed");
        let now = self.now();
        // A token or an origin the hub refuses is refused by every node.
        let refused_everywhere = matches!(
            failure,
            SubscribeError::Rejected {
                status: 401 | 403,
                ..
            }
        );
        if !refused_everywhere && self.next_url_first() {
            self.session.handle_closed(self.ended_with, now);
            self.session.reconnect();
            return;
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(failure));
        }
        self.session.handle_closed(self.ended_with, now);
    }

    async fn close_socket(&mut self, code: CloseReason) {
        if let Some(mut socket) = self.socket.take() {
            let frame = CloseFrame {
                code: CloseCode::from(code.0),
                reason: "".into(),
            };
            let _ = tokio::time::timeout(CLOSE_LIMIT, socket.close(Some(frame))).await;
        }
    }

    async fn received(&mut self, message: Option<Result<Message, WsError>>) {
        let now = self.now();
        match message {
            Some(Ok(Message::Text(text))) => {
                if let Err(error) = self.session.handle_text(text.as_str(), now) {
                    self.pending
                        .push_back(SubscriberItem::Malformed(error.to_string()));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame
                    .as_ref()
                    .map(|frame| CloseReason(u16::from(frame.code)));
                // A node full (1013) or going away (1001) before `welcome`:
                // the first connection goes on to the next URL.
                if matches!(
                    code,
                    Some(CloseReason::TRY_AGAIN_LATER | CloseReason::GOING_AWAY)
                ) && self.next_url_first()
                {
                    if let Some(mut socket) = self.socket.take() {
                        let _ = tokio::time::timeout(CLOSE_LIMIT, socket.flush()).await;
                    }
                    self.session.handle_closed(code, now);
                    self.session.reconnect();
                    return;
                }
                // The first connection closed before `welcome`: `connect`
                // says why instead of waiting out its timeout.
                if let Some(frame) = &frame
                    && let Some(ready) = self.ready.take()
                {
                    let _ = ready.send(Err(SubscribeError::Refused {
                        code: u16::from(frame.code),
                        reason: frame.reason.to_string(),
                    }));
                }
                let reason = frame.map(|frame| CloseReason(u16::from(frame.code)));
                if let Some(mut socket) = self.socket.take() {
                    // Sends the close reply tungstenite queued.
                    let _ = tokio::time::timeout(CLOSE_LIMIT, socket.flush()).await;
                }
                self.session.handle_closed(reason, now);
            }
            // Binary frames are not part of the protocol; WebSocket pings are
            // answered by tungstenite.
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "the connection failed");
                self.socket = None;
                self.session.handle_closed(None, now);
            }
            None => {
                self.socket = None;
                self.session.handle_closed(None, now);
            }
        }
    }

    fn command(&mut self, command: Command) {
        let (result, reply) = match command {
            Command::Subscribe {
                topics,
                filter,
                snapshot,
                reply,
            } => (self.session.subscribe(topics, filter, snapshot), reply),
            Command::Unsubscribe { topics, reply } => (self.session.unsubscribe(topics), reply),
            Command::Send { frame, reply } => (self.session.send_frame(frame), reply),
            Command::SetToken { token, reply } => {
                self.token = Some(token.clone());
                // Offline, the next connection offers it anyway.
                let sent = if matches!(self.session.state(), ConnectionState::Open) {
                    self.session.send(ClientMessage::Auth(Auth { token }))
                } else {
                    Ok(())
                };
                (sent, reply)
            }
            Command::Close => return,
        };
        let _ = reply.send(result);
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, at: Millis) -> Instant {
        self.clock + Duration::from_millis(at.0)
    }
}

async fn next_message(socket: &mut Option<Socket>) -> Option<Result<Message, WsError>> {
    match socket {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a hub's refusal of an upgrade says: the `message` of its JSON error
/// body, or the body as text, or nothing.
fn refusal_message(body: Option<&[u8]>) -> String {
    #[derive(serde::Deserialize)]
    struct Refusal {
        code: String,
        message: String,
    }
    let body = body.unwrap_or_default();
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => format!("{}: {}", refusal.code, refusal.message),
        Err(_) => String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(200)
            .collect(),
    }
}
