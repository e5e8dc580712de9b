//! [`BatchingPublisher`]: events queued in a bounded buffer and published in
//! batches by a task the handle owns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use herald_protocol::{PublishReceipt, PublishRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::PublishError;
use crate::publisher::{Publisher, assign_id};
use crate::task::OwnedTask;

/// How many batches' worth of events the buffer holds before `publish` waits.
const BUFFERED_BATCHES: usize = 4;

/// How long [`BatchingPublisher::close`] waits for the last flush.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

type Reply = oneshot::Sender<Result<PublishReceipt, PublishError>>;

#[derive(Debug)]
enum Command {
    Publish(PublishRequest, Reply),
    Flush(oneshot::Sender<()>),
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
/// [`Publisher::publish_batch`], with ids assigned at `publish` time.
///
/// The flush task belongs to this handle: [`close`](BatchingPublisher::close)
/// flushes what is queued and stops it; dropping the handle stops it at once,
/// dropping queued events (their [`PendingReceipt`]s resolve to
/// [`PublishError::Stopped`]).
#[derive(Debug)]
pub struct BatchingPublisher {
    commands: mpsc::Sender<Command>,
    task: OwnedTask,
}

/// The receipt of a queued event, once its batch is published. Awaiting it is
/// optional, but only it tells a failure: a batch the hub refused (or could
/// not be reached for) fails every event of it.
#[derive(Debug)]
pub struct PendingReceipt(oneshot::Receiver<Result<PublishReceipt, PublishError>>);

impl Future for PendingReceipt {
    type Output = Result<PublishReceipt, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(PublishError::Stopped)))
    }
}

impl Publisher {
    /// A batching handle over this publisher: batches of at most `max_batch`
    /// events (at least 1, at most [`MAX_BATCH`]; the hub takes at most its
    /// `--queue-size`, 1024 by default, per batch), each sent at most
    /// `max_delay` after its first event was queued. Must be called inside a
    /// tokio runtime.
    pub fn batching(&self, max_batch: usize, max_delay: Duration) -> BatchingPublisher {
        let max_batch = max_batch.clamp(1, MAX_BATCH);
        let (commands, receiver) = mpsc::channel(max_batch.saturating_mul(BUFFERED_BATCHES));
        let task = OwnedTask::spawn(flush_loop(self.clone(), receiver, max_batch, max_delay));
        BatchingPublisher { commands, task }
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
        let (reply, receipt) = oneshot::channel();
        self.commands
            .send(Command::Publish(request, reply))
            .await
            .map_err(|_| PublishError::Stopped)?;
        Ok(PendingReceipt(receipt))
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
        let BatchingPublisher { commands, task } = self;
        drop(commands);
        task.join(CLOSE_LIMIT).await;
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
        match commands.recv().await {
            None => return,
            Some(Command::Flush(done)) => flushed.push(done),
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
                            None => {
                                open = false;
                                break;
                            }
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

async fn send_batch(publisher: &Publisher, batch: Vec<(PublishRequest, Reply)>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match publisher.publish_batch(requests).await {
        Ok(receipts) => {
            for (reply, receipt) in replies.into_iter().zip(receipts) {
                let _ = reply.send(Ok(receipt));
            }
        }
        Err(error) => {
            tracing::debug!(%error, "a batch failed");
            let shared = match error {
                PublishError::Http(error) => Arc::new(error),
                PublishError::Batch(error) => error,
                PublishError::ReceiptCount { sent, got } => {
                    for reply in replies {
                        let _ = reply.send(Err(PublishError::ReceiptCount { sent, got }));
                    }
                    return;
                }
                PublishError::Stopped => {
                    return;
                }
            };
            for reply in replies {
                let _ = reply.send(Err(PublishError::Batch(shared.clone())));
            }
        }
    }
}
