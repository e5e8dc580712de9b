//! Herald-only measurements: the publish paths (HTTP, Unix datagrams, with
//! any `--store`) and the replay burst.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{connect_load, drain, record_delivery};
use crate::board::{Board, connect_all};
use crate::http::HttpConn;
use crate::procfs::CpuWindow;
use crate::spec::{LoadResult, LoadSpec};
use crate::wire::{self, now_ns, padding};

/// Closed-loop `POST /api/v1/events` on one connection, `batch` events per request.
pub async fn http(spec: &LoadSpec, batch: usize) -> Result<LoadResult> {
    let pad = padding(100);
    let mut conn = HttpConn::connect(&spec.addr).await?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(spec.warmup_s);
    let measure_until = measure_from + Duration::from_secs_f64(spec.duration_s);
    let (mut seq, mut counted, mut requests) = (0u64, 0u64, 0u64);
    let mut cpu = None;
    let mut body = String::new();
    loop {
        let now = Instant::now();
        if cpu.is_none() && now >= measure_from {
            cpu = Some(CpuWindow::start(spec.server_pid));
        }
        if now >= measure_until {
            break;
        }
        body.clear();
        let t = now_ns();
        if batch == 1 {
            wire::herald_event(&mut body, seq + 1, t, &pad);
        } else {
            body.push('[');
            for i in 0..batch as u64 {
                if i > 0 {
                    body.push(',');
                }
                wire::herald_event(&mut body, seq + 1 + i, t, &pad);
            }
            body.push(']');
        }
        let (status, reply) = conn.post_json("/api/v1/events", body.as_bytes()).await?;
        if !(200..300).contains(&status) {
            bail!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        seq += batch as u64;
        if cpu.is_some() {
            counted += batch as u64;
            requests += 1;
        }
    }
    let mut result = LoadResult::default();
    if let Some(cpu) = cpu {
        let (cpu_us, wall_s) = cpu.stop();
        result.set("events_per_s", counted as f64 / wall_s);
        result.set("requests_per_s", requests as f64 / wall_s);
        if let Some(cpu_us) = cpu_us.filter(|_| counted > 0) {
            result.set("cpu_us_per_event", cpu_us as f64 / counted as f64);
        }
    }
    Ok(result)
}

/// `producers` senders on Herald's Unix datagram socket, as fast as the
/// socket takes datagrams; one subscriber counts what the hub published.
///
/// Producer `p` numbers its datagrams in its own bench-seq stream
/// ([`wire::bench_seq`]) and alone counts them, so seqs are unique and the
/// sent count exact however the sends interleave. After the window the
/// subscriber drains, and what it lost or got twice is reported.
pub async fn unix(spec: &LoadSpec, producers: usize, path: &str) -> Result<LoadResult> {
    let pad = padding(100);
    let producers = producers.max(1);
    // The extra HTTP publishers stay idle: only the first sends warm-up probes.
    let (board, _publishers, _) = connect_load(spec, 1, &pad, producers, None).await?;
    let sent: Vec<Rc<Cell<u64>>> = (0..producers).map(|_| Rc::new(Cell::new(0))).collect();
    let total = |sent: &[Rc<Cell<u64>>]| sent.iter().map(|s| s.get()).sum::<u64>();
    let stop = Rc::new(Cell::new(false));
    let mut tasks = Vec::new();
    for (producer, counter) in sent.iter().enumerate() {
        let socket = tokio::net::UnixDatagram::unbound()?;
        socket
            .connect(path)
            .with_context(|| format!("connecting to {path}"))?;
        let (counter, stop, pad) = (counter.clone(), stop.clone(), pad.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut event = String::new();
            let mut k = 0u64;
            while !stop.get() {
                k += 1;
                event.clear();
                let seq = wire::bench_seq(producer, k, producers);
                wire::herald_event(&mut event, seq, now_ns(), &pad);
                socket.send(event.as_bytes()).await?;
                counter.set(k);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_s)).await;
    let (sent0, got0) = (total(&sent), board.borrow().received[0]);
    let cpu = CpuWindow::start(spec.server_pid);
    let own = CpuWindow::start(Some(std::process::id()));
    tokio::time::sleep(Duration::from_secs_f64(spec.duration_s)).await;
    let (sent1, got1) = (total(&sent), board.borrow().received[0]);
    let (cpu_us, wall_s) = cpu.stop();
    // Which side is the bottleneck: a hub below 100 % while the load
    // generator (producers and the subscriber) is at 100 % is waiting for it.
    let mut result = LoadResult::default();
    if let Some(us) = own.stop().0 {
        result.set("loadgen_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
    }
    if let Some(us) = cpu_us {
        result.set("server_cpu_pct", us as f64 / (wall_s * 1e6) * 100.0);
    }
    stop.set(true);
    for task in tasks {
        task.await??;
    }
    result.set("sent_per_s", (sent1 - sent0) as f64 / wall_s);
    result.set("events_per_s", (got1 - got0) as f64 / wall_s);
    if let Some(cpu_us) = cpu_us.filter(|_| got1 > got0) {
        result.set("cpu_us_per_event", cpu_us as f64 / (got1 - got0) as f64);
    }
    let published: Vec<u64> = sent.iter().map(|s| s.get()).collect();
    let drained = drain(&board, total(&sent), Duration::from_secs(10)).await;
    record_delivery(&mut result, &board.borrow(), &published, drained);
    Ok(result)
}

/// Fills the topic's history, then `clients` connect at once, each
/// subscribing with `since` = the latest seq − `last`.
pub async fn replay(spec: &LoadSpec, clients: usize, last: u64) -> Result<LoadResult> {
    let pad = padding(100);
    let mut conn = HttpConn::connect(&spec.addr).await?;
    let mut latest = 0u64;
    let fill = last.max(1000);
    let mut body = String::new();
    for chunk in 0..fill.div_ceil(100) {
        body.clear();
        body.push('[');
        for i in 0..100 {
            if i > 0 {
                body.push(',');
            }
            wire::herald_event(&mut body, chunk * 100 + i + 1, now_ns(), &pad);
        }
        body.push(']');
        let (status, reply) = conn.post_json("/api/v1/events", body.as_bytes()).await?;
        if !(200..300).contains(&status) {
            bail!("publish answered {status}");
        }
        latest = memchr::memmem::rfind(&reply, br#""seq":"#)
            .and_then(|at| std::str::from_utf8(&reply[at + 6..]).ok())
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .context("no seq in the publish reply")?;
    }
    let since = latest.saturating_sub(last);
    let frame =
        format!(r#"{{"action":"subscribe","topics":["bench"],"since":{{"bench":{since}}}}}"#);
    let board = Board::new(clients);
    let start = now_ns();
    let cpu = CpuWindow::start(spec.server_pid);
    connect_all(
        &format!("ws://{}/ws", spec.addr),
        Some(&frame),
        clients,
        clients,
        &board,
        None,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |b: &Board| {
        b.replay_done
            .iter()
            .zip(&b.received)
            .all(|(d, &r)| d.is_some() && r >= last)
    };
    while !complete(&board.borrow()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (cpu_us, _) = cpu.stop();
    let b = board.borrow();
    let mut done: Vec<u64> = b
        .replay_done
        .iter()
        .flatten()
        .map(|&t| t.saturating_sub(start))
        .collect();
    done.sort_unstable();
    let mut result = LoadResult::default();
    let received: u64 = b.received.iter().sum();
    if let Some(&slowest) = done.last() {
        let total_s = slowest as f64 / 1e9;
        result.set("replay_total_ms", total_s * 1e3);
        result.set("replayed_per_s", received as f64 / total_s);
        result.set("p50_ms", done[done.len() / 2] as f64 / 1e6);
        result.set(
            "p99_ms",
            done[(done.len() * 99 / 100).min(done.len() - 1)] as f64 / 1e6,
        );
    }
    if let Some(cpu_us) = cpu_us {
        result.set("cpu_ms", cpu_us as f64 / 1e3);
    }
    result.set(
        "incomplete",
        b.received.iter().filter(|&&r| r < last).count() as f64,
    );
    result.set("duplicated", b.duplicated as f64);
    result.set("gaps", b.gaps as f64);
    Ok(result)
}
