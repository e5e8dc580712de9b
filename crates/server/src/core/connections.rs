//! This node's open connections, by id and by user: who a broadcast or a
//! user's message reaches, and what the admin API lists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::core::connection::ConnHandle;
use crate::core::outbox::Pace;

/// The open connections of this node.
#[derive(Debug, Default)]
pub struct Connections {
    by_id: RwLock<HashMap<Arc<str>, Arc<ConnHandle>>>,
    by_user: RwLock<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    pace: Pace,
}

impl Connections {
    /// Whether these connections keep up with what is published to them.
    pub(crate) fn pace(&self) -> &Pace {
        &self.pace
    }

    /// Registers a connection.
    pub(crate) fn insert(&self, conn: &Arc<ConnHandle>) {
        self.by_id.write().insert(conn.id.clone(), conn.clone());
        if let Some(user) = &conn.user_id {
            self.by_user
                .write()
                .entry(user.clone())
                .or_default()
                .insert(conn.id.clone());
        }
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
