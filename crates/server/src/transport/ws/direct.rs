//! Event frames written by the fan-out straight to a quiet connection's
//! socket ([`Outbox::deliver`](crate::core::outbox::Outbox::deliver)), as
//! the text frames the writer would have sent: one socket write per
//! frame, with no wake-up of the connection's task in between.

use std::io::Cursor;

use tokio::io::AsyncWrite;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::coalesce::Direct;
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

/// The header of a whole, unmasked text message (a server's).
const TEXT: FrameHeader = FrameHeader {
    is_final: true,
    rsv1: false,
    rsv2: false,
    rsv3: false,
    opcode: OpCode::Data(Data::Text),
    mask: None,
};

/// The longest header [`TEXT`] formats to: 2 bytes and a 64-bit length.
const MAX_HEAD: usize = 10;

impl<S: AsyncWrite + Unpin + Send + std::fmt::Debug> DirectWrite for FrameWriter<S> {
    fn try_write(&self, frame: &OutFrame) -> Wrote {
        let mut head = Cursor::new([0u8; MAX_HEAD]);
        if TEXT.format(frame.text.len() as u64, &mut head).is_err() {
            return Wrote::Nothing;
        }
        let length = usize::try_from(head.position()).unwrap_or(MAX_HEAD);
        self.socket
            .try_write(&head.get_ref()[..length], &frame.text)
    }
}
