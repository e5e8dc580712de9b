//! The admin API's view of connections across every node sharing the
//! hub's store. A [`NodeQuestion`] is answered for this node's connections
//! by `answer`, and asked of the other nodes through the broker
//! ([`Broker::ask_nodes`](crate::core::broker::Broker::ask_nodes)), whose
//! handler on each node answers it with the same function. The functions
//! below put the answers together for the admin routes; on one node
//! (memory, SQLite) only this node answers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use herald_protocol::CloseReason;
use herald_protocol::api::ConnectionInfo;
use serde::{Deserialize, Serialize};

use crate::core::connections::Connections;
use crate::core::hub::Hub;
use crate::core::outbox::Closing;
use crate::operations::metrics::CloseKind;

/// A question the admin API asks of every node sharing the store about its
/// connections, so that it answers for all of them whichever node it
/// reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum NodeQuestion {
    /// How many connections it holds.
    Count,
    /// Its `limit` oldest connections, what all of them add up to, and its
    /// subscribers per topic or pattern.
    Connections {
        #[serde(default = "every_connection")]
        limit: usize,
    },
    /// The connection with this id, if it holds it.
    Connection { id: String },
    /// Closes the connection with this id (4500: do not reconnect), if it
    /// holds it.
    Disconnect { id: String },
    /// Closes the connections it has heard nothing from for longer than
    /// this many ms (4000: they may reconnect).
    CloseStale { silent_ms: u64 },
}

/// One node's answer to a [`NodeQuestion`]: `count` always; the other
/// fields as the question asks (empty or zero otherwise). A field a node of
/// another version does not send reads as empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAnswer {
    /// The answering node's id.
    pub node: String,
    /// Connections it holds (after closing those it closed).
    pub count: usize,
    /// [`NodeQuestion::Connections`]: the oldest, as many as asked;
    /// [`NodeQuestion::Connection`]: the one named, if it holds it.
    pub connections: Vec<ConnectionInfo>,
    /// [`NodeQuestion::Connections`]: the ages (s) of all it holds, summed.
    pub age_s_sum: f64,
    /// [`NodeQuestion::Connections`]: frames sent to all it holds, summed.
    pub messages_sent_sum: u64,
    /// [`NodeQuestion::Connections`]: subscribers per topic or pattern.
    pub subscription_counts: BTreeMap<String, usize>,
    /// [`NodeQuestion::Connections`]: frames sent since it started.
    pub frames_sent: u64,
    /// [`NodeQuestion::Disconnect`] and [`NodeQuestion::CloseStale`]:
    /// connections it closed.
    pub closed: usize,
}

/// The other nodes' answers to a question, as the broker gathered them.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub answers: Vec<NodeAnswer>,
    /// Nodes that heard the question and did not answer in time.
    pub missing: usize,
}

/// Every node's answers: this node's first.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    pub(crate) answers: Vec<NodeAnswer>,
    /// Whether every node answered: `false` when one did not in time, or
    /// the store could not be reached to ask.
    pub(crate) complete: bool,
}

/// Why a connection was not found, or not closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No node holds it.
    NotFound,
    /// Not on the nodes that answered, and some did not.
    Incomplete,
}

/// Every node's connections, put together.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// The oldest first, as many as asked.
    pub(crate) connections: Vec<ConnectionInfo>,
    /// Connections of every node (listed or not).
    pub(crate) count: usize,
    /// Their ages (s), summed.
    pub(crate) age_s_sum: f64,
    /// Frames sent to them, summed.
    pub(crate) messages_sent_sum: u64,
    pub(crate) subscription_counts: BTreeMap<String, usize>,
    /// Frames the nodes sent since they started.
    pub(crate) frames_sent: u64,
    /// Whether every node answered.
    pub(crate) complete: bool,
}

