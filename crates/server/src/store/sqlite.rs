//! The SQLite store: one file, WAL mode, a bundled SQLite (nothing to install).
//!
//! One writer thread owns the connection. It takes every append waiting in
//! the journal (up to `MAX_BATCH`) and writes them in one transaction with
//! `synchronous=FULL`, so a publish is acknowledged only once it is on disk and
//! the cost of the sync is shared by everything that arrived meanwhile (group
//! commit). The file is locked exclusively: a second hub on the same file gets
//! a clear error instead of corrupting seqs.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_protocol::{Epoch, Event, Topic};
use parking_lot::Mutex;
use rusqlite::{Connection, params};
use tokio::sync::mpsc;

use super::{RecoveredTopic, Store, StoreError, Write};
use crate::hub::now_ms;

/// Most appends written in one transaction.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer before publishers wait for room.
const JOURNAL_CAPACITY: usize = 8192;
/// How often history beyond the age limit is deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    topic TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS approvals (
    callback_id TEXT PRIMARY KEY,
    pending INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (topic, key)
) WITHOUT ROWID;
";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// Dropped on close, which ends the writer once the journal is drained.
    journal: Mutex<Option<mpsc::Sender<Write>>>,
    /// Taken by the writer thread when it starts.
    pending: Mutex<Option<(Connection, mpsc::Receiver<Write>)>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    history_size: usize,
    history_age: Duration,
}

