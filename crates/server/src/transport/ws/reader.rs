//! A connection's reader: frames in, rate-limited, and handed one at a time
//! to the connection's [`Dialect`], which carries them out.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt as _;
use herald_protocol::{ClientFrame, CloseReason, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::connection::{End, send_error};
use super::dialect::Dialect;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::operations::limits::{FrameLimiter, Verdict};
use crate::transport::deflate::{self, Inflating};
use crate::transport::ws::coalesce::Coalescing;

/// Reads frames until the peer leaves, misbehaves, or the socket fails;
/// gives the stream back with why it ended, for [`linger`].
#[allow(
    clippy::manual_async_fn,
    reason = "a block keeps the future smaller: see `connection::run`"
)]
pub(crate) fn read_loop<S: AsyncRead + AsyncWrite + Unpin, D: Dialect>(
    hub: &Hub,
    conn: &Arc<ConnHandle>,
    mut stream: Box<WebSocketStream<S>>,
    dialect: &D,
) -> impl Future<Output = (End, Box<WebSocketStream<S>>)> {
    async move {
        // The URL's subscriptions and the dialect's state on connect, while
        // the writer already runs: a replay longer than the queue goes out
        // in parts as the writer takes them (boxed: a one-off await).
        Box::pin(dialect.open(hub, conn)).await;
        let mut limiter = FrameLimiter::new(hub.config().client_rate_limit);
        while let Some(message) = stream.next().await {
            conn.saw_peer();
            let message = match message {
                Ok(message) => message,
                Err(error) => return (read_error(error), stream),
            };
            // Every frame read counts, those the rate limit refuses too.
            let metrics = hub.metrics();
            metrics.frames_in.inc();
            conn.frames_received.fetch_add(1, Relaxed);
            if let Message::Text(text) = &message {
                metrics.bytes_in.inc_by(text.len() as u64);
            }
            if matches!(message, Message::Text(_) | Message::Binary(_)) && conn.outbox.close_sent()
            {
                // The hub's close frame is going out: what the peer sends
                // until it answers is read, not acted on (RFC 6455 §1.4).
                continue;
            }
            if matches!(message, Message::Text(_) | Message::Binary(_)) {
                let subscriptions = || match &message {
                    Message::Text(text) if ClientFrame::peek_is_subscription(text.as_str()) => {
                        Some(hub.config().max_subscriptions)
                    }
                    _ => None,
                };
                match limiter.check(subscriptions) {
                    Verdict::Allow => {}
                    Verdict::Refuse => {
                        // Not carried out, but named: the client learns which
                        // request to send again.
                        let reference = match &message {
                            Message::Text(text) => ClientFrame::peek_id(text.as_str()),
                            _ => None,
                        };
                        let limit = hub.config().client_rate_limit;
                        let message = format!("too many frames: at most {limit} a second");
                        send_error(hub, conn, ErrorCode::RateLimited, message, reference);
                        continue;
                    }
                    Verdict::Close => return (End::Flooding, stream),
                }
            }
            match message {
                Message::Text(text) => {
                    // Boxed: the reader's future would otherwise be sized for
                    // the deepest await of any frame, and every idle connection
                    // would carry that size.
                    Box::pin(dialect.receive(hub, conn, text.as_str())).await;
                }
                Message::Binary(bytes) => {
                    metrics.bytes_in.inc_by(bytes.len() as u64);
                    let message =
                        "binary frames are not part of the protocol: send JSON text frames"
                            .to_owned();
                    send_error(hub, conn, ErrorCode::InvalidRequest, message, None);
                }
                Message::Close(frame) => {
                    let code = frame.map(|f| u16::from(f.code));
                    // Unless it answers the hub's own close, which the
                    // writer sent past tungstenite (which would send a
                    // second one).
                    if !conn.outbox.close_sent() {
                        Box::pin(answer_close(&mut stream)).await;
                    }
                    return (End::PeerClosed(code), stream);
                }
                // Never read: tungstenite hands frames over assembled.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        (End::PeerClosed(None), stream)
    }
}

/// Runs `closing` (the writer sending the hub's close frame) while reading
/// and dropping what the peer still sends, until the close frame is out and
/// the peer has then sent nothing for [`QUIET`] (it answered the close, or
/// sent all it had), or it closed its side, or [`LINGER`] passed. A socket
/// closed with unread bytes (the rest of a frame too large, say) is reset,
/// and the reset can reach the peer ahead of the close frame: a browser
/// then never reads the close code and reports 1006.
pub(crate) async fn linger<S: Lingering, F: Future>(stream: &mut WebSocketStream<S>, closing: F) {
    let until = tokio::time::Instant::now() + LINGER;
    let socket = stream.get_mut().socket();
    let mut sink = vec![0; LINGER_BUFFER];
    let mut closing = std::pin::pin!(closing);
    let mut sent = false;
    loop {
        let quiet = if sent {
            (tokio::time::Instant::now() + QUIET).min(until)
        } else {
            until
        };
        tokio::select! {
            _ = &mut closing, if !sent => sent = true,
            read = tokio::time::timeout_at(quiet, socket.read(&mut sink)) => match read {
                Ok(Ok(1..)) => {}
                // The peer closed its side (or the socket failed): the
                // close frame still goes out, within the bound.
                Ok(_) => {
                    if !sent {
                        let _ = tokio::time::timeout_at(until, &mut closing).await;
                    }
                    return;
                }
                Err(_) => return,
            },
        }
    }
}

/// How long a peer the hub is closing may send nothing, once the close
/// frame is out, before the hub takes it that nothing more comes.
const QUIET: Duration = Duration::from_millis(100);

/// What a connection reads frames from, and the socket under it, which
/// [`linger`] reads past the frames: a compressed connection's inflating
/// layer refuses to read on after a frame too large.
pub(crate) trait Lingering: AsyncRead + AsyncWrite + Unpin {
    type Socket: AsyncRead + Unpin + Send;

    fn socket(&mut self) -> &mut Self::Socket;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Lingering for Coalescing<S> {
    type Socket = Coalescing<S>;

    fn socket(&mut self) -> &mut Coalescing<S> {
        self
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Lingering for Inflating<S> {
    type Socket = S;

    fn socket(&mut self) -> &mut S {
        self.inner_mut()
    }
}

/// How long a connection the hub closes keeps reading the peer.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Bytes read at a time while lingering.
const LINGER_BUFFER: usize = 16 * 1024;

/// Answers a peer's close with tungstenite's close frame, so the peer sees a
/// clean close rather than a dropped connection (1006): polled once more,
/// tungstenite queues its answer in the socket's gathered bytes and ends
/// the stream; then they are flushed. Bounded: the peer may not read it.
async fn answer_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut WebSocketStream<S>) {
    let answer = async {
        while stream.next().await.is_some() {}
        stream.get_mut().flush().await
    };
    let _ = tokio::time::timeout(CLOSE_ANSWER, answer).await;
}

/// How long the answer to a peer's close may take to go out.
const CLOSE_ANSWER: Duration = Duration::from_secs(1);

fn read_error(error: tungstenite::Error) -> End {
    match error {
        tungstenite::Error::Capacity(_) => End::TooBig,
        // A compressed message that inflates past the bound.
        tungstenite::Error::Io(error) if deflate::too_big(&error) => End::TooBig,
        // A peer gone without a close frame (its TCP connection closed):
        // nothing to answer.
        error @ tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => End::SocketError(error.to_string()),
        // Frames RFC 6455 forbids (unmasked, reserved bits or opcodes, a
        // control frame fragmented or too long): 1002 (§7.4.1).
        error @ tungstenite::Error::Protocol(_) => {
            End::Violation(CloseReason::PROTOCOL_ERROR, error.to_string())
        }
        // Text that is not UTF-8: 1007 (§8.1).
        error @ tungstenite::Error::Utf8(_) => {
            End::Violation(CloseReason::INVALID_PAYLOAD, error.to_string())
        }
        other => End::SocketError(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;
    use tokio::time::Instant;
    use tungstenite::error::ProtocolError;
    use tungstenite::protocol::Role;

    use super::*;

    /// The hub's side of a connection to `peer`, as `linger` gets it.
    async fn hub_side() -> (WebSocketStream<Coalescing<DuplexStream>>, DuplexStream) {
        let (near, peer) = tokio::io::duplex(256 * 1024);
        let socket = Coalescing::new(near, 64 * 1024);
        let stream = WebSocketStream::from_raw_socket(socket, Role::Server, None).await;
        (stream, peer)
    }

    /// Writes 1 KiB every 10 ms, `times` times.
    async fn keep_sending(peer: &mut DuplexStream, times: usize) {
        for _ in 0..times {
            peer.write_all(&[0; 1024]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_reads_the_peer_until_it_is_quiet_after_the_close_is_out() {
        let (mut stream, mut peer) = hub_side().await;
        let started = Instant::now();
        // The close frame is out at 50 ms; the peer sends the rest of its
        // frame until 290 ms.
        let close = tokio::time::sleep(Duration::from_millis(50));
        tokio::join!(linger(&mut stream, close), keep_sending(&mut peer, 30));
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(380)..Duration::from_millis(420)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_peer_is_waited_for_until_the_close_frame_is_out() {
        let (mut stream, _peer) = hub_side().await;
        let started = Instant::now();
        linger(&mut stream, tokio::time::sleep(Duration::from_millis(500))).await;
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(600)..Duration::from_millis(620)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_sending_is_read_for_a_second_at_most() {
        let (mut stream, mut peer) = hub_side().await;
        let started = Instant::now();
        let close = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            () = linger(&mut stream, close) => {}
            () = keep_sending(&mut peer, 1000) => panic!("the peer stopped first"),
        }
        assert_eq!(started.elapsed(), LINGER);
    }

    #[test]
    fn a_broken_frame_is_a_protocol_error_bad_text_is_invalid_payload_and_a_vanished_peer_is_neither()
     {
        let unmasked = tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert!(matches!(
            read_error(unmasked),
            End::Violation(CloseReason::PROTOCOL_ERROR, _)
        ));
        let text = tungstenite::Error::Utf8("invalid utf-8 sequence".into());
        assert!(matches!(
            read_error(text),
            End::Violation(CloseReason::INVALID_PAYLOAD, _)
        ));
        let gone = tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert!(matches!(read_error(gone), End::SocketError(_)));
    }
}
