//! Which cells a run measures: the full suite or the smoke subset, and the
//! verdict that makes a run fail (Herald losing or duplicating events; never speed).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::report::Summary;
use crate::spec::{LoadResult, Regime, Scenario};
use crate::suite::{Cell, Placement, Plan, Run};
use crate::targets::{self, HeraldOpts, Paths, Target};

/// `herald-bench suite` options.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// A few seconds per scenario at N=50, one repeat, Herald + naive-axum + floor.
    #[arg(long)]
    pub smoke: bool,
    /// Repeats of every cell [default: 3, smoke: 1].
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Comma-separated placements: `pinned`, `free` [default: both; smoke: free].
    #[arg(long, value_delimiter = ',')]
    pub placements: Vec<String>,
    /// Comma-separated hubs [default: all; smoke: herald,naive-axum,floor].
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Comma-separated scenario groups: fanout (fanout-single, fanout-batched), compression, latency, idle, churn, ingest, replay [default: all].
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Comma-separated fan-out sizes [default: 100,1000,MAX].
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Seconds measured per cell [default: 5, smoke: 2].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Where the report goes [default: bench/results, smoke: target/bench/smoke].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The workspace root [default: where this crate was built from].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The `herald` binary to measure (`cargo xtask bench` passes the one it
    /// built) [default: `herald` beside this binary, where `cargo build
    /// --release -p herald -p herald-bench` puts it].
    #[arg(long, env = "HERALD_BIN")]
    pub herald_bin: Option<PathBuf>,
}

/// The most clients one run may hold: under Herald's default
/// `--max-connections` (10000) and the open-files limit of either process.
fn max_clients() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    (soft.saturating_sub(100) as usize).min(9_900)
}

/// Producers of the fixed-rate cells: single events, each producer taking
/// every fourth, so one answer in flight does not hold up the next event.
const RATE_PRODUCERS: usize = 4;

/// Events a fixed-rate cell measures at least, whatever `--duration` says:
/// its p99 is then the latency that one event in a hundred exceeds, not
/// the second-worst of a few hundred (at 100/s and 2 s, 200 events).
const MIN_RATE_EVENTS: f64 = 1000.0;

/// Seconds a fixed-rate cell at `rate` events/s measures: `duration_s`,
/// or longer if that would hold fewer than [`MIN_RATE_EVENTS`].
fn rate_duration(duration_s: f64, rate: u64) -> f64 {
    duration_s.max(MIN_RATE_EVENTS / rate.max(1) as f64)
}

