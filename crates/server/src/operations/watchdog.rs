//! The watchdog: a thread outside the runtime that notices when the runtime
//! stops making progress, logs what can be known about it, and counts it
//! (`herald_watchdog_stalls_total{kind}`, `herald_watchdog_stall_seconds`).
//!
//! It looks four times per `--watchdog-threshold` and tells three stalls
//! apart:
//!
//! - **worker**: a worker that is not parked and whose counters (busy time,
//!   parks) have not moved for the threshold is stuck in one poll: a task
//!   blocking its thread (synchronous IO, a lock, a long computation). The
//!   tasks queued behind it on that worker wait too. Its index is logged.
//! - **runtime**: a probe task, injected every look, was not run within the
//!   threshold: no worker could take new work.
//! - **process**: the watchdog's own thread woke a threshold late: nothing in
//!   the process ran (SIGSTOP, a paused VM, a starved machine). Reported once
//!   the process runs again, with how long it was out.
//!
//! A stall is logged when it is seen (with the workers' states, the global
//! queue depth and the number of live tasks) and again when it ends, and
//! counted once. Tokio's stable metrics do not say which task a worker is
//! polling, so a stall names the worker, not the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeMetrics};
use tokio_util::task::TaskTracker;

use crate::operations::metrics::{Metrics, StallKind};

/// A running watchdog; `stop` ends its thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Starts watching the runtime `handle` belongs to; probes are spawned
    /// on `tasks`. `threshold` must be positive.
    pub(crate) fn start(
        handle: Handle,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
        threshold: Duration,
    ) -> std::io::Result<Watchdog> {
        // Room for the one stop message: `stop` never blocks.
        let (stop, stopped) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("herald-watchdog".to_owned())
            .spawn(move || {
                let mut watch = Watch::new(handle, tasks, metrics, threshold);
                let tick = threshold / 4;
                // A stop message, or the watchdog dropped, ends the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    watch.look(Instant::now());
                }
            })?;
        Ok(Watchdog { stop, thread })
    }

    /// Stops the thread and waits for it (it wakes at once).
    pub(crate) fn stop(self) {
        let _ = self.stop.try_send(());
        let _ = self.thread.join();
    }
}

/// A task handed to the runtime; `ran` is set when a worker polled it.
#[derive(Debug)]
struct Probe {
    sent_at: Instant,
    ran: Arc<AtomicBool>,
}

/// What one worker's counters were when they last moved.
#[derive(Debug, Clone, Copy)]
struct WorkerSeen {
    park_unpark: u64,
    busy: Duration,
    since: Instant,
}

/// A stall being reported: its kind, when it started, which worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ongoing {
    kind: StallKind,
    since: Instant,
}

/// The watchdog's state between looks.
struct Watch {
    handle: Handle,
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    threshold: Duration,
    last_look: Instant,
    probe: Option<Probe>,
    runtime_stall: Option<Ongoing>,
    workers: Vec<WorkerSeen>,
    worker_stalls: Vec<Option<Ongoing>>,
}

impl Watch {
    fn new(
        handle: Handle,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
        threshold: Duration,
    ) -> Watch {
        let now = Instant::now();
        let runtime = handle.metrics();
        let workers: Vec<WorkerSeen> = (0..runtime.num_workers())
            .map(|worker| WorkerSeen {
                park_unpark: runtime.worker_park_unpark_count(worker),
                busy: runtime.worker_total_busy_duration(worker),
                since: now,
            })
            .collect();
        Watch {
            worker_stalls: vec![None; workers.len()],
            workers,
            handle,
            tasks,
            metrics,
            threshold,
            last_look: now,
            probe: None,
            runtime_stall: None,
        }
    }

    /// One look at the runtime (see the module docs).
    fn look(&mut self, now: Instant) {
        let expected = self.last_look + self.threshold / 4;
        let overslept = now.saturating_duration_since(expected);
        self.last_look = now;
        if overslept >= self.threshold {
            // Nothing ran, this thread included: not the runtime's doing.
            tracing::warn!(
                kind = StallKind::Process.as_str(),
                paused_ms = overslept.as_millis() as u64,
                "stall: the whole process was not running (stopped or paused)"
            );
            self.metrics.stalled(StallKind::Process, overslept);
            self.restart_baselines(now);
            return;
        }
        self.look_at_probe(now);
        self.look_at_workers(now);
    }

    /// After a process pause every baseline is stale: start them again.
    fn restart_baselines(&mut self, now: Instant) {
        self.probe = None;
        self.runtime_stall = None;
        self.worker_stalls.fill(None);
        let runtime = self.handle.metrics();
        for (worker, seen) in self.workers.iter_mut().enumerate() {
            *seen = WorkerSeen {
                park_unpark: runtime.worker_park_unpark_count(worker),
                busy: runtime.worker_total_busy_duration(worker),
                since: now,
            };
        }
    }

