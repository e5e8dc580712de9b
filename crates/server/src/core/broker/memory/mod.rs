//! The memory engine: every topic's stream and every approval in this
//! process, optionally made durable by the SQLite journal.
//!
//! A publish takes the topic's lock, assigns the next seq, serializes the
//! event once and, in memory, retains it and hands it to the node
//! ([`BrokerHandler::on_publication`]) under that lock, so delivery follows
//! seq order. A batch's consecutive events of one topic are stored under
//! one taking of the lock and handed over together
//! ([`BrokerHandler::on_publications`]), so that each connection is given
//! them at once. With the journal, room in it is reserved before the lock (the
//! lock is never held across a wait), the event goes to the journal under the
//! lock, and the writer hands it back once committed: only then is it
//! retained and delivered, and the producer answered. A failed write gives
//! its seq up (see `TopicLog::give_up`).
//!
//! Memory is bounded: history by `--history-size` and `--history-age` per
//! topic, and all of it by `--history-memory`, past which the streams least
//! recently active are evicted (their epoch and last seq are remembered, so
//! their seqs continue). Past a million remembered streams all are
//! forgotten; a forgotten topic published again starts a new stream, and its
//! subscribers are told so before its first event
//! ([`BrokerHandler::on_stream_started`]).
//!
//! # Layout
//!
//! - this module: [`MemoryBroker`], the publish path, reads, approvals, the sweep.
//! - `topic_log`: one topic's stream.
//! - `approval_book`: the approvals.

pub(crate) mod approval_book;
pub(crate) mod topic_log;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_protocol::frame::Snapshot;
use herald_protocol::payload::ApprovalRecord;
use herald_protocol::{CallbackId, Epoch, EventFilter, PublishReceipt, Topic, TopicPattern};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use self::approval_book::ApprovalBook;
use self::topic_log::{Known, PendingWrite, REMEMBERED_IDS_PER_RETAINED, Retained, TopicLog};
use super::sqlite::{
    ApprovalWrite, EventWrite, JOURNAL_CAPACITY, Recovered, SqliteJournal, Write, Written,
};
use super::{
    ApprovalQuery, ApprovalStoreError, Audience, Broker, BrokerError, BrokerHandler, BrokerStats,
    Decision, Draft, EncodedEvent, Expired, PatternSnapshots, Publication, Published, ReadRequest,
    TopicListing, TopicOrder, TopicRead, TopicStats, UNANNOUNCED_PER_PASS, Wait,
};
use crate::core::clock::now_ms;

/// Most streams whose epoch and last seq are remembered after their history
/// was evicted, so seqs continue instead of restarting.
const MAX_DORMANT_STREAMS: usize = 1_000_000;

/// How much the memory engine keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events retained per topic.
    pub history_size: usize,
    /// Oldest event retained.
    pub history_age: Duration,
    /// Approximate memory all retained history may use.
    pub history_memory: usize,
}

/// The memory engine (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    handler: Arc<dyn BrokerHandler>,
    retention: Retention,
    logs: RwLock<HashMap<Topic, Arc<Mutex<TopicLog>>>>,
    /// Epoch and last seq of streams evicted from memory.
    dormant: Mutex<HashMap<Topic, (Epoch, u64)>>,
    /// Most entries `dormant` holds before it is cleared.
    dormant_limit: usize,
    /// The topics `dormant` held when it was last cleared, until each
    /// starts again: a subscriber may still hold its old position.
    forgotten: Mutex<HashSet<Topic>>,
    /// The epoch of every stream that starts here with nothing remembered
    /// of it: the one a reader of a topic that never had an event is given,
    /// so that its first event keeps the reader's checkpoint good. Kept by
    /// the SQLite file; a new one once remembered streams were forgotten,
    /// so that a stream starting again at seq 1 never takes an epoch it
    /// had before.
    genesis: RwLock<Epoch>,
    retained_bytes: AtomicIsize,
    approvals: Mutex<ApprovalBook>,
    durable: Option<Durable>,
}

