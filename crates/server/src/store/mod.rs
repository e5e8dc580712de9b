//! Where events are kept beyond memory.
//!
//! The hub keeps every topic's recent history, snapshot and seqs in memory
//! (`stream`); a [`Store`] makes them durable and gives them back after a
//! restart. The memory store has nothing to make durable: the hub delivers at
//! once. A durable store takes [`Append`]s in seq order per topic through a
//! bounded channel, writes them (group-committed), and only then runs each
//! append's delivery and answers its producer — so nothing is delivered or
//! acknowledged that could be lost, and no seq anyone was told of is ever
//! reused (a failed write's seq goes to the next event only when nothing
//! after it was assigned; see `Stream::give_up`).
//!
//! A store for several nodes (Redis) implements the same trait: it consumes
//! the same channel and calls the same delivery callbacks.

pub mod sqlite;

use std::fmt::Debug;
use std::sync::Arc;

use herald_protocol::{Epoch, Event, Topic};
use tokio::sync::{mpsc, oneshot};

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store failed to write: {0}")]
    Write(String),
    #[error("the store is closed")]
    Closed,
}

/// One event to make durable, what to do once it is, and whom to tell.
pub struct Append {
    pub event: Arc<Event>,
    /// The topic's epoch, stored with its last seq.
    pub epoch: Epoch,
    /// Runs in append order once the write is over: with `true` once the
    /// event is durable (delivers it), with `false` if it could not be
    /// written (forgets its id, so a retry is not taken for a duplicate).
    pub then: Box<dyn FnOnce(bool) + Send>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

impl Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append")
            .field("topic", &self.event.topic)
            .field("seq", &self.event.seq)
            .finish()
    }
}

/// An approval's record to keep (its JSON), written like events.
#[derive(Debug)]
pub struct ApprovalWrite {
    pub callback_id: String,
    pub pending: bool,
    pub body: String,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// What goes through the journal, in order.
#[derive(Debug)]
pub enum Write {
    Event(Append),
    Approval(ApprovalWrite),
}

impl Write {
    /// Ends the write with its outcome: an event is delivered (or its id
    /// forgotten) first, then whoever waits is told. Every store ends every
    /// write it takes this way.
    pub fn finish(self, result: &Result<(), StoreError>) {
        let done = match self {
            Write::Event(append) => {
                (append.then)(result.is_ok());
                append.done
            }
            Write::Approval(approval) => approval.done,
        };
        let _ = done.send(result.clone());
    }
}

/// A topic as it survived a restart.
#[derive(Debug, Clone)]
pub struct RecoveredTopic {
    pub topic: Topic,
    pub epoch: Epoch,
    pub last_seq: u64,
    /// Retained events, oldest first, with their age in milliseconds.
    pub history: Vec<(Event, u64)>,
    /// The latest event per key, oldest update first.
    pub snapshot: Vec<Event>,
}

/// A durable home for events.
pub trait Store: Send + Sync + Debug {
    /// Everything that survived, read once at start.
    fn recover(&self) -> Result<Vec<RecoveredTopic>, StoreError>;

    /// Approval records that survived (their JSON), pending ones included.
    fn recover_approvals(&self) -> Result<Vec<String>, StoreError>;

    /// The channel writes go through, in seq order per topic; `None` once closed.
    fn journal(&self) -> Option<mpsc::Sender<Write>>;

    /// Stops taking appends, finishes the ones queued, and waits for the writer.
    fn close(&self);
}