    fn look_at_probe(&mut self, now: Instant) {
        match &self.probe {
            None => self.send_probe(now),
            Some(probe) if probe.ran.load(Ordering::Acquire) => {
                if let Some(stall) = self.runtime_stall.take() {
                    self.ended(stall, now, None);
                }
                self.send_probe(now);
            }
            Some(probe) => {
                let waited = now.saturating_duration_since(probe.sent_at);
                if waited >= self.threshold && self.runtime_stall.is_none() {
                    let stall = Ongoing {
                        kind: StallKind::Runtime,
                        since: probe.sent_at,
                    };
                    self.seen(stall, now, None);
                    self.runtime_stall = Some(stall);
                }
            }
        }
    }

    fn send_probe(&mut self, now: Instant) {
        let ran = Arc::new(AtomicBool::new(false));
        let done = ran.clone();
        self.tasks.spawn_on(
            async move { done.store(true, Ordering::Release) },
            &self.handle,
        );
        self.probe = Some(Probe { sent_at: now, ran });
    }

    fn look_at_workers(&mut self, now: Instant) {
        let runtime = self.handle.metrics();
        for worker in 0..self.workers.len() {
            let park_unpark = runtime.worker_park_unpark_count(worker);
            let busy = runtime.worker_total_busy_duration(worker);
            let seen = self.workers[worker];
            // An odd count: parked, so idle. Moved counters: progress.
            let parked = park_unpark % 2 == 1;
            let moved = park_unpark != seen.park_unpark || busy != seen.busy;
            if parked || moved {
                self.workers[worker] = WorkerSeen {
                    park_unpark,
                    busy,
                    since: now,
                };
                if let Some(stall) = self.worker_stalls[worker].take() {
                    self.ended(stall, now, Some(worker));
                }
                continue;
            }
            let stuck_for = now.saturating_duration_since(seen.since);
            if stuck_for >= self.threshold && self.worker_stalls[worker].is_none() {
                let stall = Ongoing {
                    kind: StallKind::Worker,
                    since: seen.since,
                };
                self.seen(stall, now, Some(worker));
                self.worker_stalls[worker] = Some(stall);
            }
        }
    }

    /// A stall is found: logged with what the runtime shows, and counted.
    fn seen(&self, stall: Ongoing, now: Instant, worker: Option<usize>) {
        let runtime = self.handle.metrics();
        let stalled = now.saturating_duration_since(stall.since);
        tracing::warn!(
            kind = stall.kind.as_str(),
            worker,
            stalled_ms = stalled.as_millis() as u64,
            workers = %worker_states(&runtime),
            global_queue_depth = runtime.global_queue_depth(),
            alive_tasks = runtime.num_alive_tasks(),
            "stall: {}",
            match stall.kind {
                StallKind::Worker => "a worker has been in one poll past the threshold",
                StallKind::Runtime => "no worker has taken a new task within the threshold",
                StallKind::Process => "the process was not running",
            }
        );
        self.metrics.stalled(stall.kind, stalled);
    }

    /// A stall is over: how long it lasted.
    fn ended(&self, stall: Ongoing, now: Instant, worker: Option<usize>) {
        tracing::warn!(
            kind = stall.kind.as_str(),
            worker,
            lasted_ms = now.saturating_duration_since(stall.since).as_millis() as u64,
            "stall over"
        );
    }
}

/// Each worker as `index:parked` or `index:active`, e.g. `0:active 1:parked`.
fn worker_states(runtime: &RuntimeMetrics) -> String {
    (0..runtime.num_workers())
        .map(|worker| {
            let state = if runtime.worker_park_unpark_count(worker) % 2 == 1 {
                "parked"
            } else {
                "active"
            };
            format!("{worker}:{state}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("threshold", &self.threshold)
            .field("runtime_stall", &self.runtime_stall)
            .field("worker_stalls", &self.worker_stalls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker blocked in one poll (a real `std::thread::sleep` inside a
    /// task) is seen as a worker stall, counted once, while the other
    /// worker keeps the runtime taking new tasks. (A loaded machine may
    /// also delay the watchdog's own thread, a process stall, which is
    /// not what this test judges.)
    #[test]
    fn a_worker_blocked_in_one_poll_is_a_worker_stall() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let tasks = TaskTracker::new();
        let threshold = Duration::from_millis(100);
        let watchdog = Watchdog::start(
            runtime.handle().clone(),
            tasks.clone(),
            metrics.clone(),
            threshold,
        )
        .unwrap();
        runtime.block_on(async {
            let blocked = tasks.spawn(async {
                #[allow(clippy::disallowed_methods, reason = "the stall under test")]
                std::thread::sleep(Duration::from_millis(1000));
            });
            blocked.await.unwrap();
        });
        watchdog.stop();
        let out = metrics.render(Default::default());
        let count = |kind: &str| {
            let line = format!("herald_watchdog_stalls_total{{kind=\"{kind}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        assert_eq!(count("worker"), 1, "{out}");
    }
}