/// Where the durable engine's writes go: a bounded channel, and the SQLite
/// writer that consumes it.
#[derive(Debug)]
struct Durable {
    /// Dropped on close, which ends the writer once the channel is drained.
    journal: Mutex<Option<mpsc::Sender<Write>>>,
    sqlite: Option<SqliteJournal>,
}

impl Durable {
    fn sender(&self) -> Result<mpsc::Sender<Write>, BrokerError> {
        self.journal.lock().clone().ok_or(BrokerError::Closed)
    }
}

/// Where one event of a publish stands once its seq is known.
enum Answer {
    /// Delivered, to this many connections.
    Delivered(PublishReceipt, u32),
    /// Already stored: the first attempt's receipt.
    Duplicate(PublishReceipt),
    /// In the journal: answered once written.
    Writing(PublishReceipt, oneshot::Receiver<Result<u32, BrokerError>>),
    /// A retry of an event still being written: it gets that write's outcome.
    AwaitingFirstAttempt(PublishReceipt, oneshot::Receiver<bool>),
}

impl Answer {
    async fn finish(self, wait: Wait) -> Result<Published, BrokerError> {
        let stored = |receipt, reached, duplicate| Published {
            receipt,
            reached,
            duplicate,
        };
        match self {
            Answer::Delivered(receipt, reached) => Ok(stored(receipt, reached, false)),
            Answer::Duplicate(receipt) => Ok(stored(receipt, 0, true)),
            Answer::Writing(receipt, _) if wait == Wait::Assigned => Ok(stored(receipt, 0, false)),
            Answer::AwaitingFirstAttempt(receipt, _) if wait == Wait::Assigned => {
                Ok(stored(receipt, 0, true))
            }
            Answer::Writing(receipt, written) => match written.await {
                Ok(Ok(reached)) => Ok(stored(receipt, reached, false)),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(BrokerError::Closed),
            },
            // A receipt now would vouch for an event the store may still
            // fail to keep: the retry learns what the first write did.
            Answer::AwaitingFirstAttempt(receipt, written) => match written.await {
                Ok(true) => Ok(stored(receipt, 0, true)),
                Ok(false) => Err(BrokerError::EarlierAttemptFailed),
                Err(_) => Err(BrokerError::Closed),
            },
        }
    }
}

impl MemoryBroker {
    /// An engine that keeps everything in memory.
    pub fn new(retention: Retention, handler: Arc<dyn BrokerHandler>) -> MemoryBroker {
        MemoryBroker::with_durable(retention, handler, None, super::new_epoch())
    }

    /// An engine that keeps everything in memory and remembers at most
    /// `limit` evicted streams.
    #[cfg(test)]
    pub(crate) fn remembering(
        retention: Retention,
        handler: Arc<dyn BrokerHandler>,
        limit: usize,
    ) -> MemoryBroker {
        let mut broker = MemoryBroker::new(retention, handler);
        if let Some(shared) = Arc::get_mut(&mut broker.shared) {
            shared.dormant_limit = limit;
        }
        broker
    }

    /// An engine made durable by the SQLite file at `path`: opens it,
    /// recovers its topics (seqs continue, history and snapshots are back)
    /// and approvals, and starts the writer.
    pub fn open_sqlite(
        path: &Path,
        retention: Retention,
        handler: Arc<dyn BrokerHandler>,
    ) -> Result<MemoryBroker, BrokerError> {
        let (sqlite, recovered) =
            SqliteJournal::open(path, retention.history_size, retention.history_age)?;
        let (journal, writes) = mpsc::channel(JOURNAL_CAPACITY);
        let durable = Durable {
            journal: Mutex::new(Some(journal)),
            sqlite: Some(sqlite),
        };
        let genesis = recovered.genesis.clone();
        let broker = MemoryBroker::with_durable(retention, handler, Some(durable), genesis);
        broker.restore(recovered);
        let written: Arc<dyn Written> = broker.shared.clone();
        if let Some(sqlite) = broker
            .shared
            .durable
            .as_ref()
            .and_then(|d| d.sqlite.as_ref())
        {
            sqlite.start(writes, Arc::downgrade(&written))?;
        }
        Ok(broker)
    }

