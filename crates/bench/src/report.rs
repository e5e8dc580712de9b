//! Turns a [`Run`] into `latest.md`, `latest.json` and `latest.svg`:
//! medians with min–max over repeats, and ratios Herald/hub computed from
//! this run's own medians (never from older runs). [`rewrite`] writes
//! them again from the raw records a report's JSON keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::suite::{Placement, Run};
use crate::targets::Target;

/// Median, minimum and maximum of one figure over the repeats.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        })
    }
}

/// One (placement, case, hub) with its figures.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub placement: Placement,
    pub group: &'static str,
    pub label: String,
    pub target: Target,
    pub metrics: BTreeMap<String, Spread>,
    /// Herald's median over this hub's median, per headline figure.
    pub herald_ratio: BTreeMap<String, f64>,
    pub errors: Vec<String>,
}

/// The figures each group shows, in order, with their column titles; the
/// first ones listed in [`ratio_metrics`] also get a Herald/hub column.
fn columns(group: &str) -> &'static [(&'static str, &'static str)] {
    match group {
        "fanout-single" | "fanout-batched" => &[
            ("delivered_per_s", "delivered/s"),
            ("cpu_us_per_delivery", "server CPU µs/delivery"),
            ("server_cpu_pct", "server CPU %"),
            ("loadgen_cpu_pct", "load gen CPU %"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("lost", "lost"),
            ("duplicated", "dup"),
            ("gaps", "gaps"),
        ],
        "compression" => &[
            ("delivered_per_s", "delivered/s"),
            ("cpu_us_per_delivery", "server CPU µs/delivery"),
            ("wire_bytes_per_delivery", "bytes on the wire/delivery"),
            ("server_cpu_pct", "server CPU %"),
            ("p99_us", "p99 µs"),
            ("lost", "lost"),
            ("duplicated", "dup"),
        ],
        "latency" => &[
            ("achieved_rate", "sent/s"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("p999_us", "p99.9 µs"),
            ("max_us", "max µs"),
            ("send_late_p99_us", "load gen late p99 µs"),
            ("lost", "lost"),
            ("carried", "carried"),
        ],
        "idle" => &[
            ("rss_bytes_per_conn", "RSS bytes/conn"),
            ("rss_cold_bytes_per_conn", "RSS bytes/conn from a cold hub"),
            ("idle_cpu_pct", "idle CPU %"),
        ],
        "churn" => &[
            ("connects_per_s", "connects/s"),
            ("churn_per_s", "churn conn/s"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("lost", "lost"),
        ],
        "ingest" => &[
            ("events_per_s", "events/s"),
            ("cpu_us_per_event", "server CPU µs/event"),
            ("sent_per_s", "sent/s"),
            ("lost", "lost"),
            ("duplicated", "dup"),
        ],
        "replay" => &[
            ("replay_total_ms", "all done ms"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("replayed_per_s", "replayed/s"),
            ("incomplete", "incomplete"),
            ("duplicated", "dup"),
            ("gaps", "gaps"),
        ],
        _ => &[],
    }
}

/// What a group's table measures, and in which regime events are published.
fn description(group: &str) -> &'static str {
    match group {
        "fanout-single" => {
            "Single events: one event per `POST /api/v1/events` (Herald, each request answered \
             before its connection sends the next) or per `/pub` message written on its own \
             (peers), from 1 or 4 producer connections, as fast as every subscriber keeps up."
        }
        "fanout-batched" => {
            "Batches: up to 64 events per `POST /api/v1/events` (Herald, a JSON array) or per \
             write of `/pub` messages (peers), from one producer connection, as fast as every \
             subscriber keeps up."
        }
        "latency" => {
            "Single events at a fixed rate (open loop), each its own request or `/pub` \
             message, sent in turn by 4 producer connections; latency from each event's \
             intended send time. N=1: one subscriber, so the latency is what a publish costs \
             a hub before its first write (an HTTP request for Herald, a `/pub` message for \
             the others), with no fan-out behind it."
        }
        "idle" => {
            "Subscribed connections left idle (heartbeats only). RSS bytes/conn: the hub's \
             RSS growth while N connections subscribe, ÷ N, counted after one first \
             subscriber connected and got an event (it pages in the code every connection \
             runs, mapped once per process); from a cold hub: the same growth counted from \
             the hub as it started."
        }
        _ => "",
    }
}

fn ratio_metrics(group: &str) -> &'static [&'static str] {
    match group {
        "fanout-single" | "fanout-batched" => &["delivered_per_s", "cpu_us_per_delivery", "p99_us"],
        "latency" | "churn" => &["p99_us"],
        "idle" => &["rss_bytes_per_conn"],
        _ => &[],
    }
}

/// Groups the records and computes spreads and ratios.
pub fn summarize(run: &Run) -> Vec<Summary> {
    let mut order: Vec<(Placement, &'static str, String, Target)> = Vec::new();
    for r in &run.records {
        let key = (r.placement, r.group, r.label.clone(), r.target);
        if !order.contains(&key) {
            order.push(key);
        }
    }
    let mut out: Vec<Summary> = order
        .into_iter()
        .map(|(placement, group, label, target)| {
            let records: Vec<_> = run
                .records
                .iter()
                .filter(|r| {
                    r.placement == placement
                        && r.group == group
                        && r.label == label
                        && r.target == target
                })
                .collect();
            let mut names: Vec<&String> = records
                .iter()
                .filter_map(|r| r.result.as_ref())
                .flat_map(|r| r.metrics.keys())
                .collect();
            names.sort();
            names.dedup();
            let metrics = names
                .into_iter()
                .filter_map(|name| {
                    let values = records
                        .iter()
                        .filter_map(|r| r.result.as_ref()?.get(name))
                        .collect();
                    Some((name.clone(), Spread::of(values)?))
                })
                .collect();
            let errors = records.iter().filter_map(|r| r.error.clone()).collect();
            Summary {
                placement,
                group,
                label,
                target,
                metrics,
                herald_ratio: BTreeMap::new(),
                errors,
            }
        })
        .collect();
    let heralds: Vec<Summary> = out
        .iter()
        .filter(|s| s.target == Target::Herald)
        .cloned()
        .collect();
    for s in &mut out {
        let Some(h) = heralds
            .iter()
            .find(|h| h.placement == s.placement && h.group == s.group && h.label == s.label)
        else {
            continue;
        };
        for &m in ratio_metrics(s.group) {
            if let (Some(hv), Some(sv)) = (h.metrics.get(m), s.metrics.get(m)) {
                if sv.median > 0.0 {
                    s.herald_ratio.insert(m.to_owned(), hv.median / sv.median);
                }
            }
        }
    }
    out
}

/// A number for a table: integers plainly, small values with decimals.
pub fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: &Spread) -> String {
    if s.n > 1 && s.min != s.max {
        format!("{} [{}–{}]", fmt(s.median), fmt(s.min), fmt(s.max))
    } else {
        fmt(s.median)
    }
}

/// The markdown report.
pub fn markdown(run: &Run, summaries: &[Summary]) -> String {
    let m = &run.machine;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Herald benchmark{}\n",
        if run.smoke { " (smoke)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Generated by `cargo xtask bench{}` (unix time {}). Every figure below was measured in this run; \
         ratios are Herald's median over the hub's median in the same run and placement.\n",
        if run.smoke { " --smoke" } else { "" },
        run.started_unix_s
    );
    let _ = writeln!(md, "| machine | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(md, "| cores | {} |", m.cores);
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let _ = writeln!(md, "| memory | {} MiB |", m.memory_total_kib / 1024);
    let _ = writeln!(
        md,
        "| ulimit -n (soft/hard, after raising) | {}/{} |",
        m.nofile_soft, m.nofile_hard
    );
    let _ = writeln!(md, "| load average at start | {} |", m.load_average);
    let _ = writeln!(
        md,
        "| repeats | {} (cells show median [min–max]) |\n| placements | {} |\n",
        run.repeats,
        run.placements
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for note in &run.notes {
        let _ = writeln!(md, "- note: {note}");
    }
    if !run.smoke {
        md.push_str(&crate::goals::markdown(summaries));
    }
    let mut groups: Vec<(Placement, &str)> = Vec::new();
    for s in summaries {
        if !groups.contains(&(s.placement, s.group)) {
            groups.push((s.placement, s.group));
        }
    }
    for (placement, group) in groups {
        let _ = writeln!(md, "\n## {group} ({})\n", placement.name());
        let about = description(group);
        if !about.is_empty() {
            let _ = writeln!(md, "{about}\n");
        }
        let cols = columns(group);
        let ratios = ratio_metrics(group);
        let mut header = String::from("| case | hub |");
        let mut rule = String::from("|---|---|");
        for (_, title) in cols {
            let _ = write!(header, " {title} |");
            rule.push_str("---:|");
        }
        for r in ratios {
            let title = cols.iter().find(|(k, _)| k == r).map_or(*r, |(_, t)| *t);
            let _ = write!(header, " Herald/hub {title} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for s in summaries
            .iter()
            .filter(|s| s.placement == placement && s.group == group)
        {
            let mut row = format!("| {} | {} |", s.label, s.target.name());
            for (key, _) in cols {
                let _ = write!(
                    row,
                    " {} |",
                    s.metrics.get(*key).map_or_else(|| "–".into(), cell)
                );
            }
            for r in ratios {
                let v = if s.target == Target::Herald {
                    "1".into()
                } else {
                    s.herald_ratio
                        .get(*r)
                        .map_or("–".into(), |v| format!("{v:.2}"))
                };
                let _ = write!(row, " {v} |");
            }
            if !s.errors.is_empty() {
                let _ = write!(
                    row,
                    " error: {} |",
                    s.errors[0].lines().next().unwrap_or_default()
                );
            }
            let _ = writeln!(md, "{row}");
        }
        for s in summaries
            .iter()
            .filter(|s| s.placement == placement && s.group == group)
        {
            if let Some(e) = s.errors.first() {
                let first = e.lines().next().unwrap_or_default();
                let _ = writeln!(
                    md,
                    "\n- {} {}: {} of the repeats failed: {first}",
                    s.label,
                    s.target.name(),
                    s.errors.len()
                );
            }
        }
    }
    md
}

/// What a report's JSON is read back for: the run's raw records (the
/// summary beside them is computed again).
#[derive(Deserialize)]
struct Saved {
    run: Run,
}

/// Writes the report again from the run that `json` (a `NAME.json` that
/// [`write()`] wrote) holds: `NAME.md`, `NAME.json` and `NAME.svg` beside it,
/// every figure and verdict computed anew from the same records.
pub fn rewrite(json: &Path) -> Result<Vec<Summary>> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report's JSON", json.display()))?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let name = json
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("no report name in {}", json.display()))?;
    write(&saved.run, dir, name)
}

/// Writes `NAME.md`, `NAME.json` and `NAME.svg` into `dir`.
pub fn write(run: &Run, dir: &Path, name: &str) -> Result<Vec<Summary>> {
    std::fs::create_dir_all(dir)?;
    let summaries = summarize(run);
    std::fs::write(dir.join(format!("{name}.md")), markdown(run, &summaries))?;
    let json = serde_json::json!({ "run": run, "summary": summaries });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::chart::svg(&summaries, &dir.join(format!("{name}.svg")))?;
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::Machine;
    use crate::spec::LoadResult;
    use crate::suite::Record;

    fn record(target: Target, repeat: usize, group: &'static str, p99: f64) -> Record {
        let mut result = LoadResult::default();
        result.set("p50_us", p99 / 3.0);
        result.set("p99_us", p99);
        Record {
            placement: Placement::Pinned,
            repeat,
            group,
            label: "N=100 100/s".to_owned(),
            target,
            result: Some(result),
            error: None,
        }
    }

    fn run(records: Vec<Record>) -> Run {
        Run {
            smoke: false,
            started_unix_s: 1_796_533_483,
            machine: Machine {
                cpu_model: "test".to_owned(),
                cores: 2,
                kernel: "6.18".to_owned(),
                nofile_soft: 20_000,
                nofile_hard: 20_000,
                load_average: "0.1 0.2 0.3".to_owned(),
                memory_total_kib: 24_000_000,
            },
            repeats: 3,
            placements: vec![Placement::Pinned],
            targets: vec![Target::Herald, Target::Floor],
            notes: vec!["a note".to_owned()],
            records,
        }
    }

    #[test]
    fn a_report_written_again_from_its_json_is_the_same_report() {
        let records = (0..3)
            .flat_map(|repeat| {
                let jitter = repeat as f64 * 101.5;
                [
                    record(Target::Herald, repeat, "latency", 1283.25 + jitter),
                    record(Target::Floor, repeat, "latency", 782.0 - jitter),
                ]
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write(&run(records), dir.path(), "latest").unwrap();
        let first = std::fs::read_to_string(dir.path().join("latest.md")).unwrap();
        assert!(first.contains("## Goals"), "{first}");
        std::fs::remove_file(dir.path().join("latest.md")).unwrap();
        std::fs::remove_file(dir.path().join("latest.svg")).unwrap();

        rewrite(&dir.path().join("latest.json")).unwrap();
        let again = std::fs::read_to_string(dir.path().join("latest.md")).unwrap();
        assert_eq!(again, first);
        assert!(dir.path().join("latest.svg").exists());
    }

    #[test]
    fn a_report_of_a_group_the_bench_does_not_make_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &run(vec![record(Target::Herald, 0, "latency", 900.0)]),
            dir.path(),
            "latest",
        )
        .unwrap();
        let json = dir.path().join("latest.json");
        let text = std::fs::read_to_string(&json).unwrap();
        std::fs::write(&json, text.replace("\"latency\"", "\"latencies\"")).unwrap();
        let error = format!("{:#}", rewrite(&json).unwrap_err());
        assert!(
            error.contains("unknown report group \"latencies\""),
            "{error}"
        );
    }
}
