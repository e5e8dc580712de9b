//! Fan-out at the plateau, in either regime (single events from one or
//! more producers, or batches), and open-loop fixed-rate latency with
//! single events.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use hdrhistogram::Histogram;

use super::{connect_load, drain, record_delivery, spin_until};
use crate::board::Board;
use crate::procfs::CpuWindow;
use crate::publisher::Publisher;
use crate::spec::{LoadResult, LoadSpec, Regime};
use crate::wire::{bench_seq, now_ns, padding, prose};

/// Events in flight for `clients` subscribers: enough to keep every socket
/// busy, few enough that no hub queue (Herald's default is 1024 frames) fills.
fn window(clients: usize) -> u64 {
    (200_000 / clients.max(1) as u64).clamp(8, 256)
}

/// 1→N as fast as the slowest subscriber keeps up, events published in `regime`.
pub async fn fanout(
    spec: &LoadSpec,
    clients: usize,
    payload: usize,
    regime: Regime,
) -> Result<LoadResult> {
    plateau(spec, clients, &padding(payload), regime, None).await
}

/// 1→N of prose events (a language model's output) as fast as the slowest
/// subscriber keeps up, the subscribers offering `permessage-deflate` or
/// not: adds the bytes on the wire per delivery.
pub async fn compression(
    spec: &LoadSpec,
    clients: usize,
    payload: usize,
    deflate: bool,
) -> Result<LoadResult> {
    plateau(
        spec,
        clients,
        &prose(payload),
        Regime::Batched,
        Some(deflate),
    )
    .await
}

/// What the producers of a plateau share.
#[derive(Debug, Default)]
struct Flow {
    /// Events published (or on their way) by all producers together.
    published: Cell<u64>,
    stop: Cell<bool>,
}

/// The fan-out plateau with `pad` in every event; with `counted`, the
/// subscribers count their bytes (and offer compression with `Some(true)`).
async fn plateau(
    spec: &LoadSpec,
    clients: usize,
    pad: &str,
    regime: Regime,
    counted: Option<bool>,
) -> Result<LoadResult> {
    let producers = regime.producers();
    let (board, publishers, connect_s) =
        connect_load(spec, clients, pad, producers, counted).await?;
    let window = window(clients);
    let flow = Rc::new(Flow::default());
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(producer, publisher)| {
            let produce = produce(Producer {
                index: producer,
                of: producers,
                publisher,
                board: board.clone(),
                flow: flow.clone(),
                window,
                batch: regime.batch(),
                pad: pad.to_owned(),
            });
            tokio::task::spawn_local(produce)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_s)).await;
    let (cpu, own, wire_from) = {
        let mut b = board.borrow_mut();
        b.counting = true;
        b.record_from_ns = now_ns();
        (
            CpuWindow::start(spec.server_pid),
            CpuWindow::start(Some(std::process::id())),
            b.wire.get(),
        )
    };
    tokio::time::sleep(Duration::from_secs_f64(spec.duration_s)).await;
    let ((cpu_us, wall_s), own_us, delivered, wire) = {
        let mut b = board.borrow_mut();
        b.counting = false;
        b.record_until_ns = now_ns();
        (
            cpu.stop(),
            own.stop().0,
            b.delivered,
            b.wire.get() - wire_from,
        )
    };
    flow.stop.set(true);
    let mut published = Vec::with_capacity(tasks.len());
    for task in tasks {
        published.push(
            task.await
                .map_err(|e| anyhow!("a producer failed: {e}"))??,
        );
    }
    let drained = drain(&board, flow.published.get(), Duration::from_secs(10)).await;
    let mut result = LoadResult::default();
    result.set("connect_s", connect_s);
    result.set("window", window as f64);
    result.set("producers", producers as f64);
    if counted.is_some() && delivered > 0 {
        result.set("wire_bytes_per_delivery", wire as f64 / delivered as f64);
    }
    if let Some(own_us) = own_us {
        result.set("loadgen_cpu_pct", own_us as f64 / (wall_s * 1e6) * 100.0);
    }
    result.set("delivered_per_s", delivered as f64 / wall_s);
    result.set("delivered", delivered as f64);
    if let Some(cpu_us) = cpu_us {
        result.set("server_cpu_pct", cpu_us as f64 / (wall_s * 1e6) * 100.0);
        if delivered > 0 {
            result.set("cpu_us_per_delivery", cpu_us as f64 / delivered as f64);
        }
    }
    record_delivery(&mut result, &board.borrow(), &published, drained);
    Ok(result)
}

/// One publishing connection of a plateau.
#[derive(Debug)]
struct Producer {
    /// Which producer this is, of how many.
    index: usize,
    of: usize,
    publisher: Publisher,
    board: Rc<RefCell<Board>>,
    flow: Rc<Flow>,
    window: u64,
    /// Most events per publish (1: single events).
    batch: usize,
    pad: String,
}

