//! `permessage-deflate` (RFC 7692), accepted when `--compression` is on and
//! a client offers it.
//!
//! # Why it is implemented here
//!
//! axum 0.8's WebSocket is tungstenite 0.29, which has no compression and
//! refuses every frame with RSV1 set. The crates that do offer it (yawc,
//! and the tungstenite forks people keep for this one feature) compress
//! in each connection's writer, with a compressor per connection. A hub
//! sends the same event to every subscriber, so that is one compression per
//! delivery. Measured with flate2 (its pure-Rust backend) on this machine,
//! an 8.3 KB LLM-style event (an `agent.message` of prose) deflates to
//! 2.7 KB (3.1×) in 32 µs at level 1 with a reused compressor (2.3 KB in
//! 95 µs at level 6; a fresh compressor adds ~110 µs of allocation), where
//! a whole uncompressed delivery costs the hub 0.34 µs (`bench/results`):
//! per connection, 1000 subscribers would cost 32 ms of CPU per event
//! instead of 0.34 ms. Herald's invariant is one
//! serialization per publish, and the same holds here: the hub negotiates
//! `server_no_context_takeover`, so an event's compressed form is the same
//! for every connection, compressed once (`Deflater`) and sent as a raw
//! frame with RSV1 set (tungstenite writes such frames as given). Reading
//! needs less: client messages are small and rare, and [`Inflating`], a
//! layer under tungstenite, turns each compressed message back into the
//! plain frame tungstenite expects. With compression off nothing here runs:
//! the socket is tungstenite's alone. [`Inflating`] works on either
//! side: the benchmark's clients read a compressing hub through it.
//!
//! # The bound
//!
//! A compressed message is inflated into a buffer that never grows past
//! `--max-frame-size` (plus one byte, to see that it is over); a message
//! that would is refused there, and the connection is closed with 1009, so
//! a small "deflate bomb" can allocate no more than a plain frame could.
//! The hub also negotiates `client_no_context_takeover`, so it keeps no
//! inflate state between a client's messages.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, header};
use bytes::{Buf as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// The hub's answer in `Sec-WebSocket-Extensions` when it accepts.
pub(crate) const AGREED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Frames smaller than this are sent as they are: deflate barely shrinks a
/// short JSON object, and the RFC lets each message choose.
pub(crate) const MIN_COMPRESSED: usize = 256;

/// The 4 bytes a sync flush ends with, removed when sending (RFC 7692 §7.2.1)
/// and put back before inflating.
const SYNC_TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Whether `Sec-WebSocket-Extensions` offers `permessage-deflate` with
/// parameters the hub can accept: any, except a `server_max_window_bits`
/// below 15 (flate2's pure-Rust backend always uses the full window).
pub(crate) fn offered(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            parts.next() == Some("permessage-deflate")
                && parts.all(|param| {
                    let (name, value) = param.split_once('=').unwrap_or((param, ""));
                    match name.trim() {
                        "server_no_context_takeover"
                        | "client_no_context_takeover"
                        | "client_max_window_bits" => true,
                        "server_max_window_bits" => value.trim().trim_matches('"') == "15",
                        _ => false,
                    }
                })
        })
}

/// Compresses frames for every compressed connection of a hub, each event
/// frame once: the writers of all its subscribers share the result.
#[derive(Debug, Default)]
pub(crate) struct Deflater {
    recent: Mutex<Recent>,
}

/// Recently compressed event frames, by the identity of their shared bytes
/// (each kept, so that its address cannot be reused while it is a key).
#[derive(Debug, Default)]
struct Recent {
    by_frame: HashMap<(usize, usize), Bytes>,
    order: VecDeque<Bytes>,
    bytes: usize,
}

/// How many compressed event frames are kept, and how many bytes of them.
const RECENT_FRAMES: usize = 1024;
const RECENT_BYTES: usize = 16 << 20;

fn identity(frame: &Bytes) -> (usize, usize) {
    (frame.as_ptr() as usize, frame.len())
}

