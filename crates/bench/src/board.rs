//! The subscriber side of the load generator: N WebSocket clients on one
//! current-thread runtime, all writing into one [`Board`].
//!
//! Each client reads frames, classifies them with a byte search
//! ([`crate::wire::classify`]) and records latency, loss, duplicates and
//! gaps, and which hub seqs each gap announced ([`GapCoverage`]), so a
//! loss counts as announced only where a gap covered it. The board also
//! tells the publisher when every client has caught up to a given seq, so
//! fan-out can run a bounded window in flight.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::coverage::GapCoverage;
use crate::wire::{Frame, classify, now_ns, stream_of};

/// A client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What all subscribers have seen.
#[derive(Debug)]
pub struct Board {
    /// Producers whose streams the bench seqs interleave ([`crate::wire::stream_of`]).
    producers: usize,
    /// Last place in each producer's stream each client received
    /// (`clients × producers`, client-major; 0: none yet).
    last: Vec<u64>,
    /// Events each client has seen or skipped (the sum of its places in
    /// every stream): how far it is, for the publisher's window.
    pub progress: Vec<u64>,
    /// Whether each client received a warm-up probe.
    pub warmed: Vec<bool>,
    pub warmed_count: usize,
    /// Events received per client (any seq, warm-up excluded).
    pub received: Vec<u64>,
    /// When each client got `replay_complete` (ns since the epoch).
    pub replay_done: Vec<Option<u64>>,
    /// Latency (µs) of events whose intended send time is in the window.
    pub latency_us: Histogram<u64>,
    pub record_from_ns: u64,
    pub record_until_ns: u64,
    /// Deliveries counted while `counting` is on.
    pub counting: bool,
    pub delivered: u64,
    pub lost: u64,
    /// Bench events each client missed mid-stream (a jump in its bench seqs).
    jumped: Vec<u64>,
    /// Each client's hub seqs against the ranges its `gap` frames named
    /// (one topic, `bench`).
    coverage: Vec<GapCoverage>,
    pub duplicated: u64,
    pub gaps: u64,
    pub errors: u64,
    pub closed: u64,
    /// The publishers wait until every client's progress reached `wake_at`.
    wake_at: u64,
    reached: usize,
    pub caught_up: Rc<Notify>,
    /// Bytes every client read off its socket, when clients count them
    /// ([`crate::counted`]).
    pub wire: Rc<Cell<u64>>,
}

impl Board {
    /// A board for `clients` subscribers of one producer.
    pub fn new(clients: usize) -> Rc<RefCell<Board>> {
        Board::with_producers(clients, 1)
    }

    /// A board for `clients` subscribers of `producers` producers.
    pub fn with_producers(clients: usize, producers: usize) -> Rc<RefCell<Board>> {
        let producers = producers.max(1);
        Rc::new(RefCell::new(Board {
            producers,
            last: vec![0; clients * producers],
            progress: vec![0; clients],
            warmed: vec![false; clients],
            warmed_count: 0,
            received: vec![0; clients],
            replay_done: vec![None; clients],
            #[allow(clippy::expect_used, reason = "constant, valid bounds")]
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            record_from_ns: u64::MAX,
            record_until_ns: u64::MAX,
            counting: false,
            delivered: 0,
            lost: 0,
            jumped: vec![0; clients],
            coverage: vec![GapCoverage::default(); clients],
            duplicated: 0,
            gaps: 0,
            errors: 0,
            closed: 0,
            wake_at: u64::MAX,
            reached: 0,
            caught_up: Rc::new(Notify::new()),
            wire: Rc::new(Cell::new(0)),
        }))
    }