/// Publishes while fewer than `window` events are in flight (published by
/// any producer, not yet received by every client), until told to stop;
/// returns how many events this producer published.
async fn produce(mut p: Producer) -> Result<u64> {
    let caught_up = p.board.borrow().caught_up.clone();
    let mut k = 0u64;
    let mut events = Vec::with_capacity(p.batch);
    while !p.flow.stop.get() {
        let total = p.flow.published.get();
        let in_flight = total - p.board.borrow().min_progress();
        if in_flight >= p.window {
            // Wait until every client has half the window, or re-check soon.
            let all_there = p
                .board
                .borrow_mut()
                .wake_when_all_reach(total - p.window / 2);
            if !all_there {
                let _ = tokio::time::timeout(Duration::from_millis(50), caught_up.notified()).await;
            }
            continue;
        }
        let n = (p.window - in_flight).min(p.batch as u64);
        p.flow.published.set(total + n);
        let t = now_ns();
        if p.batch == 1 {
            k += 1;
            let seq = bench_seq(p.index, k, p.of);
            p.publisher.publish_one(seq, t, &p.pad).await?;
        } else {
            events.clear();
            events.extend((k + 1..=k + n).map(|k| (bench_seq(p.index, k, p.of), t)));
            k += n;
            p.publisher.publish(&events, &p.pad).await?;
        }
    }
    Ok(k)
}

/// Publishes at `rate` events/s, open loop, each event on its own, from
/// `producers` connections in turn (event `i` on connection `i mod
/// producers`, so one slow answer does not hold up the others): each event
/// carries its intended send time, so a hub that falls behind shows it as
/// latency.
pub async fn fixed_rate(
    spec: &LoadSpec,
    clients: usize,
    payload: usize,
    rate: u64,
    producers: usize,
) -> Result<LoadResult> {
    let pad = padding(payload);
    let (board, publishers, connect_s) = connect_load(spec, clients, &pad, producers, None).await?;
    let producers = publishers.len();
    let total_s = spec.warmup_s + spec.duration_s;
    let total = (total_s * rate as f64) as u64;
    let warm = (spec.warmup_s * rate as f64) as u64;
    let start_ns = now_ns() + 1_000_000;
    let start = Instant::now() + Duration::from_millis(1);
    let interval_ns = 1e9 / rate as f64;
    let intended_ns = move |i: u64| start_ns + ((i - 1) as f64 * interval_ns) as u64;
    let intended_at =
        move |i: u64| start + Duration::from_nanos(((i - 1) as f64 * interval_ns) as u64);
    {
        let mut b = board.borrow_mut();
        b.record_from_ns = intended_ns(warm + 1);
        b.record_until_ns = u64::MAX;
    }
    let sent = Rc::new(Cell::new(0u64));
    // How late the load generator itself sent each measured event: a part
    // of its latency that is the load generator's, not the hub's.
    let late_us = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1,
        120_000_000,
        3,
    )?));
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(producer, mut publisher)| {
            let (sent, pad, late_us) = (sent.clone(), pad.clone(), late_us.clone());
            tokio::task::spawn_local(async move {
                let mut i = producer as u64 + 1;
                let mut k = 0u64;
                while i <= total {
                    spin_until(intended_at(i)).await;
                    if i > warm {
                        let late_ns = now_ns().saturating_sub(intended_ns(i));
                        late_us.borrow_mut().saturating_record(late_ns / 1000);
                    }
                    publisher.publish_one(i, intended_ns(i), &pad).await?;
                    sent.set(sent.get() + 1);
                    k += 1;
                    i += producers as u64;
                }
                anyhow::Ok(k)
            })
        })
        .collect();
    spin_until(intended_at(warm + 1)).await;
    let server = CpuWindow::start(spec.server_pid);
    let own = CpuWindow::start(Some(std::process::id()));
    let mut published = Vec::with_capacity(tasks.len());
    for task in tasks {
        published.push(
            task.await
                .map_err(|e| anyhow!("a producer failed: {e}"))??,
        );
    }
    let (server_us, wall_s) = server.stop();
    let own_us = own.stop().0;
    let achieved = sent.get() as f64 / start.elapsed().as_secs_f64();
    let drained = drain(&board, sent.get(), Duration::from_secs(10)).await;
    let mut result = LoadResult::default();
    result.set("connect_s", connect_s);
    result.set("rate", rate as f64);
    result.set("producers", producers as f64);
    result.set("achieved_rate", achieved);
    if let Some(us) = server_us {
        result.set("server_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
    }
    if let Some(us) = own_us {
        result.set("loadgen_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
    }
    let late_us = late_us.borrow();
    if !late_us.is_empty() {
        result.set("send_late_p99_us", late_us.value_at_quantile(0.99) as f64);
        result.set("send_late_max_us", late_us.max() as f64);
    }
    let b = board.borrow();
    record_delivery(&mut result, &b, &published, drained);
    // Carried: everything arrived, the publisher kept pace, and latency stayed bounded.
    let p99 = result.get("p99_us").unwrap_or(f64::MAX);
    let carried = drained && b.lost == 0 && achieved >= 0.95 * rate as f64 && p99 < 1_000_000.0;
    result.set("carried", if carried { 1.0 } else { 0.0 });
    Ok(result)
}