impl Deflater {
    /// The payload of `frame` compressed for a message with RSV1 set, or
    /// `None` when it is sent as it is. An event frame (`shared`: the same
    /// bytes go to every subscriber) is compressed once for all.
    pub(crate) fn compress(&self, frame: &Bytes, shared: bool) -> Option<Bytes> {
        if frame.len() < MIN_COMPRESSED {
            return None;
        }
        if !shared {
            return Some(deflate(frame));
        }
        let key = identity(frame);
        if let Some(compressed) = self.recent.lock().by_frame.get(&key) {
            return Some(compressed.clone());
        }
        // Compressed outside the lock: another writer may do the same
        // frame meanwhile, and the first to store it wins.
        let compressed = deflate(frame);
        let mut recent = self.recent.lock();
        if recent.by_frame.contains_key(&key) {
            return recent.by_frame.get(&key).cloned();
        }
        recent.bytes += compressed.len();
        recent.by_frame.insert(key, compressed.clone());
        recent.order.push_back(frame.clone());
        while recent.order.len() > RECENT_FRAMES || recent.bytes > RECENT_BYTES {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            if let Some(gone) = recent.by_frame.remove(&identity(&oldest)) {
                recent.bytes -= gone.len();
            }
        }
        Some(compressed)
    }
}

thread_local! {
    /// Each thread's compressor, reset between messages: making one costs
    /// more than compressing a large event with it (see the module docs).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Raw deflate (level 1: a third of level 6's time for 15 % more bytes on
/// prose) with a sync flush, the 4-byte tail removed (RFC 7692 §7.2.1).
fn deflate(input: &[u8]) -> Bytes {
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        deflate_with(compressor, input)
    })
}

fn deflate_with(compressor: &mut Compress, input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        // Writing to a Vec with spare room: an error is impossible here, and
        // a full buffer is grown and the call repeated.
        let _ = compressor.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync);
        if compressor.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    Bytes::from(out)
}

/// Why a compressed message from a client was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InflateError {
    /// It inflates (or arrives) past `--max-frame-size`: closed with 1009.
    #[error("a compressed message larger than {0} bytes once inflated")]
    TooBig(usize),
    /// Not valid deflate data.
    #[error("a compressed message that does not inflate: {0}")]
    Corrupt(String),
    /// A frame out of place in a compressed message.
    #[error("{0}")]
    Protocol(&'static str),
}

impl InflateError {
    /// The IO error tungstenite reports for it (and the reader finds again).
    fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }
}

/// Inflates `compressed` (one message's payload, its tail removed), never
/// holding more than `limit + 1` bytes of output.
fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    /// Output is grown this much at a time, up to the limit.
    const STEP: usize = 16 * 1024;
    let mut inflater = Decompress::new(false);
    let mut out: Vec<u8> = Vec::new();
    for input in [compressed, &SYNC_TAIL[..]] {
        let start = inflater.total_in();
        loop {
            let consumed = (inflater.total_in() - start) as usize;
            let room = (limit + 1).saturating_sub(out.len()).min(STEP);
            if room == 0 {
                return Err(InflateError::TooBig(limit));
            }
            out.reserve_exact(room);
            let before = out.len();
            inflater
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|error| InflateError::Corrupt(error.to_string()))?;
            if out.len() > limit {
                return Err(InflateError::TooBig(limit));
            }
            let done = (inflater.total_in() - start) as usize == input.len();
            if done && out.len() < out.capacity() {
                break;
            }
            if out.len() == before && !done && out.len() < out.capacity() {
                return Err(InflateError::Corrupt("the stream stopped early".to_owned()));
            }
        }
    }
    Ok(out)
}

/// A compressed message being read: its opcode, the compressed bytes so
/// far, and the frame they are coming in.
#[derive(Debug)]
struct Compressed {
    opcode: OpCode,
    data: Vec<u8>,
    /// Payload bytes of the current frame still to come, its mask, how many
    /// of its bytes were unmasked so far, and whether it ends the message.
    remaining: u64,
    mask: Option<[u8; 4]>,
    offset: usize,
    last: bool,
}

/// The read side of a compressed connection, under tungstenite: frames of
/// compressed messages are collected, inflated (within the bound) and
/// handed on as one plain frame; every other frame passes through as it
/// came. Writes pass through untouched.
#[derive(Debug)]
pub struct Inflating<S> {
    inner: S,
    limit: usize,
    /// The mask of the plain frames handed on: a zero key on the hub's side
    /// (tungstenite wants clients' frames masked; a zero key leaves the
    /// bytes as they are), none on a client's.
    mask: Option<[u8; 4]>,
    /// Bytes read from the socket, not yet looked at.
    raw: BytesMut,
    /// Bytes ready for tungstenite.
    ready: BytesMut,
    /// Payload bytes of a passing frame still to forward.
    passing: u64,
    /// The compressed message being read.
    message: Option<Compressed>,
    /// After bytes that are not a frame: everything passes (tungstenite
    /// reports the error).
    opaque: bool,
}