    fn with_durable(
        retention: Retention,
        handler: Arc<dyn BrokerHandler>,
        durable: Option<Durable>,
        genesis: Epoch,
    ) -> MemoryBroker {
        MemoryBroker {
            shared: Arc::new(Shared {
                handler,
                retention,
                logs: RwLock::default(),
                dormant: Mutex::default(),
                dormant_limit: MAX_DORMANT_STREAMS,
                forgotten: Mutex::default(),
                genesis: RwLock::new(genesis),
                retained_bytes: AtomicIsize::new(0),
                approvals: Mutex::default(),
                durable,
            }),
        }
    }

    fn restore(&self, recovered: Recovered) {
        let shared = &self.shared;
        let topics = recovered.topics.len();
        for topic in recovered.topics {
            // A stream with nothing retained is remembered as an evicted one
            // is: read where it stands, and back in memory with its next event.
            if topic.history.is_empty() && topic.snapshot.is_empty() {
                shared.remember(
                    &mut shared.dormant.lock(),
                    topic.topic,
                    (topic.epoch, topic.last_seq),
                );
                continue;
            }
            let mut log = TopicLog::new(topic.topic.clone(), topic.epoch, topic.last_seq);
            for event in topic.snapshot {
                log.put_snapshot(&Retained::aged(event, Duration::ZERO));
            }
            for (event, age_ms) in topic.history {
                log.retain(
                    Retained::aged(event, Duration::from_millis(age_ms)),
                    shared.retention.history_size,
                );
            }
            log.delivered_seq = topic.last_seq;
            log.assigned_seq = topic.last_seq;
            // Last published to when its newest event was stored.
            if let Some(newest) = log.newest_retained_at() {
                log.last_activity = newest;
            }
            shared
                .retained_bytes
                .fetch_add(log.bytes() as isize, Relaxed);
            shared
                .logs
                .write()
                .insert(topic.topic, Arc::new(Mutex::new(log)));
        }
        let mut book = shared.approvals.lock();
        for (body, owed) in recovered.approvals {
            match serde_json::from_str::<ApprovalRecord>(&body) {
                Ok(record) => {
                    let id = record.request.callback_id.clone();
                    if let Err(error) = book.insert(record) {
                        tracing::warn!(%error, "dropping a stored approval");
                    } else if owed {
                        // The hub stopped before publishing it: due now.
                        book.owe(&id, 0);
                    }
                }
                Err(error) => tracing::warn!(%error, "skipping an unreadable stored approval"),
            }
        }
        tracing::info!(
            topics,
            pending_approvals = book.pending(),
            "recovered from the store"
        );
    }

    /// Trims history by age and, past the memory cap, evicts streams with
    /// nothing on its way, least recently active first (and empty ones idle
    /// for longer than the history age). Their epoch and last seq are
    /// remembered, so their seqs continue. A user's topic stays while an
    /// approval waits for them: its snapshot is how a connection opened
    /// later finds the question.
    pub fn sweep(&self) {
        let shared = &self.shared;
        let logs: Vec<(Topic, Arc<Mutex<TopicLog>>)> = shared
            .logs
            .read()
            .iter()
            .map(|(t, l)| (t.clone(), l.clone()))
            .collect();
        let asked: HashSet<String> = {
            let book = shared.approvals.lock();
            book.asked_users().into_iter().map(str::to_owned).collect()
        };
        let mut idle = Vec::new();
        for (topic, log) in &logs {
            let mut log = log.lock();
            shared.trim(&mut log);
            let waits_on_a_user = topic
                .as_str()
                .strip_prefix("user:")
                .is_some_and(|user| asked.contains(user));
            if log.is_idle() && !waits_on_a_user {
                idle.push((log.last_activity, topic.clone(), log.bytes()));
            }
        }
        let cap = shared.retention.history_memory as isize;
        let over = shared.retained_bytes.load(Relaxed) - cap;
        let horizon = shared.retention.history_age;
        idle.sort_by_key(|(at, _, _)| *at);
        let mut freed = 0isize;
        let mut evict = Vec::new();
        for (at, topic, bytes) in idle {
            if freed < over || (bytes == 0 && at.elapsed() > horizon) {
                freed += bytes as isize;
                evict.push(topic);
            }
        }
        // Our handles go first: a stream is evicted only if the map holds
        // the one handle left.
        drop(logs);
        if evict.is_empty() {
            return;
        }
        let mut map = shared.logs.write();
        let mut dormant = shared.dormant.lock();
        for topic in evict {
            let Some(log) = map.get(&topic) else {
                continue;
            };
            // Someone got this stream from the map and is about to lock it (a
            // publisher, about to assign the next seq): evicting it now
            // would let the next caller rebuild the topic from the dormant
            // seq and assign that seq a second time. Handles are only handed
            // out under the map's lock, which we hold, so this count is exact.
            if Arc::strong_count(log) > 1 {
                continue;
            }
            let guard = log.lock();
            if !guard.is_idle() {
                continue;
            }
            shared.remember(
                &mut dormant,
                topic.clone(),
                (guard.epoch.clone(), guard.delivered_seq),
            );
            shared
                .retained_bytes
                .fetch_sub(guard.bytes() as isize, Relaxed);
            drop(guard);
            map.remove(&topic);
        }
    }
}

