//! One admitted WebSocket connection's life, whatever its dialect: what
//! it opens with, then the reader and the writer until either ends, then
//! its removal.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use herald_protocol::frame::ErrorFrame;
use herald_protocol::{CloseReason, ErrorCode, RequestId, ServerMessage};
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;

use super::coalesce::Outgoing;
use super::dialect::Dialect;
use super::reader::{self, Lingering};
use super::writer;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::{Closing, Direct, DirectWrite};
use crate::operations::metrics::CloseKind;
use crate::transport::deflate::Deflater;

/// How a connection ended, for the log line.
#[derive(Debug)]
pub(crate) enum End {
    PeerClosed(Option<u16>),
    Closed(Closing),
    /// The hub closed the connection while the peer held up a write, so its
    /// close frame could not go out: the socket was dropped.
    Dropped(Closing),
    HeartbeatTimeout,
    TokenExpired,
    WriteStalled,
    TooBig,
    Flooding,
    /// The peer broke the WebSocket protocol: closed with 1002, or with
    /// 1007 for text that is not UTF-8.
    Violation(CloseReason, String),
    SocketError(String),
}

impl End {
    /// The close the hub answers a reader's end with, after flushing what
    /// is queued; none when the peer left or the hub already closed.
    fn answered_with(&self) -> Option<Closing> {
        let (code, reason) = match self {
            End::TooBig => (CloseReason::TOO_BIG, "frame too large"),
            End::Flooding => (CloseReason::RATE_LIMITED, "too many frames"),
            End::Violation(code, _) if *code == CloseReason::INVALID_PAYLOAD => {
                (*code, "text is not UTF-8")
            }
            End::Violation(code, _) => (*code, "websocket protocol violation"),
            _ => return None,
        };
        Some(Closing {
            kind: self.kind(),
            code,
            reason,
            flush: true,
        })
    }

    /// How `herald_connections_closed_total` counts this end.
    fn kind(&self) -> CloseKind {
        match self {
            End::PeerClosed(_) => CloseKind::PeerClosed,
            End::SocketError(_) => CloseKind::SocketError,
            End::HeartbeatTimeout => CloseKind::HeartbeatTimeout,
            End::WriteStalled => CloseKind::WriteStalled,
            End::TokenExpired => CloseKind::TokenExpired,
            End::TooBig => CloseKind::TooBig,
            End::Flooding => CloseKind::RateLimited,
            End::Violation(..) => CloseKind::ProtocolViolation,
            End::Closed(closing) | End::Dropped(closing) => closing.kind,
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed(Some(code)) => write!(f, "closed by peer ({code})"),
            End::PeerClosed(None) => f.write_str("closed by peer"),
            End::Closed(closing) => {
                write!(f, "closed by hub ({}: {})", closing.code.0, closing.reason)
            }
            End::Dropped(closing) => write!(
                f,
                "closed by hub ({}: {}); dropped, as the peer stopped reading",
                closing.code.0, closing.reason
            ),
            End::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            End::TooBig => f.write_str("frame too large (1009)"),
            End::TokenExpired => f.write_str("token expired (4001)"),
            End::WriteStalled => f.write_str("peer stopped reading (write timed out)"),
            End::Flooding => f.write_str("sustained frame flood (4029)"),
            End::Violation(code, error) => write!(f, "protocol violation ({}): {error}", code.0),
            End::SocketError(error) => write!(f, "socket error: {error}"),
        }
    }
}

/// Queues an `error` frame (and counts it).
pub(crate) fn send_error(
    hub: &Hub,
    conn: &ConnHandle,
    code: ErrorCode,
    message: String,
    reference: Option<RequestId>,
) {
    hub.metrics().error(code);
    conn.send(&ServerMessage::Error(ErrorFrame {
        code,
        message,
        reference,
    }));
}

/// How a connection's frames may go out other than as its writer's plain
/// text frames: compressed, or written straight from the fan-out.
#[derive(Debug)]
pub(crate) struct Sending {
    /// `permessage-deflate` was agreed: frames worth it go compressed.
    pub(crate) deflater: Option<&'static Deflater>,
    /// Writes the core's frames straight to the socket; used when the
    /// dialect sends them as they are.
    pub(crate) direct: Option<Box<dyn DirectWrite>>,
}

/// A connection `open` admitted, with its hub. Dropped, it gives its place
/// back ([`Hub::detach`] normally did already): a task that ends before it
/// detaches (a panic, the runtime stopping) keeps no place under
/// `--max-connections`, nor under its user's limit.
pub(crate) struct Admitted {
    pub(crate) hub: Hub,
    pub(crate) conn: Arc<ConnHandle>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.hub.connections().remove(&self.conn);
    }
}

