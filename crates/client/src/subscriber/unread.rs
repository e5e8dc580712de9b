//! [`Unread`]: per topic, the seqs of the events and gaps queued for the
//! consumer and not taken yet, so the checkpoints a subscriber gives out
//! never run ahead of what the application has read.
//!
//! The session advances a topic's checkpoint as an event arrives; the event
//! then waits in the subscriber's queues (up to twice its `buffer`) until
//! the application takes it. Checkpoints persisted meanwhile and resumed
//! from would skip those events: [`Unread::hold_back`] puts each topic's
//! checkpoint back to just before its first unread item.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use herald_protocol::Topic;
use herald_protocol::session::Checkpoints;

use super::SubscriberItem;

/// Shared by the connection task (which queues items) and the subscriber
/// (which hands them out); holds no more entries than items are queued.
#[derive(Debug, Clone, Default)]
pub(super) struct Unread(Arc<Mutex<HashMap<Topic, VecDeque<u64>>>>);

impl Unread {
    /// An item was queued for the consumer.
    pub(super) fn queued(&self, item: &SubscriberItem) {
        if let Some((topic, seq)) = first_seq(item) {
            self.lock().entry(topic.clone()).or_default().push_back(seq);
        }
    }

    /// The consumer took an item (items are taken in the order queued).
    pub(super) fn taken(&self, item: &SubscriberItem) {
        if let Some((topic, _)) = first_seq(item) {
            let mut unread = self.lock();
            if let Some(seqs) = unread.get_mut(topic) {
                seqs.pop_front();
                if seqs.is_empty() {
                    unread.remove(topic);
                }
            }
        }
    }

    /// `checkpoints`, each topic with unread items put back to the seq
    /// before the first of them.
    pub(super) fn hold_back(&self, mut checkpoints: Checkpoints) -> Checkpoints {
        for (topic, seqs) in self.lock().iter() {
            let Some(first) = seqs.front() else { continue };
            let read_up_to = first.saturating_sub(1);
            if let Some(checkpoint) = checkpoints.get(topic)
                && checkpoint.seq > read_up_to
            {
                let mut held = checkpoint.clone();
                held.seq = read_up_to;
                checkpoints.insert(topic.clone(), held);
            }
        }
        checkpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, VecDeque<u64>>> {
        // The map is consistent after any panic (one push or pop at a time).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The topic and first seq an item accounts for: an event's seq, a gap's
/// first missing seq.
fn first_seq(item: &SubscriberItem) -> Option<(&Topic, u64)> {
    match item {
        SubscriberItem::Event(event) => Some((&event.topic, event.seq)),
        SubscriberItem::Gap(gap) => Some((&gap.topic, gap.from_seq)),
        _ => None,
    }
}
