//! Commands sent and not yet answered: sent again if the link is lost
//! before the hub's `ack` or `error`.

use std::collections::VecDeque;

use crate::frame::{ClientFrame, ClientMessage, RequestId};

/// The commands with a request id transmitted on the current link, oldest
/// first, at most `capacity` of them.
#[derive(Debug, Clone)]
pub(crate) struct Unanswered {
    frames: VecDeque<ClientFrame>,
    capacity: usize,
}

impl Unanswered {
    pub(crate) fn new(capacity: usize) -> Unanswered {
        Unanswered {
            frames: VecDeque::new(),
            capacity,
        }
    }

    /// `frame` was handed to the driver: a command with an id is kept.
    /// Past the capacity, the one sent longest ago is dropped.
    pub(crate) fn sent(&mut self, frame: &ClientFrame) {
        if frame.id.is_none() || !is_command(&frame.message) || self.capacity == 0 {
            return;
        }
        if self.frames.len() >= self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame.clone());
    }

    /// The hub answered the request `reference`, or the driver gave the
    /// frame back unsent: it is dropped.
    pub(crate) fn forget(&mut self, reference: &RequestId) {
        if let Some(at) = self
            .frames
            .iter()
            .rposition(|frame| frame.id.as_ref() == Some(reference))
        {
            self.frames.remove(at);
        }
    }

    /// Takes every kept command, oldest first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = ClientFrame> + '_ {
        self.frames.drain(..)
    }
}

/// Whether `message` asks the hub to do something the application waits
/// on (answered by `ack` or `error`), so it is sent again if the link is
/// lost before the answer.
fn is_command(message: &ClientMessage) -> bool {
    matches!(
        message,
        ClientMessage::Confirm(_)
            | ClientMessage::Cancel(_)
            | ClientMessage::Pause(_)
            | ClientMessage::Resume(_)
    )
}
