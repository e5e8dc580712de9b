//! `herald-bench suite`: the whole benchmark. For every placement and
//! repeat, every scenario runs against every hub in turn (interleaved, so
//! drift on the machine hits all of them alike); each cell gets a fresh
//! server and a `herald-bench load` child that does the measuring.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer, Serialize};

use crate::procfs::Machine;
use crate::spec::{LoadResult, LoadSpec, Scenario};
use crate::targets::{HeraldOpts, Paths, Server, Target};

/// Where the hub and the load generator run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Hub on CPU 0 (`taskset -c 0`), load generator on CPU 1.
    Pinned,
    /// Both free to run anywhere.
    Free,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned",
            Placement::Free => "free",
        }
    }
}

/// One scenario cell, run against each of its targets.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Report group, e.g. `fanout-single`.
    pub group: &'static str,
    /// Row label within the group, e.g. `N=1000 100B`.
    pub label: String,
    pub scenario: Scenario,
    /// Herald-only cells (ingest, replay) skip the peers.
    pub herald_only: bool,
    /// Herald on Redis (`opts.nodes` nodes sharing one `redis-server`).
    pub redis: bool,
    pub opts: HeraldOpts,
    pub duration_s: f64,
    pub warmup_s: f64,
}

/// A report group's name. An alias, so that serde's derive does not take
/// the field for a string borrowed from its input: [`known_group`] reads it.
pub type Group = &'static str;

/// Every report group the plan makes cells of.
pub const GROUPS: [&str; 8] = [
    "fanout-single",
    "fanout-batched",
    "latency",
    "idle",
    "churn",
    "ingest",
    "replay",
    "compression",
];

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub placement: Placement,
    pub repeat: usize,
    #[serde(deserialize_with = "known_group")]
    pub group: Group,
    pub label: String,
    pub target: Target,
    pub result: Option<LoadResult>,
    pub error: Option<String>,
}

/// What a run is asked to do.
#[derive(Debug)]
pub struct Plan {
    pub smoke: bool,
    pub repeats: usize,
    pub placements: Vec<Placement>,
    pub targets: Vec<Target>,
    pub cells: Vec<Cell>,
    pub paths: Paths,
    pub out_dir: PathBuf,
}

/// A group's name read back from a report, as one of [`GROUPS`].
fn known_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Group, D::Error> {
    let name = String::deserialize(deserializer)?;
    GROUPS
        .into_iter()
        .find(|group| *group == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown report group {name:?}")))
}

/// Everything a run produced.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub smoke: bool,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub repeats: usize,
    pub placements: Vec<Placement>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub records: Vec<Record>,
}

/// Runs the plan.
pub fn run(plan: &Plan, notes: Vec<String>) -> Result<Run> {
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = Machine::probe();
    let mut records = Vec::new();
    let total = plan.placements.len()
        * plan.repeats
        * plan
            .cells
            .iter()
            .map(|c| if c.herald_only { 1 } else { plan.targets.len() })
            .sum::<usize>();
    let mut done = 0;
    let begun = Instant::now();
    for &placement in &plan.placements {
        for repeat in 0..plan.repeats {
            for cell in &plan.cells {
                for &target in &plan.targets {
                    if cell.herald_only && target != Target::Herald {
                        continue;
                    }
                    done += 1;
                    eprint!(
                        "bench [{done}/{total} {:.0}s] {} #{} {} {} {} ... ",
                        begun.elapsed().as_secs_f64(),
                        placement.name(),
                        repeat + 1,
                        cell.group,
                        cell.label,
                        target.name()
                    );
                    let (result, error) = match run_cell(plan, placement, cell, target) {
                        Ok(r) => {
                            eprintln!("{}", headline(cell.group, &r));
                            (Some(r), None)
                        }
                        Err(e) => {
                            eprintln!("error: {e:#}");
                            (None, Some(format!("{e:#}")))
                        }
                    };
                    records.push(Record {
                        placement,
                        repeat,
                        group: cell.group,
                        label: cell.label.clone(),
                        target,
                        result,
                        error,
                    });
                }
            }
        }
    }
    Ok(Run {
        smoke: plan.smoke,
        started_unix_s,
        machine,
        repeats: plan.repeats,
        placements: plan.placements.clone(),
        targets: plan.targets.clone(),
        notes,
        records,
    })
}

fn headline(group: &str, r: &LoadResult) -> String {
    let keys: &[&str] = match group {
        "fanout-single" | "fanout-batched" | "compression" => &[
            "delivered_per_s",
            "cpu_us_per_delivery",
            "p99_us",
            "lost",
            "duplicated",
        ],
        "latency" | "churn" => &["p50_us", "p99_us", "max_us", "lost", "carried"],
        "idle" => &[
            "rss_bytes_per_conn",
            "rss_cold_bytes_per_conn",
            "idle_cpu_pct",
        ],
        "ingest" => &["events_per_s"],
        "replay" => &["replay_total_ms", "p99_ms", "incomplete"],
        _ => &[],
    };
    keys.iter()
        .filter_map(|k| r.get(k).map(|v| format!("{k}={}", crate::report::fmt(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_cell(plan: &Plan, placement: Placement, cell: &Cell, target: Target) -> Result<LoadResult> {
    let (server_cpu, load_cpu) = match placement {
        Placement::Pinned => (Some("0"), Some("1")),
        Placement::Free => (None, None),
    };
    let mut opts = cell.opts.clone();
    let mut scenario = cell.scenario.clone();
    // Fresh state files per cell.
    if let Some(db) = &opts.store {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    if let Scenario::IngestUnix { path, .. } = &mut scenario {
        let sock = plan.paths.work.join("herald.sock");
        let _ = std::fs::remove_file(&sock);
        *path = sock.display().to_string();
        opts.unix_socket = Some(sock);
    }
    // Several nodes on one Redis: Redis and every node on the server's side.
    let redis = if target == Target::Herald && opts.nodes > 0 && cell.redis {
        let redis = crate::targets::RedisServer::start(&plan.paths, server_cpu)?;
        opts.redis = Some(redis.url.clone());
        Some(redis)
    } else {
        None
    };
    let mut publish_node = None;
    if redis.is_some() && opts.nodes > 1 {
        publish_node = Some(Server::start(target, &plan.paths, &opts, server_cpu)?);
    }
    let server = Server::start(target, &plan.paths, &opts, server_cpu)?;
    if let Some(sock) = &opts.unix_socket {
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while !sock.exists() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !sock.exists() {
            bail!("herald did not create its --unix-socket {}", sock.display());
        }
    }
    let spec = LoadSpec {
        adapter: target.adapter(),
        addr: server.addr.clone(),
        publish_addr: publish_node.as_ref().map(|node| node.addr.clone()),
        server_pid: Some(server.pid),
        scenario,
        duration_s: cell.duration_s,
        warmup_s: cell.warmup_s,
    };
    let exe = std::env::current_exe()?;
    let mut cmd = match load_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .arg("load")
        .arg(serde_json::to_string(&spec)?)
        .output()
        .context("running the load generator")?;
    drop(server);
    drop(publish_node);
    drop(redis);
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("reading the load generator's result")
}