fn open_error(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

impl SqliteStore {
    /// Opens (or creates) the database, takes its lock, and prepares the schema.
    pub fn open(
        path: &Path,
        history_size: usize,
        history_age: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        conn.busy_timeout(Duration::from_millis(500))
            .map_err(|e| open_error(path, e))?;
        let locked = |e: rusqlite::Error| {
            let reason = if e.to_string().contains("locked") {
                format!("{e} (is another herald using this file?)")
            } else {
                e.to_string()
            };
            open_error(path, reason)
        };
        let setup =
            "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;";
        conn.execute_batch(setup).map_err(locked)?;
        // Taking a write lock now makes a second hub on the same file fail here, clearly.
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(locked)?;
        let (journal, receiver) = mpsc::channel(JOURNAL_CAPACITY);
        Ok(SqliteStore {
            path: path.to_owned(),
            journal: Mutex::new(Some(journal)),
            pending: Mutex::new(Some((conn, receiver))),
            writer: Mutex::new(None),
            history_size,
            history_age,
        })
    }

    /// Starts the writer thread. Call once, after [`Store::recover`].
    pub fn start(&self) -> Result<(), StoreError> {
        let Some((conn, receiver)) = self.pending.lock().take() else {
            return Err(StoreError::Closed);
        };
        let writer = Writer {
            conn,
            history_size: self.history_size as u64,
            history_age: self.history_age,
            last_prune: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("herald-sqlite".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| open_error(&self.path, e))?;
        *self.writer.lock() = Some(handle);
        Ok(())
    }
}

impl Store for SqliteStore {
    fn recover(&self) -> Result<Vec<RecoveredTopic>, StoreError> {
        let guard = self.pending.lock();
        let Some((conn, _)) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        recover(conn, self.history_size, self.history_age).map_err(|e| open_error(&self.path, e))
    }

    fn recover_approvals(&self) -> Result<Vec<String>, StoreError> {
        let guard = self.pending.lock();
        let Some((conn, _)) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut query = conn.prepare("SELECT body FROM approvals ORDER BY updated_at ASC")?;
            let rows = query.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect()
        };
        read().map_err(|e| open_error(&self.path, e))
    }

    fn journal(&self) -> Option<mpsc::Sender<Write>> {
        self.journal.lock().clone()
    }

    fn close(&self) {
        // The writer ends when every sender is gone and the journal is drained;
        // publishes in flight hold the only other clones, briefly.
        self.journal.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

fn recover(
    conn: &Connection,
    history_size: usize,
    history_age: Duration,
) -> rusqlite::Result<Vec<RecoveredTopic>> {
    let now = now_ms();
    let oldest = now.saturating_sub(history_age.as_millis() as u64);
    let mut topics = Vec::new();
    let mut listed = conn.prepare("SELECT topic, epoch, last_seq FROM topics")?;
    let rows = listed.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut history_query = conn.prepare(
        "SELECT body, stored_at FROM (SELECT body, stored_at, seq FROM events WHERE topic = ?1 AND stored_at >= ?2 \
         ORDER BY seq DESC LIMIT ?3) ORDER BY seq ASC",
    )?;
    let mut snapshot_query =
        conn.prepare("SELECT body FROM snapshots WHERE topic = ?1 ORDER BY seq ASC")?;
    for row in rows {
        let (name, epoch, last_seq) = row?;
        let (Ok(topic), Ok(epoch)) = (Topic::parse(&name), Epoch::new(epoch)) else {
            tracing::warn!(
                topic = name,
                "skipping a stored topic that is no longer valid"
            );
            continue;
        };
        let history = history_query
            .query_map(params![name, oldest as i64, history_size as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?
            .filter_map(Result::ok)
            .filter_map(|(body, stored_at)| {
                let event = serde_json::from_str::<Event>(&body).ok()?;
                Some((event, now.saturating_sub(stored_at as u64)))
            })
            .collect();
        let snapshot = snapshot_query
            .query_map(params![name], |row| row.get::<_, String>(0))?
            .filter_map(Result::ok)
            .filter_map(|body| serde_json::from_str::<Event>(&body).ok())
            .collect();
        topics.push(RecoveredTopic {
            topic,
            epoch,
            last_seq: last_seq.max(0) as u64,
            history,
            snapshot,
        });
    }
    Ok(topics)
}

struct Writer {
    conn: Connection,
    history_size: u64,
    history_age: Duration,
    last_prune: Instant,
}

impl Writer {
    fn run(mut self, mut journal: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = journal.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match journal.try_recv() {
                    Ok(append) => batch.push(append),
                    Err(_) => break,
                }
            }
            let result = self
                .write(&batch)
                .map_err(|e| StoreError::Write(e.to_string()));
            if let Err(error) = &result {
                tracing::error!(%error, events = batch.len(), "sqlite write failed; publishes are refused");
            }
            for write in batch.drain(..) {
                write.finish(&result);
            }
            if self.last_prune.elapsed() > PRUNE_INTERVAL {
                self.last_prune = Instant::now();
                let cutoff = now_ms().saturating_sub(self.history_age.as_millis() as u64);
                let pruned = self
                    .conn
                    .execute("DELETE FROM events WHERE stored_at < ?1", params![cutoff as i64])
                    .and_then(|_| {
                        self.conn.execute(
                            "DELETE FROM approvals WHERE pending = 0 AND callback_id NOT IN \
                             (SELECT callback_id FROM approvals WHERE pending = 0 ORDER BY updated_at DESC LIMIT ?1)",
                            params![crate::approvals::MAX_DECIDED as i64],
                        )
                    });
                if let Err(error) = pruned {
                    tracing::warn!(%error, "pruning old history failed");
                }
            }
        }
        tracing::info!("sqlite writer stopped");
    }

    fn write(&mut self, batch: &[Write]) -> rusqlite::Result<()> {
        let now = now_ms() as i64;
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (topic, seq, stored_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut topic = tx.prepare_cached(
                "INSERT INTO topics (topic, epoch, last_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(topic) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), epoch = excluded.epoch",
            )?;
            let mut snapshot = tx.prepare_cached(
                "INSERT OR REPLACE INTO snapshots (topic, key, seq, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut trim =
                tx.prepare_cached("DELETE FROM events WHERE topic = ?1 AND seq <= ?2")?;
            let mut approval = tx.prepare_cached(
                "INSERT OR REPLACE INTO approvals (callback_id, pending, updated_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for write in batch {
                let append = match write {
                    Write::Event(append) => append,
                    Write::Approval(record) => {
                        approval.execute(params![
                            record.callback_id,
                            record.pending,
                            now,
                            record.body
                        ])?;
                        continue;
                    }
                };
                let event = &append.event;
                let body = serde_json::to_string(&**event).unwrap_or_default();
                let seq = event.seq as i64;
                insert.execute(params![event.topic.as_str(), seq, now, body])?;
                topic.execute(params![event.topic.as_str(), append.epoch.as_str(), seq])?;
                if let Some(key) = &event.key {
                    snapshot.execute(params![event.topic.as_str(), key.as_str(), seq, body])?;
                }
                if event.seq > self.history_size && event.seq % 64 == 0 {
                    trim.execute(params![
                        event.topic.as_str(),
                        (event.seq - self.history_size) as i64
                    ])?;
                }
            }
        }
        tx.commit()
    }
}
