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
//!
//! The file says what it is (`application_id`) and which schema it holds
//! (`user_version`): another application's database, or one a newer Herald
//! wrote, is refused before anything is written to it. A topic's row is
//! one stream: a new epoch in it (the engine forgot the stream and started
//! another) deletes the old stream's events and snapshot, so two streams
//! never mix under one epoch. A topic's row outlives its history, and the
//! file keeps the genesis epoch, the one a topic that never had an event is
//! read under and its first event starts: a subscriber resumes after a
//! restart without an `epoch_changed` gap on a topic whose history aged out
//! or that nothing was published to yet. What the file keeps is bounded:
//! events by `--history-size` and `--history-age`, snapshots by
//! `MAX_SNAPSHOT_KEYS` per topic, decided approvals by `MAX_DECIDED`, and a
//! topic's row, once it has neither events nor snapshot, by the stream TTL
//! (`stream_ttl` in the broker module) after its last event, as Redis keeps a topic's
//! keys; reading a topic writes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_protocol::{Epoch, Event, Topic};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{mpsc, oneshot};

use super::memory::approval_book::MAX_DECIDED;
use super::memory::topic_log::PendingWrite;
use super::{Audience, BrokerError, EncodedEvent, MAX_SNAPSHOT_KEYS};
use crate::core::clock::now_ms;

/// Most appends written in one transaction.
const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer before publishers wait for room.
pub(crate) const JOURNAL_CAPACITY: usize = 8192;
/// How long a failed write keeps the hub not ready (unless one succeeds).
const FAILING_FOR: Duration = Duration::from_secs(10);
/// How often history beyond the age limit is deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the rows of streams over are deleted: the stream TTL is at
/// least a day, so a few minutes more changes nothing, and a topic kept by
/// its snapshot alone is looked at again only that often.
const FORGET_INTERVAL: Duration = Duration::from_secs(600);

/// Deletes the rows of topics with neither events nor snapshot that were
/// last written before `before` (ms): their streams are over. When one of
/// them had events, the genesis changes: that topic is unknown from now on,
/// and read or published again it starts under an epoch made after all of
/// its streams, so never one it had before. (Any such row, not only one
/// under the genesis: a stream the genesis started may have been replaced
/// in the row, after the engine forgot it in memory, without a forget
/// here.) Runs in the caller's transaction; answers how many rows went.
fn forget_streams(conn: &Connection, before: u64) -> rusqlite::Result<usize> {
    let seqs = conn
        .prepare(
            "DELETE FROM topics WHERE touched_at < ?1 AND NOT EXISTS \
             (SELECT 1 FROM events WHERE events.topic = topics.topic) AND NOT EXISTS \
             (SELECT 1 FROM snapshots WHERE snapshots.topic = topics.topic) RETURNING last_seq",
        )?
        .query_map(params![before as i64], |row| row.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    if seqs.iter().any(|seq| *seq > 0) {
        set_genesis(conn, &super::new_epoch())?;
    }
    Ok(seqs.len())
}

fn stored_genesis(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = 'genesis'", [], |row| {
        row.get(0)
    })
    .optional()
}

fn set_genesis(conn: &Connection, epoch: &Epoch) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('genesis', ?1)",
        params![epoch.as_str()],
    )?;
    Ok(())
}

/// The file's genesis epoch, made now if it has none (or an unreadable one).
fn genesis(conn: &Connection) -> rusqlite::Result<Epoch> {
    if let Some(epoch) = stored_genesis(conn)?.and_then(|stored| Epoch::new(stored).ok()) {
        return Ok(epoch);
    }
    let epoch = super::new_epoch();
    set_genesis(conn, &epoch)?;
    Ok(epoch)
}

/// The bit of an approval's `pending` column that says its last change
/// (request or decision) is not yet published; the low bit says pending.
/// A decided approval that is owed is not pruned until it is published.
const OWED: i64 = 2;

