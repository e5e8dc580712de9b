//! The WebSocket frames the hub writes itself, as a server does (whole,
//! unmasked): their headers, formatted once per frame into a few bytes on
//! the stack, and the close frame's payload.

use std::io::Cursor;

use herald_protocol::CloseReason;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// A whole text message.
pub(crate) const TEXT: FrameHeader = header(OpCode::Data(Data::Text), false);

/// A whole text message sent compressed (`permessage-deflate`: RSV1 set).
pub(crate) const COMPRESSED_TEXT: FrameHeader = header(OpCode::Data(Data::Text), true);

/// A protocol ping.
pub(crate) const PING: FrameHeader = header(OpCode::Control(Control::Ping), false);

/// A close frame.
pub(crate) const CLOSE: FrameHeader = header(OpCode::Control(Control::Close), false);

const fn header(opcode: OpCode, compressed: bool) -> FrameHeader {
    FrameHeader {
        is_final: true,
        rsv1: compressed,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    }
}

/// The longest header a server's frame has: 2 bytes and a 64-bit length.
pub(crate) const MAX_HEAD: usize = 10;

/// A frame's header, formatted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    bytes: [u8; MAX_HEAD],
    len: usize,
}

impl Head {
    /// The header of a `header` frame carrying `payload` bytes.
    pub(crate) fn new(header: &FrameHeader, payload: usize) -> Head {
        let mut out = Cursor::new([0u8; MAX_HEAD]);
        // An unmasked header always fits in `MAX_HEAD` bytes, so this
        // cannot fail; the length stays 0 if it ever did.
        let len = match header.format(payload as u64, &mut out) {
            Ok(()) => usize::try_from(out.position()).unwrap_or(0),
            Err(_) => 0,
        };
        Head {
            bytes: out.into_inner(),
            len,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// No header: bytes queued as they are.
    pub(crate) fn empty() -> Head {
        Head {
            bytes: [0; MAX_HEAD],
            len: 0,
        }
    }
}

/// A close frame's payload: the code, then the reason.
pub(crate) fn close_payload(code: CloseReason, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.0.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use tungstenite::protocol::frame::FrameHeader;

    use super::*;

    /// What tungstenite reads from `head`: the header, and the payload length it announces.
    fn read_back(head: Head) -> (FrameHeader, u64) {
        let mut cursor = Cursor::new(head.as_bytes().to_vec());
        FrameHeader::parse(&mut cursor).unwrap().unwrap()
    }

    #[test]
    fn headers_read_back_as_the_frames_they_announce_at_every_length_encoding() {
        for length in [0, 125, 126, 65_535, 65_536, 1 << 40] {
            for header in [TEXT, COMPRESSED_TEXT] {
                let (read, read_length) = read_back(Head::new(&header, length));
                assert_eq!(read, header);
                assert_eq!(read_length, length as u64);
            }
        }
        assert_eq!(Head::new(&PING, 0).as_bytes(), [0x89, 0]);
        assert_eq!(Head::new(&CLOSE, 2).as_bytes(), [0x88, 2]);
    }

    #[test]
    fn a_close_payload_is_the_code_in_network_order_then_the_reason() {
        assert_eq!(close_payload(CloseReason(4001), "bye"), b"\x0f\xa1bye");
    }
}
