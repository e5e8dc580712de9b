//! [`BatchingPublisher`]: events queued in a bounded buffer and published in
//! batches by a task the handle owns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use herald_protocol::{ErrorCode, EventId, PublishReceipt, PublishRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::PublishError;
use crate::publisher::{Publisher, assign_id};
use crate::task::OwnedTask;

/// How many batches' worth of events the buffer holds before `publish` waits.
const BUFFERED_BATCHES: usize = 4;

/// How long [`BatchingPublisher::close`] waits for the last flush.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

/// A queued event's way back to its [`PendingReceipt`]: its outcome, and
/// whether a request carrying it was sent.
#[derive(Debug)]
struct Reply {
    outcome: oneshot::Sender<Result<PublishReceipt, PublishError>>,
    sent: Arc<AtomicBool>,
}

impl Reply {
    fn send(self, outcome: Result<PublishReceipt, PublishError>) {
        let _ = self.outcome.send(outcome);
    }
}

#[derive(Debug)]
enum Command {
    Publish(PublishRequest, Reply),
    Flush(oneshot::Sender<()>),
    /// Flush what is queued, then stop ([`BatchingPublisher::close`]). A
    /// queue that closes without it was dropped: nothing more is sent.
    Close,
}

/// The largest batch [`Publisher::batching`] makes: its queue and buffer are
/// sized from it.
pub const MAX_BATCH: usize = 10_000;

/// A publisher that groups events: a batch is sent when it has `max_batch`
/// events or its first event has waited `max_delay`, whichever comes first.
///
/// The buffer is bounded (`4 × max_batch` events): when it is full,
/// [`publish`](BatchingPublisher::publish) waits, so a producer faster than
/// the hub slows down instead of growing memory. Each batch is retried like
/// [`Publisher::publish_batch`], with ids assigned at `publish` time. Each
/// event gets its own outcome: one the hub refuses (a bad field, a reused id
/// with other content) fails alone and the rest of its batch is sent again;
/// a batch the hub finds too large (over its `--queue-size`) is split.
///
/// The flush task belongs to this handle: [`close`](BatchingPublisher::close)
/// flushes what is queued and stops it; dropping the handle stops it at once,
/// dropping queued events: their [`PendingReceipt`]s resolve to
/// [`PublishError::Stopped`] (never sent), or to
/// [`PublishError::StoppedWhileSending`] for a batch already on its way (the
/// hub may have stored it; publishing it again under its
/// [`id`](PendingReceipt::id) stores it at most once).
#[derive(Debug)]
pub struct BatchingPublisher {
    task: OwnedTask,
    commands: mpsc::Sender<Command>,
}

/// The receipt of a queued event, once its batch is published. Awaiting it is
/// optional, but only it tells a failure: an event the hub refused fails
/// alone (the rest of its batch is sent again), and a batch the hub could not
/// be reached for, or failed with a 5xx after the retries, fails every event
/// of it.
#[derive(Debug)]
pub struct PendingReceipt {
    outcome: oneshot::Receiver<Result<PublishReceipt, PublishError>>,
    sent: Arc<AtomicBool>,
    id: Option<EventId>,
}

impl PendingReceipt {
    /// The event's id (the one it was queued with, or the one assigned at
    /// `publish`): publishing it again under this id stores it at most once.
    pub fn id(&self) -> Option<&EventId> {
        self.id.as_ref()
    }
}

impl Future for PendingReceipt {
    type Output = Result<PublishReceipt, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Pin::new(&mut this.outcome).poll(cx).map(|result| {
            result.unwrap_or_else(|_| {
                Err(if this.sent.load(Ordering::Acquire) {
                    PublishError::StoppedWhileSending
                } else {
                    PublishError::Stopped
                })
            })
        })
    }
}

impl Publisher {
    /// A batching handle over this publisher: batches of at most `max_batch`
    /// events (at least 1, at most [`MAX_BATCH`]; the hub takes at most its
    /// `--queue-size`, 1024 by default, per batch, and a larger one costs a
    /// refused request before it is split), each sent at most
    /// `max_delay` after its first event was queued. Must be called inside a
    /// tokio runtime.
    pub fn batching(&self, max_batch: usize, max_delay: Duration) -> BatchingPublisher {
        let max_batch = max_batch.clamp(1, MAX_BATCH);
        let (commands, receiver) = mpsc::channel(max_batch.saturating_mul(BUFFERED_BATCHES));
        let task = OwnedTask::spawn(flush_loop(self.clone(), receiver, max_batch, max_delay));
        BatchingPublisher { task, commands }
    }
}

impl BatchingPublisher {
    /// Queues an event (waiting while the buffer is full) and returns its
    /// pending receipt. The event's `id` is assigned now when absent.
    pub async fn publish(
        &self,
        mut request: PublishRequest,
    ) -> Result<PendingReceipt, PublishError> {
        assign_id(&mut request);
        let id = request.id.clone();
        let (outcome, receipt) = oneshot::channel();
        let sent = Arc::new(AtomicBool::new(false));
        let reply = Reply {
            outcome,
            sent: sent.clone(),
        };
        self.commands
            .send(Command::Publish(request, reply))
            .await
            .map_err(|_| PublishError::Stopped)?;
        Ok(PendingReceipt {
            outcome: receipt,
            sent,
            id,
        })
    }

