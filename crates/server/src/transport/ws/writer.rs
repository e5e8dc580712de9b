//! A connection's writer: it owns the socket's sending side, adds every
//! queued frame as its [`Dialect`] renders it to the socket's gathered
//! bytes ([`Outgoing`]: copied, or, in a drain of [`UNCOPIED_FROM`] entries
//! or more, an event's text written from where the hub encoded it; a
//! batch's run queued whole goes out as the first writer framed it) and
//! flushes once per wake-up
//! (frames that queued meanwhile leave in one write; while the hub is
//! saturated it first lets further publishes queue theirs), sends the heartbeats
//! (a protocol ping for the peer's WebSocket stack and the dialect's
//! app-level ping for scripts that cannot see protocol pings), and closes
//! connections that stopped answering, whose token expired, or that the hub
//! closes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_protocol::CloseReason;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;
use tungstenite::protocol::frame::FrameHeader;

use super::coalesce::Outgoing;
use super::connection::End;
use super::dialect::{Dialect, Rendered};
use super::frames::{self, CLOSE, COMPRESSED_TEXT, Head, MAX_HEAD, PING, TEXT};
use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::outbox::{Closing, Entry, GATHER_WITHIN, OutFrame, Queued};
use crate::transport::deflate::Deflater;

/// Writes until the connection ends; how it ended. With `deflater`, frames
/// worth compressing are sent compressed (`permessage-deflate`).
#[allow(
    clippy::manual_async_fn,
    reason = "a block keeps the future smaller: see `connection::run`"
)]
pub(crate) fn write_loop<W: AsyncWrite + Unpin, D: Dialect>(
    hub: &Hub,
    conn: &Arc<ConnHandle>,
    mut out: Outgoing<W>,
    dialect: &D,
    deflater: Option<&Deflater>,
) -> impl Future<Output = End> {
    async move {
        let config = hub.config();
        let interval = dialect.heartbeat_interval(config);
        // Registered once: a wake-up of this loop costs no new waiter on the
        // token every connection shares.
        let shutdown = hub.shutdown_token().clone();
        let mut shutdown = std::pin::pin!(shutdown.cancelled_owned());
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down = false;
        // The token's expiry timer, reset only when an `auth` frame changed it;
        // only a connection with a token has one, so one without carries no
        // timer (boxed, since it is optional).
        let mut expiry_at = None;
        let mut expiry: Option<Pin<Box<Sleep>>> = None;
        // When this connection's last write ended: a wake-up soon after it
        // means frames are arriving faster than they are written.
        let mut last_write: Option<Instant> = None;
        // The rare awaits below (a heartbeat, a close, a write that waits, the
        // dialect's after-batch step) are boxed: this future, which every idle
        // connection holds (boxed by `connection::run`), is then sized for the
        // `select!` alone (424 bytes in a release build).
        loop {
            if conn.token_expires_at() != expiry_at {
                expiry_at = conn.token_expires_at();
                let deadline = tokio::time::Instant::now() + until(expiry_at);
                match expiry.as_mut() {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => expiry = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
            tokio::select! {
                // Stopping and liveness before frames, so a connection that
                // always has frames queued still shuts down and still pings.
                biased;
                () = &mut shutdown, if !shutting_down => {
                    shutting_down = true;
                    conn.outbox.close(Closing::SHUTDOWN);
                }
                () = expired(&mut expiry), if expiry_at.is_some() => {
                    // Read afresh: an `auth` frame without an `id` replaces the
                    // token without queueing a reply, so nothing woke this loop.
                    expiry_at = conn.token_expires_at();
                    if expiry_at.is_some_and(|at| at <= now_ms()) {
                        conn.outbox.sending_close();
                        let _ = Box::pin(send_close(&mut out, CloseReason::TOKEN_EXPIRED, "token expired")).await;
                        return End::TokenExpired;
                    }
                    // Refreshed, or woken before the millisecond it expires in.
                    if let Some(timer) = expiry.as_mut() {
                        timer.as_mut().reset(tokio::time::Instant::now() + until(expiry_at));
                    }
                }
                _ = heartbeat.tick() => {
                    if conn.silent_for() > config.heartbeat_timeout {
                        conn.outbox.sending_close();
                        let close = send_close(&mut out, CloseReason::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                        let _ = Box::pin(close).await;
                        return End::HeartbeatTimeout;
                    }
                    let ping = dialect.heartbeat();
                    let beat = async {
                        put(&mut out, &PING, &[]).await?;
                        if let Some(ping) = ping {
                            put(&mut out, &TEXT, ping.as_bytes()).await?;
                        }
                        out.flush().await
                    };
                    match Box::pin(stalled(Box::pin(beat), conn, config.heartbeat_timeout)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return End::SocketError(error.to_string()),
                        Err(Stalled::TimedOut) => return End::WriteStalled,
                        Err(Stalled::Dropped) => return dropped(hub, conn),
                    }
                }
                () = conn.outbox.ready() => {}
            }
            if last_write.is_some_and(|at| at.elapsed() < GATHER_WITHIN) {
                conn.outbox.gather().await;
            }
            let (batch, closing) = conn.outbox.drain();
            // Boxed, like the frame dispatch: an idle connection's task does not
            // carry the size of a write in progress.
            let written = {
                let mut write =
                    Box::pin(write_batch(hub, conn, &mut out, batch, dialect, deflater));
                // Most writes complete at once. One that waits has met a peer
                // that stopped reading (its TCP window is full): the timers
                // are armed only then, so a write that does not wait costs none.
                match futures::poll!(write.as_mut()) {
                    std::task::Poll::Ready(written) => Ok(written),
                    std::task::Poll::Pending => {
                        Box::pin(stalled(write, conn, config.heartbeat_timeout)).await
                    }
                }
            };
            last_write = Some(Instant::now());
            conn.outbox.written();
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return End::SocketError(error.to_string()),
                Err(Stalled::TimedOut) => return End::WriteStalled,
                Err(Stalled::Dropped) => return dropped(hub, conn),
            }
            Box::pin(dialect.after_batch(hub, conn)).await;
            if let Some(closing) = closing {
                conn.outbox.sending_close();
                let sent = Box::pin(send_close(&mut out, closing.code, closing.reason)).await;
                return ended(hub, closing, sent.is_ok());
            }
        }
    }
}

/// How a write the peer held up ended without completing.
enum Stalled {
    /// The peer read nothing for as long as a silent peer may stay.
    TimedOut,
    /// The hub closes the connection without flushing (a slow consumer
    /// above all), and the peer did not take the held-up write in time for
    /// the close frame to go out behind it: the connection is dropped.
    Dropped,
}

/// How a connection the hub closed ends: closed when its close frame went
/// out, dropped when it could not; counted as a slow consumer's when it is
/// one.
fn ended(hub: &Hub, closing: Closing, sent: bool) -> End {
    if closing.slow_consumer() {
        hub.metrics().slow_consumer_closes.inc();
    }
    if sent {
        End::Closed(closing)
    } else {
        End::Dropped(closing)
    }
}

/// How a connection dropped behind a held-up write ends. The close is read
/// again from the outbox, which keeps the first one asked for: carried in
/// [`Stalled::Dropped`], it would grow every idle connection's writer.
fn dropped(hub: &Hub, conn: &ConnHandle) -> End {
    match conn.outbox.closing() {
        Some(closing) => ended(hub, closing, false),
        None => {
            debug_assert!(false, "a write dropped for a close that was not asked for");
            End::WriteStalled
        }
    }
}

/// How often a held-up write checks whether the hub closes its connection.
const STALLED_CHECK: Duration = Duration::from_millis(500);

/// Waits for a write the peer holds up: until it completes, for `limit` at
/// most (as long as a silent peer may stay), or, once the hub decides to
/// close the connection without flushing (seen within [`STALLED_CHECK`]),
/// for [`CLOSE_WRITE`] more: time for a peer that still reads, slowly, to
/// take the write and then the close frame (an admin's 4500 must reach it,
/// or it would reconnect); a peer that stopped reading is dropped then.
async fn stalled<F: Future<Output = std::io::Result<()>>>(
    mut write: Pin<Box<F>>,
    conn: &ConnHandle,
    limit: Duration,
) -> Result<std::io::Result<()>, Stalled> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut drop_at = None;
    loop {
        let now = tokio::time::Instant::now();
        let check = (now + STALLED_CHECK)
            .min(deadline)
            .min(drop_at.unwrap_or(deadline));
        if let Ok(written) = tokio::time::timeout_at(check, write.as_mut()).await {
            return Ok(written);
        }
        let now = tokio::time::Instant::now();
        if drop_at.is_some_and(|at| now >= at) {
            return Err(Stalled::Dropped);
        }
        if drop_at.is_none() && conn.outbox.closing().is_some_and(|closing| !closing.flush) {
            drop_at = Some(now + CLOSE_WRITE);
        }
        if now >= deadline {
            return Err(Stalled::TimedOut);
        }
    }
}

/// Completes when the token's timer fires; never for a connection without one.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// How long until `expiry` (ms since the epoch); a year when there is none.
fn until(expiry: Option<u64>) -> Duration {
    expiry.map_or(Duration::from_secs(365 * 24 * 3600), |at| {
        Duration::from_millis(at.saturating_sub(now_ms()))
    })
}

async fn write_batch<W: AsyncWrite + Unpin, D: Dialect>(
    hub: &Hub,
    conn: &ConnHandle,
    out: &mut Outgoing<W>,
    batch: VecDeque<Queued>,
    dialect: &D,
    deflater: Option<&Deflater>,
) -> std::io::Result<()> {
    let metrics = hub.metrics();
    let now = Instant::now();
    let mut ages = metrics.publish_to_send.tally();
    let uncopied = batch.len() >= UNCOPIED_FROM;
    // A run goes out as it is on the wire, framed once for every
    // connection, where frames go as they are: not copied, so not counted.
    let whole = dialect.shares_event_frames() && deflater.is_none();
    let framed = || batch.iter().map(|queued| framed_len(queued, whole)).sum();
    if uncopied {
        out.reserve_parts(batch.len(), framed);
    } else {
        out.reserve(framed());
    }
    let (mut frames, mut bytes, mut deflated) = (0u64, 0u64, 0u64);
    // `shared`: the same bytes go to every subscriber, so a compressed copy
    // is made once for all of them; the bytes keep their identity (no
    // copy), which is what finds that copy.
    // `run`: `text` is a run's frames as they go on the wire, with how many
    // frames and bytes of text they carry.
    let mut feed = async |text: Bytes, shared: bool, run: Option<(u64, u64)>| {
        if let Some((run_frames, run_bytes)) = run {
            frames += run_frames;
            bytes += run_bytes;
            return out.shared_frame(Head::empty(), text).await;
        }
        frames += 1;
        bytes += text.len() as u64;
        let compressed = deflater.and_then(|d| d.compress(&text, shared));
        match &compressed {
            Some(compressed) => {
                deflated += compressed.len() as u64;
                put(out, &COMPRESSED_TEXT, compressed).await
            }
            None if uncopied => out.shared_frame(Head::new(&TEXT, text.len()), text).await,
            None => put(out, &TEXT, &text).await,
        }
    };
    for queued in batch {
        let (one, run) = match queued {
            Queued::Run(run) if whole => {
                let mut text = 0;
                for frame in &run.frames {
                    if let Some(meta) = &frame.event {
                        ages.observe(now.saturating_duration_since(meta.published));
                    }
                    text += frame.text.len() as u64;
                }
                let framed = run.framed.get_or_init(|| text_frames(&run.frames));
                let counts = (run.frames.len() as u64, text);
                feed(framed.clone(), true, Some(counts)).await?;
                continue;
            }
            Queued::Run(run) => (None, Some(run)),
            Queued::One(entry) => (Some(entry), None),
        };
        // The entry, or the run's frames one by one for a dialect that
        // renders each: chained, so that an entry costs no allocation.
        let run_frames = run.as_deref().map_or(&[][..], |run| &run.frames[..]);
        for entry in one
            .into_iter()
            .chain(run_frames.iter().cloned().map(Entry::Frame))
        {
            let mut shared = false;
            if let Entry::Frame(frame) = &entry
                && let Some(meta) = &frame.event
            {
                ages.observe(now.saturating_duration_since(meta.published));
                shared = dialect.shares_event_frames();
            }
            match dialect.render(entry) {
                Rendered::One(text) => feed(text, shared, None).await?,
                Rendered::Many(texts) => {
                    for text in texts {
                        feed(text, false, None).await?;
                    }
                }
                Rendered::Nothing => {}
            }
        }
    }
    // Flushed even with no frames: a frame the fan-out wrote straight to
    // the socket may have left its end there (`Wrote::Part`).
    out.flush().await?;
    if frames > 0 {
        metrics.frames_out.inc_by(frames);
        metrics.bytes_out.inc_by(bytes);
        if deflated > 0 {
            metrics.bytes_deflated.inc_by(deflated);
        }
        conn.frames_sent.fetch_add(frames, Relaxed);
    }
    Ok(())
}

/// Entries drained at once from which a write sends each event's text from
/// where the hub encoded it (vectored writes of each frame's header and
/// text) instead of copying every frame into one buffer first; compressed
/// frames, and every frame on a socket without vectored writes, are still
/// copied. Past a few frames the copy costs more than the kernel's walk
/// over two slices per frame; below, one slice is cheaper. Measured with `herald-bench load` (frames of 264 bytes,
/// N = 1000, pinned, alternating runs, medians of 6): single events from 4
/// producers, 1.50 M deliveries/s from 24 entries against 1.38 M copying
/// every write (1.58 M from 16, 1.45 M from 32); at 1000 publishes/s, where
/// writes carry about 12 frames, p99 29.5 ms from 24 against 28.9 ms, while
/// from 16 it was 30.0 against 28.2 and sending every write uncopied 31–34
/// against 26–28. Batches (about 100 frames a write) moved within spread:
/// the load generator, not the hub, limits them.
const UNCOPIED_FROM: usize = 24;

/// About how many bytes an entry takes once framed: its text and the
/// longest header a server frame has (a dialect may wrap it, a gap marker
/// is rendered later; both are left to the buffer's growth). A run sent
/// `whole` is written from its shared bytes and takes none.
fn framed_len(queued: &Queued, whole: bool) -> usize {
    match queued {
        Queued::One(Entry::Frame(frame)) => frame.text.len() + MAX_HEAD,
        Queued::Run(run) if !whole => run.frames.iter().map(|f| f.text.len() + MAX_HEAD).sum(),
        Queued::One(Entry::Gap { .. }) | Queued::Run(_) => 0,
    }
}

/// `frames` as consecutive text frames, in one buffer.
fn text_frames(frames: &[OutFrame]) -> Bytes {
    let mut run = BytesMut::with_capacity(frames.iter().map(|f| f.text.len() + MAX_HEAD).sum());
    for frame in frames {
        run.extend_from_slice(Head::new(&TEXT, frame.text.len()).as_bytes());
        run.extend_from_slice(&frame.text);
    }
    run.freeze()
}

/// Adds a `header` frame carrying `payload` to what the next flush writes.
async fn put<W: AsyncWrite + Unpin>(
    out: &mut Outgoing<W>,
    header: &FrameHeader,
    payload: &[u8],
) -> std::io::Result<()> {
    out.frame(Head::new(header, payload.len()).as_bytes(), payload)
        .await
}

/// Writes a close frame and flushes it, for at most [`CLOSE_WRITE`]: a
/// peer that stopped reading must not keep the connection (and its place
/// under `--max-connections`) for a close it will never read.
pub(crate) async fn send_close<W: AsyncWrite + Unpin>(
    out: &mut Outgoing<W>,
    code: CloseReason,
    reason: &'static str,
) -> std::io::Result<()> {
    let payload = frames::close_payload(code, reason);
    let close = async {
        put(out, &CLOSE, &payload).await?;
        out.flush().await
    };
    tokio::time::timeout(CLOSE_WRITE, close)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// How long a close frame may take to go out.
const CLOSE_WRITE: Duration = Duration::from_secs(5);