    fn on_frame(&mut self, idx: usize, bytes: &[u8]) {
        let frame = classify(bytes);
        // Every event moves the client along the hub's seqs, warm-up probes too.
        if let Frame::Event {
            hub_seq: Some(hub_seq),
            ..
        } = frame
        {
            self.coverage[idx].event(hub_seq);
        }
        match frame {
            Frame::Event { seq: 0, .. } => {
                if !self.warmed[idx] {
                    self.warmed[idx] = true;
                    self.warmed_count += 1;
                }
            }
            Frame::Event { seq, t_ns, .. } => {
                let now = now_ns();
                self.received[idx] += 1;
                if t_ns >= self.record_from_ns && t_ns < self.record_until_ns {
                    let us = now.saturating_sub(t_ns) / 1000;
                    let _ = self.latency_us.record(us.max(1));
                }
                if self.counting {
                    self.delivered += 1;
                }
                let (producer, k) = stream_of(seq, self.producers);
                let slot = idx * self.producers + producer;
                let last = self.last[slot];
                if k <= last {
                    self.duplicated += 1;
                    return;
                }
                self.lost += k - last - 1;
                self.jumped[idx] += k - last - 1;
                self.last[slot] = k;
                let before = self.progress[idx];
                self.progress[idx] += k - last;
                if before < self.wake_at && self.progress[idx] >= self.wake_at {
                    self.reached += 1;
                    if self.reached == self.progress.len() {
                        self.caught_up.notify_waiters();
                    }
                }
            }
            Frame::Gap { range } => {
                self.gaps += 1;
                if let Some((from, to)) = range {
                    self.coverage[idx].gap(from, to);
                }
            }
            Frame::ReplayComplete => self.replay_done[idx] = Some(now_ns()),
            Frame::Other => {}
        }
    }

    /// Asks to be notified (on [`Board::caught_up`], every waiter) once
    /// every client's progress reached `events`; returns `true` if they all
    /// already have.
    pub fn wake_when_all_reach(&mut self, events: u64) -> bool {
        self.wake_at = events;
        self.reached = self.progress.iter().filter(|&&p| p >= events).count();
        self.reached == self.progress.len()
    }

    /// The least progress of any client.
    pub fn min_progress(&self) -> u64 {
        self.progress.iter().copied().min().unwrap_or(0)
    }

    /// Events still missing at the end, counted as lost: what each producer
    /// published (`published[p]` events) minus what each client got of it.
    pub fn tail_lost(&self, published: &[u64]) -> u64 {
        (0..self.progress.len())
            .map(|idx| self.client_tail_lost(idx, published))
            .sum()
    }

    fn client_tail_lost(&self, idx: usize, published: &[u64]) -> u64 {
        self.last[idx * self.producers..(idx + 1) * self.producers]
            .iter()
            .zip(published)
            .map(|(&got, &sent)| sent.saturating_sub(got))
            .sum()
    }

    /// Lost events no `gap` frame covered, over all clients.
    ///
    /// Per client, the lost bench events (mid-stream and at the end) are
    /// excused only up to the hub seqs it skipped inside an announced
    /// range (plus announced seqs past its last event); and every hub seq
    /// skipped outside all announced ranges is unannounced, whatever the
    /// count. Capped at the client's lost events: a peer hub's envelope
    /// `seq` is the bench seq, whose producers' streams may interleave.
    pub fn unannounced_lost(&self, published: &[u64]) -> u64 {
        self.coverage
            .iter()
            .enumerate()
            .map(|(idx, coverage)| {
                let lost = self.jumped[idx] + self.client_tail_lost(idx, published);
                let announced = coverage.covered + coverage.announced_ahead();
                coverage
                    .uncovered
                    .max(lost.saturating_sub(announced))
                    .min(lost)
            })
            .sum()
    }
}

/// Bytes a client reads at most per `read` call.
const READ_BUFFER: usize = 8 * 1024;

/// Connects one client and optionally sends a first frame.
pub async fn connect(url: &str, first: Option<&str>) -> Result<Ws> {
    // TCP_NODELAY on, as every hub under test sets on its side. tungstenite
    // zero-fills its whole free read buffer before every read (128 KiB by
    // default): at a million small reads a second that memset alone would
    // saturate the load generator, so reads go into 8 KiB.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connecting {url}"))?;
    if let Some(frame) = first {
        futures::SinkExt::send(&mut ws, Message::text(frame)).await?;
    }
    Ok(ws)
}

/// Reads frames into the board until the connection ends.
pub async fn drive<S>(mut ws: WebSocketStream<S>, idx: usize, board: Rc<RefCell<Board>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => board.borrow_mut().on_frame(idx, text.as_bytes()),
            Ok(Message::Binary(bytes)) => board.borrow_mut().on_frame(idx, &bytes),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(_) => {
                board.borrow_mut().errors += 1;
                break;
            }
        }
    }
    board.borrow_mut().closed += 1;
}