/// Whether a cell of `group` is selected by `--only NAME`: its own name, or
/// the family before its `-` (`fanout` selects `fanout-single` and
/// `fanout-batched`).
fn in_group(group: &str, name: &str) -> bool {
    group == name
        || group
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Builds the plan from the options.
pub fn build(args: &SuiteArgs, paths: Paths, notes: &mut Vec<String>) -> Result<Plan> {
    let smoke = args.smoke;
    let placements = if args.placements.is_empty() {
        if smoke {
            vec![Placement::Free]
        } else {
            vec![Placement::Pinned, Placement::Free]
        }
    } else {
        args.placements
            .iter()
            .map(|p| match p.as_str() {
                "pinned" => Ok(Placement::Pinned),
                "free" => Ok(Placement::Free),
                other => bail!("unknown placement {other}"),
            })
            .collect::<Result<_>>()?
    };
    let wanted: Vec<Target> = if args.targets.is_empty() {
        if smoke {
            vec![Target::Herald, Target::NaiveAxum, Target::Floor]
        } else {
            Target::ALL.to_vec()
        }
    } else {
        args.targets
            .iter()
            .map(|t| Target::parse(t).ok_or_else(|| anyhow::anyhow!("unknown hub {t}")))
            .collect::<Result<_>>()?
    };
    let targets = targets::install(&paths, &wanted, notes);
    let duration_s = args.duration.unwrap_or(if smoke { 2.0 } else { 5.0 });
    let warmup_s = if smoke { 0.5 } else { 1.0 };
    let cell = |group, label: String, scenario, herald_only| Cell {
        group,
        label,
        scenario,
        herald_only,
        redis: false,
        opts: HeraldOpts::default(),
        duration_s,
        warmup_s,
    };
    let max = max_clients();
    let fanout_sizes: Vec<usize> = if !args.clients.is_empty() {
        args.clients.clone()
    } else if smoke {
        vec![50]
    } else {
        vec![100, 1000, max]
    };
    let small = if smoke { vec![50] } else { vec![100, 1000] };
    let mut cells = Vec::new();
    // Single events first: the regime producers in the seeds run.
    for &clients in &fanout_sizes {
        for producers in [1, 4] {
            cells.push(cell(
                "fanout-single",
                format!(
                    "N={clients} 100B, {producers} producer{}",
                    if producers == 1 { "" } else { "s" }
                ),
                Scenario::Fanout {
                    clients,
                    payload: 100,
                    regime: Regime::Single { producers },
                },
                false,
            ));
        }
    }
    let payloads: &[usize] = if smoke { &[100] } else { &[100, 2048] };
    for &clients in &fanout_sizes {
        for &payload in payloads {
            let label = format!(
                "N={clients} {}",
                if payload >= 1024 {
                    format!("{}KB", payload / 1024)
                } else {
                    format!("{payload}B")
                }
            );
            cells.push(cell(
                "fanout-batched",
                label,
                Scenario::Fanout {
                    clients,
                    payload,
                    regime: Regime::Batched,
                },
                false,
            ));
        }
    }
    // A language model's output, 8 KB of prose per event, to clients that
    // offer permessage-deflate to a hub with --compression, and the same
    // without: CPU per delivery and bytes on the wire.
    let prose_clients = if smoke { 20 } else { 100 };
    for deflate in [false, true] {
        let mut c = cell(
            "compression",
            format!(
                "N={prose_clients} 8KB prose, {}",
                if deflate {
                    "permessage-deflate"
                } else {
                    "plain"
                }
            ),
            Scenario::Compression {
                clients: prose_clients,
                payload: 8192,
                deflate,
            },
            true,
        );
        c.opts.compression = deflate;
        cells.push(c);
    }
    let rates: &[u64] = if smoke { &[1000] } else { &[100, 1000, 10_000] };
    let rate_cell = |clients: usize, rate: u64| {
        let mut c = cell(
            "latency",
            format!("N={clients} {rate}/s"),
            Scenario::Rate {
                clients,
                payload: 100,
                rate,
                producers: RATE_PRODUCERS,
            },
            false,
        );
        c.duration_s = rate_duration(duration_s, rate);
        c
    };
    if !smoke {
        // One subscriber: what a publish costs each hub before its first
        // write (an HTTP request for Herald, a `/pub` message for the
        // others), without a fan-out behind it.
        cells.push(rate_cell(1, 100));
    }
    for &clients in &small {
        for &rate in rates {
            cells.push(rate_cell(clients, rate));
        }
    }
    let idle_sizes = if smoke { vec![50] } else { vec![1000, max] };
    for clients in idle_sizes {
        let mut c = cell(
            "idle",
            format!("N={clients} hb=1s"),
            Scenario::Idle { clients },
            false,
        );
        c.opts.heartbeat = Some("1s".into());
        cells.push(c);
    }
    let (ramp_n, churn) = if smoke { (50, 100) } else { (1000, 1000) };
    cells.push(cell(
        "churn",
        format!("N={ramp_n} churn {churn}/s"),
        Scenario::Ramp {
            clients: ramp_n,
            churn,
            rate: 200,
        },
        false,
    ));
    cells.push(cell(
        "ingest",
        "HTTP 1 event/request".into(),
        Scenario::IngestHttp { batch: 1 },
        true,
    ));
    cells.push(cell(
        "ingest",
        "HTTP 100 events/request".into(),
        Scenario::IngestHttp { batch: 100 },
        true,
    ));
    let mut sqlite = cell(
        "ingest",
        "HTTP 100/request, sqlite".into(),
        Scenario::IngestHttp { batch: 100 },
        true,
    );
    sqlite.opts.store = Some(paths.work.join("bench.db"));
    cells.push(sqlite);
    if targets::herald_has_unix_socket(&paths) {
        let producers: &[usize] = if smoke { &[1] } else { &[1, 2] };
        for &p in producers {
            let scenario = Scenario::IngestUnix {
                producers: p,
                path: String::new(),
            };
            cells.push(cell(
                "ingest",
                format!("Unix datagrams, {p} producer(s)"),
                scenario,
                true,
            ));
        }
    } else {
        notes.push("herald serve has no --unix-socket: Unix ingest not measured".into());
    }
    if targets::has_redis() {
        // The Redis engine beside memory and SQLite: publish throughput,
        // and fan-out and latency across two nodes (the publisher on one,
        // the subscribers on the other).
        let on_redis = |mut c: Cell, nodes: usize| {
            c.redis = true;
            c.opts.nodes = nodes;
            c
        };
        for batch in [1, 100] {
            cells.push(on_redis(
                cell(
                    "ingest",
                    format!("HTTP {batch}/request, redis"),
                    Scenario::IngestHttp { batch },
                    true,
                ),
                1,
            ));
        }
        let clients = if smoke { 50 } else { 1000 };
        cells.push(on_redis(
            cell(
                "fanout-batched",
                format!("N={clients} 100B, redis, 2 nodes"),
                Scenario::Fanout {
                    clients,
                    payload: 100,
                    regime: Regime::Batched,
                },
                true,
            ),
            2,
        ));
        for rate in if smoke { vec![1000] } else { vec![100, 1000] } {
            let clients = if smoke { 50 } else { 100 };
            let mut c = rate_cell(clients, rate);
            c.label = format!("N={clients} {rate}/s, redis, 2 nodes");
            c.herald_only = true;
            cells.push(on_redis(c, 2));
        }
    } else {
        notes.push("redis-server is not installed: the Redis engine not measured".into());
    }
    let replay_clients = if smoke { 50 } else { 1000 };
    cells.push(cell(
        "replay",
        format!("{replay_clients} clients × last 100"),
        Scenario::Replay {
            clients: replay_clients,
            last: 100,
        },
        true,
    ));
    // A report's JSON is read back by group name (`herald-bench report`).
    if let Some(c) = cells
        .iter()
        .find(|c| !crate::suite::GROUPS.contains(&c.group))
    {
        bail!("the cells' group {} is missing from suite::GROUPS", c.group);
    }
    if !args.only.is_empty() {
        cells.retain(|c| args.only.iter().any(|g| in_group(c.group, g)));
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        if smoke {
            paths.work.join("smoke")
        } else {
            paths.root.join("bench/results")
        }
    });
    Ok(Plan {
        smoke,
        repeats: args.repeats.unwrap_or(if smoke { 1 } else { 3 }),
        placements,
        targets,
        cells,
        paths,
        out_dir,
    })
}

