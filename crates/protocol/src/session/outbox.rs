//! The offline queue: application frames waiting for the next open connection.

use std::collections::VecDeque;

use crate::frame::ClientFrame;

/// A bounded FIFO of frames. When full, the oldest frame is dropped and
/// returned so the session can report it.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    frames: VecDeque<ClientFrame>,
    capacity: usize,
    dropped: u64,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox {
            frames: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Appends `frame`; returns the frames dropped to make room (the oldest,
    /// or `frame` itself when the capacity is zero).
    pub(crate) fn push(&mut self, frame: ClientFrame) -> Vec<ClientFrame> {
        self.frames.push_back(frame);
        self.trim()
    }

    /// Puts frames that were never transmitted back in front, in order;
    /// returns the frames dropped to stay within capacity (oldest first).
    pub(crate) fn requeue_front(
        &mut self,
        frames: impl DoubleEndedIterator<Item = ClientFrame>,
    ) -> Vec<ClientFrame> {
        for frame in frames.rev() {
            self.frames.push_front(frame);
        }
        self.trim()
    }

    fn trim(&mut self) -> Vec<ClientFrame> {
        let excess = self.frames.len().saturating_sub(self.capacity);
        self.dropped = self.dropped.saturating_add(excess as u64);
        self.frames.drain(..excess).collect()
    }

    /// Takes every queued frame, oldest first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = ClientFrame> + '_ {
        self.frames.drain(..)
    }

    /// Whether `frame` is queued.
    pub(crate) fn contains(&self, frame: &ClientFrame) -> bool {
        self.frames.contains(frame)
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Frames dropped because the queue was full, since the session started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}