impl Shared {
    /// The stream of a topic, created (with the remembered epoch and seq,
    /// or the genesis epoch and seq 0) when it does not exist. A stream
    /// that starts with nothing remembered is left to be announced by its
    /// first publisher ([`Shared::announce`]).
    fn log(&self, topic: &Topic) -> Arc<Mutex<TopicLog>> {
        if let Some(log) = self.logs.read().get(topic) {
            return log.clone();
        }
        let mut logs = self.logs.write();
        logs.entry(topic.clone())
            .or_insert_with(|| {
                let remembered = self.dormant.lock().remove(topic);
                let log = match remembered {
                    Some((epoch, seq)) => TopicLog::new(topic.clone(), epoch, seq),
                    None => {
                        let genesis = self.genesis.read().clone();
                        let mut log = TopicLog::new(topic.clone(), genesis, 0);
                        log.unannounced = Some(self.forgotten.lock().remove(topic));
                        log
                    }
                };
                Arc::new(Mutex::new(log))
            })
            .clone()
    }

    /// Tells the node of a stream that started with nothing remembered,
    /// under the stream's lock before its first event is given a seq, so
    /// its subscribers holding another stream of the topic hear of the
    /// change first ([`BrokerHandler::on_stream_started`]).
    fn announce(&self, log: &mut TopicLog) {
        if let Some(forgotten) = log.unannounced.take() {
            self.handler
                .on_stream_started(&log.topic, &log.epoch, forgotten);
        }
    }

    /// Remembers where an evicted stream stands. Past the limit every
    /// remembered stream is forgotten first, and streams start under a new
    /// genesis from then on, so that a stream starting again at seq 1
    /// never takes an epoch it had.
    fn remember(&self, dormant: &mut HashMap<Topic, (Epoch, u64)>, topic: Topic, at: (Epoch, u64)) {
        if dormant.len() >= self.dormant_limit {
            *self.forgotten.lock() = dormant.drain().map(|(topic, _)| topic).collect();
            *self.genesis.write() = super::new_epoch();
        }
        dormant.insert(topic, at);
    }

    /// Where the stream of a topic memory does not hold stands: its
    /// remembered epoch and seq, or, for a topic that never had an event
    /// here, the genesis epoch and seq 0 (the stream its first event
    /// starts).
    fn unheld(&self, topic: &Topic) -> (Epoch, u64) {
        self.dormant
            .lock()
            .get(topic)
            .cloned()
            .unwrap_or_else(|| (self.genesis.read().clone(), 0))
    }

    /// Trims a stream's history by age, keeping the retained-bytes count right.
    fn trim(&self, log: &mut TopicLog) {
        let remember = self.retention.history_size * REMEMBERED_IDS_PER_RETAINED;
        let delta = log.trim_age(self.retention.history_age, remember, Instant::now());
        self.retained_bytes.fetch_add(delta, Relaxed);
    }

