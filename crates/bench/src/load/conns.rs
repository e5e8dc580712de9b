//! Idle connections (memory, idle CPU) and connection churn.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{drain, record_delivery, spin_until, subscribe_url, subscribers};
use crate::board::connect;
use crate::procfs::{CpuWindow, rss_kib};
use crate::spec::{LoadResult, LoadSpec};
use crate::wire::{now_ns, padding};

/// `clients` idle subscribed connections: RSS growth per connection and the
/// hub's CPU while nothing is published (heartbeats only).
///
/// The growth per connection is counted from a hub that one subscriber
/// already connected to and got an event from (it stays connected): the
/// first connection pages in the code every connection runs, which the
/// kernel maps once per process (Herald: ≈ 1.9 MB of its binary), and the
/// one-off state later connections reuse (the topic's entry and log, the
/// allocator's arenas). The growth from the hub as it started, ÷ N as well
/// (so it includes that first subscriber and the publisher), is kept beside
/// it (`rss_cold_bytes_per_conn`).
pub async fn idle(spec: &LoadSpec, clients: usize) -> Result<LoadResult> {
    let mut result = LoadResult::default();
    let pad = padding(100);
    let cold = spec.server_pid.and_then(rss_kib);
    let _first = subscribers(spec, 1, &pad).await?;
    tokio::time::sleep(SETTLE).await;
    let base = spec.server_pid.and_then(rss_kib);
    let (_board, _publisher, connect_s) = subscribers(spec, clients, &pad).await?;
    result.set("connect_s", connect_s);
    tokio::time::sleep(SETTLE).await;
    let now = spec.server_pid.and_then(rss_kib);
    let per_conn = |from: u64, to: u64| (to.saturating_sub(from) * 1024) as f64 / clients as f64;
    if let (Some(cold), Some(base), Some(now)) = (cold, base, now) {
        result.set("rss_cold_kib", cold as f64);
        result.set("rss_base_kib", base as f64);
        result.set("rss_kib", now as f64);
        result.set("rss_bytes_per_conn", per_conn(base, now));
        result.set("rss_cold_bytes_per_conn", per_conn(cold, now));
    }
    let cpu = CpuWindow::start(spec.server_pid);
    tokio::time::sleep(Duration::from_secs_f64(spec.duration_s)).await;
    if let (Some(cpu_us), wall_s) = cpu.stop() {
        result.set("idle_cpu_pct", cpu_us as f64 / (wall_s * 1e6) * 100.0);
    }
    Ok(result)
}

/// How long allocations get to settle before memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Connects `clients` as fast as the hub accepts them, then publishes at
/// `rate` to them while `churn` other connections/s open, subscribe and close.
pub async fn ramp(spec: &LoadSpec, clients: usize, churn: u64, rate: u64) -> Result<LoadResult> {
    let pad = padding(100);
    let mut result = LoadResult::default();
    let (board, mut publisher, connect_s) = subscribers(spec, clients, &pad).await?;
    result.set("connects_per_s", clients as f64 / connect_s);
    // Churn: a connection every 1/churn s, each kept ~100 ms then dropped.
    let url = subscribe_url(spec);
    let churned = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(0u64));
    let stop = Rc::new(Cell::new(false));
    let churner = {
        let (churned, failed, stop) = (churned.clone(), failed.clone(), stop.clone());
        let period = Duration::from_secs_f64(1.0 / churn.max(1) as f64);
        tokio::task::spawn_local(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.get() {
                ticks.tick().await;
                let (url, churned, failed) = (url.clone(), churned.clone(), failed.clone());
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout(Duration::from_secs(5), connect(&url, None)).await {
                        Ok(Ok(ws)) => {
                            churned.set(churned.get() + 1);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            drop(ws);
                        }
                        _ => failed.set(failed.get() + 1),
                    }
                });
            }
        })
    };
    // Publish at `rate` while churning; latency from the intended send time.
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let warm_until = start + Duration::from_secs_f64(spec.warmup_s);
    let end = warm_until + Duration::from_secs_f64(spec.duration_s);
    let mut seq = 0u64;
    let mut churned_at_warm = None;
    while Instant::now() < end {
        let next = start + interval * seq as u32;
        spin_until(next).await;
        if churned_at_warm.is_none() && Instant::now() >= warm_until {
            board.borrow_mut().record_from_ns = now_ns();
            churned_at_warm = Some((churned.get(), Instant::now()));
        }
        seq += 1;
        let intended = now_ns().saturating_sub(next.elapsed().as_nanos() as u64);
        publisher.publish_one(seq, intended, &pad).await?;
    }
    stop.set(true);
    let _ = churner.await;
    if let Some((at_warm, when)) = churned_at_warm {
        result.set(
            "churn_per_s",
            (churned.get() - at_warm) as f64 / when.elapsed().as_secs_f64(),
        );
    }
    result.set("churn_failed", failed.get() as f64);
    let drained = drain(&board, seq, Duration::from_secs(10)).await;
    record_delivery(&mut result, &board.borrow(), &[seq], drained);
    Ok(result)
}
