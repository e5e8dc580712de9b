//! [`Dialect`]: what a WebSocket endpoint speaks to its peer.
//!
//! Every connection is the same core connection (a `ConnHandle` with its
//! bounded outbox of Herald frames, subscribed through the core); the
//! dialect only decides what the peer reads and what its frames do. Herald's
//! own protocol ([`Native`](super::native::Native)) writes the core's frames
//! as they are; the dialects of the systems Herald replaces
//! (`transport::compat`) translate them at the edge, so the core never knows
//! they exist. The connection's life, its reader and its writer are written
//! once, generic over the dialect: Herald's own endpoints pay nothing for
//! the others.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::TopicPattern;
use tungstenite::Utf8Bytes;

use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::Entry;
use crate::operations::config::Config;

/// What one queued entry becomes on the wire: the payloads of text frames,
/// UTF-8 (the core's frames are, and a dialect's come from `String`s), as
/// plain bytes so that the core's frames go out as they are, unchecked.
#[derive(Debug)]
pub(crate) enum Rendered {
    One(Bytes),
    Many(Vec<Bytes>),
    Nothing,
}

impl Rendered {
    /// Adds one more frame after what is there.
    pub(crate) fn push(&mut self, text: impl Into<Bytes>) {
        let text = text.into();
        *self = match std::mem::replace(self, Rendered::Nothing) {
            Rendered::Nothing => Rendered::One(text),
            Rendered::One(first) => Rendered::Many(vec![first, text]),
            Rendered::Many(mut all) => {
                all.push(text);
                Rendered::Many(all)
            }
        };
    }
}

/// What a WebSocket endpoint speaks (see the module docs). One value per
/// connection: it may keep what its translation needs to remember.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Whether the peer can answer approvals (`confirm` or its dialect's
    /// equivalent): only then does an approval request queued to it count
    /// as reaching someone.
    fn answers_approvals(&self) -> bool {
        true
    }

    /// What the endpoint's URL names for it to follow, when that is what
    /// the socket is for (a dialect's socket for one run or the machines):
    /// a token that may not subscribe to all of it is refused at the
    /// upgrade (403), as a missing token is (401), rather than given a
    /// socket that can show nothing. Empty: subscriptions are checked one
    /// by one (`error` `forbidden`).
    fn follows(&self) -> Vec<TopicPattern> {
        Vec::new()
    }

    /// Queues what the peer reads first. Called before the connection is
    /// admitted, so nothing published to everyone can come before it.
    fn greet(&self, hub: &Hub, conn: &ConnHandle);

    /// Once attached: what the endpoint opens with (its subscriptions, the
    /// state it sends on connect). Runs while the connection's writer
    /// already writes, so a replay longer than the queue goes out in parts.
    fn open(&self, hub: &Hub, conn: &Arc<ConnHandle>) -> impl Future<Output = ()> + Send;

    /// Carries out one text frame from the peer (its replies are queued).
    fn receive(
        &self,
        hub: &Hub,
        conn: &Arc<ConnHandle>,
        text: &str,
    ) -> impl Future<Output = ()> + Send;

    /// One queued entry as the text frames the peer reads.
    fn render(&self, entry: Entry) -> Rendered;

    /// Whether any gap makes [`render`](Dialect::render) send the peer its
    /// whole state again (so one gap says as much as many).
    fn resyncs_on_gap(&self) -> bool {
        false
    }

    /// Whether [`render`](Dialect::render) writes an event frame as the
    /// core's own bytes, the same for every subscriber (with compression,
    /// one compressed copy then serves them all).
    fn shares_event_frames(&self) -> bool {
        false
    }

    /// The app-level heartbeat sent with each protocol ping, for peers that
    /// cannot see protocol pings (none: protocol pings only).
    fn heartbeat(&self) -> Option<Utf8Bytes>;

    /// How often heartbeats go.
    fn heartbeat_interval(&self, config: &Config) -> Duration {
        config.heartbeat_interval
    }

    /// Work that rendered frames asked for (re-sending state after a gap,
    /// say), done after each written batch.
    fn after_batch(&self, _hub: &Hub, _conn: &Arc<ConnHandle>) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}