impl<S> Inflating<S> {
    /// The hub's side: reads a client's frames from `inner`; a message
    /// inflating past `limit` bytes is refused (closed with 1009).
    pub fn for_server(inner: S, limit: usize) -> Inflating<S> {
        Inflating::new(inner, limit, Some([0; 4]))
    }

    /// A client's side: reads a compressing hub's frames from `inner`.
    pub fn for_client(inner: S, limit: usize) -> Inflating<S> {
        Inflating::new(inner, limit, None)
    }

    /// The socket under it, to read past the frames (and what was read of
    /// them).
    pub(crate) fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn new(inner: S, limit: usize, mask: Option<[u8; 4]>) -> Inflating<S> {
        Inflating {
            inner,
            limit,
            mask,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            passing: 0,
            message: None,
            opaque: false,
        }
    }

    /// Moves what `raw` holds towards `ready`, as far as it goes.
    fn process(&mut self) -> Result<(), InflateError> {
        loop {
            if self.opaque {
                let all = self.raw.split();
                self.ready.extend_from_slice(&all);
                return Ok(());
            }
            if self.passing > 0 {
                let n = usize::try_from(self.passing)
                    .unwrap_or(usize::MAX)
                    .min(self.raw.len());
                if n == 0 {
                    return Ok(());
                }
                let chunk = self.raw.split_to(n);
                self.ready.extend_from_slice(&chunk);
                self.passing -= n as u64;
                continue;
            }
            if let Some(message) = &mut self.message
                && (message.remaining > 0 || message.last)
            {
                let n = usize::try_from(message.remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.raw.len());
                let chunk = self.raw.split_to(n);
                let start = message.data.len();
                message.data.extend_from_slice(&chunk);
                if let Some(mask) = message.mask {
                    for (i, byte) in message.data[start..].iter_mut().enumerate() {
                        *byte ^= mask[(message.offset + i) % 4];
                    }
                }
                message.offset += n;
                message.remaining -= n as u64;
                if message.remaining > 0 {
                    return Ok(());
                }
                if message.last {
                    self.finish()?;
                    continue;
                }
                message.offset = 0;
            }
            if !self.next_header()? {
                return Ok(());
            }
        }
    }

    /// Reads the next frame header, if it has all arrived; whether it had.
    fn next_header(&mut self) -> Result<bool, InflateError> {
        let mut cursor = Cursor::new(&self.raw[..]);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(false),
            Err(_) => {
                self.opaque = true;
                return Ok(true);
            }
        };
        let header_length = cursor.position() as usize;
        let data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let continuation = header.opcode == OpCode::Data(Data::Continue);
        match &mut self.message {
            None if data && header.rsv1 => {
                if length > self.limit as u64 {
                    return Err(InflateError::TooBig(self.limit));
                }
                self.raw.advance(header_length);
                self.message = Some(Compressed {
                    opcode: header.opcode,
                    data: Vec::new(),
                    remaining: length,
                    mask: header.mask,
                    offset: 0,
                    last: header.is_final,
                });
            }
            Some(message) if continuation => {
                if message.data.len() as u64 + length > self.limit as u64 {
                    return Err(InflateError::TooBig(self.limit));
                }
                self.raw.advance(header_length);
                message.remaining = length;
                message.mask = header.mask;
                message.offset = 0;
                message.last = header.is_final;
            }
            Some(_) if data => {
                return Err(InflateError::Protocol(
                    "a new message began inside a compressed one",
                ));
            }
            _ => {
                // Control frames, and messages sent uncompressed.
                let head = self.raw.split_to(header_length);
                self.ready.extend_from_slice(&head);
                self.passing = length;
            }
        }
        Ok(true)
    }

    /// Inflates the finished message and queues it as one plain frame.
    fn finish(&mut self) -> Result<(), InflateError> {
        let Some(message) = self.message.take() else {
            return Ok(());
        };
        let plain = inflate(&message.data, self.limit)?;
        let header = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: message.opcode,
            mask: self.mask,
        };
        let mut head = Vec::with_capacity(14);
        header
            .format(plain.len() as u64, &mut head)
            .map_err(|error| InflateError::Corrupt(error.to_string()))?;
        self.ready.extend_from_slice(&head);
        self.ready.extend_from_slice(&plain);
        Ok(())
    }
}

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 4096;

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end: whatever is left goes on, for tungstenite to judge.
                let rest = this.raw.split();
                this.ready.extend_from_slice(&rest);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            this.process().map_err(InflateError::into_io)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Whether a socket error is a compressed message over the bound.
