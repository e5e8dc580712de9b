//! [`Subscriber`]: a reconnecting WebSocket subscription, as a
//! [`Stream`] of [`SubscriberItem`]s.
//!
//! The policy (reconnect with backoff, heartbeat, resubscribe with `since`,
//! de-duplication at the replay/live seam, the offline queue) is
//! [`herald_protocol::session::Session`]'s; `driver` only carries it out
//! over a tokio-tungstenite socket.

mod driver;
mod unread;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use herald_protocol::Event;
use herald_protocol::frame::{
    Ack, Confirm, ErrorFrame, Gap, ReplayComplete, Snapshot, Subscribed, Welcome,
};
use herald_protocol::session::{
    Checkpoints, ConnectionState, Session, SessionConfig, SessionError, SessionEvent,
};
use herald_protocol::{
    CallbackId, ClientFrame, ClientMessage, EventFilter, RequestId, TopicPattern,
};
use tokio::sync::{mpsc, oneshot, watch};

use self::driver::{Command, Driver, Shared};
use self::unread::Unread;
use crate::endpoint::HubUrl;
use crate::error::SubscribeError;
use crate::task::OwnedTask;
use crate::tls::ExtraRoots;

/// How long [`Subscriber::close`] waits for the close handshake.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// What a [`Subscriber`] yields. Clients ignore what they do not know: match
/// with a wildcard arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SubscriberItem {
    /// A new event: per topic in `seq` order, never twice.
    Event(Event),
    /// Events that will not come (trimmed, shed, or another stream epoch):
    /// re-read state.
    Gap(Gap),
    /// The latest event per key of a topic (asked for with `snapshot`).
    Snapshot(Snapshot),
    /// The connection changed state (connecting, open, reconnecting, closed).
    State(ConnectionState),
    /// The hub refused something; `reference` is the request id it answers.
    Error(ErrorFrame),
    /// A connection's first frame.
    Welcome(Welcome),
    /// The hub confirmed a subscription, one per topic or pattern.
    Subscribed(Subscribed),
    /// A replay (after `since`, or a `replay` request) finished; its range
    /// is what the hub read, which may include events not yielded (already
    /// delivered, or outside a filter).
    ReplayComplete(ReplayComplete),
    /// The hub acknowledged the frame sent with this request id.
    Ack(Ack),
    /// The offline queue was full: this frame was never sent.
    FrameDropped(ClientFrame),
    /// A frame from the hub that does not decode (it was skipped).
    Malformed(String),
}

impl From<SessionEvent> for SubscriberItem {
    fn from(event: SessionEvent) -> Self {
        match event {
            SessionEvent::Event(event) => SubscriberItem::Event(event),
            SessionEvent::Gap(gap) => SubscriberItem::Gap(gap),
            SessionEvent::Snapshot(snapshot) => SubscriberItem::Snapshot(snapshot),
            SessionEvent::StateChanged(state) => SubscriberItem::State(state),
            SessionEvent::Error(error) => SubscriberItem::Error(error),
            SessionEvent::Welcome(welcome) => SubscriberItem::Welcome(welcome),
            SessionEvent::Subscribed(subscribed) => SubscriberItem::Subscribed(subscribed),
            SessionEvent::ReplayComplete(done) => SubscriberItem::ReplayComplete(done),
            SessionEvent::Ack(ack) => SubscriberItem::Ack(ack),
            SessionEvent::FrameDropped(frame) => SubscriberItem::FrameDropped(frame),
        }
    }
}

/// A subscription to a hub over WebSocket that survives disconnects: it
/// reconnects with backoff and resubscribes with `since` its checkpoints, so
/// per topic it yields every event in order, once, or a [`SubscriberItem::Gap`]
/// saying what is missing.
///
/// It owns its connection task: dropping the subscriber stops it. Items are
/// buffered in bounded queues; a consumer that stops reading stops the
/// socket being read (the hub then sheds to it, and says so with `gap`s).
#[derive(Debug)]
pub struct Subscriber {
    commands: mpsc::Sender<Command>,
    items: mpsc::Receiver<SubscriberItem>,
    shared: watch::Receiver<Shared>,
    /// What is queued for the application and not read yet.
    unread: Unread,
    next_id: AtomicU64,
    task: OwnedTask,
}

/// The most items [`SubscriberBuilder::buffer`] takes.
pub const MAX_BUFFER: usize = 65_536;

/// Options of a [`Subscriber`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    /// The hub's URL first, then the other nodes' (see [`Self::failover`]).
    urls: Vec<String>,
    topics: Vec<TopicPattern>,
    filter: Option<EventFilter>,
    snapshot: bool,
    since: Checkpoints,
    config: SessionConfig,
    connect_timeout: Duration,
    buffer: usize,
    query: Vec<(String, String)>,
    token: Option<String>,
    roots: ExtraRoots,
}