/// Runs an admitted connection to its end: what its dialect opens with,
/// then frames both ways until the peer leaves, the hub closes it, or the
/// hub shuts down (its greeting was queued as it was admitted).
///
/// tungstenite reads the connection (`stream`, answering a client's pings
/// itself); the writer formats its own frames into `out`, the same
/// socket's gathered bytes, so a frame is copied at most once on its way
/// out (not at all in a large drain or a run sent whole). The
/// stream comes boxed so that this future, which every idle connection's
/// task carries, holds a pointer to it rather than room for it.
///
/// An `async move` block rather than an `async fn`: an async fn's future
/// keeps its arguments and, beside them, the locals it moves them into,
/// while a block uses what it captured in place: with the native dialect
/// the future is 248 bytes instead of 360, and its task 384 instead of 512
/// (tokio rounds a task up to a multiple of 128 bytes; `-Zprint-type-sizes`
/// of a release build).
#[allow(
    clippy::manual_async_fn,
    reason = "a block keeps the future smaller: see the doc above"
)]
pub(crate) fn run<S, W, D>(
    admitted: Admitted,
    (out, stream): (Outgoing<W>, Box<WebSocketStream<S>>),
    dialect: D,
    sending: Sending,
) -> impl Future<Output = ()>
where
    S: Lingering,
    W: AsyncWrite + Unpin,
    D: Dialect,
{
    async move {
        let (hub, conn) = (&admitted.hub, &admitted.conn);
        if dialect.shares_event_frames()
            && sending.deflater.is_none()
            && let Some(writer) = sending.direct
        {
            let pace = hub.connections().pace().clone();
            conn.outbox.set_direct(Some(Direct { writer, pace }));
        }
        if dialect.resyncs_on_gap() {
            conn.outbox.resync_on_gap();
        }
        // Boxed, like every one-off await here: the future an idle
        // connection's task holds is sized for its largest await, and only
        // the two loops' select below should count.
        Box::pin(hub.attach(conn)).await;
        tracing::info!(session = %conn.id, user = conn.user_id.as_deref(), remote = conn.remote.map(tracing::field::display), "connection opened");
        let dialect = &dialect;
        // Boxed: pinned in place, the two loops (about 750 bytes together)
        // would add their size to every idle connection's task. The reader
        // opens the dialect first, with the writer already going.
        let mut reader = Box::pin(reader::read_loop(hub, conn, stream, dialect));
        let mut writer = Box::pin(writer::write_loop(
            hub,
            conn,
            out,
            dialect,
            sending.deflater,
        ));
        let end = tokio::select! {
            end = &mut writer => Box::pin(answered(end, &mut reader)).await,
            // A peer's close that crossed the hub's close frame, already
            // going out, is not answered by the reader: the writer's close
            // is the answer, and is finished before the socket closes.
            (end, stream) = &mut reader => match end
                .answered_with()
                .or_else(|| conn.outbox.close_sent().then(|| conn.outbox.closing()).flatten())
            {
                Some(closing) => {
                    // Flush first: the replies already queued (the
                    // `rate_limited` errors above all) tell the client why
                    // it is being closed.
                    conn.outbox.close(closing);
                    Box::pin(self::closing(&mut writer, stream, end)).await
                }
                None => end,
            },
        };
        // Nothing more goes straight to the socket, which closes with the task.
        conn.outbox.set_direct(None);
        Box::pin(hub.detach(conn)).await;
        hub.metrics().connection_closed(end.kind());
        tracing::info!(
            session = %conn.id,
            reason = %end,
            age_s = conn.connected_at.elapsed().as_secs(),
            frames_sent = conn.frames_sent.load(Relaxed),
            "connection closed"
        );
    }
}

/// A writer's end; when it sent the hub's close frame, the peer's answer
/// to it (and what the peer sent before) is read first, for at most
/// [`reader::LINGER`], as for the closes the reader asks for: a socket
/// closed while bytes arrive is reset, and a browser then calls the close
/// unclean.
async fn answered<F: Future>(end: End, reader: F) -> End {
    if let End::Closed(_) = end {
        let _ = tokio::time::timeout(reader::LINGER, reader).await;
    }
    end
}

/// Waits, for at most a second, for the hub's close frame to go out while
/// the peer's remaining bytes are read and dropped ([`reader::linger`]);
/// then gives back why the connection ends.
async fn closing<S, F>(writer: F, mut stream: Box<WebSocketStream<S>>, end: End) -> End
where
    S: Lingering,
    F: Future,
{
    reader::linger(&mut stream, writer).await;
    end
}

