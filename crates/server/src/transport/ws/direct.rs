//! Event frames written by the fan-out straight to a quiet connection's
//! socket ([`Outbox::deliver`](crate::core::outbox::Outbox::deliver)), as
//! the text frames the writer would have sent: one socket write per
//! frame, with no wake-up of the connection's task in between.

use tokio::io::AsyncWrite;

use super::coalesce::Direct;
use super::frames::{Head, TEXT};
use crate::core::outbox::{DirectWrite, OutFrame, Wrote};

/// Writes the core's frames, as they are, as WebSocket text frames.
#[derive(Debug)]
pub(crate) struct FrameWriter<S> {
    socket: Direct<S>,
}

impl<S> FrameWriter<S> {
    pub(crate) fn new(socket: Direct<S>) -> FrameWriter<S> {
        FrameWriter { socket }
    }
}

impl<S: AsyncWrite + Unpin + Send + std::fmt::Debug> DirectWrite for FrameWriter<S> {
    fn try_write(&self, frame: &OutFrame) -> Wrote {
        let head = Head::new(&TEXT, frame.text.len());
        self.socket.try_write(head.as_bytes(), &frame.text)
    }
}