impl SubscriberBuilder {
    /// Topics or patterns to subscribe to on every connection. Default: none
    /// (subscribe later with [`Subscriber::subscribe`]).
    pub fn topics(mut self, topics: impl IntoIterator<Item = TopicPattern>) -> Self {
        self.topics.extend(topics);
        self
    }

    /// Only events matching `filter` (types, minimum priority). Default: all.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Ask for a `snapshot` of each topic first. Default: false.
    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// Where to resume each topic (e.g. checkpoints persisted from an
    /// earlier [`Subscriber::checkpoints`]): the hub replays what came after.
    /// Default: none, live events only.
    pub fn since(mut self, checkpoints: Checkpoints) -> Self {
        self.since = checkpoints;
        self
    }

    /// Reconnect, heartbeat and offline-queue policy. Default:
    /// [`SessionConfig::default`].
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The time limit of each connection attempt (and of [`connect`](Self::connect)
    /// getting `welcome`). Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many items the connection task queues for the consumer before it
    /// stops reading the socket; the channel to the consumer holds as many
    /// again, so up to twice this many wait. Default: 256; at least 1, at
    /// most [`MAX_BUFFER`].
    pub fn buffer(mut self, items: usize) -> Self {
        self.buffer = items.clamp(1, MAX_BUFFER);
        self
    }

    /// A token sent as `Authorization: Bearer` on every connection (never
    /// in the URL, which errors and logs print). Before it expires, hand
    /// the subscriber a fresh one with [`Subscriber::set_token`]. Default:
    /// none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The connection's user, sent as `?user_id=` (a hub without
    /// authentication takes it as is). Default: none.
    pub fn user_id(self, user_id: impl Into<String>) -> Self {
        self.query("user_id", user_id)
    }

    /// Also trust the certificates of this PEM text (one or several
    /// `CERTIFICATE` blocks) for a `wss://` hub: a private CA, or a proxy's
    /// self-signed certificate. Checked by [`connect`](Self::connect).
    /// Default: the Mozilla roots only (see [`crate::tls`]).
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Another node of the same hub (several nodes on one Redis): the first
    /// connection tries each URL in turn until one answers, and each
    /// reconnect moves to the next URL, in turn, and resumes there with
    /// `since`, so a node that goes away is not waited for. Default: none.
    pub fn failover(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    /// Starts the connection task and waits until the first connection is
    /// open and welcomed, trying each URL once (the first, then the
    /// [`failover`](Self::failover) ones), each within the connect timeout:
    /// a node that cannot be reached, answers an error, or closes before
    /// `welcome` because it is full (1013) or going away (1001) passes the
    /// attempt on. `connect` fails with the last URL's error once every URL
    /// failed, and at once when a node refuses the token or the origin
    /// (HTTP 401, 403), as every node would (later disconnects are retried
    /// by the session).
    pub async fn connect(self) -> Result<Subscriber, SubscribeError> {
        let mut urls = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let hub = HubUrl::parse(url)?;
            let mut url =
                reqwest::Url::parse(&hub.websocket()).map_err(|e| crate::error::UrlError {
                    url: hub.websocket(),
                    reason: e.to_string(),
                })?;
            if !self.query.is_empty() {
                url.query_pairs_mut().extend_pairs(&self.query);
            }
            urls.push(url.to_string());
        }
        let url = urls.first().cloned().unwrap_or_default();
        let tls = Arc::new(self.roots.client_config()?);
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let config = SessionConfig {
            endpoints: urls.len(),
            ..self.config
        };
        let mut session = Session::new(config, seed);
        session.restore_checkpoints(self.since);
        if !self.topics.is_empty() {
            session.subscribe(self.topics, self.filter, self.snapshot)?;
        }
        let (commands, command_rx) = mpsc::channel(64);
        let (item_tx, items) = mpsc::channel(self.buffer);
        let (shared_tx, shared) = watch::channel(Shared::of(&session));
        let (ready_tx, ready) = oneshot::channel();
        let unread = Unread::default();
        let driver = Driver::new(
            session,
            urls,
            self.token,
            tls,
            self.connect_timeout,
            self.buffer,
            (item_tx, unread.clone()),
            command_rx,
            shared_tx,
            ready_tx,
        );
        let subscriber = Subscriber {
            commands,
            items,
            shared,
            unread,
            next_id: AtomicU64::new(1),
            task: OwnedTask::spawn(driver.run()),
        };
        // Each URL may take the connect timeout.
        let limit = self
            .connect_timeout
            .saturating_mul(u32::try_from(self.urls.len().max(1)).unwrap_or(u32::MAX));
        match tokio::time::timeout(limit, ready).await {
            Ok(Ok(Ok(()))) => Ok(subscriber),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(SubscribeError::Stopped),
            Err(_) => Err(SubscribeError::ConnectTimeout {
                url,
                timeout: self.connect_timeout,
            }),
        }
    }
}

impl Subscriber {
    /// Options for a subscriber to the hub at `url`: its HTTP base URL
    /// (`http://127.0.0.1:8765`, the `/ws` URL is derived) or a `ws://` URL.
    pub fn builder(url: impl Into<String>) -> SubscriberBuilder {
        SubscriberBuilder {
            urls: vec![url.into()],
            topics: Vec::new(),
            filter: None,
            snapshot: false,
            since: Checkpoints::new(),
            config: SessionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            buffer: 256,
            query: Vec::new(),
            token: None,
            roots: ExtraRoots::default(),
        }
    }

