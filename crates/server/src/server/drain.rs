//! Draining a hub for a deploy, so that its clients do not all come back at
//! once.
//!
//! In order: readiness fails (`/health/ready` answers 503, so a load
//! balancer stops routing here) and new WebSocket connections are refused
//! (503 with `Retry-After`); every connection is told `system.shutdown` on
//! topic `global`, with its own `retry_after_ms`; then the connections are
//! closed with 1001, each at its own random moment within `--drain-window`,
//! after its queue is flushed.
//!
//! The notice is stored once in `global`'s history (one seq, without a retry
//! hint, naming this node in `details.node`). This node's connections get
//! copies each carrying its own hint; the other nodes of a shared store
//! deliver it as stored, so their clients see every seq of `global` and,
//! with no hint, do not leave because this node does; a replay of `global`
//! sends nobody away either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_protocol::payload::{ErrorPayload, Payload as _};
use herald_protocol::session::RETRY_AFTER_MS;
use herald_protocol::{Event, EventType, Priority, PublishRequest, Topic};
use serde_json::Value;

use crate::core::broker::{Audience, EncodedEvent};
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::{Closing, EventMeta, OutFrame};
use crate::core::publish::PublishOptions;

/// One connection's part in the drain.
#[derive(Debug)]
struct Slot {
    conn: Arc<ConnHandle>,
    /// When it is closed, from the start of the drain.
    close_after: Duration,
    /// What its notice tells it to wait after the close.
    retry_after_ms: u64,
}

/// Drains the hub (see the module docs); returns once every connection open
/// at the start has been closed, or has left on its own.
pub(crate) async fn run(hub: &Hub) {
    hub.draining().cancel();
    let window = hub.config().drain_window;
    let mut slots = plan(hub.connections().all(), window, &mut fastrand::Rng::new());
    tracing::info!(
        connections = slots.len(),
        window_ms = window.as_millis() as u64,
        "draining: readiness off, new connections refused"
    );
    announce(hub, &slots).await;
    // The window starts once the notices are queued: a store slow to take
    // the stored notice (or failing to) must not use the window up and
    // leave every close due at once.
    let started = tokio::time::Instant::now();
    slots.sort_by_key(|slot| slot.close_after);
    for slot in slots {
        if hub.connections().count() == 0 {
            break;
        }
        tokio::time::sleep_until(started + slot.close_after).await;
        slot.conn.outbox.close(Closing::SHUTDOWN);
    }
}

/// Each connection's close moment, uniform in `[0, window)`, and its retry
/// hint, uniform in `[0, window]` and drawn apart from the close moment, so
/// that clients closed at the same instant still come back apart.
fn plan(connections: Vec<Arc<ConnHandle>>, window: Duration, rng: &mut fastrand::Rng) -> Vec<Slot> {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    connections
        .into_iter()
        .map(|conn| Slot {
            conn,
            close_after: Duration::from_millis(rng.u64(0..window_ms.max(1))),
            retry_after_ms: rng.u64(0..=window_ms),
        })
        .collect()
}

/// Stores one `system.shutdown` in `global`'s history (delivered as it is
/// on the other nodes of a shared store), then queues to each of this
/// node's connections a copy carrying its own `retry_after_ms`.
async fn announce(hub: &Hub, slots: &[Slot]) {
    let notice = ErrorPayload {
        message: "the hub is shutting down; reconnect shortly".to_owned(),
        code: Some("shutdown".to_owned()),
        details: Some(serde_json::json!({ "node": hub.node_id() })),
    }
    .to_data();
    let mut request = PublishRequest::new(Topic::global(), EventType::SystemShutdown, notice)
        .priority(Priority::Critical);
    // Set here, so that every copy carries the stored event's time.
    let timestamp = crate::core::clock::now_ms();
    request.timestamp = Some(timestamp);
    let published = match hub
        .publish(request.clone(), PublishOptions::to(Audience::Nobody))
        .await
    {
        Ok(published) => published,
        Err(error) => {
            tracing::warn!(%error, "could not announce the shutdown");
            return;
        }
    };
    let stored = Event {
        topic: request.topic,
        seq: published.receipt.seq,
        id: published.receipt.id,
        event_type: request.event_type,
        priority: request.priority,
        timestamp,
        source: None,
        key: None,
        data: request.data,
    };
    let now = Instant::now();
    for slot in slots {
        let mut event = stored.clone();
        if let Value::Object(data) = &mut event.data {
            data.insert(RETRY_AFTER_MS.to_owned(), Value::from(slot.retry_after_ms));
        }
        let encoded = EncodedEvent::new(event);
        slot.conn.outbox.push(OutFrame {
            text: encoded.frame,
            event: Some(EventMeta {
                topic: Topic::global(),
                seq: stored.seq,
                priority: Priority::Critical,
                published: now,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(n: usize) -> Vec<Arc<ConnHandle>> {
        (0..n)
            .map(|_| Arc::new(ConnHandle::new(None, None, None, None, 8)))
            .collect()
    }

    #[test]
    fn closes_and_hints_are_spread_over_the_window() {
        let window = Duration::from_secs(3);
        let slots = plan(connections(200), window, &mut fastrand::Rng::with_seed(7));
        assert!(slots.iter().all(|s| s.close_after < window));
        assert!(slots.iter().all(|s| s.retry_after_ms <= 3000));
        let early = slots
            .iter()
            .filter(|s| s.close_after < Duration::from_millis(1500))
            .count();
        assert!(
            (60..140).contains(&early),
            "{early} of 200 in the first half"
        );
        let hints: std::collections::HashSet<u64> =
            slots.iter().map(|s| s.retry_after_ms).collect();
        assert!(hints.len() > 150, "only {} distinct hints", hints.len());
    }

    #[test]
    fn a_zero_window_closes_everyone_at_once_without_a_wait() {
        let slots = plan(
            connections(3),
            Duration::ZERO,
            &mut fastrand::Rng::with_seed(1),
        );
        assert!(
            slots
                .iter()
                .all(|s| s.close_after.is_zero() && s.retry_after_ms == 0)
        );
    }
}
