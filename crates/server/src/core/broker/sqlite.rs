//! Durability for the memory engine: one SQLite file, WAL mode, a bundled
//! SQLite (nothing to install).
//!
//! The engine assigns seqs in memory and hands each event to this journal;
//! one writer thread owns the connection, takes every write waiting (up to
//! `MAX_BATCH`) and commits them in one transaction with `synchronous=FULL`,
//! so a publish is acknowledged only once it is on disk and the cost of the
//! sync is shared by everything that arrived meanwhile (group commit). Then,
//! in journal order (which is seq order per topic), it hands each event back
//! to the engine (`Written::event_written`), which delivers it or, if the
//! write failed, gives its seq up. The file is locked exclusively: a second
//! hub on the same file gets a clear error instead of corrupting seqs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_protocol::{Epoch, Event, Topic};
use parking_lot::Mutex;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::memory::approval_book::MAX_DECIDED;
use super::memory::topic_log::PendingWrite;
use super::{Audience, BrokerError, EncodedEvent};
use crate::core::clock::now_ms;

/// Most appends written in one transaction.
const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer before publishers wait for room.
pub(crate) const JOURNAL_CAPACITY: usize = 8192;
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

/// One event to make durable, and where its outcome goes.
#[derive(Debug)]
pub(crate) struct EventWrite {
    pub(crate) encoded: EncodedEvent,
    /// The topic's epoch, stored with its last seq.
    pub(crate) epoch: Epoch,
    pub(crate) audience: Audience,
    /// One of a batch ([`Publication::together`](super::Publication::together)).
    pub(crate) together: bool,
    /// Where retries of the event wait for the outcome.
    pub(crate) pending: Arc<PendingWrite>,
    /// The first attempt's answer: the connections the event reached.
    pub(crate) done: oneshot::Sender<Result<u32, BrokerError>>,
}

/// An approval's record to keep (its JSON), written like events.
#[derive(Debug)]
pub(crate) struct ApprovalWrite {
    pub(crate) callback_id: String,
    pub(crate) pending: bool,
    pub(crate) body: String,
    pub(crate) done: oneshot::Sender<Result<(), BrokerError>>,
}

/// What goes through the journal, in order.
#[derive(Debug)]
pub(crate) enum Write {
    Event(EventWrite),
    Approval(ApprovalWrite),
}

/// Whom the writer hands each event back to once its write is over: the
/// engine, which delivers it (`Ok`) or gives its seq up (`Err`), then
/// answers the publish.
pub(crate) trait Written: Send + Sync {
    fn event_written(&self, write: EventWrite, result: &Result<(), BrokerError>);
}

/// A topic as it survived a restart.
#[derive(Debug, Clone)]
pub(crate) struct RecoveredTopic {
    pub(crate) topic: Topic,
    pub(crate) epoch: Epoch,
    pub(crate) last_seq: u64,
    /// Retained events, oldest first, with their age in milliseconds.
    pub(crate) history: Vec<(Event, u64)>,
    /// The latest event per key, oldest update first.
    pub(crate) snapshot: Vec<Event>,
}

/// Everything that survived a restart, read once at start.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) topics: Vec<RecoveredTopic>,
    /// Approval records (their JSON), pending ones included.
    pub(crate) approvals: Vec<String>,
}

/// The SQLite file and the thread that writes to it.
#[derive(Debug)]
pub(crate) struct SqliteJournal {
    path: PathBuf,
    /// Taken by the writer thread when it starts.
    unstarted: Mutex<Option<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    history_size: usize,
    history_age: Duration,
}

fn open_error(path: &Path, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Open {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

impl SqliteJournal {
    /// Opens (or creates) the database, takes its lock, prepares the schema
    /// and reads what survived.
    pub(crate) fn open(
        path: &Path,
        history_size: usize,
        history_age: Duration,
    ) -> Result<(SqliteJournal, Recovered), BrokerError> {
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
        let recovered = Recovered {
            topics: recover(&conn, history_size, history_age).map_err(|e| open_error(path, e))?,
            approvals: recover_approvals(&conn).map_err(|e| open_error(path, e))?,
        };
        let journal = SqliteJournal {
            path: path.to_owned(),
            unstarted: Mutex::new(Some(conn)),
            writer: Mutex::new(None),
            history_size,
            history_age,
        };
        Ok((journal, recovered))
    }

    /// Starts the writer thread: it takes writes from `journal` until every
    /// sender is gone and hands every written event to `written` (weak: the
    /// engine owns the journal, not the reverse).
    pub(crate) fn start(
        &self,
        journal: mpsc::Receiver<Write>,
        written: Weak<dyn Written>,
    ) -> Result<(), BrokerError> {
        let Some(conn) = self.unstarted.lock().take() else {
            return Err(BrokerError::Closed);
        };
        let writer = Writer {
            conn,
            history_size: self.history_size as u64,
            history_age: self.history_age,
            last_prune: Instant::now(),
            written,
        };
        let handle = std::thread::Builder::new()
            .name("herald-sqlite".into())
            .spawn(move || writer.run(journal))
            .map_err(|e| open_error(&self.path, e))?;
        *self.writer.lock() = Some(handle);
        Ok(())
    }

    /// Waits for the writer to finish what was queued (its senders must be
    /// gone for it to end).
    pub(crate) fn join(&self) {
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

fn recover_approvals(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut query = conn.prepare("SELECT body FROM approvals ORDER BY updated_at ASC")?;
    let rows = query.query_map([], |row| row.get::<_, String>(0))?;
    rows.collect()
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
    written: Weak<dyn Written>,
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
                .map_err(|e| BrokerError::Write(e.to_string()));
            if let Err(error) = &result {
                tracing::error!(%error, events = batch.len(), "sqlite write failed; publishes are refused");
            }
            // Gone only once the engine is dropped: its publishers are then
            // told the store stopped (their answer channels close).
            let written = self.written.upgrade();
            for write in batch.drain(..) {
                match write {
                    Write::Event(write) => {
                        if let Some(written) = &written {
                            written.event_written(write, &result);
                        }
                    }
                    Write::Approval(write) => {
                        let _ = write.done.send(result.clone());
                    }
                }
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
                            params![MAX_DECIDED as i64],
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
                    Write::Event(write) => write,
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
                let event = &append.encoded.event;
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
