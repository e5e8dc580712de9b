//! Where everything lives in Redis. A topic's keys share the hash tag
//! `{TOPIC}`, so each script touches one Redis Cluster slot; the approvals
//! share `{approvals}`.

use herald_protocol::{CallbackId, Topic, TopicPattern};

/// The keys and channel of one topic.
#[derive(Debug, Clone)]
pub(super) struct TopicKeys {
    /// Hash: `e` the epoch, `s` the last seq.
    pub(super) meta: String,
    /// Stream: entry `SEQ-0` with the frame (`f`) and when it was stored (`t`).
    pub(super) stream: String,
    /// Hash: snapshot key → the frame of its latest event.
    pub(super) snapshot: String,
    /// Sorted set: snapshot keys by the seq of their latest event.
    pub(super) order: String,
    /// Prefix of the keys that remember event ids (`PREFIX<id>`).
    pub(super) ids: String,
    /// Where each stored event is announced.
    pub(super) channel: String,
}

impl TopicKeys {
    pub(super) fn of(topic: &Topic) -> TopicKeys {
        let tag = format!("herald:{{{topic}}}");
        TopicKeys {
            meta: format!("{tag}:meta"),
            stream: format!("{tag}:stream"),
            snapshot: format!("{tag}:snapshot"),
            order: format!("{tag}:snapshot-order"),
            ids: format!("{tag}:id:"),
            channel: channel(topic),
        }
    }

    /// The four keys a topic's scripts take, in their order.
    pub(super) fn script_keys(&self) -> [&str; 4] {
        [&self.meta, &self.stream, &self.snapshot, &self.order]
    }
}

/// The channel a topic's events are announced on.
pub(super) fn channel(topic: &Topic) -> String {
    format!("herald:ch:{topic}")
}

/// The channel (`SUBSCRIBE`) or channel pattern (`PSUBSCRIBE`) a
/// subscription pattern's events arrive on. Topic names hold no glob
/// characters, so a kind's pattern matches its topics only.
pub(super) fn channel_of(pattern: &TopicPattern) -> (String, bool) {
    match pattern {
        TopicPattern::Exact(topic) => (channel(topic), false),
        TopicPattern::Kind(kind) => (format!("herald:ch:{kind}:*"), true),
        TopicPattern::All => ("herald:ch:*".to_owned(), true),
    }
}

/// Sorted set of a kind's topics, by when they last had an event (ms).
pub(super) fn kind_index(kind: &str) -> String {
    format!("herald:topics:{kind}")
}

/// Set of the kinds that have topics.
pub(super) const KINDS: &str = "herald:kinds";

/// The genesis epoch (a string with a TTL of half the topic TTL, never
/// renewed): the epoch a topic with no keys is read under and its first
/// event starts. Outside every topic's hash tag: under Redis Cluster it
/// would move out of the scripts, with the kind index.
pub(super) const GENESIS: &str = "herald:genesis";

/// Where approvals are announced (their callback id) to every node.
pub(super) const APPROVALS_CHANNEL: &str = "herald:approvals";

/// Prefix of the approval hashes.
pub(super) const APPROVAL_PREFIX: &str = "herald:{approvals}:a:";

/// The approvals' indexes.
pub(super) const PENDING: &str = "herald:{approvals}:pending";
pub(super) const CLAIMED: &str = "herald:{approvals}:claimed";
pub(super) const DECIDED: &str = "herald:{approvals}:decided";
pub(super) const CREATED: &str = "herald:{approvals}:created";
/// Approvals whose last change is stored but not yet published, by since
/// when (Redis's clock, ms).
pub(super) const UNANNOUNCED: &str = "herald:{approvals}:unannounced";

/// One approval's hash.
pub(super) fn approval(id: &CallbackId) -> String {
    format!("{APPROVAL_PREFIX}{id}")
}

/// Prefix of the sets of a task's approvals (their callback ids).
pub(super) const TASK_PREFIX: &str = "herald:{approvals}:task:";

/// The set of the approvals asked on `task_id`.
pub(super) fn task(task_id: &str) -> String {
    format!("{TASK_PREFIX}{task_id}")
}

/// Hash of the nodes sharing this Redis: node id → what it last said of itself.
pub(super) const NODES: &str = "herald:nodes";

/// Where a node asks the others about their connections (the admin API);
/// each answers on the asker's [`node_channel`].
pub(super) const QUESTIONS_CHANNEL: &str = "herald:questions";

/// A node's own channel, where it hears its liveness probes and the other
/// nodes' answers to its questions.
pub(super) fn node_channel(node: &str) -> String {
    format!("herald:node:{node}")
}