    /// Hands an event to the node, then retains it.
    fn deliver(
        &self,
        log: &mut TopicLog,
        retained: Retained,
        audience: Audience,
        together: bool,
    ) -> u32 {
        let reached = self.handler.on_publication(&Publication {
            event: &retained.encoded,
            epoch: &log.epoch,
            audience,
            stored_at: retained.retained_at,
            together,
        });
        let delta = log.retain(retained, self.retention.history_size);
        self.retained_bytes.fetch_add(delta, Relaxed);
        reached
    }

    /// Assigns the event its seq and delivers it (memory) or hands it to the
    /// journal (durable), in seq order per topic.
    async fn enqueue(
        &self,
        draft: Draft,
        audience: Audience,
        together: bool,
    ) -> Result<Answer, BrokerError> {
        // Room in the journal is taken before the topic's lock, so the lock
        // is never held across a wait.
        let permit = match &self.durable {
            None => None,
            Some(durable) => {
                let sender = durable.sender()?;
                Some(
                    sender
                        .reserve_owned()
                        .await
                        .map_err(|_| BrokerError::Closed)?,
                )
            }
        };
        let log_ref = self.log(&draft.topic);
        let mut log = log_ref.lock();
        self.announce(&mut log);
        if let Some(answer) = answer_known(&mut log, &draft) {
            return answer;
        }
        let seq = log.assign(&draft.id);
        let receipt = draft.receipt(seq);
        let encoded = EncodedEvent::new(draft.into_event(seq));
        Ok(match permit {
            None => {
                let reached = self.deliver(&mut log, Retained::new(encoded), audience, together);
                Answer::Delivered(receipt, reached)
            }
            Some(permit) => {
                let (done, written) = oneshot::channel();
                let pending = Arc::new(PendingWrite::default());
                log.writing(encoded.event.clone(), &pending);
                permit.send(Write::Event(EventWrite {
                    encoded,
                    epoch: log.epoch.clone(),
                    audience,
                    together,
                    pending,
                    done,
                }));
                Answer::Writing(receipt, written)
            }
        })
    }

    /// Stores a batch when there is no journal: each run of consecutive
    /// events of one topic under that topic's lock, handed to the node in
    /// one call ([`BrokerHandler::on_publications`]) so that each
    /// connection is given the run at once, then retained.
    fn store_runs(
        &self,
        batch: Vec<Draft>,
        audience: Audience,
    ) -> Result<Vec<Answer>, BrokerError> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut drafts = batch.into_iter().peekable();
        while let Some(first) = drafts.next() {
            let topic = first.topic.clone();
            let log_ref = self.log(&topic);
            let mut log = log_ref.lock();
            self.announce(&mut log);
            let mut run = Vec::new();
            let mut next = Some(first);
            while let Some(draft) = next {
                if log.known(&draft.id).is_some() {
                    // The id may be one of this run's: the run is stored
                    // first, so the draft is judged against what is stored.
                    self.deliver_run(&mut log, std::mem::take(&mut run), audience, &mut answers);
                    if let Some(answer) = answer_known(&mut log, &draft) {
                        answers.push(answer?);
                    }
                } else {
                    let seq = log.assign(&draft.id);
                    let receipt = draft.receipt(seq);
                    let encoded = EncodedEvent::new(draft.into_event(seq));
                    run.push((receipt, Retained::new(encoded)));
                }
                next = drafts.next_if(|draft| draft.topic == topic);
            }
            self.deliver_run(&mut log, run, audience, &mut answers);
        }
        Ok(answers)
    }

    /// Hands a run of one topic's events to the node, then retains them.
    fn deliver_run(
        &self,
        log: &mut TopicLog,
        run: Vec<(PublishReceipt, Retained)>,
        audience: Audience,
        answers: &mut Vec<Answer>,
    ) {
        if run.is_empty() {
            return;
        }
        let publications: Vec<Publication<'_>> = run
            .iter()
            .map(|(_, retained)| Publication {
                event: &retained.encoded,
                epoch: &log.epoch,
                audience,
                stored_at: retained.retained_at,
                together: true,
            })
            .collect();
        let reached = self.handler.on_publications(&publications);
        debug_assert_eq!(reached.len(), run.len(), "one answer per publication");
        drop(publications);
        for ((receipt, retained), reached) in run.into_iter().zip(reached) {
            let delta = log.retain(retained, self.retention.history_size);
            self.retained_bytes.fetch_add(delta, Relaxed);
            answers.push(Answer::Delivered(receipt, reached));
        }
    }

    /// Keeps an approval's record in the journal (when there is one).
    /// Marks the approval published in the file, if there is one, unless
    /// its row changed since (`pending` is what was published): the file's
    /// row may be a decision written after the book settled the request.
    async fn settle_persisted(&self, id: &CallbackId, pending: bool) -> Result<(), BrokerError> {
        self.write_approval(id.to_string(), pending, None).await
    }

    /// Writes the record to the file, if there is one, as a change not yet
    /// published (owed until [`settle_persisted`](Self::settle_persisted)).
    async fn persist(&self, record: &ApprovalRecord) -> Result<(), BrokerError> {
        if self.durable.is_none() {
            return Ok(());
        }
        let body = serde_json::to_string(record).map_err(|e| BrokerError::Write(e.to_string()))?;
        let id = record.request.callback_id.to_string();
        self.write_approval(id, !record.status.is_final(), Some(body))
            .await
    }

    async fn write_approval(
        &self,
        callback_id: String,
        pending: bool,
        body: Option<String>,
    ) -> Result<(), BrokerError> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let sender = durable.sender()?;
        let (done, durable) = oneshot::channel();
        let write = Write::Approval(ApprovalWrite {
            callback_id,
            pending,
            body,
            done,
        });
        sender.send(write).await.map_err(|_| BrokerError::Closed)?;
        durable.await.map_err(|_| BrokerError::Closed)?
    }
}

