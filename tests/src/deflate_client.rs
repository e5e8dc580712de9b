//! A WebSocket client that speaks `permessage-deflate`, written on the raw
//! TCP stream (tokio-tungstenite does not compress): it offers the
//! extension, sends frames compressed or not, inflates what the hub sends
//! compressed, and counts the bytes on the wire.

use std::io::Cursor;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::DEFAULT_TIMEOUT;

/// The tail a sync flush ends with (removed on the wire, RFC 7692).
const SYNC_TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// What one frame from the hub was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message: its text (inflated when it came compressed), whether
    /// it came compressed, and its size on the wire (header included).
    Text {
        text: String,
        compressed: bool,
        wire: usize,
    },
    /// A close frame and its code.
    Close(u16),
}

/// A connected client that offered `permessage-deflate`.
#[derive(Debug)]
pub struct DeflateClient {
    stream: TcpStream,
    input: Vec<u8>,
    /// The hub's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
}

/// Raw deflate of `data` at `level` with a sync flush, the tail removed.
pub fn deflate(data: &[u8], level: Compression) -> Vec<u8> {
    let mut compressor = Compress::new(level, false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        let _ = compressor.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync);
        if compressor.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    if out.ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    out
}

fn inflate(payload: &[u8]) -> Result<Vec<u8>> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&SYNC_TAIL);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    loop {
        let consumed = inflater.total_in() as usize;
        inflater.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)?;
        if inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

impl DeflateClient {
    /// Connects to `ws://{addr}{path}` offering `permessage-deflate`.
    pub async fn connect(addr: &str, path: &str) -> Result<DeflateClient> {
        let mut stream = timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")??;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        timeout(DEFAULT_TIMEOUT, async {
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await? == 0 {
                    return Err(std::io::Error::other("EOF in the upgrade response"));
                }
                head.push(byte[0]);
            }
            Ok(())
        })
        .await
        .context("upgrade response timed out")??;
        let head = String::from_utf8_lossy(&head).into_owned();
        ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        Ok(DeflateClient {
            stream,
            input: Vec::new(),
            extensions,
        })
    }

    /// Sends `payload` in one masked frame; `rsv1` marks it compressed.
    pub async fn send_frame(&mut self, payload: &[u8], rsv1: bool) -> Result<()> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let header = FrameHeader {
            is_final: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Data(Data::Text),
            mask: Some(mask),
        };
        let mut frame = Vec::with_capacity(payload.len() + 14);
        header.format(payload.len() as u64, &mut frame)?;
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        timeout(DEFAULT_TIMEOUT, self.stream.write_all(&frame))
            .await
            .context("sending timed out")??;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends `text` compressed (best compression).
    pub async fn send_compressed(&mut self, text: &str) -> Result<()> {
        let payload = deflate(text.as_bytes(), Compression::best());
        self.send_frame(&payload, true).await
    }

    /// The next text or close frame from the hub (pings are skipped).
    pub async fn recv(&mut self) -> Result<Received> {
        loop {
            let mut cursor = Cursor::new(&self.input[..]);
            if let Some((header, length)) = FrameHeader::parse(&mut cursor)? {
                let start = cursor.position() as usize;
                let end = start + usize::try_from(length)?;
                if self.input.len() >= end {
                    let payload: Vec<u8> = self.input[start..end].to_vec();
                    self.input.drain(..end);
                    match header.opcode {
                        OpCode::Data(Data::Text) => {
                            let text = if header.rsv1 {
                                inflate(&payload)?
                            } else {
                                payload
                            };
                            return Ok(Received::Text {
                                text: String::from_utf8(text)?,
                                compressed: header.rsv1,
                                wire: end,
                            });
                        }
                        OpCode::Control(Control::Close) => {
                            let code = payload
                                .get(..2)
                                .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
                            return Ok(Received::Close(code));
                        }
                        OpCode::Control(_) => continue,
                        other => bail!("unexpected frame {other:?}"),
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            let n = timeout(DEFAULT_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .context("no frame in time")??;
            ensure!(n > 0, "the connection ended");
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame whose text satisfies `pred` (others skipped).
    pub async fn recv_text_until(&mut self, pred: impl Fn(&str) -> bool) -> Result<Received> {
        loop {
            match self.recv().await? {
                received @ Received::Text { .. } => {
                    if let Received::Text { text, .. } = &received
                        && pred(text)
                    {
                        return Ok(received);
                    }
                }
                Received::Close(code) => bail!("closed ({code}) while waiting"),
            }
        }
    }
}
