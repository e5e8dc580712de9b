//! A connection's outgoing bytes, gathered into one socket write per flush
//! and held only until written.
//!
//! tungstenite's own write buffer keeps the capacity of the largest batch
//! it ever held for the connection's whole life (kilobytes, once a burst of
//! events queued up). So tungstenite hands every frame straight through
//! (`write_buffer_size(0)`) and the frames gather here instead: written
//! together on flush (or once `limit` bytes wait), then the buffer is
//! released, and an idle connection holds none.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::outbox::Wrote;

/// `S` with its writes coalesced until a flush (reads pass through). The
/// socket is shared with [`Direct`] handles, which write whole frames to it
/// from outside the connection's task when nothing is pending.
#[derive(Debug)]
pub(crate) struct Coalescing<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

#[derive(Debug)]
struct Shared<S> {
    inner: S,
    /// Bytes accepted and not yet written; `written` of them already were.
    pending: Vec<u8>,
    written: usize,
    /// At most this much waits before a write must first go out.
    limit: usize,
}

/// A handle that writes to a [`Coalescing`] socket at once, without waiting.
#[derive(Debug)]
pub(crate) struct Direct<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

impl<S> Coalescing<S> {
    pub(crate) fn new(inner: S, limit: usize) -> Coalescing<S> {
        Coalescing {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                pending: Vec::new(),
                written: 0,
                limit: limit.max(1),
            })),
        }
    }

    /// A handle for writing to this socket from elsewhere.
    pub(crate) fn direct(&self) -> Direct<S> {
        Direct {
            shared: self.shared.clone(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Direct<S> {
    /// Writes `parts` in one call when nothing is pending (so they cannot
    /// overtake earlier bytes) and the socket takes them without waiting;
    /// what it did not take stays pending (see [`Wrote::Part`]). The
    /// caller must know no frame is between the connection's writer and
    /// this socket.
    pub(crate) fn try_write(&self, head: &[u8], body: &[u8]) -> Wrote {
        let mut shared = self.shared.lock();
        if !shared.pending.is_empty() {
            return Wrote::Nothing;
        }
        // Not waiting: a socket that is not writable now is left to the
        // connection's writer, which waits for it with its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        let parts = [IoSlice::new(head), IoSlice::new(body)];
        let taken = match Pin::new(&mut shared.inner).poll_write_vectored(&mut cx, &parts) {
            Poll::Ready(Ok(taken)) if taken > 0 => taken,
            _ => return Wrote::Nothing,
        };
        if taken >= head.len() + body.len() {
            return Wrote::All;
        }
        let (head_rest, body_rest) = if taken < head.len() {
            (&head[taken..], body)
        } else {
            (&head[head.len()..], &body[taken - head.len()..])
        };
        shared.pending.extend_from_slice(head_rest);
        shared.pending.extend_from_slice(body_rest);
        Wrote::Part
    }
}

impl<S: AsyncWrite + Unpin> Shared<S> {
    /// Writes out everything pending, then lets its buffer go.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalescing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.shared.lock().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        if shared.pending.len() >= shared.limit {
            ready!(shared.poll_write_out(cx))?;
        }
        let n = data.len().min(shared.limit - shared.pending.len());
        shared.pending.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        ready!(shared.poll_write_out(cx))?;
        Pin::new(&mut shared.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        ready!(shared.poll_write_out(cx))?;
        Pin::new(&mut shared.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn writes_reach_the_socket_only_on_flush_and_then_hold_no_buffer() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut socket = Coalescing::new(near, 64 * 1024);
        socket.write_all(b"first ").await.unwrap();
        socket.write_all(b"second").await.unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            far.read_exact(&mut byte),
        )
        .await;
        assert!(early.is_err(), "bytes left before the flush");
        socket.flush().await.unwrap();
        assert_eq!(socket.shared.lock().pending.capacity(), 0);
        let mut got = [0u8; 12];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
    }

    #[tokio::test]
    async fn a_full_buffer_is_written_out_before_more_is_taken() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut socket = Coalescing::new(near, 8);
        // 20 bytes through an 8-byte bound: the first 16 go out unflushed.
        socket.write_all(b"0123456789abcdefghij").await.unwrap();
        assert!(socket.shared.lock().pending.len() <= 8);
        let mut got = [0u8; 16];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"0123456789abcdef");
        socket.flush().await.unwrap();
        let mut rest = [0u8; 4];
        far.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ghij");
    }

    #[tokio::test]
    async fn a_direct_write_goes_out_at_once_unless_bytes_are_pending() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut socket = Coalescing::new(near, 64 * 1024);
        let direct = socket.direct();
        assert_eq!(direct.try_write(b"<", b"first>"), Wrote::All);
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<first>");
        // Bytes fed and not yet flushed come first: a direct write waits.
        socket.write_all(b"fed").await.unwrap();
        assert_eq!(direct.try_write(b"<", b"second>"), Wrote::Nothing);
        socket.flush().await.unwrap();
        let mut got = [0u8; 3];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"fed");
    }

    #[tokio::test]
    async fn what_a_full_socket_did_not_take_of_a_direct_write_leaves_on_the_next_flush() {
        let (near, mut far) = tokio::io::duplex(4);
        let mut socket = Coalescing::new(near, 64 * 1024);
        let direct = socket.direct();
        assert_eq!(direct.try_write(b"<>", b"0123456789"), Wrote::Part);
        assert_eq!(
            direct.try_write(b"<>", b"later"),
            Wrote::Nothing,
            "a write overtook the rest of the previous one"
        );
        let mut got = [0u8; 12];
        let (flushed, read) = tokio::join!(socket.flush(), far.read_exact(&mut got));
        flushed.unwrap();
        read.unwrap();
        assert_eq!(&got, b"<>0123456789");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_blocks_writes_at_the_bound() {
        let (near, _far) = tokio::io::duplex(16);
        let mut socket = Coalescing::new(near, 32);
        // The pipe takes 16, the buffer 32: nothing more is accepted.
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            socket.write_all(&[7u8; 64]),
        )
        .await;
        assert!(blocked.is_err(), "an unbounded amount was accepted");
        assert!(socket.shared.lock().pending.len() <= 32);
    }
}
