//! This node's open connections, by id and by user: who a broadcast or a
//! user's message reaches, and what the admin API lists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLock;

use crate::core::connection::ConnHandle;
use crate::core::outbox::Pace;

/// How many connections a node admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    /// In all.
    pub(crate) total: usize,
    /// Of one user (0: any number).
    pub(crate) per_user: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The node holds its `--max-connections`.
    Node,
    /// The connection's user holds its `--max-connections-per-user`.
    User,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl Full {
    /// The close reason a refused client reads.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Full::Node => "server connection limit reached",
            Full::User => "user connection limit reached",
        }
    }
}

/// The open connections of this node.
#[derive(Debug, Default)]
pub struct Connections {
    by_id: RwLock<HashMap<Arc<str>, Arc<ConnHandle>>>,
    by_user: RwLock<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    pace: Pace,
    /// When a refusal at the node's limit was last logged (ms since the
    /// epoch): a crowd reconnecting to a full node is logged once in
    /// [`REFUSALS_LOGGED_EVERY`], and counted in full by the metrics.
    refusal_logged_ms: AtomicU64,
}

/// How often a full node logs that it refuses connections.
const REFUSALS_LOGGED_EVERY: u64 = 10_000;

impl Connections {
    /// Whether these connections keep up with what is published to them.
    pub(crate) fn pace(&self) -> &Pace {
        &self.pace
    }

    /// Registers a connection if `capacity` has room for it: the count and
    /// the registration happen under one lock, so connections opened at
    /// once (a reconnecting crowd, one user's script) cannot all pass the
    /// check before any of them is counted.
    pub(crate) fn admit(&self, conn: &Arc<ConnHandle>, capacity: Capacity) -> Result<(), Full> {
        let mut by_id = self.by_id.write();
        if by_id.len() >= capacity.total {
            return Err(Full::Node);
        }
        if let Some(user) = &conn.user_id {
            let mut by_user = self.by_user.write();
            let held = by_user.get(user).map_or(0, HashSet::len);
            if capacity.per_user > 0 && held >= capacity.per_user {
                return Err(Full::User);
            }
            by_user
                .entry(user.clone())
                .or_default()
                .insert(conn.id.clone());
        }
        by_id.insert(conn.id.clone(), conn.clone());
        Ok(())
    }

    /// Whether a refusal at the node's limit is to be logged now (at most
    /// once in [`REFUSALS_LOGGED_EVERY`] milliseconds).
    pub(crate) fn log_refusal(&self, now_ms: u64) -> bool {
        let last = self.refusal_logged_ms.load(Relaxed);
        now_ms.saturating_sub(last) >= REFUSALS_LOGGED_EVERY
            && self
                .refusal_logged_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_ok()
    }

    /// Forgets a connection; whether it was registered.
    pub(crate) fn remove(&self, conn: &ConnHandle) -> bool {
        if let Some(user) = &conn.user_id {
            let mut users = self.by_user.write();
            if let Some(ids) = users.get_mut(user) {
                ids.remove(&conn.id);
                if ids.is_empty() {
                    users.remove(user);
                }
            }
        }
        self.by_id.write().remove(&conn.id).is_some()
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.by_id.read().len()
    }

    /// Every open connection.
    pub fn all(&self) -> Vec<Arc<ConnHandle>> {
        self.by_id.read().values().cloned().collect()
    }

    /// One connection by its session id.
    pub fn get(&self, id: &str) -> Option<Arc<ConnHandle>> {
        self.by_id.read().get(id).cloned()
    }

    /// Calls `f` for every open connection.
    pub(crate) fn each(&self, mut f: impl FnMut(&ConnHandle)) {
        for conn in self.by_id.read().values() {
            f(conn);
        }
    }

    /// Calls `f` for every open connection of `user`.
    pub(crate) fn each_of_user(&self, user: &str, mut f: impl FnMut(&ConnHandle)) {
        let connections = self.by_id.read();
        if let Some(ids) = self.by_user.read().get(user) {
            for conn in ids.iter().filter_map(|id| connections.get(id)) {
                f(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(user: Option<&str>) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(
            user.map(str::to_owned),
            None,
            None,
            None,
            16,
        ))
    }

    const CAPACITY: Capacity = Capacity {
        total: 3,
        per_user: 2,
    };

    #[test]
    fn a_user_gets_its_share_and_the_node_its_total() {
        let connections = Connections::default();
        let alice = [of(Some("alice")), of(Some("alice")), of(Some("alice"))];
        assert_eq!(connections.admit(&alice[0], CAPACITY), Ok(()));
        assert_eq!(connections.admit(&alice[1], CAPACITY), Ok(()));
        assert_eq!(connections.admit(&alice[2], CAPACITY), Err(Full::User));
        assert_eq!(connections.admit(&of(None), CAPACITY), Ok(()));
        assert_eq!(
            connections.admit(&of(Some("bob")), CAPACITY),
            Err(Full::Node)
        );
        assert_eq!(connections.count(), 3);
    }

    #[test]
    fn a_removed_connection_frees_its_users_slot() {
        let connections = Connections::default();
        let first = of(Some("alice"));
        assert_eq!(connections.admit(&first, CAPACITY), Ok(()));
        assert_eq!(connections.admit(&of(Some("alice")), CAPACITY), Ok(()));
        assert!(connections.remove(&first));
        assert_eq!(connections.admit(&of(Some("alice")), CAPACITY), Ok(()));
        assert_eq!(connections.count(), 2);
    }

    #[test]
    fn a_full_node_logs_its_refusals_once_in_ten_seconds() {
        let connections = Connections::default();
        let start = 1_000_000;
        assert!(connections.log_refusal(start));
        assert!(!connections.log_refusal(start + 1));
        assert!(!connections.log_refusal(start + REFUSALS_LOGGED_EVERY - 1));
        assert!(connections.log_refusal(start + REFUSALS_LOGGED_EVERY));
    }

    #[test]
    fn no_per_user_limit_when_it_is_zero() {
        let connections = Connections::default();
        let capacity = Capacity {
            total: 10,
            per_user: 0,
        };
        for _ in 0..10 {
            assert_eq!(connections.admit(&of(Some("alice")), capacity), Ok(()));
        }
        assert_eq!(
            connections.admit(&of(Some("alice")), capacity),
            Err(Full::Node)
        );
    }
}
