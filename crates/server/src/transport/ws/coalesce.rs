//! A connection's outgoing bytes, gathered into one socket write per flush
//! and held only until written.
//!
//! tungstenite's own write buffer keeps the capacity of the largest batch
//! it ever held for the connection's whole life (kilobytes, once a burst of
//! events queued up). So tungstenite hands every frame straight through
//! (`write_buffer_size(0)`) and the frames gather here instead: written
//! together on flush (or once `limit` bytes wait), then the buffer is
//! released, and an idle connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `S` with its writes coalesced until a flush (reads pass through).
#[derive(Debug)]
pub(crate) struct Coalescing<S> {
    inner: S,
    /// Bytes accepted and not yet written; `written` of them already were.
    pending: Vec<u8>,
    written: usize,
    /// At most this much waits before a write must first go out.
    limit: usize,
}

impl<S> Coalescing<S> {
    pub(crate) fn new(inner: S, limit: usize) -> Coalescing<S> {
        Coalescing {
            inner,
            pending: Vec::new(),
            written: 0,
            limit: limit.max(1),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalescing<S> {
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
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= this.limit {
            ready!(this.poll_write_out(cx))?;
        }
        let n = data.len().min(this.limit - this.pending.len());
        this.pending.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
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
        assert_eq!(socket.pending.capacity(), 0);
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
        assert!(socket.pending.len() <= 8);
        let mut got = [0u8; 16];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"0123456789abcdef");
        socket.flush().await.unwrap();
        let mut rest = [0u8; 4];
        far.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ghij");
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
        assert!(socket.pending.len() <= 32);
    }
}