    /// Sends what is queued now and waits until it has been published (or
    /// has failed: see each event's [`PendingReceipt`]).
    pub async fn flush(&self) -> Result<(), PublishError> {
        let (done, flushed) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| PublishError::Stopped)?;
        flushed.await.map_err(|_| PublishError::Stopped)
    }

    /// Flushes what is queued, then stops the task (waiting at most a minute).
    pub async fn close(self) {
        let BatchingPublisher { task, commands } = self;
        let deadline = Instant::now() + CLOSE_LIMIT;
        // Behind every queued event: they are flushed, then the task returns.
        // One limit for both waits (a full queue, then the last flush); past
        // it the task is stopped and what it still held reports `Stopped`.
        let queued = tokio::time::timeout_at(deadline, commands.send(Command::Close)).await;
        if matches!(queued, Ok(Ok(()))) {
            task.join(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
    }
}

async fn flush_loop(
    publisher: Publisher,
    mut commands: mpsc::Receiver<Command>,
    max_batch: usize,
    max_delay: Duration,
) {
    let mut batch: Vec<(PublishRequest, Reply)> = Vec::with_capacity(max_batch);
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let mut open = true;
        // A queue closed without `Close` was dropped with its handle:
        // returning drops the batch, whose receipts then say it was not sent.
        match commands.recv().await {
            None => return,
            Some(Command::Flush(done)) => flushed.push(done),
            Some(Command::Close) => open = false,
            Some(Command::Publish(request, reply)) => {
                batch.push((request, reply));
                let deadline = Instant::now() + max_delay;
                while batch.len() < max_batch {
                    tokio::select! {
                        command = commands.recv() => match command {
                            Some(Command::Publish(request, reply)) => batch.push((request, reply)),
                            Some(Command::Flush(done)) => {
                                flushed.push(done);
                                break;
                            }
                            Some(Command::Close) => {
                                open = false;
                                break;
                            }
                            None => return,
                        },
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        }
        if !batch.is_empty() {
            send_batch(&publisher, std::mem::take(&mut batch)).await;
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// Publishes `batch` and answers every event's receipt with its own outcome.
///
/// A refusal that names one event (a 400 or 409 with `index`) fails that
/// event alone and the rest is sent again: the ids assigned at `publish` make
/// the events the hub already stored answer their first receipts. A batch
/// the hub finds too large (413: over its `--queue-size`, body limit or rate
/// burst) is sent again as two halves, in order. Anything else (the hub
/// unreachable, a 5xx after the retries) fails every event of the batch with
/// the shared error.
async fn send_batch(publisher: &Publisher, batch: Vec<(PublishRequest, Reply)>) {
    // The parts still to send, the next one last. Each refusal removes an
    // event and each split halves a part, so this ends after at most one
    // request per refused event plus two per event for the splits; a
    // refusal sends the rest of its part again (answered from what is
    // stored for the events before it).
    let mut parts = vec![batch];
    while let Some(mut part) = parts.pop() {
        let (requests, replies): (Vec<_>, Vec<_>) = part.into_iter().unzip();
        for reply in &replies {
            reply.sent.store(true, Ordering::Release);
        }
        let error = match publisher.publish_identified(&requests).await {
            Ok(receipts) => {
                for (reply, receipt) in replies.into_iter().zip(receipts) {
                    reply.send(Ok(receipt));
                }
                continue;
            }
            Err(error) => error,
        };
        part = requests.into_iter().zip(replies).collect();
        tracing::debug!(%error, events = part.len(), "a batch failed");
        match refusal(&error, part.len()) {
            Refusal::Event(index) => {
                let (_, reply) = part.remove(index);
                reply.send(Err(error));
                if !part.is_empty() {
                    parts.push(part);
                }
            }
            Refusal::TooLarge => {
                let second = part.split_off(part.len() / 2);
                parts.push(second);
                parts.push(part);
            }
            Refusal::Batch => fail_all(part, error),
        }
    }
}

/// How a failed batch is taken apart.
enum Refusal {
    /// The hub refused the event at this index of the batch.
    Event(usize),
    /// The batch is too large as a whole; halves may pass.
    TooLarge,
    /// The whole batch failed.
    Batch,
}

fn refusal(error: &PublishError, events: usize) -> Refusal {
    let Some(hub) = error.hub_error() else {
        return Refusal::Batch;
    };
    match (hub.code, hub.index) {
        (ErrorCode::InvalidRequest | ErrorCode::Conflict, Some(index)) if index < events => {
            Refusal::Event(index)
        }
        (ErrorCode::TooLarge, _) if events > 1 => Refusal::TooLarge,
        _ => Refusal::Batch,
    }
}

/// Fails every event of `part` with `error`: an event sent alone gets it as
/// its own, several share it as [`PublishError::Batch`].
fn fail_all(mut part: Vec<(PublishRequest, Reply)>, error: PublishError) {
    if part.len() == 1
        && let Some((_, reply)) = part.pop()
    {
        reply.send(Err(error));
        return;
    }
    let shared = match error {
        PublishError::Http(error) => Arc::new(error),
        PublishError::Batch(error) => error,
        PublishError::ReceiptCount { sent, got } => {
            for (_, reply) in part {
                reply.send(Err(PublishError::ReceiptCount { sent, got }));
            }
            return;
        }
        PublishError::ReceiptMismatch { sent, receipt } => {
            for (_, reply) in part {
                let (sent, receipt) = (sent.clone(), receipt.clone());
                reply.send(Err(PublishError::ReceiptMismatch { sent, receipt }));
            }
            return;
        }
        PublishError::Stopped | PublishError::StoppedWhileSending => return,
    };
    for (_, reply) in part {
        reply.send(Err(PublishError::Batch(shared.clone())));
    }
}
