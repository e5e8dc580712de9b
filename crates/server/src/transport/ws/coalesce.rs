//! A connection's outgoing bytes, gathered and written together on flush
//! (in as few writes as the socket takes them), held only until written.
//!
//! The connection's writer adds its frames to the gathered bytes
//! ([`Outgoing`]): copied into one buffer ([`Outgoing::frame`]), or, for an
//! event's text that every subscriber shares, kept where it is and written
//! with the others by vectored writes of up to [`MAX_SLICES`] slices
//! ([`Outgoing::shared_frame`]). They go out on flush (or once `limit`
//! bytes wait), then the buffers are released, and an idle connection
//! holds none. tungstenite, which reads the connection, writes its replies
//! to a client's pings through the same gathered bytes (copied, after
//! whatever waits), and the fan-out writes to the socket directly while
//! nothing is gathered ([`Direct`]).

use std::collections::VecDeque;
use std::future::{Future as _, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::Head;
use crate::core::outbox::Wrote;

/// `S` with its writes coalesced until a flush (reads pass through). The
/// socket is shared with the writer's [`Outgoing`] and with [`Direct`]
/// handles, which write whole frames to it from outside the connection's
/// task when nothing is gathered.
#[derive(Debug)]
pub(crate) struct Coalescing<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

#[derive(Debug)]
struct Shared<S> {
    inner: S,
    /// Bytes copied in and not yet written; `written` of them already
    /// were. Only bytes gathered before the first of `parts`.
    pending: Vec<u8>,
    written: usize,
    /// What goes after `pending` on the wire, in order: frames whose
    /// payload is not copied (an event's text, shared by every subscriber),
    /// and bytes copied after one of them (a part with an empty header).
    parts: VecDeque<Part>,
    /// Bytes of `parts` not yet written.
    part_bytes: usize,
    /// Once this much waits, what waits goes out before more is taken
    /// (a frame is taken whole, so up to one frame past it may wait).
    limit: usize,
}

/// The connection writer's way to a [`Coalescing`] socket: whole frames,
/// gathered, written on [`Outgoing::flush`].
#[derive(Debug)]
pub(crate) struct Outgoing<S> {
    shared: Arc<Mutex<Shared<S>>>,
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
                parts: VecDeque::new(),
                part_bytes: 0,
                limit: limit.max(1),
            })),
        }
    }

    /// The handle the connection's writer sends its frames through.
    pub(crate) fn outgoing(&self) -> Outgoing<S> {
        Outgoing {
            shared: self.shared.clone(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Outgoing<S> {
    /// Adds a frame (its formatted header, then its payload) to what the
    /// next flush writes; first writes out what is gathered if that
    /// reached the bound. The frame goes in whole, so it never interleaves
    /// with another writer's.
    pub(crate) async fn frame(&mut self, head: &[u8], payload: &[u8]) -> io::Result<()> {
        poll_fn(|cx| {
            let mut shared = self.shared.lock();
            if shared.waiting() >= shared.limit {
                ready!(shared.poll_write_out(cx))?;
            }
            shared.copy(head, payload);
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Makes room at once for `frames` more uncopied frames
    /// ([`Outgoing::shared_frame`]): room for their parts, or, on a socket
    /// that copies them, for their bytes, about `bytes()` (as
    /// [`Outgoing::reserve`]; counted only then).
    pub(crate) fn reserve_parts(&mut self, frames: usize, bytes: impl FnOnce() -> usize) {
        let mut shared = self.shared.lock();
        if shared.inner.is_write_vectored() {
            shared.parts.reserve(frames);
        } else {
            drop(shared);
            self.reserve(bytes());
        }
    }

    /// Adds a frame whose payload is written from where it is, not copied
    /// (copied all the same to a socket that cannot take several slices in
    /// one write); like [`Outgoing::frame`] otherwise.
    pub(crate) async fn shared_frame(&mut self, head: Head, payload: Bytes) -> io::Result<()> {
        let mut payload = Some(payload);
        poll_fn(|cx| {
            let mut shared = self.shared.lock();
            if shared.waiting() >= shared.limit {
                ready!(shared.poll_write_out(cx))?;
            }
            if let Some(body) = payload.take() {
                if shared.inner.is_write_vectored() {
                    shared.part_bytes += head.as_bytes().len() + body.len();
                    shared.parts.push_back(Part {
                        head,
                        body,
                        sent: 0,
                    });
                } else {
                    shared.copy(head.as_bytes(), &body);
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Makes room at once for about `bytes` more (up to the bound), so that
    /// frames added one by one do not grow the buffer step by step: each
    /// step would copy what is already gathered.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        let mut shared = self.shared.lock();
        let room = bytes.min(shared.limit.saturating_sub(shared.pending.len()));
        shared.pending.reserve(room);
    }

    /// Writes out everything gathered.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut shared = self.shared.lock();
            ready!(shared.poll_write_out(cx))?;
            Pin::new(&mut shared.inner).poll_flush(cx)
        })
        .await
    }

    /// A handle for writing to this socket from outside the connection's task.
    pub(crate) fn direct(&self) -> Direct<S> {
        Direct {
            shared: self.shared.clone(),
        }
    }
}

/// Frames up to this long are copied into one buffer for a direct write:
/// the kernel takes one buffer faster than the same bytes in two parts (a
/// fan-out to 100 quiet connections measured ≈ 10 % faster with `write`
/// than with `writev` of the header and the text). Longer frames go out
/// from their two parts.
const JOINED: usize = 2048;

impl<S: AsyncWrite + Unpin> Direct<S> {
    /// Writes `head` then `body` in one call when nothing is pending (so
    /// they cannot overtake earlier bytes) and the socket takes them
    /// without waiting; what it did not take stays pending (see
    /// [`Wrote::Part`]). The caller must know no frame is between the
    /// connection's writer and this socket.
    pub(crate) fn try_write(&self, head: &[u8], body: &[u8]) -> Wrote {
        let mut shared = self.shared.lock();
        if !shared.pending.is_empty() || !shared.parts.is_empty() {
            return Wrote::Nothing;
        }
        // Not waiting: a socket that is not writable now is left to the
        // connection's writer, which waits for it with its own waker.
        let total = head.len() + body.len();
        let written = if total <= JOINED {
            let mut joined = [0u8; JOINED];
            let (front, back) = joined[..total].split_at_mut(head.len());
            front.copy_from_slice(head);
            back.copy_from_slice(body);
            write_now(&mut shared.inner, &[IoSlice::new(&joined[..total])])
        } else {
            write_now(&mut shared.inner, &[IoSlice::new(head), IoSlice::new(body)])
        };
        let taken = match written {
            Poll::Ready(Ok(taken)) if taken > 0 => taken,
            _ => return Wrote::Nothing,
        };
        if taken >= total {
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

/// Writes what `socket` takes now, without waiting and outside tokio's
/// per-task budget: a fan-out writes to every quiet connection from one
/// task, and past the budget's 128 polls every socket would answer "not
/// ready", leaving the rest of the fan-out to the connections' own tasks.
fn write_now<S: AsyncWrite + Unpin>(
    socket: &mut S,
    parts: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let write = poll_fn(|cx| match parts {
        [one] => Pin::new(&mut *socket).poll_write(cx, one),
        _ => Pin::new(&mut *socket).poll_write_vectored(cx, parts),
    });
    let mut cx = Context::from_waker(Waker::noop());
    pin!(tokio::task::unconstrained(write)).poll(&mut cx)
}

/// A frame queued uncopied ([`Outgoing::shared_frame`]), or bytes copied
/// after one (with an empty header): its header, its payload, and how many
/// of their bytes were written.
#[derive(Debug)]
struct Part {
    head: Head,
    body: Bytes,
    sent: usize,
}

/// Most slices one vectored write carries (Linux's `IOV_MAX`); what is
/// past them goes in the next write.
const MAX_SLICES: usize = 1024;

impl<S> Shared<S> {
    /// Bytes waiting to be written.
    fn waiting(&self) -> usize {
        self.pending.len() - self.written + self.part_bytes
    }

    /// Adds `head` and `payload`, copied, after everything waiting: into
    /// the buffer while no uncopied frame waits, else as a part of their own.
    fn copy(&mut self, head: &[u8], payload: &[u8]) {
        if head.is_empty() && payload.is_empty() {
            // An empty part would make a write of nothing, which reads as
            // a socket that takes no more.
            return;
        }
        if self.parts.is_empty() {
            self.pending.reserve(head.len() + payload.len());
            self.pending.extend_from_slice(head);
            self.pending.extend_from_slice(payload);
        } else {
            let mut body = Vec::with_capacity(head.len() + payload.len());
            body.extend_from_slice(head);
            body.extend_from_slice(payload);
            self.part_bytes += body.len();
            self.parts.push_back(Part {
                head: Head::empty(),
                body: body.into(),
                sent: 0,
            });
        }
    }

    /// Counts the first `n` waiting bytes as written: the buffer's, then
    /// the parts' in order; a part written whole is dropped.
    fn advance(&mut self, mut n: usize) {
        let copied = (self.pending.len() - self.written).min(n);
        self.written += copied;
        n -= copied;
        while n > 0 {
            let Some(part) = self.parts.front_mut() else {
                break;
            };
            let left = part.head.as_bytes().len() + part.body.len() - part.sent;
            if n < left {
                part.sent += n;
                self.part_bytes -= n;
                return;
            }
            n -= left;
            self.part_bytes -= left;
            self.parts.pop_front();
        }
    }
}

impl<S: AsyncWrite + Unpin> Shared<S> {
    /// Writes out everything pending, then lets its buffers go.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() || !self.parts.is_empty() {
            let n = if self.parts.is_empty() {
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?
            } else {
                let mut slices = Vec::with_capacity((2 * self.parts.len() + 1).min(MAX_SLICES));
                if self.written < self.pending.len() {
                    slices.push(IoSlice::new(&self.pending[self.written..]));
                }
                for part in &self.parts {
                    if slices.len() + 2 > MAX_SLICES {
                        break;
                    }
                    let head = part.head.as_bytes();
                    if part.sent < head.len() {
                        slices.push(IoSlice::new(&head[part.sent..]));
                        slices.push(IoSlice::new(&part.body));
                    } else {
                        slices.push(IoSlice::new(&part.body[part.sent - head.len()..]));
                    }
                }
                ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.pending = Vec::new();
        self.written = 0;
        self.parts = VecDeque::new();
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
        // All of `data` or none: tungstenite writes a frame in one call,
        // and a frame taken whole cannot interleave with the writer's.
        let mut shared = self.shared.lock();
        if shared.waiting() >= shared.limit {
            ready!(shared.poll_write_out(cx))?;
        }
        shared.copy(data, &[]);
        Poll::Ready(Ok(data.len()))
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
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::super::frames::TEXT;
    use super::*;

    /// Whether `far` has a byte to read within 50 ms.
    async fn readable(far: &mut DuplexStream) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(50), far.read_exact(&mut byte));
        read.await.is_ok()
    }

    #[tokio::test]
    async fn frames_reach_the_socket_only_on_flush_in_one_piece_and_then_hold_no_buffer() {
        let (near, mut far) = tokio::io::duplex(1024);
        let socket = Coalescing::new(near, 64 * 1024);
        let mut outgoing = socket.outgoing();
        outgoing.frame(b"<", b"first>").await.unwrap();
        outgoing.frame(b"<", b"second>").await.unwrap();
        assert!(!readable(&mut far).await, "bytes left before the flush");
        outgoing.flush().await.unwrap();
        assert_eq!(socket.shared.lock().pending.capacity(), 0);
        let mut got = [0u8; 15];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<first><second>");
    }

    #[tokio::test]
    async fn room_reserved_for_a_batch_is_made_once_and_never_past_the_bound() {
        let (near, _far) = tokio::io::duplex(1024);
        let socket = Coalescing::new(near, 64);
        let mut outgoing = socket.outgoing();
        outgoing.reserve(40);
        let room = socket.shared.lock().pending.capacity();
        assert!(room >= 40);
        for _ in 0..4 {
            outgoing.frame(b"<", b"123456789").await.unwrap();
        }
        assert_eq!(socket.shared.lock().pending.capacity(), room, "it grew");
        outgoing.flush().await.unwrap();
        outgoing.reserve(1 << 30);
        assert!(socket.shared.lock().pending.capacity() < 1024);
    }

    #[tokio::test]
    async fn what_tungstenite_writes_joins_the_gathered_frames_whole_and_in_order() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut socket = Coalescing::new(near, 8);
        let mut outgoing = socket.outgoing();
        outgoing.frame(b"<", b"a>").await.unwrap();
        // Past the bound, yet taken whole: a frame is never cut in two.
        socket.write_all(b"[pong-pong]").await.unwrap();
        assert_eq!(socket.shared.lock().pending.len(), 14);
        outgoing.frame(b"<", b"b>").await.unwrap();
        outgoing.flush().await.unwrap();
        let mut got = [0u8; 17];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<a>[pong-pong]<b>");
    }

    #[tokio::test]
    async fn a_frame_that_finds_the_bound_reached_waits_for_what_is_gathered_to_go_out() {
        let (near, mut far) = tokio::io::duplex(1024);
        let socket = Coalescing::new(near, 8);
        let mut outgoing = socket.outgoing();
        outgoing.frame(b"<", b"0123456789>").await.unwrap();
        // The bound was reached: this frame first writes the last one out.
        outgoing.frame(b"<", b"ab>").await.unwrap();
        assert_eq!(socket.shared.lock().pending.as_slice(), b"<ab>");
        let mut got = [0u8; 12];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<0123456789>");
        assert!(!readable(&mut far).await, "the second frame left unflushed");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_blocks_frames_at_the_bound() {
        let (near, _far) = tokio::io::duplex(16);
        let socket = Coalescing::new(near, 32);
        let mut outgoing = socket.outgoing();
        // The pipe takes 16; 64 gathered are over the bound of 32.
        outgoing.frame(b"", &[7u8; 64]).await.unwrap();
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), outgoing.frame(b"", b"more")).await;
        assert!(blocked.is_err(), "a frame was taken past the bound");
        assert!(socket.shared.lock().pending.len() <= 64);
    }

    /// A connection's writer and direct writer on one end of a pipe that
    /// holds `capacity` bytes, and the pipe's other end.
    fn direct_pipe(
        capacity: usize,
    ) -> (Outgoing<DuplexStream>, Direct<DuplexStream>, DuplexStream) {
        let (near, far) = tokio::io::duplex(capacity);
        let outgoing = Coalescing::new(near, 64 * 1024).outgoing();
        let direct = outgoing.direct();
        (outgoing, direct, far)
    }

    #[tokio::test]
    async fn a_direct_write_goes_out_at_once_unless_bytes_are_pending() {
        let (mut outgoing, direct, mut far) = direct_pipe(1024);
        assert_eq!(direct.try_write(b"<", b"first>"), Wrote::All);
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<first>");
        // Frames gathered and not yet flushed come first: a direct write waits.
        outgoing.frame(b"<", b"fed>").await.unwrap();
        assert_eq!(direct.try_write(b"<", b"second>"), Wrote::Nothing);
        outgoing.flush().await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<fed>");
    }

    #[tokio::test]
    async fn a_direct_write_too_long_to_join_goes_out_from_its_parts_in_order() {
        let (mut outgoing, direct, mut far) = direct_pipe(1024);
        let body: Vec<u8> = (0..JOINED + 500).map(|i| (i % 251) as u8).collect();
        // The pipe takes 1024 bytes now; the rest waits for the flush.
        assert_eq!(direct.try_write(b"<head>", &body), Wrote::Part);
        let mut got = vec![0u8; 6 + body.len()];
        let (flushed, read) = tokio::join!(outgoing.flush(), far.read_exact(&mut got));
        flushed.unwrap();
        read.unwrap();
        assert_eq!(&got[..6], b"<head>");
        assert_eq!(&got[6..], body.as_slice());
    }

    #[tokio::test]
    async fn one_task_writes_directly_to_more_sockets_than_its_budget_of_polls_allows() {
        let pipes: Vec<_> = (0..300)
            .map(|_| {
                let (_, direct, far) = direct_pipe(1024);
                (direct, far)
            })
            .collect();
        // One pass without yielding, as a fan-out makes.
        for (direct, _) in &pipes {
            assert_eq!(direct.try_write(b"<", b"hi>"), Wrote::All);
        }
        for (_, mut far) in pipes {
            let mut got = [0u8; 4];
            far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"<hi>");
        }
    }

    /// A socket that takes at most `step` bytes per write, from several
    /// slices when `vectored`, and keeps what it took.
    #[derive(Debug)]
    struct Trickle {
        taken: Vec<u8>,
        step: usize,
        calls: usize,
        /// The most slices one call was given.
        most_slices: usize,
        vectored: bool,
        /// Bytes it takes in all before it answers that it would block.
        budget: usize,
    }

    impl Trickle {
        fn new(step: usize) -> Trickle {
            Trickle {
                taken: Vec::new(),
                step,
                calls: 0,
                most_slices: 0,
                vectored: true,
                budget: usize::MAX,
            }
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(data)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let step = self.step.min(self.budget - self.taken.len());
            if step == 0 {
                return Poll::Pending;
            }
            let mut room = step;
            let slices = if self.vectored {
                slices
            } else {
                &slices[..slices.len().min(1)]
            };
            for slice in slices {
                let n = slice.len().min(room);
                self.taken.extend_from_slice(&slice[..n]);
                room -= n;
            }
            self.calls += 1;
            self.most_slices = self.most_slices.max(slices.len());
            Poll::Ready(Ok(step - room))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A text frame's bytes on the wire: its header, then `text`.
    fn text_frame(text: &[u8]) -> Vec<u8> {
        let mut frame = Head::new(&TEXT, text.len()).as_bytes().to_vec();
        frame.extend_from_slice(text);
        frame
    }

    async fn shared(outgoing: &mut Outgoing<Trickle>, text: &'static [u8]) {
        let head = Head::new(&TEXT, text.len());
        outgoing
            .shared_frame(head, Bytes::from_static(text))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn uncopied_frames_keep_their_place_among_copied_bytes_and_leave_no_buffer() {
        let mut socket = Coalescing::new(Trickle::new(usize::MAX), 64 * 1024);
        let mut outgoing = socket.outgoing();
        outgoing.frame(b"<", b"copied>").await.unwrap();
        shared(&mut outgoing, b"first").await;
        // tungstenite's pong, after an uncopied frame, stays after it.
        socket.write_all(b"[pong]").await.unwrap();
        shared(&mut outgoing, b"second").await;
        assert_eq!(
            socket.shared.lock().inner.calls,
            0,
            "written before the flush"
        );
        outgoing.flush().await.unwrap();
        let shared = socket.shared.lock();
        let mut expected = b"<copied>".to_vec();
        expected.extend(text_frame(b"first"));
        expected.extend_from_slice(b"[pong]");
        expected.extend(text_frame(b"second"));
        assert_eq!(shared.inner.taken, expected);
        assert_eq!(shared.inner.calls, 1, "not one write");
        assert_eq!(shared.pending.capacity(), 0);
        assert_eq!(shared.parts.capacity(), 0);
    }

    #[tokio::test]
    async fn uncopied_frames_a_socket_takes_a_few_bytes_at_a_time_arrive_whole_and_in_order() {
        // Four bytes a write: writes end inside headers and inside bodies.
        let socket = Coalescing::new(Trickle::new(4), 64 * 1024);
        let mut outgoing = socket.outgoing();
        outgoing.frame(b"<", b"a>").await.unwrap();
        shared(&mut outgoing, b"0123456789").await;
        shared(&mut outgoing, b"x").await;
        outgoing.frame(b"<", b"b>").await.unwrap();
        outgoing.flush().await.unwrap();
        let mut expected = b"<a>".to_vec();
        expected.extend(text_frame(b"0123456789"));
        expected.extend(text_frame(b"x"));
        expected.extend_from_slice(b"<b>");
        let shared = socket.shared.lock();
        assert_eq!(shared.inner.taken, expected);
        assert_eq!(shared.inner.calls, expected.len().div_ceil(4));
        assert_eq!(shared.part_bytes, 0);
    }

    #[tokio::test]
    async fn what_tungstenite_writes_while_uncopied_frames_are_half_written_goes_after_them() {
        let blocked = Trickle {
            budget: 5,
            ..Trickle::new(usize::MAX)
        };
        let mut socket = Coalescing::new(blocked, 64 * 1024);
        let mut outgoing = socket.outgoing();
        shared(&mut outgoing, b"first").await;
        shared(&mut outgoing, b"second").await;
        {
            let flush = pin!(outgoing.flush());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(flush.poll(&mut cx).is_pending(), "the socket took it all");
        }
        socket.write_all(b"[pong]").await.unwrap();
        socket.shared.lock().inner.budget = usize::MAX;
        outgoing.flush().await.unwrap();
        let mut expected = text_frame(b"first");
        expected.extend(text_frame(b"second"));
        expected.extend_from_slice(b"[pong]");
        assert_eq!(socket.shared.lock().inner.taken, expected);
    }

    #[tokio::test]
    async fn one_write_carries_as_many_uncopied_frames_as_the_kernel_takes_slices() {
        let socket = Coalescing::new(Trickle::new(usize::MAX), 1 << 20);
        let mut outgoing = socket.outgoing();
        let frames = MAX_SLICES / 2 + 10;
        for _ in 0..frames {
            shared(&mut outgoing, b"event").await;
        }
        outgoing.flush().await.unwrap();
        let shared = socket.shared.lock();
        assert_eq!(shared.inner.calls, 2);
        assert_eq!(shared.inner.most_slices, MAX_SLICES);
        assert_eq!(shared.inner.taken, text_frame(b"event").repeat(frames));
    }

    #[tokio::test]
    async fn an_uncopied_frame_that_finds_the_bound_reached_waits_for_what_is_gathered() {
        let socket = Coalescing::new(Trickle::new(usize::MAX), 8);
        let mut outgoing = socket.outgoing();
        shared(&mut outgoing, b"0123456789").await;
        assert!(socket.shared.lock().inner.taken.is_empty());
        // The bound was reached: this frame first writes the last one out.
        shared(&mut outgoing, b"ab").await;
        let shared = socket.shared.lock();
        assert_eq!(shared.inner.taken, text_frame(b"0123456789"));
        assert_eq!(shared.part_bytes, text_frame(b"ab").len());
    }

    #[tokio::test]
    async fn a_direct_write_waits_while_uncopied_frames_are_gathered() {
        let socket = Coalescing::new(Trickle::new(usize::MAX), 64 * 1024);
        let mut outgoing = socket.outgoing();
        let direct = outgoing.direct();
        shared(&mut outgoing, b"queued").await;
        assert_eq!(direct.try_write(b"<", b"direct>"), Wrote::Nothing);
        outgoing.flush().await.unwrap();
        assert_eq!(direct.try_write(b"<", b"direct>"), Wrote::All);
        let mut expected = text_frame(b"queued");
        expected.extend_from_slice(b"<direct>");
        assert_eq!(socket.shared.lock().inner.taken, expected);
    }

    #[tokio::test]
    async fn a_socket_without_vectored_writes_gets_shared_frames_copied_into_one_write() {
        let plain = Trickle {
            vectored: false,
            ..Trickle::new(usize::MAX)
        };
        let socket = Coalescing::new(plain, 64 * 1024);
        let mut outgoing = socket.outgoing();
        for _ in 0..3 {
            let head = Head::new(&TEXT, 5);
            outgoing
                .shared_frame(head, Bytes::from_static(b"event"))
                .await
                .unwrap();
        }
        assert!(socket.shared.lock().parts.is_empty());
        outgoing.flush().await.unwrap();
        let shared = socket.shared.lock();
        assert_eq!(shared.inner.taken, text_frame(b"event").repeat(3));
        assert_eq!(shared.inner.calls, 1);
    }

    #[tokio::test]
    async fn what_a_full_socket_did_not_take_of_a_direct_write_leaves_on_the_next_flush() {
        let (mut outgoing, direct, mut far) = direct_pipe(4);
        assert_eq!(direct.try_write(b"<>", b"0123456789"), Wrote::Part);
        assert_eq!(
            direct.try_write(b"<>", b"later"),
            Wrote::Nothing,
            "a write overtook the rest of the previous one"
        );
        let mut got = [0u8; 12];
        let (flushed, read) = tokio::join!(outgoing.flush(), far.read_exact(&mut got));
        flushed.unwrap();
        read.unwrap();
        assert_eq!(&got, b"<>0123456789");
    }
}
