//! The admin API's view of connections across every node sharing the
//! hub's store. A [`NodeQuestion`] is answered here for this node's
//! connections ([`answer`]) and asked of the other nodes through the broker
//! ([`Broker::ask_nodes`](crate::core::broker::Broker::ask_nodes)), whose
//! handler answers it with the same function; [`ask_every_node`] puts the
//! answers together. On one node (memory, SQLite) only this node answers.

use std::collections::HashMap;
use std::time::Duration;

use herald_protocol::CloseReason;

use crate::core::broker::{NodeAnswer, NodeQuestion};
use crate::core::connections::Connections;
use crate::core::hub::Hub;

/// This node's answer to `question`: `node` is its id, `counts` its
/// subscribers per topic or pattern, `frames_sent` what it sent since it
/// started (both read only for [`NodeQuestion::Connections`]).
pub fn answer(
    node: &str,
    question: &NodeQuestion,
    connections: &Connections,
    counts: impl FnOnce() -> HashMap<String, usize>,
    frames_sent: impl FnOnce() -> u64,
) -> NodeAnswer {
    let mut answer = NodeAnswer {
        node: node.to_owned(),
        ..NodeAnswer::default()
    };
    match question {
        NodeQuestion::Count => {}
        NodeQuestion::Connections => {
            answer.connections = connections.all().iter().map(|c| c.info(node)).collect();
            answer.subscription_counts = counts().into_iter().collect();
            answer.frames_sent = frames_sent();
        }
        NodeQuestion::Connection { id } => {
            answer
                .connections
                .extend(connections.get(id).map(|c| c.info(node)));
        }
        NodeQuestion::Disconnect { id } => {
            if let Some(conn) = connections.get(id) {
                let reason = "disconnected by an admin";
                conn.outbox
                    .close(CloseReason::DISCONNECTED_BY_ADMIN, reason, false);
                answer.closed = 1;
            }
        }
        NodeQuestion::CloseStale { silent_ms } => {
            let stale_after = Duration::from_millis(*silent_ms);
            for conn in connections.all() {
                if conn.silent_for() > stale_after {
                    let reason = "stale connection";
                    conn.outbox
                        .close(CloseReason::HEARTBEAT_TIMEOUT, reason, false);
                    answer.closed += 1;
                }
            }
        }
    }
    answer.count = connections.count();
    answer
}

/// `question` answered by every node sharing the store: this node's answer
/// first, then those of the others that answer within the broker's bound.
/// A connection found and closed here is not asked after elsewhere.
pub async fn ask_every_node(hub: &Hub, question: NodeQuestion) -> Vec<NodeAnswer> {
    let here = answer(
        hub.node_id(),
        &question,
        hub.connections(),
        || hub.subscriptions().counts(),
        || hub.metrics().frames_out.get(),
    );
    let settled = match &question {
        NodeQuestion::Connection { .. } => !here.connections.is_empty(),
        NodeQuestion::Disconnect { .. } => here.closed > 0,
        _ => false,
    };
    let mut answers = vec![here];
    if !settled {
        answers.extend(hub.broker().ask_nodes(&question).await);
    }
    answers
}
