//! [`UnixPublisher`]: fire-and-forget events over the hub's Unix datagram
//! socket (`herald serve --unix-socket PATH`).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use herald_protocol::PublishRequest;

/// The largest datagram sent, in bytes; a larger event is dropped (and counted).
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// Sends one JSON event per datagram (the `POST /api/v1/events` shape) to a
/// hub's Unix socket, for producers that must never wait for the hub.
///
/// [`publish`](UnixPublisher::publish) never blocks and never fails: when the
/// hub is down (no socket, or nobody reading it), its buffer is full, or the
/// event is over [`MAX_DATAGRAM`], the event is dropped and counted in
/// [`dropped`](UnixPublisher::dropped). There is no receipt and no retry: use
/// [`Publisher`](crate::Publisher) when delivery matters.
#[derive(Debug)]
pub struct UnixPublisher {
    socket: UnixDatagram,
    path: PathBuf,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl UnixPublisher {
    /// A publisher to the socket at `path`. Fails only when the process cannot
    /// create a socket at all; the hub need not be running.
    pub fn new(path: impl AsRef<Path>) -> io::Result<UnixPublisher> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(UnixPublisher {
            socket,
            path: path.as_ref().to_path_buf(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends `request` as one datagram, or drops it; `true` when the kernel
    /// took it (the hub may still refuse it).
    pub fn publish(&self, request: &PublishRequest) -> bool {
        let sent = match serde_json::to_vec(request) {
            Ok(bytes) if bytes.len() <= MAX_DATAGRAM => {
                match self.socket.send_to(&bytes, &self.path) {
                    Ok(n) => n == bytes.len(),
                    Err(error) => {
                        tracing::trace!(%error, path = %self.path.display(), "unix datagram dropped");
                        false
                    }
                }
            }
            Ok(bytes) => {
                tracing::trace!(
                    len = bytes.len(),
                    "unix datagram over the size limit dropped"
                );
                false
            }
            Err(_) => false,
        };
        let counter = if sent { &self.sent } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// Events handed to the kernel.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Events dropped: hub down, buffer full, or over [`MAX_DATAGRAM`].
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The socket path events are sent to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
