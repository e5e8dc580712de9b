//! The subscriber side of the load generator: N WebSocket clients on one
//! current-thread runtime, all writing into one [`Board`].
//!
//! Each client reads frames, classifies them with a byte search
//! ([`crate::wire::classify`]) and records latency, loss, duplicates and
//! gaps. The board also tells the publisher when every client has caught
//! up to a given seq, so fan-out can run a bounded window in flight.

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
        match classify(bytes) {
            Frame::Event { seq: 0, .. } => {
                if !self.warmed[idx] {
                    self.warmed[idx] = true;
                    self.warmed_count += 1;
                }
            }
            Frame::Event { seq, t_ns } => {
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
            Frame::Gap => self.gaps += 1,
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
        self.last
            .chunks(self.producers)
            .map(|places| {
                places
                    .iter()
                    .zip(published)
                    .map(|(&got, &sent)| sent.saturating_sub(got))
                    .sum::<u64>()
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
