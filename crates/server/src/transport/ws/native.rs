//! Herald's own protocol as a [`Dialect`]: `welcome` first, the URL's
//! subscriptions on open, client frames decoded and carried out by
//! [`commands`](super::commands), and the core's frames written as they are.

use std::sync::Arc;

use herald_protocol::frame::{Ack, Gap, GapReason, Heartbeat, Subscribe, Welcome};
use herald_protocol::payload::ApprovalStatus;
use herald_protocol::{ClientFrame, ErrorCode, EventFilter, ServerMessage, Topic, TopicPattern};
use parking_lot::Mutex;
use tungstenite::Utf8Bytes;

use super::commands;
use super::connection::send_error;
use super::dialect::{Dialect, Rendered};
use crate::core::broker::ApprovalQuery;
use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;

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

/// Herald's own protocol; holds the URL's request until the connection opens.
#[derive(Debug)]
pub(crate) struct Native {
    /// Taken by [`Dialect::open`].
    opening: Mutex<Option<Opening>>,
}

impl Native {
    pub(crate) fn new(opening: Opening) -> Native {
        Native {
            opening: Mutex::new(Some(opening)),
        }
    }
}

/// Queues `welcome`: the connection's first frame (the dialects render it
/// as their own greeting, if they have one).
pub(crate) fn welcome(hub: &Hub, conn: &ConnHandle) {
    conn.send(&ServerMessage::Welcome(Welcome {
        session_id: conn.id.to_string(),
        protocol: herald_protocol::frame::PROTOCOL_VERSION,
        heartbeat_ms: hub.config().heartbeat_interval.as_millis() as u64,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame_bytes: Some(hub.config().max_frame_size as u64),
    }));
}

impl Dialect for Native {
    fn greet(&self, hub: &Hub, conn: &ConnHandle) {
        welcome(hub, conn);
    }

    async fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) {
        let opening = self.opening.lock().take();
        if let Some(opening) = opening {
            open(hub, conn, opening).await;
        }
    }

    async fn receive(&self, hub: &Hub, conn: &Arc<ConnHandle>, text: &str) {
        let frame = match ClientFrame::decode(text) {
            Ok(frame) => frame,
            Err(error) => {
                send_error(
                    hub,
                    conn,
                    error.error.code(),
                    error.error.to_string(),
                    error.id,
                );
                return;
            }
        };
        let reference = frame.id;
        match commands::dispatch(hub, conn, frame.message).await {
            Ok(()) => {
                if let Some(reference) = reference {
                    conn.send(&ServerMessage::Ack(Ack { reference }));
                }
            }
            Err((code, message)) => send_error(hub, conn, code, message, reference),
        }
    }

    fn render(&self, entry: Entry) -> Rendered {
        match entry {
            Entry::Frame(frame) => Rendered::One(frame.text),
            Entry::Gap {
                topic,
                from_seq,
                to_seq,
            } => Rendered::One(
                ServerMessage::Gap(Gap {
                    topic,
                    from_seq,
                    to_seq,
                    reason: GapReason::Shed,
                    epoch: None,
                })
                .encode()
                .into(),
            ),
        }
    }

    fn shares_event_frames(&self) -> bool {
        true
    }

    fn heartbeat(&self) -> Option<Utf8Bytes> {
        let ping = ServerMessage::Ping(Heartbeat {
            timestamp: Some(now_ms()),
        });
        Some(Utf8Bytes::from(ping.encode()))
    }
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
        let request = Subscribe {
            topics: allowed,
            snapshot: opening.snapshot,
            ..Default::default()
        };
        if let Err(error) = hub.subscriptions().subscribe(conn, &request).await {
            send_error(hub, conn, error.code, error.message, None);
        }
    }
}
