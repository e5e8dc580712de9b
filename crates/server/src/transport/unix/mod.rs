//! Unix datagram ingest: producers that cannot (or should not) wait on HTTP
//! send one JSON event per datagram, in the `POST /api/v1/events` shape, or
//! in the shape of the state machines of seed 003 (`machine_datagram`).
//!
//! Fire-and-forget on both sides: a malformed datagram is counted and logged,
//! never fatal; a stale socket file from a crashed run is replaced; a live one
//! (another hub listening) is refused rather than stolen.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

mod machine_datagram;

use tokio::net::UnixDatagram;

use governor::{Quota, RateLimiter};

use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;

/// The largest datagram read, whatever `--max-body-size` says.
const MAX_DATAGRAM: usize = 16 * 1024 * 1024;

/// Rejected datagrams logged a second at most.
const REJECTIONS_LOGGED: std::num::NonZeroU32 = std::num::NonZeroU32::new(5).unwrap();

/// How long after a rejection went unlogged its count is logged, when no
/// logged rejection has carried it by then.
const UNLOGGED_SUMMARY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the ingest socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("another process is listening on {path}")]
    InUse { path: PathBuf },
    #[error(
        "could not tell whether another process listens on {path} ({source}); remove it if none does"
    )]
    Unprobed {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not bind {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bound ingest socket, its path, and the file binding made there
/// (device and inode): the file removed at shutdown, if it is still there.
#[derive(Debug)]
pub struct Bound {
    socket: UnixDatagram,
    path: PathBuf,
    file: Option<(u64, u64)>,
}

impl Bound {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the socket (replacing a stale file) and applies `mode` (e.g. 0o660).
pub fn bind(path: &Path, mode: u32) -> Result<Bound, IngestError> {
    let bind_error = |source| IngestError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(IngestError::NotASocket {
                path: path.to_owned(),
            });
        }
        let probe = std::os::unix::net::UnixDatagram::unbound().map_err(bind_error)?;
        // Only a refused probe says nobody listens: another user's socket
        // (permission denied) or another program's stream socket (wrong
        // type) may be in use, and is not this hub's to remove.
        match probe.send_to(b"", path) {
            Ok(_) => {
                return Err(IngestError::InUse {
                    path: path.to_owned(),
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "replacing a stale socket file");
                match std::fs::remove_file(path) {
                    // Gone since the probe: nothing to replace.
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        return Err(bind_error(error));
                    }
                    _ => {}
                }
            }
            // Gone since it was looked at: nothing to replace.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IngestError::Unprobed {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    let socket = UnixDatagram::bind(path).map_err(bind_error)?;
    let file = file_id(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(Bound {
        socket,
        path: path.to_owned(),
        file,
    })
}

/// Reads datagrams and publishes them until the hub shuts down, then removes
/// the socket file if it is still this hub's.
pub async fn run(hub: Hub, bound: Bound) {
    let Bound { socket, path, file } = bound;
    let token = hub.shutdown_token().clone();
    // Registered once, not once per datagram.
    let mut stopped = std::pin::pin!(token.cancelled());
    // The same limit as an HTTP publish body (capped: the kernel lets a
    // datagram through only up to the sender's socket buffer, ~208 KiB by
    // default); one byte more tells a datagram at the limit from a longer
    // one the kernel cut to fit.
    let limit = hub.config().max_body_size.min(MAX_DATAGRAM);
    let mut buffer = vec![0u8; limit.saturating_add(1)];
    let mut rejections = Rejections::new();
    loop {
        let received = tokio::select! {
            biased;
            () = &mut stopped => break,
            () = rejections.summary_due() => {
                rejections.log_unlogged();
                continue;
            }
            received = socket.recv(&mut buffer) => received,
        };
        let len = match received {
            Ok(len) => len,
            Err(error) => {
                tracing::warn!(%error, "unix socket receive failed");
                continue;
            }
        };
        if len == 0 {
            // Zero-length datagrams are liveness probes (see `bind`).
            continue;
        }
        let metrics = hub.metrics();
        metrics.unix_datagrams.inc();
        if len > limit {
            metrics.unix_datagrams_rejected.inc();
            rejections.warn(
                "rejected a datagram larger than --max-body-size",
                None,
                None,
            );
            continue;
        }
        // An object, as over HTTP (serde alone would also take the fields
        // as an array, in order).
        let datagram = &buffer[..len];
        let request = match datagram.trim_ascii_start().first() {
            Some(b'{') => machine_datagram::decode(datagram),
            _ => Err("expected a JSON object with named fields".to_owned()),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                metrics.unix_datagrams_rejected.inc();
                rejections.warn(
                    "rejected a malformed datagram",
                    Some(&error),
                    Some(datagram),
                );
                continue;
            }
        };
        if let Err(error) = hub
            .publish(request, PublishOptions::fire_and_forget())
            .await
        {
            if token.is_cancelled() {
                break;
            }
            // A reused id with other content, a full store: the datagram is
            // not published, and nobody waits for an answer.
            metrics.unix_datagrams_rejected.inc();
            rejections.warn(
                "rejected a datagram the hub could not publish",
                Some(&error.to_string()),
                Some(datagram),
            );
        }
    }
    rejections.log_unlogged();
    // Another hub may have bound the path since this one stopped reading it
    // (a restart that overlapped this shutdown): its file stays.
    if file.is_some() && file_id(&path) == file {
        let _ = std::fs::remove_file(&path);
    }
}

/// The file at `path` (device and inode), if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// The log of rejected datagrams (each is also counted in
/// `herald_unix_datagrams_rejected_total`): a few a second at most, so a
/// writer of garbage cannot flood the log, and every rejection that went
/// unlogged is counted in the next line: the next logged rejection, or a
/// summary a second later, or at shutdown.
struct Rejections {
    limiter: governor::DefaultDirectRateLimiter,
    unlogged: u64,
    /// Armed while `unlogged` is not zero.
    summary: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Rejections {
    fn new() -> Self {
        Self {
            limiter: RateLimiter::direct(Quota::per_second(REJECTIONS_LOGGED)),
            unlogged: 0,
            summary: None,
        }
    }

    fn warn(&mut self, message: &str, error: Option<&str>, datagram: Option<&[u8]>) {
        if self.limiter.check().is_err() {
            self.unlogged += 1;
            self.summary
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(UNLOGGED_SUMMARY_AFTER)));
            return;
        }
        // Escaped (`?`): a datagram's bytes never reach the log raw.
        let excerpt =
            datagram.map(|d| String::from_utf8_lossy(&d[..d.len().min(120)]).into_owned());
        tracing::warn!(
            error = error.map(tracing::field::debug),
            datagram = excerpt.map(tracing::field::debug),
            unlogged = self.unlogged,
            "{message}"
        );
        self.unlogged = 0;
        self.summary = None;
    }

    /// Resolves when the unlogged rejections are due to be logged; pending
    /// for ever while there are none.
    async fn summary_due(&mut self) {
        match self.summary.as_mut() {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    }

    fn log_unlogged(&mut self) {
        if self.unlogged > 0 {
            tracing::warn!(
                unlogged = self.unlogged,
                "rejected datagrams went unlogged (counted in herald_unix_datagrams_rejected_total)"
            );
        }
        self.unlogged = 0;
        self.summary = None;
    }
}