/// What makes a run fail: Herald errors, loses an event no `gap` frame
/// covered, duplicates, or leaves a replaying client incomplete. Speed
/// never does.
pub fn verdict(run: &Run, summaries: &[Summary]) -> Vec<String> {
    let mut failures = Vec::new();
    for r in run.records.iter().filter(|r| r.target == Target::Herald) {
        let case = format!(
            "herald {} {} ({} #{})",
            r.group,
            r.label,
            r.placement.name(),
            r.repeat + 1
        );
        match &r.result {
            Some(result) => failures.extend(
                cell_failures(result)
                    .into_iter()
                    .map(|failure| format!("{case}: {failure}")),
            ),
            None => failures.push(format!(
                "{case}: {}",
                r.error.as_deref().unwrap_or("no result")
            )),
        }
    }
    let _ = summaries;
    failures
}

/// Why one Herald cell fails, if it does.
///
/// A lost event is excused only when a `gap` frame named its hub seq
/// (`unannounced` counts the others, see [`crate::board::Board::unannounced_lost`]);
/// a cell that reports `lost` without `unannounced` has no gap tracking,
/// so all its losses count.
fn cell_failures(result: &LoadResult) -> Vec<String> {
    let get = |k: &str| result.get(k).unwrap_or(0.0);
    let mut failures = Vec::new();
    if get("duplicated") > 0.0 {
        failures.push(format!("{} duplicated deliveries", get("duplicated")));
    }
    let unannounced = result.get("unannounced").unwrap_or(get("lost"));
    if unannounced > 0.0 {
        failures.push(format!(
            "{unannounced} events lost without a gap frame covering them ({} lost, {} gap frames)",
            get("lost"),
            get("gaps")
        ));
    }
    if get("incomplete") > 0.0 {
        failures.push(format!(
            "{} replaying clients incomplete",
            get("incomplete")
        ));
    }
    if get("errors") > 0.0 {
        failures.push(format!("{} client connections failed", get("errors")));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(metrics: &[(&str, f64)]) -> LoadResult {
        let mut result = LoadResult::default();
        for &(name, value) in metrics {
            result.set(name, value);
        }
        result
    }

    #[test]
    fn a_gap_elsewhere_does_not_excuse_a_loss() {
        // Two events lost outside the one gap the client got.
        let cell = result(&[("lost", 3.0), ("gaps", 1.0), ("unannounced", 2.0)]);
        let failures = cell_failures(&cell);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("2 events lost without a gap frame covering them"));
    }

    #[test]
    fn losses_inside_announced_gaps_pass() {
        let cell = result(&[("lost", 3.0), ("gaps", 1.0), ("unannounced", 0.0)]);
        assert!(cell_failures(&cell).is_empty());
    }

    #[test]
    fn a_fixed_rate_cell_measures_at_least_a_thousand_events() {
        assert_eq!(rate_duration(2.0, 100), 10.0);
        assert_eq!(rate_duration(2.0, 1000), 2.0);
        assert_eq!(rate_duration(5.0, 10_000), 5.0);
        assert_eq!(rate_duration(20.0, 100), 20.0);
    }

    #[test]
    fn a_cell_without_gap_tracking_fails_on_any_loss() {
        let cell = result(&[("lost", 1.0)]);
        assert_eq!(cell_failures(&cell).len(), 1);
        assert!(cell_failures(&result(&[("duplicated", 1.0)])).len() == 1);
    }
}