pub(crate) fn too_big(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<InflateError>())
        .is_some_and(|error| matches!(error, InflateError::TooBig(_)))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// A client frame: masked, RSV1 when compressed.
    fn frame(opcode: OpCode, rsv1: bool, last: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let header = FrameHeader {
            is_final: last,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(mask),
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(input: Vec<u8>, limit: usize) -> std::io::Result<Vec<u8>> {
        let mut reader = Inflating::for_server(&input[..], limit);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// The payload of a single plain frame from the hub's reader.
    fn payload_of(plain: &[u8]) -> Vec<u8> {
        let mut cursor = Cursor::new(plain);
        let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(!header.rsv1);
        let start = cursor.position() as usize;
        plain[start..start + length as usize].to_vec()
    }

    const TEXT: OpCode = OpCode::Data(Data::Text);

    /// `n` zeros at the best compression: what a bomb's sender would use.
    fn bomb(n: usize) -> Bytes {
        deflate_with(
            &mut Compress::new(Compression::best(), false),
            &vec![0u8; n],
        )
    }

    #[test]
    fn deflate_then_inflate_is_the_identity() {
        let text = r#"{"type":"event","data":{"token":"the quick brown fox "}}"#.repeat(40);
        let compressed = deflate(text.as_bytes());
        assert!(compressed.len() < text.len() / 5, "{}", compressed.len());
        assert!(!compressed.ends_with(&SYNC_TAIL));
        assert_eq!(inflate(&compressed, 1 << 20).unwrap(), text.as_bytes());
    }

    #[tokio::test]
    async fn a_compressed_message_in_fragments_reaches_tungstenite_as_one_plain_frame() {
        let text = "hello, deflate! ".repeat(64);
        let compressed = deflate(text.as_bytes());
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut input = frame(TEXT, true, false, a);
        input.extend(frame(
            OpCode::Control(tungstenite::protocol::frame::coding::Control::Ping),
            false,
            true,
            b"p",
        ));
        input.extend(frame(OpCode::Data(Data::Continue), false, true, b));
        let out = read_all(input, 1 << 20).await.unwrap();
        // The ping passes first (as it came), then the whole message.
        let mut cursor = Cursor::new(&out[..]);
        let (ping, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(matches!(ping.opcode, OpCode::Control(_)));
        let rest = &out[cursor.position() as usize + length as usize..];
        assert_eq!(payload_of(rest), text.as_bytes());
    }

    #[tokio::test]
    async fn uncompressed_frames_pass_through_unchanged() {
        let input = frame(TEXT, false, true, b"{\"action\":\"ping\"}");
        assert_eq!(read_all(input.clone(), 1 << 20).await.unwrap(), input);
    }

    #[tokio::test]
    async fn a_deflate_bomb_is_refused_at_the_bound_as_too_big() {
        // 16 MiB of zeros deflate to about 16 KiB.
        let bomb = bomb(16 << 20);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let error = read_all(frame(TEXT, true, true, &bomb), 64 * 1024)
            .await
            .unwrap_err();
        assert!(too_big(&error), "{error}");
    }

    #[test]
    fn inflating_never_holds_more_than_the_bound() {
        let bomb = bomb(16 << 20);
        let limit = 100_000;
        assert!(matches!(
            inflate(&bomb, limit),
            Err(InflateError::TooBig(_))
        ));
        // Exactly at the bound is fine.
        let exact = deflate(&vec![7u8; limit]);
        assert_eq!(inflate(&exact, limit).unwrap().len(), limit);
    }

    #[test]
    fn offers_are_accepted_unless_they_need_a_smaller_window() {
        let offer = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value.parse().unwrap());
            offered(&headers)
        };
        assert!(offer("permessage-deflate; client_max_window_bits"));
        assert!(offer("permessage-deflate"));
        assert!(offer(
            "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover"
        ));
        assert!(!offer("permessage-deflate; server_max_window_bits=10"));
        assert!(!offer("x-webkit-deflate-frame"));
        assert!(offer(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ));
    }

    #[test]
    fn an_event_frame_is_compressed_once_for_every_connection() {
        let deflater = Deflater::default();
        let frame = Bytes::from("x".repeat(1000));
        let first = deflater.compress(&frame, true).unwrap();
        let second = deflater.compress(&frame.clone(), true).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "not shared");
        assert!(
            deflater
                .compress(&Bytes::from_static(b"{}"), true)
                .is_none()
        );
    }
}