/// This node's answer to `question`: `node` is its id, `counts` its
/// subscribers per topic or pattern, `frames_sent` what it sent since it
/// started (both read only for [`NodeQuestion::Connections`]).
pub(crate) fn answer(
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
        NodeQuestion::Connections { limit } => {
            let mut all = connections.all();
            // Counted from the same list that is summed and listed; only the
            // listed ones are described, so a node with many connections
            // does not build what it drops.
            answer.count = all.len();
            answer.age_s_sum = all
                .iter()
                .map(|c| c.connected_at.elapsed().as_secs_f64())
                .sum();
            answer.messages_sent_sum = all.iter().map(|c| c.frame_counts().0).sum();
            all.sort_by(|a, b| (a.connected_at_ms, &a.id).cmp(&(b.connected_at_ms, &b.id)));
            all.truncate(*limit);
            answer.connections = all.iter().map(|c| c.info(node)).collect();
            answer.subscription_counts = counts().into_iter().collect();
            answer.frames_sent = frames_sent();
            return answer;
        }
        NodeQuestion::Connection { id } => {
            answer
                .connections
                .extend(connections.get(id).map(|c| c.info(node)));
        }
        NodeQuestion::Disconnect { id } => {
            if let Some(conn) = connections.get(id) {
                conn.outbox.close(Closing {
                    kind: CloseKind::Admin,
                    code: CloseReason::DISCONNECTED_BY_ADMIN,
                    reason: "disconnected by an admin",
                    flush: false,
                });
                answer.closed = 1;
            }
        }
        NodeQuestion::CloseStale { silent_ms } => {
            let stale_after = Duration::from_millis(*silent_ms);
            for conn in connections.all() {
                if conn.silent_for() > stale_after {
                    conn.outbox.close(Closing {
                        kind: CloseKind::HeartbeatTimeout,
                        code: CloseReason::HEARTBEAT_TIMEOUT,
                        reason: "stale connection",
                        flush: false,
                    });
                    answer.closed += 1;
                }
            }
        }
    }
    answer.count = connections.count();
    answer
}

/// `question` answered by every node sharing the store: this node's answer
/// first, then those of the others that answered within the broker's
/// bound. A connection found (or closed) here is not asked after
/// elsewhere.
pub(crate) async fn ask_every_node(hub: &Hub, question: NodeQuestion) -> Answers {
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
    if settled {
        return Answers {
            answers,
            complete: true,
        };
    }
    match hub.broker().ask_nodes(&question).await {
        Ok(gathered) => {
            answers.extend(gathered.answers);
            Answers {
                answers,
                complete: gathered.missing == 0,
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot ask the other nodes: answering for this node only");
            Answers {
                answers,
                complete: false,
            }
        }
    }
}

/// Every node's connections (the `limit` oldest listed, all counted),
/// subscriber counts and frames sent.
pub(crate) async fn report(hub: &Hub, limit: usize) -> Report {
    let question = NodeQuestion::Connections { limit };
    let Answers { answers, complete } = ask_every_node(hub, question).await;
    let mut report = Report {
        complete,
        ..Report::default()
    };
    for answer in answers {
        for (pattern, n) in answer.subscription_counts {
            *report.subscription_counts.entry(pattern).or_insert(0) += n;
        }
        report.count += answer.count;
        report.age_s_sum += answer.age_s_sum;
        report.messages_sent_sum += answer.messages_sent_sum;
        report.frames_sent += answer.frames_sent;
        report.connections.extend(answer.connections);
    }
    report
        .connections
        .sort_by(|a, b| (a.connected_at, &a.id).cmp(&(b.connected_at, &b.id)));
    report.connections.truncate(limit);
    report
}

/// How many connections a connections list names when not told.
pub(crate) const LISTED_BY_DEFAULT: usize = 1000;

/// The most connections one list may name.
pub(crate) const LISTED_AT_MOST: usize = 10_000;

/// The `limit` of a connections question that names none: every
/// connection.
fn every_connection() -> usize {
    usize::MAX
}

/// The connection with this id, on whichever node holds it.
pub(crate) async fn find(hub: &Hub, id: &str) -> Result<ConnectionInfo, Lookup> {
    let question = NodeQuestion::Connection { id: id.to_owned() };
    let Answers { answers, complete } = ask_every_node(hub, question).await;
    answers
        .into_iter()
        .find_map(|answer| answer.connections.into_iter().next())
        .ok_or(if complete {
            Lookup::NotFound
        } else {
            Lookup::Incomplete
        })
}

/// Closes the connection with this id (4500), on whichever node holds it.
pub(crate) async fn disconnect(hub: &Hub, id: &str) -> Result<(), Lookup> {
    let question = NodeQuestion::Disconnect { id: id.to_owned() };
    let Answers { answers, complete } = ask_every_node(hub, question).await;
    match (answers.iter().any(|answer| answer.closed > 0), complete) {
        (true, _) => Ok(()),
        (false, true) => Err(Lookup::NotFound),
        (false, false) => Err(Lookup::Incomplete),
    }
}

/// How many connections every node holds (those that answered), and
/// whether every node answered.
pub(crate) async fn count(hub: &Hub) -> (usize, bool) {
    let answers = ask_every_node(hub, NodeQuestion::Count).await;
    let count = answers.answers.iter().map(|answer| answer.count).sum();
    (count, answers.complete)
}

/// Closes the connections silent for longer than `silent` on every node
/// (4000); how many.
pub(crate) async fn close_stale(hub: &Hub, silent: Duration) -> usize {
    let question = NodeQuestion::CloseStale {
        silent_ms: silent.as_millis() as u64,
    };
    let answers = ask_every_node(hub, question).await;
    answers.answers.iter().map(|answer| answer.closed).sum()
}