/// A stream read at its position now.
fn read_log(log: &TopicLog, request: ReadRequest<'_>) -> TopicRead {
    TopicRead {
        position: log.position(),
        snapshot: request
            .snapshot
            .map(|filter| log.snapshot_matching(filter))
            .unwrap_or_default(),
        history: request
            .history
            .map(|h| log.history(h.since, h.filter, h.limit)),
    }
}

/// The answer to a draft whose id the stream already knows: the first
/// attempt's receipt for a retry, a conflict for different content under
/// the same id; `None` when the id is new.
fn answer_known(log: &mut TopicLog, draft: &Draft) -> Option<Result<Answer, BrokerError>> {
    let conflict = || BrokerError::Conflict {
        topic: draft.topic.clone(),
        id: draft.id.to_string(),
    };
    Some(match log.known(&draft.id)? {
        Known::Stored(seq, event) if draft.same_content(event) => {
            Ok(Answer::Duplicate(draft.receipt(seq)))
        }
        Known::Remembered(seq, content) if draft.content().digest() == content => {
            Ok(Answer::Duplicate(draft.receipt(seq)))
        }
        Known::Unknown(seq) => Ok(Answer::Duplicate(draft.receipt(seq))),
        Known::Pending(seq, event) if draft.same_content(event) => log
            .when_written(seq)
            .ok_or(BrokerError::Closed)
            .map(|written| Answer::AwaitingFirstAttempt(draft.receipt(seq), written)),
        Known::Stored(..) | Known::Pending(..) | Known::Remembered(..) => Err(conflict()),
    })
}