/// `PRAGMA application_id` of a Herald store ("HRLD").
const APPLICATION_ID: i64 = 0x4852_4c44;
/// `PRAGMA user_version`: the schema this build reads and writes.
const SCHEMA_VERSION: i64 = 3;
/// The tables of a Herald store and their columns (a file from before
/// `application_id` was set is recognised by them).
const TABLES: [(&str, &[&str]); 5] = [
    (
        "approvals",
        &["callback_id", "pending", "updated_at", "body"],
    ),
    ("events", &["topic", "seq", "stored_at", "body"]),
    ("meta", &["key", "value"]),
    ("snapshots", &["topic", "key", "seq", "body"]),
    ("topics", &["topic", "epoch", "last_seq"]),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    topic TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    touched_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stored_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (topic, seq)
);
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
    UNIQUE (topic, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS snapshots_by_seq ON snapshots (topic, seq);
CREATE INDEX IF NOT EXISTS events_by_age ON events (stored_at);
CREATE TRIGGER IF NOT EXISTS a_new_epoch_replaces_the_stream
AFTER UPDATE OF epoch ON topics WHEN old.epoch IS NOT new.epoch
BEGIN
    DELETE FROM events WHERE topic = new.topic;
    DELETE FROM snapshots WHERE topic = new.topic;
END;
";

/// What schema 3 adds to a file of schema 1 or 2: when a topic's row was
/// last written (ms), which keeps the row for the stream TTL after that;
/// the rows already there count as written when the file is upgraded.
fn to_schema_3(now: u64) -> String {
    format!(
        "ALTER TABLE topics ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0; \
         UPDATE topics SET touched_at = {now};"
    )
}

/// Finds the rows of topics by when they were last written, for
/// [`forget_streams`].
const TOUCHED_INDEX: &str = "CREATE INDEX IF NOT EXISTS topics_by_touch ON topics (touched_at);";

/// Events and snapshots are rowid tables, each with a unique index on its
/// key: a `WITHOUT ROWID` table (schema 1) keeps a row in its key's B-tree,
/// which holds at most about a kilobyte of a row on its page, and a body
/// past that took a 4 KiB overflow page of its own (measured: 4.7 KB of
/// file and log per 1.2 KB event). A rowid table keeps bodies of up to
/// about 4 KB beside their row. A file of schema 1 is rebuilt as it opens.
const FROM_SCHEMA_1: &str = "
DROP TRIGGER IF EXISTS a_new_epoch_replaces_the_stream;
DROP INDEX IF EXISTS snapshots_by_seq;
ALTER TABLE events RENAME TO events_schema_1;
ALTER TABLE snapshots RENAME TO snapshots_schema_1;
";

/// The second half of the rebuild, once [`SCHEMA`] made the new tables:
/// the events stored since `cutoff` (the older ones are past the age
/// limit) and the snapshots are copied.
fn from_schema_1_copy(cutoff: u64) -> String {
    format!(
        "
INSERT INTO events (topic, seq, stored_at, body)
    SELECT topic, seq, stored_at, body FROM events_schema_1 WHERE stored_at >= {cutoff}
    ORDER BY topic, seq;
INSERT INTO snapshots (topic, key, seq, body)
    SELECT topic, key, seq, body FROM snapshots_schema_1;
DROP TABLE events_schema_1;
DROP TABLE snapshots_schema_1;
"
    )
}

/// Whether the file has a `topics` table without schema 3's `touched_at`.
fn lacks_touched_at(conn: &Connection) -> rusqlite::Result<bool> {
    let mut columns = conn.prepare("SELECT name FROM pragma_table_info('topics')")?;
    let names = columns
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(!names.is_empty() && !names.iter().any(|name| name == "touched_at"))
}

/// Whether the file's events or snapshots are in a `WITHOUT ROWID` table,
/// as schema 1 kept them.
fn holds_schema_1(conn: &Connection) -> rusqlite::Result<bool> {
    let mut tables = conn.prepare(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'snapshots')",
    )?;
    let sql = tables
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(sql
        .iter()
        .any(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")))
}

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
    /// The record's JSON, a change not yet published (owed); `None` only
    /// marks the row's change published, if the row is still `pending` as
    /// given (a decision written since stays owed).
    pub(crate) body: Option<String>,
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
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The epoch streams start with (see the memory engine's `genesis`).
    pub(crate) genesis: Epoch,
    pub(crate) topics: Vec<RecoveredTopic>,
    /// Approval records (their JSON), pending ones included, and whether
    /// their last change is owed to their topics.
    pub(crate) approvals: Vec<(String, bool)>,
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
    failing: Arc<AtomicU64>,
}

fn open_error(path: &Path, error: impl std::fmt::Display) -> BrokerError {
    let reason = error.to_string();
    let hint = if reason.contains("malformed") || reason.contains("not a database") {
        " (the file is damaged: check it with `sqlite3 FILE 'PRAGMA integrity_check'`, then restore a copy or salvage it with `sqlite3 FILE .recover`)"
    } else if reason.contains("readonly") || reason.contains("disk I/O error") {
        " (herald must be able to write the file and its directory: SQLite keeps its write-ahead log beside the file)"
    } else if reason.contains("database or disk is full") {
        " (free space on its disk, or move the file: a store of schema 1 is rebuilt as it opens, which needs about its size free)"
    } else if reason.contains("unable to open") {
        " (its directory must exist, and herald must be able to write there: SQLite creates the file and its write-ahead log beside it)"
    } else {
        ""
    };
    BrokerError::Open {
        path: path.display().to_string(),
        reason: format!("{reason}{hint}"),
    }
}

/// Whether the file at `conn` is a Herald store this build can read (or a
/// new, empty one), before anything is written to it.
fn check_identity(conn: &Connection) -> Result<(), String> {
    let pragma = |name: &str| -> Result<i64, String> {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .map_err(|e| e.to_string())
    };
    let application = pragma("application_id")?;
    let version = pragma("user_version")?;
    if application != 0 && application != APPLICATION_ID {
        return Err(format!(
            "not a Herald store (its application_id is {application:#x}): another application's database?"
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "written by a newer Herald (schema {version}; this one reads up to {SCHEMA_VERSION})"
        ));
    }
    if application == 0 {
        let mut listed = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|e| e.to_string())?;
        let tables = listed
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<String>>>)
            .map_err(|e| e.to_string())?;
        let mut foreign = Vec::new();
        for table in &tables {
            let Some((_, expected)) = TABLES.iter().find(|(name, _)| name == table) else {
                foreign.push(table.clone());
                continue;
            };
            let mut described = conn
                .prepare(&format!("PRAGMA table_info({table})"))
                .map_err(|e| e.to_string())?;
            let columns = described
                .query_map([], |row| row.get::<_, String>(1))
                .and_then(Iterator::collect::<rusqlite::Result<Vec<String>>>)
                .map_err(|e| e.to_string())?;
            if expected
                .iter()
                .any(|column| !columns.iter().any(|c| c == column))
            {
                foreign.push(format!("{table} ({})", columns.join(", ")));
            }
        }
        if !foreign.is_empty() {
            return Err(format!(
                "not a Herald store (it has the tables {}): another application's database?",
                foreign.join(", ")
            ));
        }
    }
    Ok(())
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
        let locked = |reason: String| {
            let reason = if reason.contains("locked") {
                format!("{reason} (is another herald using this file?)")
            } else {
                reason
            };
            open_error(path, reason)
        };
        conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE;")
            .map_err(|e| locked(e.to_string()))?;
        // Its first read takes the lock: a second hub on the file stops here.
        check_identity(&conn).map_err(locked)?;
        // The log is truncated back to 64 MiB after a checkpoint that a
        // burst made it outgrow.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA journal_size_limit=67108864;",
        )
        .map_err(|e| locked(e.to_string()))?;
        // Taking the write lock now keeps it (exclusive mode) for as long as
        // this hub runs.
        let cutoff = now_ms().saturating_sub(history_age.as_millis() as u64);
        let rebuild = holds_schema_1(&conn).map_err(|e| locked(e.to_string()))?;
        let (before, mut after) = if rebuild {
            tracing::info!(path = %path.display(), "rebuilding the store's events and snapshots as rowid tables (schema 2)");
            (FROM_SCHEMA_1, from_schema_1_copy(cutoff))
        } else {
            ("", String::new())
        };
        if lacks_touched_at(&conn).map_err(|e| locked(e.to_string()))? {
            after.push_str(&to_schema_3(now_ms()));
        }
        let forget_before =
            now_ms().saturating_sub(super::stream_ttl(history_age).as_millis() as u64);
        // History past the age limit goes (a hub idle since its history
        // aged out does not keep it for ever: pruning follows writes), then
        // the rows of streams over.
        let genesis = conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; {before} {SCHEMA} {after} {TOUCHED_INDEX} \
                 PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; \
                 DELETE FROM events WHERE stored_at < {cutoff};"
            ))
            .and_then(|()| forget_streams(&conn, forget_before))
            .and_then(|_| genesis(&conn))
            .and_then(|genesis| conn.execute_batch("COMMIT;").map(|()| genesis))
            .map_err(|e| locked(e.to_string()))?;
        if rebuild {
            // The old tables' pages are free but still in the file: given
            // back to the disk once, now (it needs about the new size free).
            if let Err(error) = conn.execute_batch("VACUUM;") {
                tracing::warn!(%error, path = %path.display(), "could not compact the store after its rebuild; run `sqlite3 FILE VACUUM` with the hub stopped to give its free pages back");
            }
        }
        let recovered = Recovered {
            genesis,
            topics: recover(&conn, history_size, history_age).map_err(|e| open_error(path, e))?,
            approvals: recover_approvals(&conn).map_err(|e| open_error(path, e))?,
        };
        let journal = SqliteJournal {
            path: path.to_owned(),
            unstarted: Mutex::new(Some(conn)),
            writer: Mutex::new(None),
            history_size,
            history_age,
            failing: Arc::default(),
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
            last_forget: Instant::now(),
            written,
            failing: self.failing.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("herald-sqlite".into())
            .spawn(move || writer.run(journal))
            .map_err(|e| open_error(&self.path, e))?;
        *self.writer.lock() = Some(handle);
        Ok(())
    }

    /// Whether the last write failed (a full disk, a file that turned
    /// read-only) less than [`FAILING_FOR`] ago: the hub then reports itself
    /// not ready. It is ready again once a write succeeds, or that long
    /// after the last failure, so that a load balancer which stopped sending
    /// it publishes sends some again to find out.
    pub(crate) fn failing(&self) -> bool {
        let failed_at = self.failing.load(Relaxed);
        failed_at != 0 && now_ms().saturating_sub(failed_at) < FAILING_FOR.as_millis() as u64
    }

    /// Waits for the writer to finish what was queued (its senders must be
    /// gone for it to end).
    pub(crate) fn join(&self) {
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

fn recover_approvals(conn: &Connection) -> rusqlite::Result<Vec<(String, bool)>> {
    let mut query = conn.prepare("SELECT body, pending FROM approvals ORDER BY updated_at ASC")?;
    let rows = query.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? & OWED != 0))
    })?;
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
    // Whether a topic has events or a snapshot, in the listing: the rows of
    // streams that only keep their epoch and seq (a day's worth may be
    // kept) cost no query of their own.
    let mut listed = conn.prepare(
        "SELECT topic, epoch, last_seq, \
         EXISTS (SELECT 1 FROM events WHERE events.topic = topics.topic) \
         OR EXISTS (SELECT 1 FROM snapshots WHERE snapshots.topic = topics.topic) FROM topics",
    )?;
    let rows = listed.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, bool>(3)?,
        ))
    })?;
    let mut history_query = conn.prepare(
        "SELECT seq, body, stored_at FROM (SELECT body, stored_at, seq FROM events WHERE topic = ?1 AND stored_at >= ?2 \
         ORDER BY seq DESC LIMIT ?3) ORDER BY seq ASC",
    )?;
    let mut snapshot_query =
        conn.prepare("SELECT key, body FROM snapshots WHERE topic = ?1 ORDER BY seq ASC")?;
    for row in rows {
        let (name, epoch, last_seq, holds) = row?;
        let (Ok(topic), Ok(epoch)) = (Topic::parse(&name), Epoch::new(epoch)) else {
            tracing::warn!(
                topic = name,
                "skipping a stored topic that is no longer valid"
            );
            continue;
        };
        if !holds {
            topics.push(RecoveredTopic {
                topic,
                epoch,
                last_seq: last_seq.max(0) as u64,
                history: Vec::new(),
                snapshot: Vec::new(),
            });
            continue;
        }
        let rows = history_query
            .query_map(params![name, oldest as i64, history_size as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut history = Vec::with_capacity(rows.len());
        for (seq, body, stored_at) in rows {
            match serde_json::from_str::<Event>(&body) {
                Ok(event) => history.push((event, now.saturating_sub(stored_at as u64))),
                // What came before it is not replayed either: history
                // starts after it, so a replay across it is a `trimmed`
                // gap, never a silent hole.
                Err(error) => {
                    tracing::error!(topic = name, seq, %error, "a stored event cannot be read; history restarts after it");
                    history.clear();
                }
            }
        }
        let mut snapshot = Vec::new();
        for (key, body) in snapshot_query
            .query_map(params![name], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        {
            match serde_json::from_str::<Event>(&body) {
                Ok(event) => snapshot.push(event),
                Err(error) => {
                    tracing::error!(topic = name, key, %error, "a stored snapshot entry cannot be read; it is left out");
                }
            }
        }
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
    last_forget: Instant,
    written: Weak<dyn Written>,
    /// When the last write failed (ms since the Unix epoch), 0 once one
    /// succeeded (see [`SqliteJournal::failing`]).
    failing: Arc<AtomicU64>,
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
            self.failing
                .store(if result.is_err() { now_ms().max(1) } else { 0 }, Relaxed);
            if self.last_prune.elapsed() > PRUNE_INTERVAL {
                self.last_prune = Instant::now();
                if let Err(error) = self.prune() {
                    tracing::warn!(%error, "pruning old history failed");
                }
            }
            if self.last_forget.elapsed() > FORGET_INTERVAL {
                self.last_forget = Instant::now();
                if let Err(error) = self.forget_streams(now_ms()) {
                    tracing::warn!(%error, "deleting the rows of topics over failed");
                }
            }
        }
        tracing::info!("sqlite writer stopped");
    }

    /// Deletes history past the age limit (a topic's row stays: see
    /// [`forget_streams`](Self::forget_streams)) and decided approvals past
    /// the most recent `MAX_DECIDED`.
    fn prune(&mut self) -> rusqlite::Result<()> {
        let cutoff = now_ms().saturating_sub(self.history_age.as_millis() as u64);
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM events WHERE stored_at < ?1",
            params![cutoff as i64],
        )?;
        tx.execute(
            "DELETE FROM approvals WHERE pending = 0 AND callback_id NOT IN \
             (SELECT callback_id FROM approvals WHERE pending = 0 ORDER BY updated_at DESC LIMIT ?1)",
            params![MAX_DECIDED as i64],
        )?;
        tx.commit()
    }

    /// Deletes the rows of topics with neither events nor snapshot last
    /// written more than the stream TTL before `now` (ms) (see
    /// [`forget_streams`]): a topic published again after a restart then
    /// starts a new epoch.
    fn forget_streams(&mut self, now: u64) -> rusqlite::Result<usize> {
        let before = now.saturating_sub(super::stream_ttl(self.history_age).as_millis() as u64);
        let tx = self.conn.transaction()?;
        let forgotten = forget_streams(&tx, before)?;
        tx.commit()?;
        Ok(forgotten)
    }

    fn write(&mut self, batch: &[Write]) -> rusqlite::Result<()> {
        let now = now_ms() as i64;
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (topic, seq, stored_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            // A new epoch starts the stream again (the trigger deletes the
            // old one's events and snapshot).
            let mut topic = tx.prepare_cached(
                "INSERT INTO topics (topic, epoch, last_seq, touched_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(topic) DO UPDATE SET last_seq = CASE WHEN epoch IS excluded.epoch \
                 THEN max(last_seq, excluded.last_seq) ELSE excluded.last_seq END, epoch = excluded.epoch, \
                 touched_at = excluded.touched_at",
            )?;
            let mut snapshot = tx.prepare_cached(
                "INSERT OR REPLACE INTO snapshots (topic, key, seq, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            // The memory keeps the most recently updated keys; so does the file.
            let mut trim_snapshot = tx.prepare_cached(
                "DELETE FROM snapshots WHERE topic = ?1 AND seq <= \
                 (SELECT seq FROM snapshots WHERE topic = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?;
            let mut trim =
                tx.prepare_cached("DELETE FROM events WHERE topic = ?1 AND seq <= ?2")?;
            let mut approval = tx.prepare_cached(
                "INSERT OR REPLACE INTO approvals (callback_id, pending, updated_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut settle = tx.prepare_cached(
                "UPDATE approvals SET pending = pending & ~?3 WHERE callback_id = ?1 AND (pending & 1) = ?2",
            )?;
            let mut advance = tx.prepare_cached(
                "UPDATE topics SET last_seq = max(last_seq, ?2) WHERE topic = ?1",
            )?;
            // A topic's row is written at its first event of the batch (the
            // epoch and the trigger) and its last seq once at the end: one
            // upsert per event cost a sixth of a batch's write.
            let mut topics: HashMap<&str, (&str, i64, i64)> = HashMap::new();
            for write in batch {
                let append = match write {
                    Write::Event(write) => write,
                    Write::Approval(record) => {
                        match &record.body {
                            Some(body) => {
                                let state = i64::from(record.pending) | OWED;
                                approval.execute(params![record.callback_id, state, now, body])?;
                            }
                            None => {
                                settle.execute(params![
                                    record.callback_id,
                                    i64::from(record.pending),
                                    OWED
                                ])?;
                            }
                        }
                        continue;
                    }
                };
                let event = &append.encoded.event;
                let body = serde_json::to_string(&**event).unwrap_or_default();
                let seq = event.seq as i64;
                let (name, epoch) = (event.topic.as_str(), append.epoch.as_str());
                match topics.get_mut(name) {
                    Some((written, _, last)) if *written == epoch => *last = (*last).max(seq),
                    _ => {
                        topic.execute(params![name, epoch, seq, now])?;
                        topics.insert(name, (epoch, seq, seq));
                    }
                }
                insert.execute(params![event.topic.as_str(), seq, now, body])?;
                if let Some(key) = &event.key {
                    snapshot.execute(params![event.topic.as_str(), key.as_str(), seq, body])?;
                }
                // Every 64 seqs, keyed or not: at most 64 keys over the
                // bound between two trims.
                if event.seq % 64 == 0 {
                    trim_snapshot
                        .execute(params![event.topic.as_str(), MAX_SNAPSHOT_KEYS as i64])?;
                }
                if event.seq > self.history_size && event.seq % 64 == 0 {
                    trim.execute(params![
                        event.topic.as_str(),
                        (event.seq - self.history_size) as i64
                    ])?;
                }
            }
            for (name, (_, first, last)) in topics {
                if last > first {
                    advance.execute(params![name, last])?;
                }
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use herald_protocol::{EventId, EventType, Label, Priority};

    use super::*;

    struct Nobody;

    impl Written for Nobody {
        fn event_written(&self, _write: EventWrite, _result: &Result<(), BrokerError>) {}
    }

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        (dir, path)
    }

    fn append(topic: &str, epoch: &Epoch, seq: u64, key: Option<&str>) -> Write {
        let event = Event {
            topic: Topic::parse(topic).unwrap(),
            seq,
            id: EventId::new(format!("{epoch}-{seq}")).unwrap(),
            event_type: EventType::StepProgress,
            priority: Priority::Normal,
            timestamp: now_ms(),
            source: None,
            key: key.map(|key| Label::new(key).unwrap()),
            data: serde_json::json!({ "seq": seq }),
        };
        let (done, _) = oneshot::channel();
        Write::Event(EventWrite {
            encoded: EncodedEvent::new(event),
            epoch: epoch.clone(),
            audience: Audience::Subscribers,
            together: false,
            pending: Arc::default(),
            done,
        })
    }

    /// An approval row write: `body` is any JSON here (recovery hands it
    /// back as is); `None` marks the row's change published.
    fn approval(id: &str, pending: bool, body: Option<&str>) -> Write {
        let (done, _) = oneshot::channel();
        Write::Approval(ApprovalWrite {
            callback_id: id.to_owned(),
            pending,
            body: body.map(str::to_owned),
            done,
        })
    }

    #[test]
    fn a_request_marked_published_after_its_decision_was_written_leaves_the_decision_owed() {
        let (_dir, path) = store();
        let mut writer = writer(&path, Duration::from_secs(3600));
        writer
            .write(&[
                approval("a", true, Some("asked")),
                approval("b", true, Some("asked")),
                approval("b", true, None),
                // The decision is written before the request's mark arrives.
                approval("a", false, Some("decided")),
                approval("a", true, None),
            ])
            .unwrap();
        drop(writer);
        let (_journal, recovered) =
            SqliteJournal::open(&path, 1000, Duration::from_secs(3600)).unwrap();
        let mut approvals = recovered.approvals;
        approvals.sort();
        assert_eq!(
            approvals,
            [("asked".to_owned(), false), ("decided".to_owned(), true)]
        );
    }

    /// A writer on the store at `path` (opened, its recovery discarded).
    fn writer(path: &Path, history_age: Duration) -> Writer {
        let (journal, _) = SqliteJournal::open(path, 1000, history_age).unwrap();
        let conn = journal.unstarted.lock().take().unwrap();
        let written: Weak<dyn Written> = Weak::<Nobody>::new();
        Writer {
            conn,
            history_size: 1000,
            history_age,
            last_prune: Instant::now(),
            last_forget: Instant::now(),
            written,
            failing: Arc::default(),
        }
    }

    fn recovered(path: &Path) -> Vec<RecoveredTopic> {
        SqliteJournal::open(path, 1000, Duration::from_secs(3600))
            .unwrap()
            .1
            .topics
    }

    fn seqs_and_epochs(topic: &RecoveredTopic) -> Vec<(u64, String)> {
        topic
            .history
            .iter()
            .map(|(event, _)| (event.seq, event.id.to_string()))
            .collect()
    }

    #[test]
    fn a_new_epoch_replaces_the_stream_on_disk_instead_of_mixing_the_two() {
        let (_dir, path) = store();
        let (old, new) = (super::super::new_epoch(), super::super::new_epoch());
        let mut writer = writer(&path, Duration::from_secs(3600));
        let old_stream: Vec<Write> = (1..=5)
            .map(|seq| append("run:r1", &old, seq, Some("step")))
            .collect();
        writer.write(&old_stream).unwrap();
        writer
            .write(&[append("run:r1", &new, 1, Some("other"))])
            .unwrap();
        drop(writer);
        let topics = recovered(&path);
        let [topic] = topics.as_slice() else {
            panic!("{topics:?}")
        };
        assert_eq!(topic.epoch, new);
        assert_eq!(topic.last_seq, 1);
        assert_eq!(seqs_and_epochs(topic), vec![(1, format!("{new}-1"))]);
        let keys: Vec<_> = topic.snapshot.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(keys, vec![format!("{new}-1")]);
    }

    #[test]
    fn a_stored_event_that_cannot_be_read_is_not_replayed_across() {
        let (_dir, path) = store();
        let epoch = super::super::new_epoch();
        let mut writer = writer(&path, Duration::from_secs(3600));
        let stream: Vec<Write> = (1..=5)
            .map(|seq| append("run:r1", &epoch, seq, None))
            .collect();
        writer.write(&stream).unwrap();
        writer
            .conn
            .execute(
                "UPDATE events SET body = replace(body, '\"priority\":\"normal\"', '\"priority\":\"urgent\"') WHERE seq = 3",
                [],
            )
            .unwrap();
        drop(writer);
        let topics = recovered(&path);
        let seqs: Vec<u64> = seqs_and_epochs(&topics[0])
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(
            seqs,
            vec![4, 5],
            "history restarts after the unreadable event"
        );
        assert_eq!(topics[0].last_seq, 5);
    }

    #[test]
    fn the_file_keeps_as_many_snapshot_keys_as_the_memory_does() {
        let (_dir, path) = store();
        let epoch = super::super::new_epoch();
        let mut writer = writer(&path, Duration::from_secs(3600));
        // Keys only on odd seqs: the trims still come.
        let total = 2 * MAX_SNAPSHOT_KEYS as u64 + 400;
        let writes: Vec<Write> = (1..=total)
            .map(|seq| {
                let key = (seq % 2 == 1).then(|| format!("k{seq}"));
                append("run:r1", &epoch, seq, key.as_deref())
            })
            .collect();
        for batch in writes.chunks(MAX_BATCH) {
            writer.write(batch).unwrap();
        }
        let kept: i64 = writer
            .conn
            .query_row("SELECT count(*) FROM snapshots", [], |row| row.get(0))
            .unwrap();
        assert!(
            (MAX_SNAPSHOT_KEYS as i64..MAX_SNAPSHOT_KEYS as i64 + 64).contains(&kept),
            "{kept} snapshot rows"
        );
        let oldest: i64 = writer
            .conn
            .query_row("SELECT min(seq) FROM snapshots", [], |row| row.get(0))
            .unwrap();
        let newest: i64 = writer
            .conn
            .query_row("SELECT max(seq) FROM snapshots", [], |row| row.get(0))
            .unwrap();
        assert_eq!(
            (newest - oldest) / 2 + 1,
            kept,
            "the least recently updated keys go first"
        );
    }

    fn topic_names(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT topic FROM topics ORDER BY topic")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_topics_row_outlives_its_history_and_goes_a_stream_ttl_after_its_last_write_unless_a_snapshot_keeps_it()
     {
        let (_dir, path) = store();
        let epoch = super::super::new_epoch();
        let mut writer = writer(&path, Duration::ZERO);
        writer
            .write(&[
                append("run:plain", &epoch, 1, None),
                append("run:keyed", &epoch, 1, Some("state")),
            ])
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        writer.prune().unwrap();
        let events: i64 = writer
            .conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(events, 0, "history past the age limit goes");
        assert_eq!(writer.forget_streams(now_ms()).unwrap(), 0);
        assert_eq!(topic_names(&writer.conn), ["run:keyed", "run:plain"]);
        let ttl = super::super::stream_ttl(Duration::ZERO).as_millis() as u64;
        assert_eq!(writer.forget_streams(now_ms() + ttl + 1).unwrap(), 1);
        assert_eq!(
            topic_names(&writer.conn),
            ["run:keyed"],
            "the snapshot keeps its topic"
        );
    }

    fn genesis_of(path: &Path) -> Epoch {
        SqliteJournal::open(path, 1000, Duration::from_secs(3600))
            .unwrap()
            .1
            .genesis
    }

    #[test]
    fn the_genesis_epoch_is_kept_across_opens_and_changes_once_a_stream_with_events_is_forgotten() {
        let (_dir, path) = store();
        let first = genesis_of(&path);
        assert_eq!(genesis_of(&path), first, "kept across a restart");
        let ttl = super::super::stream_ttl(Duration::ZERO).as_millis() as u64;
        // A row with no event (a publish whose write failed) going changes nothing.
        let mut empty = writer(&path, Duration::ZERO);
        empty
            .conn
            .execute("INSERT INTO topics VALUES ('run:empty', 'e0', 0, 0)", [])
            .unwrap();
        assert_eq!(empty.forget_streams(now_ms()).unwrap(), 1);
        drop(empty);
        assert_eq!(genesis_of(&path), first);
        // A row that had events changes it, whatever its epoch: the genesis
        // may have started that topic's stream before the engine forgot it
        // in memory and the row took another epoch.
        let replaced = Epoch::new("an-epoch-the-row-was-replaced-with").unwrap();
        let mut published = writer(&path, Duration::ZERO);
        published
            .write(&[append("run:r1", &replaced, 1, None)])
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        published.prune().unwrap();
        assert_eq!(published.forget_streams(now_ms() + ttl + 1).unwrap(), 1);
        drop(published);
        assert_ne!(
            genesis_of(&path),
            first,
            "run:r1 starting again at seq 1 must not take an epoch it had"
        );
    }

    #[test]
    fn a_journal_whose_write_failed_says_so() {
        let (_dir, path) = store();
        let epoch = super::super::new_epoch();
        let (journal, _) = SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap();
        let conn = journal.unstarted.lock().take().unwrap();
        // Refuses every write, as a full disk would.
        conn.execute_batch("PRAGMA query_only = ON;").unwrap();
        let writer = Writer {
            conn,
            history_size: 10,
            history_age: Duration::from_secs(60),
            last_prune: Instant::now(),
            last_forget: Instant::now(),
            written: Weak::<Nobody>::new(),
            failing: journal.failing.clone(),
        };
        assert!(!journal.failing());
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(append("run:r1", &epoch, 1, None)).unwrap();
        drop(sender);
        writer.run(receiver);
        assert!(journal.failing());
    }

    #[test]
    fn a_second_hub_on_the_file_is_told_another_herald_may_be_using_it() {
        let (_dir, path) = store();
        let (_first, _) = SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap();
        let error = SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap_err();
        assert!(error.to_string().contains("another herald"), "{error}");
    }

    #[test]
    fn rows_of_topics_with_nothing_left_are_forgotten_at_start_once_their_stream_ttl_is_over() {
        let (_dir, path) = store();
        drop(SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap());
        let conn = Connection::open(&path).unwrap();
        let ttl = super::super::stream_ttl(Duration::from_secs(3600)).as_millis() as i64;
        let now = now_ms() as i64;
        conn.execute(
            "INSERT INTO topics (topic, epoch, last_seq, touched_at) VALUES \
             ('run:gone', 'e1', 7, ?1), ('run:kept', 'e2', 3, ?2)",
            params![now - ttl - 1000, now - ttl + 60_000],
        )
        .unwrap();
        drop(conn);
        let names: Vec<String> = recovered(&path)
            .iter()
            .map(|t| t.topic.to_string())
            .collect();
        assert_eq!(names, ["run:kept"]);
    }

    #[test]
    fn another_applications_database_is_refused_and_left_as_it_was() {
        let (_dir, path) = store();
        let other = Connection::open(&path).unwrap();
        // One of Herald's table names, not its columns.
        other
            .execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT);")
            .unwrap();
        drop(other);
        let error = SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap_err();
        assert!(error.to_string().contains("not a Herald store"), "{error}");
        let other = Connection::open(&path).unwrap();
        let mode: String = other
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        let tables: i64 = other
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!((mode.as_str(), tables), ("delete", 1));
    }

    /// Schema 1, as a release before schema 2 created it.
    const SCHEMA_1: &str = "
        CREATE TABLE topics (topic TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_seq INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE events (topic TEXT NOT NULL, seq INTEGER NOT NULL, stored_at INTEGER NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (topic, seq)) WITHOUT ROWID;
        CREATE TABLE approvals (callback_id TEXT PRIMARY KEY, pending INTEGER NOT NULL,
            updated_at INTEGER NOT NULL, body TEXT NOT NULL);
        CREATE TABLE snapshots (topic TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (topic, key)) WITHOUT ROWID;
        CREATE INDEX snapshots_by_seq ON snapshots (topic, seq);
        CREATE TRIGGER a_new_epoch_replaces_the_stream
        AFTER UPDATE OF epoch ON topics WHEN old.epoch IS NOT new.epoch
        BEGIN
            DELETE FROM events WHERE topic = new.topic;
            DELETE FROM snapshots WHERE topic = new.topic;
        END;
        PRAGMA user_version = 1;
    ";

    /// An event's row as Herald stores it.
    fn event_row(topic: &str, seq: u64, key: &str) -> (String, String) {
        let event = Event {
            topic: Topic::parse(topic).unwrap(),
            seq,
            id: EventId::new(format!("id-{seq}")).unwrap(),
            event_type: EventType::StepProgress,
            priority: Priority::Normal,
            timestamp: now_ms(),
            source: None,
            key: Some(Label::new(key).unwrap()),
            data: serde_json::json!({ "text": "x".repeat(1200) }),
        };
        (key.to_owned(), serde_json::to_string(&event).unwrap())
    }

    #[test]
    fn a_store_of_schema_1_is_rebuilt_as_it_opens_and_keeps_its_events_snapshot_and_epoch() {
        let (_dir, path) = store();
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA_1).unwrap();
        old.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID};"))
            .unwrap();
        old.execute("INSERT INTO topics VALUES ('run:r1', 'e1', 3)", [])
            .unwrap();
        for seq in 1..=3 {
            let (key, body) = event_row("run:r1", seq, &format!("k{}", seq % 2));
            old.execute(
                "INSERT INTO events VALUES ('run:r1', ?1, ?2, ?3)",
                params![seq as i64, now_ms() as i64, body],
            )
            .unwrap();
            old.execute(
                "INSERT OR REPLACE INTO snapshots VALUES ('run:r1', ?1, ?2, ?3)",
                params![key, seq as i64, body],
            )
            .unwrap();
        }
        drop(old);
        let topics = recovered(&path);
        let [topic] = topics.as_slice() else {
            panic!("{topics:?}");
        };
        assert_eq!((topic.epoch.as_str(), topic.last_seq), ("e1", 3));
        let seqs: Vec<u64> = topic.history.iter().map(|(e, _)| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let keys: Vec<u64> = topic.snapshot.iter().map(|e| e.seq).collect();
        assert_eq!(keys, [2, 3]);
        let conn = Connection::open(&path).unwrap();
        assert!(!holds_schema_1(&conn).unwrap());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // The trigger follows the new tables: a new epoch still clears them.
        conn.execute("UPDATE topics SET epoch = 'e2' WHERE topic = 'run:r1'", [])
            .unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM snapshots)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_store_of_schema_2_gains_when_each_row_was_written_and_keeps_its_streams() {
        let (_dir, path) = store();
        let old = Connection::open(&path).unwrap();
        old.execute_batch(&format!(
            "{} PRAGMA user_version = 2; PRAGMA application_id = {APPLICATION_ID};",
            SCHEMA.replace(",\n    touched_at INTEGER NOT NULL DEFAULT 0", "")
        ))
        .unwrap();
        assert!(lacks_touched_at(&old).unwrap());
        old.execute("INSERT INTO topics VALUES ('run:quiet', 'e1', 4)", [])
            .unwrap();
        drop(old);
        let topics = recovered(&path);
        let [topic] = topics.as_slice() else {
            panic!("{topics:?}");
        };
        assert_eq!((topic.epoch.as_str(), topic.last_seq), ("e1", 4));
        let conn = Connection::open(&path).unwrap();
        let (version, touched): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version()), touched_at FROM topics",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(version, 3);
        assert!(touched > 0, "the upgrade counts a row as written now");
    }

    #[test]
    fn history_past_the_age_limit_leaves_the_file_when_the_hub_opens_it() {
        let (_dir, path) = store();
        drop(SqliteJournal::open(&path, 1000, Duration::from_secs(3600)).unwrap());
        let conn = Connection::open(&path).unwrap();
        let two_hours_ago = now_ms() as i64 - 2 * 3600 * 1000;
        for seq in 1..=3 {
            let (_, body) = event_row("run:old", seq, "k");
            conn.execute(
                "INSERT INTO events VALUES ('run:old', ?1, ?2, ?3)",
                params![seq as i64, two_hours_ago, body],
            )
            .unwrap();
        }
        drop(conn);
        drop(SqliteJournal::open(&path, 1000, Duration::from_secs(3600)).unwrap());
        let conn = Connection::open(&path).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn an_event_of_a_kilobyte_and_more_takes_no_page_of_its_own() {
        let (_dir, path) = store();
        drop(SqliteJournal::open(&path, 1000, Duration::from_secs(3600)).unwrap());
        let conn = Connection::open(&path).unwrap();
        let rows = 300;
        for seq in 1..=rows {
            let (_, body) = event_row("run:big", seq, "k");
            conn.execute(
                "INSERT INTO events VALUES ('run:big', ?1, ?2, ?3)",
                params![seq as i64, now_ms() as i64, body],
            )
            .unwrap();
        }
        let (pages, size): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT page_size FROM pragma_page_size())",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        let body = event_row("run:big", 1, "k").1.len() as i64;
        // Schema 1 took a 4 KiB overflow page per such row: 300 pages and more.
        assert!(
            pages * size < 2 * rows as i64 * body,
            "{pages} pages of {size} B for {rows} bodies of {body} B"
        );
    }

    #[test]
    fn a_store_a_newer_herald_wrote_is_refused_and_one_from_before_versions_is_taken() {
        let (_dir, path) = store();
        drop(SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA application_id = 0; PRAGMA user_version = 0;")
            .unwrap();
        drop(conn);
        drop(SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap());
        let conn = Connection::open(&path).unwrap();
        let application: i64 = conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .unwrap();
        assert_eq!(application, APPLICATION_ID);
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
        drop(conn);
        let error = SqliteJournal::open(&path, 10, Duration::from_secs(60)).unwrap_err();
        assert!(error.to_string().contains("newer Herald"), "{error}");
    }
}
