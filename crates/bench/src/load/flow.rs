//! Fan-out at the plateau and open-loop fixed-rate latency.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{counted_subscribers, drain, record_delivery, spin_until, subscribers};
use crate::procfs::CpuWindow;
use crate::spec::{LoadResult, LoadSpec};
use crate::wire::{now_ns, padding, prose};

/// Most events one publish call carries.
const MAX_BATCH: u64 = 64;

/// Events in flight for `clients` subscribers: enough to keep every socket
/// busy, few enough that no hub queue (Herald's default is 1024 frames) fills.
fn window(clients: usize) -> u64 {
    (200_000 / clients.max(1) as u64).clamp(8, 256)
}

/// 1→N as fast as the slowest subscriber keeps up.
pub async fn fanout(spec: &LoadSpec, clients: usize, payload: usize) -> Result<LoadResult> {
    plateau(spec, clients, &padding(payload), None).await
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
    plateau(spec, clients, &prose(payload), Some(deflate)).await
}

/// The fan-out plateau with `pad` in every event; with `counted`, the
/// subscribers count their bytes (and offer compression with `Some(true)`).
async fn plateau(
    spec: &LoadSpec,
    clients: usize,
    pad: &str,
    counted: Option<bool>,
) -> Result<LoadResult> {
    let (board, mut publisher, connect_s) = match counted {
        None => subscribers(spec, clients, pad).await?,
        Some(_) => counted_subscribers(spec, clients, pad, counted).await?,
    };
    let window = window(clients);
    let caught_up = board.borrow().caught_up.clone();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(spec.warmup_s);
    let measure_until = measure_from + Duration::from_secs_f64(spec.duration_s);
    let mut cpu = None;
    let mut wire_from = 0u64;
    let measured;
    let mut seq = 0u64; // last published
    let mut batch = Vec::with_capacity(MAX_BATCH as usize);
    loop {
        let now = Instant::now();
        if cpu.is_none() && now >= measure_from {
            let mut b = board.borrow_mut();
            b.counting = true;
            b.record_from_ns = now_ns();
            wire_from = b.wire.get();
            cpu = Some((
                CpuWindow::start(spec.server_pid),
                CpuWindow::start(Some(std::process::id())),
            ));
        }
        if now >= measure_until {
            let mut b = board.borrow_mut();
            b.counting = false;
            b.record_until_ns = now_ns();
            measured = cpu.as_ref().map(|(c, own)| {
                (
                    c.stop(),
                    own.stop().0,
                    b.delivered,
                    b.wire.get() - wire_from,
                )
            });
            break;
        }
        let in_flight = seq - board.borrow().min_last();
        if in_flight >= window {
            // Sleep until every client has half the window, or re-check soon.
            let all_there = board.borrow_mut().wake_when_all_reach(seq - window / 2);
            if !all_there {
                let _ = tokio::time::timeout(Duration::from_millis(50), caught_up.notified()).await;
            }
            continue;
        }
        let n = (window - in_flight).min(MAX_BATCH);
        let t = now_ns();
        batch.clear();
        batch.extend((seq + 1..=seq + n).map(|s| (s, t)));
        publisher.publish(&batch, pad).await?;
        seq += n;
    }
    let drained = drain(&board, seq, Duration::from_secs(10)).await;
    let mut result = LoadResult::default();
    result.set("connect_s", connect_s);
    result.set("window", window as f64);
    if let Some(((cpu_us, wall_s), own_us, delivered, wire)) = measured {
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
    }
    record_delivery(&mut result, &board.borrow(), seq, drained);
    Ok(result)
}

/// Publishes at `rate` events/s, open loop: each event carries its intended
/// send time, so a hub that falls behind shows it as latency.
pub async fn fixed_rate(
    spec: &LoadSpec,
    clients: usize,
    payload: usize,
    rate: u64,
) -> Result<LoadResult> {
    let pad = padding(payload);
    let (board, mut publisher, connect_s) = subscribers(spec, clients, &pad).await?;
    let total_s = spec.warmup_s + spec.duration_s;
    let total = (total_s * rate as f64) as u64;
    let warm = (spec.warmup_s * rate as f64) as u64;
    let start_ns = now_ns() + 1_000_000;
    let start = Instant::now() + Duration::from_millis(1);
    let interval_ns = 1e9 / rate as f64;
    let intended = |i: u64| start_ns + ((i - 1) as f64 * interval_ns) as u64;
    {
        let mut b = board.borrow_mut();
        b.record_from_ns = intended(warm + 1);
        b.record_until_ns = u64::MAX;
    }
    let mut cpu = None;
    let mut sent = 0u64;
    let mut batch = Vec::new();
    while sent < total {
        if cpu.is_none() && sent >= warm {
            cpu = Some((
                CpuWindow::start(spec.server_pid),
                CpuWindow::start(Some(std::process::id())),
            ));
        }
        let elapsed_ns = start.elapsed().as_nanos() as f64;
        let due = ((elapsed_ns / interval_ns) as u64 + 1).min(total);
        if due <= sent {
            spin_until(start + Duration::from_nanos((sent as f64 * interval_ns) as u64)).await;
            continue;
        }
        let upto = due.min(sent + 1000);
        batch.clear();
        batch.extend((sent + 1..=upto).map(|i| (i, intended(i))));
        publisher.publish(&batch, &pad).await?;
        sent = upto;
    }
    let cpu = cpu.map(|(server, own)| (server.stop(), own.stop().0));
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    let drained = drain(&board, sent, Duration::from_secs(10)).await;
    let mut result = LoadResult::default();
    result.set("connect_s", connect_s);
    result.set("rate", rate as f64);
    result.set("achieved_rate", achieved);
    if let Some(((server_us, wall_s), own_us)) = cpu {
        if let Some(us) = server_us {
            result.set("server_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
        }
        if let Some(us) = own_us {
            result.set("loadgen_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
        }
    }
    let b = board.borrow();
    record_delivery(&mut result, &b, sent, drained);
    // Carried: everything arrived, the publisher kept pace, and latency stayed bounded.
    let p99 = result.get("p99_us").unwrap_or(f64::MAX);
    let carried = drained && b.lost == 0 && achieved >= 0.95 * rate as f64 && p99 < 1_000_000.0;
    result.set("carried", if carried { 1.0 } else { 0.0 });
    Ok(result)
}