    /// Adds a subscription, kept across reconnects (sent with `since` for the
    /// topics it covers that have a checkpoint).
    pub async fn subscribe(
        &self,
        topics: impl IntoIterator<Item = TopicPattern>,
        filter: Option<EventFilter>,
        snapshot: bool,
    ) -> Result<(), SubscribeError> {
        let topics = topics.into_iter().collect();
        self.command(|reply| Command::Subscribe {
            topics,
            filter,
            snapshot,
            reply,
        })
        .await
    }

    /// Removes topics from every subscription (and forgets their checkpoints).
    pub async fn unsubscribe(
        &self,
        topics: impl IntoIterator<Item = TopicPattern>,
    ) -> Result<(), SubscribeError> {
        let topics = topics.into_iter().collect();
        self.command(|reply| Command::Unsubscribe { topics, reply })
            .await
    }

    /// Answers an approval (`confirm`). The hub answers with
    /// [`SubscriberItem::Ack`] or [`SubscriberItem::Error`] whose reference is
    /// the returned request id (e.g. `conflict` when it is already decided).
    /// A connection lost before that answer does not lose the command: it
    /// is sent again, with the same id, after the next `welcome` (so are
    /// `cancel`, `pause` and `resume` sent with [`send`](Self::send)). On a
    /// hub without users the answer sent again comes back as `conflict`
    /// when the first one was taken (its message names the status).
    pub async fn confirm(
        &self,
        callback_id: CallbackId,
        proceed: bool,
        feedback: Option<String>,
    ) -> Result<RequestId, SubscribeError> {
        self.send(ClientMessage::Confirm(Confirm {
            callback_id,
            proceed,
            feedback,
        }))
        .await
    }

    /// A fresh token: every connection from now on sends it, and an open
    /// one sends it to the hub at once (an `auth` frame), which keeps the
    /// connection past the old token's expiry (the hub closes with 4001
    /// otherwise, and the subscriber's `Reconnecting` state carries that
    /// code).
    pub async fn set_token(&self, token: impl Into<String>) -> Result<(), SubscribeError> {
        let token = token.into();
        self.command(|reply| Command::SetToken { token, reply })
            .await
    }

    /// Sends any frame with a fresh request id (returned, to match the hub's
    /// `ack` or `error`); queued (bounded) while disconnected.
    /// `subscribe`/`unsubscribe` frames become session state, like
    /// [`subscribe`](Self::subscribe); a `subscribe` keeps its id, so its
    /// `ack` (or refusal) comes again after every reconnect. A `replay` of a
    /// topic yields only events past what the subscriber already delivered
    /// of it (its checkpoint), since it never yields an event twice: a
    /// replay of a topic it follows yields nothing but its `ReplayComplete`.
    /// Of a topic a filtered subscription covers (`global` and `user:…`
    /// aside, which are never filtered here), it yields what that filter
    /// lets through. To read history again, use
    /// [`Publisher::history`](crate::Publisher::history).
    pub async fn send(&self, message: ClientMessage) -> Result<RequestId, SubscribeError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let frame = ClientFrame {
            id: Some(id.clone()),
            message,
        };
        self.command(|reply| Command::Send { frame, reply }).await?;
        Ok(id)
    }

    /// The per-topic checkpoints of what the application has read (persist
    /// them to resume with [`SubscriberBuilder::since`]): a topic whose
    /// events or gaps are still queued for it stands just before the first
    /// of them, so a resume from them delivers those again, never skips
    /// them.
    pub fn checkpoints(&self) -> Checkpoints {
        let checkpoints = self.shared.borrow().checkpoints.clone();
        self.unread.hold_back(checkpoints)
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.borrow().state.clone()
    }

    /// The current connection's `session_id` (its id in the admin API).
    pub fn session_id(&self) -> Option<String> {
        self.shared.borrow().session_id.clone()
    }

    /// Closes the connection (code 1000) and stops the task; items not yet
    /// read are dropped.
    pub async fn close(self) {
        let Subscriber { commands, task, .. } = self;
        let _ = tokio::time::timeout(CLOSE_LIMIT, commands.send(Command::Close)).await;
        task.join(CLOSE_LIMIT).await;
    }

    async fn command(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), SessionError>>) -> Command,
    ) -> Result<(), SubscribeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| SubscribeError::Stopped)?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubscribeError::Stopped),
        }
    }
}

impl Stream for Subscriber {
    type Item = SubscriberItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubscriberItem>> {
        let polled = self.items.poll_recv(cx);
        if let Poll::Ready(Some(item)) = &polled {
            self.unread.taken(item);
        }
        polled
    }
}