impl Written for Shared {
    fn event_written(&self, write: EventWrite, result: &Result<(), BrokerError>) {
        let event = write.encoded.event.clone();
        // The stream cannot have been evicted: it is not idle while this
        // write is pending.
        let Some(log) = self.logs.read().get(&event.topic).cloned() else {
            let _ = write.done.send(Err(BrokerError::Closed));
            return;
        };
        let mut log = log.lock();
        let answer = match result {
            Ok(()) => {
                // It enters history (and its age starts) now, not when its
                // seq was assigned.
                let retained = Retained::new(write.encoded);
                Ok(self.deliver(&mut log, retained, write.audience, write.together))
            }
            Err(error) => {
                // Never stored, never delivered: a later retry with this id
                // must be published, not answered as a duplicate of an
                // event nobody will get.
                log.give_up(&event.id, event.seq);
                Err(error.clone())
            }
        };
        log.written(event.seq);
        drop(log);
        write.pending.tell(result.is_ok());
        let _ = write.done.send(answer);
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        batch: Vec<Draft>,
        audience: Audience,
        wait: Wait,
    ) -> Result<Vec<Published>, BrokerError> {
        // Every event is assigned its seq (and handed to the journal) first,
        // then the batch is awaited: a durable store commits it together.
        let together = batch.len() > 1;
        let answers = if together && self.shared.durable.is_none() {
            self.shared.store_runs(batch, audience)?
        } else {
            let mut answers = Vec::with_capacity(batch.len());
            for draft in batch {
                match self.shared.enqueue(draft, audience, together).await {
                    Ok(answer) => answers.push(answer),
                    Err(refused) => {
                        // The events before the refused one are published:
                        // answered only once they are (committed, with a
                        // durable store), as a whole batch would be.
                        for answer in answers {
                            answer.finish(wait).await?;
                        }
                        return Err(refused);
                    }
                }
            }
            answers
        };
        let mut stored = Vec::with_capacity(answers.len());
        for answer in answers {
            stored.push(answer.finish(wait).await?);
        }
        Ok(stored)
    }

    async fn read(
        &self,
        topic: &Topic,
        request: ReadRequest<'_>,
    ) -> Result<TopicRead, BrokerError> {
        // The map's lock is held while the remembered streams are looked
        // at, in the order `log()` takes them: a first publish moving the
        // topic from one to the other is seen before or after, not between.
        let (held, unheld) = {
            let logs = self.shared.logs.read();
            let held = logs.get(topic).cloned();
            let unheld = held.is_none().then(|| self.shared.unheld(topic));
            (held, unheld)
        };
        let Some(held) = held else {
            // Read as it stands, and not brought into memory: reading (and
            // so subscribing to) topics nobody publishes to keeps nothing.
            let (epoch, seq) = unheld.unwrap_or_else(|| (self.shared.genesis.read().clone(), 0));
            return Ok(read_log(&TopicLog::new(topic.clone(), epoch, seq), request));
        };
        let mut log = held.lock();
        self.shared.trim(&mut log);
        Ok(read_log(&log, request))
    }

