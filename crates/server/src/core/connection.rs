//! What the hub knows about one connection, whatever carries it: its id and
//! user, its bounded outbox, its subscriptions, its token's claims and a few
//! counters. The transport reads the socket and drains the outbox; fan-out
//! only ever pushes into the outbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herald_protocol::api::ConnectionInfo;
use herald_protocol::{ErrorCode, EventFilter, ServerMessage, TopicPattern};
use parking_lot::Mutex;

use crate::core::clock::now_ms;
use crate::core::outbox::{OutFrame, Outbox};
use crate::operations::auth::{Authenticator, Identity};

/// One connection.
/// A connection's subscriptions, each with its filter. A list: a
/// connection holds a few (at most `--max-subscriptions`), and a list of
/// one takes a quarter of the smallest hash table, on every connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subscribed(Vec<(TopicPattern, EventFilter)>);

impl Subscribed {
    pub(crate) fn get(&self, pattern: &TopicPattern) -> Option<&EventFilter> {
        self.0.iter().find(|(p, _)| p == pattern).map(|(_, f)| f)
    }

    pub(crate) fn contains_key(&self, pattern: &TopicPattern) -> bool {
        self.get(pattern).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &TopicPattern> {
        self.0.iter().map(|(p, _)| p)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TopicPattern, &EventFilter)> {
        self.0.iter().map(|(p, f)| (p, f))
    }

    /// Adds `pattern` with `filter`, or replaces its filter; the filter it replaced.
    pub(crate) fn insert(
        &mut self,
        pattern: TopicPattern,
        filter: EventFilter,
    ) -> Option<EventFilter> {
        if let Some((_, current)) = self.0.iter_mut().find(|(p, _)| *p == pattern) {
            return Some(std::mem::replace(current, filter));
        }
        // The first few grow one at a time (a `Vec` would make room for
        // four at its first push); past them, as a `Vec` grows.
        if self.0.len() < 4 {
            self.0.reserve_exact(1);
        }
        self.0.push((pattern, filter));
        None
    }

    pub(crate) fn remove(&mut self, pattern: &TopicPattern) -> Option<EventFilter> {
        let index = self.0.iter().position(|(p, _)| p == pattern)?;
        Some(self.0.swap_remove(index).1)
    }
}

#[derive(Debug)]
pub struct ConnHandle {
    /// The session id sent in `welcome`; also the id in the admin API.
    pub id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub remote: Option<SocketAddr>,
    /// The `Origin` a browser sent with the upgrade.
    pub origin: Option<Arc<str>>,
    pub(crate) outbox: Outbox,
    pub connected_at: Instant,
    /// Milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Every subscription, with its filter.
    pub(crate) subscriptions: Mutex<Subscribed>,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    /// Events shed from its outbox (each reported to it with a `gap`).
    pub(crate) events_shed: AtomicU64,
    /// When anything last arrived from the peer, in ms since `connected_at`.
    last_seen_ms: AtomicU64,
    /// With authentication: what the token allows, and when it expires (ms
    /// since the Unix epoch; replaced by an `auth` frame). Boxed: without
    /// authentication no connection has one, and inline it takes 72 bytes.
    access: Option<Box<Mutex<Identity>>>,
    /// Whether what the peer speaks can answer an approval (`confirm`):
    /// an approval request queued here counts as reaching someone only then.
    answers_approvals: bool,
}

impl ConnHandle {
    /// A connection from `remote` (a browser's page at `origin`); with
    /// `identity`, its user is the token's `sub`.
    pub(crate) fn new(
        user_id: Option<String>,
        identity: Option<Identity>,
        remote: Option<SocketAddr>,
        origin: Option<String>,
        queue_size: usize,
    ) -> ConnHandle {
        let user_id = identity.as_ref().map(|i| i.user.clone()).or(user_id);
        ConnHandle {
            id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            user_id: user_id.map(Arc::from),
            remote,
            origin: origin.map(Arc::from),
            outbox: Outbox::new(queue_size),
            connected_at: Instant::now(),
            connected_at_ms: now_ms(),
            subscriptions: Mutex::default(),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            events_shed: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(0),
            access: identity.map(|identity| Box::new(Mutex::new(identity))),
            answers_approvals: true,
        }
    }