#[cfg(test)]
mod tests {
    //! What an idle native connection holds, in the build the tests run in:
    //! growing any of it costs every idle connection that much; and how each
    //! end is counted.

    use std::collections::BTreeSet;

    use super::*;
    use crate::transport::ws::handshake::{Raw, Upgraded};
    use crate::transport::ws::native::Native;

    /// The size of what `f` returns, without calling it.
    fn returned_by_4<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    /// The size of what `f` returns, without calling it.
    fn returned_by_5<A, B, C, D, E, R>(_: fn(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    #[test]
    fn an_idle_native_connection_fits_a_384_byte_task() {
        // tokio's task is a 32-byte header, 16 bytes of scheduler and task
        // id, the future with the tracker's 8-byte token and up to 8 bytes
        // of tag, and a 48-byte trailer, rounded up to a multiple of 128
        // bytes: a future of up to 272 bytes keeps it at 384.
        let run = returned_by_4(run::<Upgraded, Raw, Native> as fn(_, _, _, _) -> _);
        assert!(run <= 272, "the connection future takes {run} bytes");
    }

    #[test]
    fn an_idle_native_connections_reader_and_writer_keep_their_size() {
        let reader = returned_by_4(
            reader::read_loop::<Upgraded, Native>
                as fn(&'static Hub, &'static Arc<ConnHandle>, _, &'static Native) -> _,
        );
        let writer = returned_by_5(
            writer::write_loop::<Raw, Native>
                as fn(&'static Hub, &'static Arc<ConnHandle>, _, &'static Native, _) -> _,
        );
        assert!(reader <= READER, "the reader takes {reader} bytes");
        assert!(writer <= WRITER, "the writer takes {writer} bytes");
    }

    /// Bytes of the reader's and the writer's futures (each boxed).
    const READER: usize = 320;
    const WRITER: usize = 424;

    #[tokio::test]
    async fn a_connection_task_dropped_before_it_detaches_gives_its_place_back() {
        let hub = Hub::new(
            crate::operations::config::Config::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        let conn = Arc::new(ConnHandle::new(Some("u1".into()), None, None, None, 16));
        let capacity = crate::core::connections::Capacity {
            total: 1,
            per_user: 1,
        };
        assert_eq!(hub.connections().admit(&conn, capacity), Ok(()));
        drop(Admitted {
            hub: hub.clone(),
            conn,
        });
        assert_eq!(hub.connections().count(), 0);
        let again = Arc::new(ConnHandle::new(Some("u1".into()), None, None, None, 16));
        assert_eq!(hub.connections().admit(&again, capacity), Ok(()));
    }

    #[test]
    fn every_end_is_counted_under_the_reason_its_label_names() {
        let by = |kind, code| Closing {
            kind,
            code,
            reason: "r",
            flush: false,
        };
        let cases = [
            (End::PeerClosed(Some(1000)), "peer_closed"),
            (End::SocketError("reset".into()), "socket_error"),
            (End::HeartbeatTimeout, "heartbeat_timeout"),
            (End::WriteStalled, "write_stalled"),
            (End::TokenExpired, "token_expired"),
            (End::TooBig, "too_big"),
            (End::Flooding, "rate_limited"),
            (
                End::Violation(CloseReason::INVALID_PAYLOAD, "utf-8".into()),
                "protocol_violation",
            ),
            (
                End::Dropped(by(CloseKind::SlowConsumer, CloseReason::TRY_AGAIN_LATER)),
                "slow_consumer",
            ),
            (
                End::Closed(by(CloseKind::TryAgainLater, CloseReason::TRY_AGAIN_LATER)),
                "try_again_later",
            ),
            (
                End::Closed(by(CloseKind::Admin, CloseReason::DISCONNECTED_BY_ADMIN)),
                "admin",
            ),
            (End::Closed(Closing::SHUTDOWN), "shutdown"),
            (
                End::Closed(by(CloseKind::Other, CloseReason::NORMAL)),
                "other",
            ),
        ];
        for (end, label) in &cases {
            assert_eq!(end.kind().as_str(), *label, "{end}");
        }
        // Every reason is registered (present from the first scrape), and
        // every registered one is one an end can have.
        let registered: BTreeSet<_> = CloseKind::ALL.iter().map(|k| k.as_str()).collect();
        let named: BTreeSet<_> = cases.iter().map(|(_, label)| *label).collect();
        assert_eq!(registered, named);
    }
}