    async fn snapshots(
        &self,
        pattern: &TopicPattern,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<PatternSnapshots, BrokerError> {
        let mut logs: Vec<(Topic, Arc<Mutex<TopicLog>>)> = self
            .shared
            .logs
            .read()
            .iter()
            .filter(|(topic, _)| pattern.matches(topic))
            .map(|(topic, log)| (topic.clone(), log.clone()))
            .collect();
        logs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut found = PatternSnapshots::default();
        for (topic, log) in logs {
            let log = log.lock();
            if !log.has_snapshot_matching(filter) {
                continue;
            }
            if found.snapshots.len() == limit {
                found.refused += 1;
                continue;
            }
            let position = log.position();
            found.snapshots.push(Snapshot {
                topic,
                epoch: position.epoch,
                seq: position.seq,
                events: log.snapshot_matching(filter),
            });
        }
        Ok(found)
    }

    async fn subscribe(&self, _pattern: &TopicPattern) -> Result<(), BrokerError> {
        // Every event is stored in this process: the node already gets it.
        Ok(())
    }

    async fn unsubscribe(&self, _pattern: &TopicPattern) {}

    async fn create_approval(&self, record: ApprovalRecord) -> Result<(), ApprovalStoreError> {
        {
            let mut book = self.shared.approvals.lock();
            book.insert(record.clone())?;
            book.owe(&record.request.callback_id, now_ms());
        }
        if let Err(error) = self.shared.persist(&record).await {
            // Not kept, so not registered: the producer is told.
            self.shared
                .approvals
                .lock()
                .remove(&record.request.callback_id);
            return Err(error.into());
        }
        self.shared.handler.on_approval(&record);
        Ok(())
    }

    async fn decide_approval(
        &self,
        id: &CallbackId,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalStoreError> {
        let (before, was_owed, record) = {
            let mut book = self.shared.approvals.lock();
            let before = book.get(id).cloned();
            let was_owed = book.is_owed(id);
            let record = book.decide(id, decision)?;
            book.owe(id, now_ms());
            (before, was_owed, record)
        };
        if let Err(error) = self.shared.persist(&record).await {
            // Not kept, so not decided: whoever answered is told, and the
            // approval waits for another answer (or its timeout).
            tracing::error!(%error, callback_id = %id, "could not store a decision");
            if let Some(before) = before {
                let mut book = self.shared.approvals.lock();
                book.remove(id);
                let _ = book.insert(before);
                if was_owed {
                    book.owe(id, now_ms());
                }
            }
            return Err(error.into());
        }
        self.shared.handler.on_approval(&record);
        Ok(record)
    }

    async fn record_delivery(&self, id: &CallbackId, connections: u32) -> Result<(), BrokerError> {
        self.shared.approvals.lock().add_delivered(id, connections);
        Ok(())
    }

    async fn announced(&self, id: &CallbackId, pending: bool) -> Result<bool, BrokerError> {
        let Some(settled) = self.shared.approvals.lock().settle(id, pending) else {
            return Ok(false);
        };
        if settled && let Err(error) = self.shared.settle_persisted(id, pending).await {
            // Still owed in the file: owed here too, so a pass publishes it.
            self.shared.approvals.lock().owe(id, now_ms());
            return Err(error);
        }
        Ok(true)
    }

    async fn unannounced(&self, older_than: Duration) -> Result<Vec<ApprovalRecord>, BrokerError> {
        let older_than = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        Ok(self
            .shared
            .approvals
            .lock()
            .take_owed(older_than, now_ms(), UNANNOUNCED_PER_PASS))
    }

    async fn approval(&self, id: &CallbackId) -> Result<Option<ApprovalRecord>, BrokerError> {
        Ok(self.shared.approvals.lock().get(id).cloned())
    }

    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, BrokerError> {
        Ok(self.shared.approvals.lock().list(query))
    }

    async fn claim_expired(&self, now_ms: u64) -> Result<Expired, BrokerError> {
        // One node: every expired approval is this node's to time out.
        Ok(self.shared.approvals.lock().expired(now_ms))
    }

    async fn topics(&self, listing: &TopicListing) -> Result<(Vec<TopicStats>, bool), BrokerError> {
        let under: Vec<(Topic, Arc<Mutex<TopicLog>>)> = self
            .shared
            .logs
            .read()
            .iter()
            .filter(|(topic, _)| listing.pattern.matches(topic))
            .map(|(topic, log)| (topic.clone(), log.clone()))
            .collect();
        // Sorted first, so that only the listed ones are described.
        let mut sorted: Vec<(Option<Instant>, Topic, Arc<Mutex<TopicLog>>)> = match listing.order {
            TopicOrder::Name => under.into_iter().map(|(t, log)| (None, t, log)).collect(),
            TopicOrder::Recent => under
                .into_iter()
                .map(|(topic, log)| {
                    let last = log.lock().last_activity;
                    (Some(last), topic, log)
                })
                .collect(),
        };
        sorted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let truncated = sorted.len() > listing.limit;
        let topics = sorted
            .into_iter()
            .take(listing.limit)
            .map(|(_, _, log)| log.lock().stats())
            .collect();
        Ok((topics, truncated))
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            topics: self.shared.logs.read().len(),
            retained_bytes: self.shared.retained_bytes.load(Relaxed).max(0) as usize,
            pending_approvals: self.shared.approvals.lock().pending(),
            ..BrokerStats::default()
        }
    }

    /// Not while the SQLite file fails writes (a full disk): every publish
    /// would be refused.
    fn ready(&self) -> bool {
        !self
            .shared
            .durable
            .as_ref()
            .and_then(|durable| durable.sqlite.as_ref())
            .is_some_and(SqliteJournal::failing)
    }

    async fn close(&self) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(durable) = &shared.durable {
                // The writer ends once every sender is gone and the journal
                // is drained; publishes in flight hold the only other
                // clones, briefly.
                durable.journal.lock().take();
                if let Some(sqlite) = &durable.sqlite {
                    sqlite.join();
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
