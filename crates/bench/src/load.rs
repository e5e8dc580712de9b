//! `herald-bench load`: runs one [`LoadSpec`] on a single current-thread
//! runtime and prints its [`LoadResult`] as JSON.
//!
//! # Layout
//!
//! - [`flow`]: fan-out at the plateau and open-loop fixed rates.
//! - [`conns`]: idle connections and connection churn.
//! - [`ingest`]: Herald-only publish paths and the replay burst.

mod conns;
mod flow;
mod ingest;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::board::Board;
use crate::publisher::Publisher;
use crate::spec::{Adapter, LoadResult, LoadSpec, Scenario};
use crate::wire::now_ns;

/// Runs a cell to completion.
pub fn run(spec: &LoadSpec) -> Result<LoadResult> {
    crate::procfs::raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        match &spec.scenario {
            Scenario::Fanout {
                clients,
                payload,
                regime,
            } => flow::fanout(spec, *clients, *payload, *regime).await,
            Scenario::Rate {
                clients,
                payload,
                rate,
                producers,
            } => flow::fixed_rate(spec, *clients, *payload, *rate, *producers).await,
            Scenario::Idle { clients } => conns::idle(spec, *clients).await,
            Scenario::Ramp {
                clients,
                churn,
                rate,
            } => conns::ramp(spec, *clients, *churn, *rate).await,
            Scenario::IngestHttp { batch } => ingest::http(spec, *batch).await,
            Scenario::IngestUnix { producers, path } => ingest::unix(spec, *producers, path).await,
            Scenario::Replay { clients, last } => ingest::replay(spec, *clients, *last).await,
            Scenario::Compression {
                clients,
                payload,
                deflate,
            } => flow::compression(spec, *clients, *payload, *deflate).await,
        }
    })
}

/// The URL a subscriber of `bench` connects to.
fn subscribe_url(spec: &LoadSpec) -> String {
    match spec.adapter {
        Adapter::Herald => format!("ws://{}/ws?topics=bench", spec.addr),
        Adapter::Relay => format!("ws://{}/ws", spec.addr),
    }
}

/// Handshakes in flight while connecting many clients.
const CONNECT_IN_FLIGHT: usize = 64;

/// Connects `clients` subscribers and waits until each has received a
/// warm-up probe (so the hub has registered them). Returns the board and
/// the publisher.
async fn subscribers(
    spec: &LoadSpec,
    clients: usize,
    pad: &str,
) -> Result<(Rc<RefCell<Board>>, Publisher, f64)> {
    let (board, mut publishers, connect_s) = connect_load(spec, clients, pad, 1, None).await?;
    let publisher = publishers.pop().context("no publisher")?;
    Ok((board, publisher, connect_s))
}

/// [`subscribers`] of `producers` publishers (each its own connection),
/// clients that count their bytes on the wire with `counted` (see
/// [`crate::board::connect_all`]), offering `permessage-deflate` with
/// `Some(true)`.
async fn connect_load(
    spec: &LoadSpec,
    clients: usize,
    pad: &str,
    producers: usize,
    counted: Option<bool>,
) -> Result<(Rc<RefCell<Board>>, Vec<Publisher>, f64)> {
    let board = Board::with_producers(clients, producers);
    let connect_s = crate::board::connect_all(
        &subscribe_url(spec),
        None,
        clients,
        CONNECT_IN_FLIGHT,
        &board,
        counted,
    )
    .await?;
    let publish_addr = spec.publish_addr.as_deref().unwrap_or(&spec.addr);
    let mut publishers = Vec::with_capacity(producers);
    for _ in 0..producers.max(1) {
        publishers.push(Publisher::connect(spec.adapter, publish_addr).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while board.borrow().warmed_count < clients {
        if Instant::now() > deadline {
            bail!(
                "only {} of {clients} subscribers saw a warm-up probe",
                board.borrow().warmed_count
            );
        }
        publishers[0].publish_one(0, now_ns(), pad).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((board, publishers, connect_s))
}

/// Waits until `deadline` without sleeping: tokio's timer has a 1 ms
/// resolution, which would stamp up to a millisecond of its own lateness on
/// every open-loop send. Yielding in a loop also keeps the runtime polling
/// its sockets, so frames are read when they arrive, not after the load
/// generator's thread wakes up. The load generator's core stays busy; it is
/// its own core in the pinned placement.
async fn spin_until(deadline: Instant) {
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// Waits until every client has `published` events in all (or `limit`
/// passes); true if all did.
async fn drain(board: &Rc<RefCell<Board>>, published: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while board.borrow().min_progress() < published {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Latency percentiles (µs) and the loss counters into `result`;
/// `published[p]`: the events producer `p` published.
fn record_delivery(result: &mut LoadResult, board: &Board, published: &[u64], drained: bool) {
    let h = &board.latency_us;
    if !h.is_empty() {
        result.set("p50_us", h.value_at_quantile(0.50) as f64);
        result.set("p99_us", h.value_at_quantile(0.99) as f64);
        result.set("p999_us", h.value_at_quantile(0.999) as f64);
        result.set("max_us", h.max() as f64);
        result.set("latency_samples", h.len() as f64);
    }
    result.set("published", published.iter().sum::<u64>() as f64);
    result.set("lost", (board.lost + board.tail_lost(published)) as f64);
    result.set("unannounced", board.unannounced_lost(published) as f64);
    result.set("duplicated", board.duplicated as f64);
    result.set("gaps", board.gaps as f64);
    result.set("errors", board.errors as f64);
    result.set("closed", board.closed as f64);
    result.set("drained", if drained { 1.0 } else { 0.0 });
}