/// Connects `n` clients (at most `in_flight` handshakes at once) and starts
/// reading on each; with `counted`, they count the bytes they read into the
/// board, and offer `permessage-deflate` when it is `Some(true)`. Returns
/// the seconds it took.
pub async fn connect_all(
    url: &str,
    first: Option<&str>,
    n: usize,
    in_flight: usize,
    board: &Rc<RefCell<Board>>,
    counted: Option<bool>,
) -> Result<f64> {
    let start = std::time::Instant::now();
    let gate = std::sync::Arc::new(Semaphore::new(in_flight));
    let mut pending = Vec::with_capacity(n);
    for idx in 0..n {
        let gate = gate.clone();
        let url = url.to_owned();
        let first = first.map(str::to_owned);
        let board = board.clone();
        pending.push(tokio::task::spawn_local(async move {
            let permit = gate.acquire_owned().await?;
            if let Some(deflate) = counted {
                let wire = board.borrow().wire.clone();
                let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
                let connecting = crate::counted::connect(&url, deflate, wire, config);
                let ws = tokio::time::timeout(Duration::from_secs(10), connecting)
                    .await
                    .with_context(|| format!("connecting {url} timed out"))??;
                drop(permit);
                tokio::task::spawn_local(drive(ws, idx, board));
                return anyhow::Ok(());
            }
            let mut attempt = 0;
            let ws = loop {
                match tokio::time::timeout(Duration::from_secs(10), connect(&url, first.as_deref()))
                    .await
                {
                    Ok(Ok(ws)) => break ws,
                    _ if attempt < 5 => attempt += 1,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => anyhow::bail!("connecting {url} timed out"),
                }
            };
            drop(permit);
            tokio::task::spawn_local(drive(ws, idx, board));
            anyhow::Ok(())
        }));
    }
    for task in pending {
        task.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Herald's event frame for bench seq `seq`, stored as hub seq `seq`.
    fn event(board: &mut Board, seq: u64) {
        let frame = format!(
            r#"{{"type":"event","topic":"bench","seq":{seq},"data":{{"bs":{seq},"bt":1,"pad":"x"}}}}"#
        );
        board.on_frame(0, frame.as_bytes());
    }

    fn gap(board: &mut Board, from: u64, to: u64) {
        let frame = format!(
            r#"{{"type":"gap","topic":"bench","from_seq":{from},"to_seq":{to},"reason":"shed"}}"#
        );
        board.on_frame(0, frame.as_bytes());
    }

    #[test]
    fn one_unrelated_gap_leaves_other_losses_unannounced() {
        let board = Board::new(1);
        let mut b = board.borrow_mut();
        event(&mut b, 1);
        event(&mut b, 2);
        gap(&mut b, 3, 3);
        // 3 announced; 5 and 8 dropped silently; 10 never arrives.
        for seq in [4, 6, 7, 9] {
            event(&mut b, seq);
        }
        assert_eq!((b.lost + b.tail_lost(&[10]), b.gaps), (4, 1));
        assert_eq!(b.unannounced_lost(&[10]), 3);
    }

    #[test]
    fn losses_inside_announced_gaps_are_not_counted() {
        let board = Board::new(1);
        let mut b = board.borrow_mut();
        event(&mut b, 1);
        gap(&mut b, 2, 4);
        event(&mut b, 5);
        // The last two were shed and announced after the last event.
        gap(&mut b, 6, 7);
        assert_eq!(b.lost + b.tail_lost(&[7]), 5);
        assert_eq!(b.unannounced_lost(&[7]), 0);
    }

    #[test]
    fn a_gap_over_a_warm_up_probe_does_not_excuse_a_bench_event() {
        // Hub seq 2 is a probe the client missed under a gap; hub seq 6
        // (bench seq 4) is gone without one.
        let board = Board::new(1);
        let mut b = board.borrow_mut();
        let frame = |hub: u64, bench: u64| {
            format!(
                r#"{{"type":"event","topic":"bench","seq":{hub},"data":{{"bs":{bench},"bt":1,"pad":"x"}}}}"#
            )
        };
        b.on_frame(0, frame(1, 0).as_bytes());
        gap(&mut b, 2, 2);
        for (hub, bench) in [(3, 1), (4, 2), (5, 3), (7, 5)] {
            b.on_frame(0, frame(hub, bench).as_bytes());
        }
        assert_eq!(b.unannounced_lost(&[5]), 1);
    }
}