    /// The same connection, for a peer whose protocol has no way to answer
    /// an approval (a replaced system's dialect without `confirm`).
    pub(crate) fn without_answers(mut self) -> ConnHandle {
        self.answers_approvals = false;
        self
    }

    /// Whether this peer can answer an approval asked of `user` (any user's
    /// when the request names none): it speaks `confirm`, and, with
    /// authentication, it is that user.
    pub(crate) fn may_answer(&self, user: Option<&str>) -> bool {
        self.answers_approvals
            && match (self.verified_user(), user) {
                (Some(me), Some(user)) => me == user,
                _ => true,
            }
    }

    /// Queues a control frame (never shed).
    pub(crate) fn send(&self, message: &ServerMessage) {
        self.outbox.push(OutFrame::control(message.encode()));
    }

    /// The subscriptions, with their filters.
    pub fn subscriptions(&self) -> Vec<TopicPattern> {
        self.subscriptions.lock().keys().cloned().collect()
    }

    /// Frames sent and received so far.
    pub fn frame_counts(&self) -> (u64, u64) {
        (
            self.frames_sent.load(Relaxed),
            self.frames_received.load(Relaxed),
        )
    }

    /// Events shed from the outbox so far.
    pub fn shed(&self) -> u64 {
        self.events_shed.load(Relaxed)
    }

    /// Frames waiting in the outbox.
    pub fn queued(&self) -> usize {
        self.outbox.len()
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
    pub(crate) fn token_expires_at(&self) -> Option<u64> {
        self.access
            .as_ref()
            .map(|access| access.lock().expires_at_ms)
    }

    /// Replaces the token (the `auth` frame): same user, new claims and expiry.
    pub(crate) fn reauthenticate(
        &self,
        auth: &Authenticator,
        token: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let identity = auth
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

    /// Something arrived from the peer.
    pub(crate) fn saw_peer(&self) {
        self.last_seen_ms
            .store(self.connected_at.elapsed().as_millis() as u64, Relaxed);
    }

    /// The connection as the admin API shows it; `node` is this node's id.
    pub fn info(&self, node: &str) -> ConnectionInfo {
        let (sent, received) = self.frame_counts();
        ConnectionInfo {
            id: self.id.to_string(),
            session_id: self.id.to_string(),
            user_id: self.user_id.as_deref().map(str::to_owned),
            origin: self.origin.as_deref().map(str::to_owned),
            remote_addr: self.remote.map(|r| r.to_string()),
            connected_at: self.connected_at_ms,
            age_s: self.connected_at.elapsed().as_secs_f64(),
            subscriptions: self
                .subscriptions()
                .iter()
                .map(ToString::to_string)
                .collect(),
            messages_sent: sent,
            messages_received: received,
            queued: self.queued(),
            shed: self.shed(),
            last_heard_at: self.connected_at_ms + self.last_seen_ms.load(Relaxed),
            node: node.to_owned(),
        }
    }

    /// How long since anything arrived from the peer.
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Relaxed));
        self.connected_at.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use herald_protocol::{EventFilter, Priority, TopicPattern};

    use super::Subscribed;

    fn pattern(text: &str) -> TopicPattern {
        text.parse().unwrap()
    }

    #[test]
    fn a_subscription_is_held_once_with_its_latest_filter_and_goes_when_removed() {
        let mut subscribed = Subscribed::default();
        let high = EventFilter {
            min_priority: Some(Priority::High),
            ..EventFilter::default()
        };
        assert_eq!(
            subscribed.insert(pattern("run:a"), EventFilter::default()),
            None
        );
        assert_eq!(
            subscribed.insert(pattern("run:*"), EventFilter::default()),
            None
        );
        assert_eq!(
            subscribed.insert(pattern("run:a"), high.clone()),
            Some(EventFilter::default())
        );
        assert_eq!(subscribed.len(), 2);
        assert_eq!(subscribed.get(&pattern("run:a")), Some(&high));
        assert_eq!(subscribed.remove(&pattern("run:a")), Some(high));
        assert_eq!(subscribed.remove(&pattern("run:a")), None);
        assert!(!subscribed.contains_key(&pattern("run:a")));
        assert_eq!(subscribed.keys().collect::<Vec<_>>(), [&pattern("run:*")]);
    }
}
