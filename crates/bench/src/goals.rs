//! The throughput, latency and memory goals Herald is held to, checked
//! against the run's own figures: each goal compares a Herald median with a
//! peer's or a floor's median from the same run and placement (or with a
//! fixed bound), and the report prints whether it was met. A goal whose
//! cells were not run is listed as not measured. A throughput goal that
//! asks for more than the load generator read from the coalesced floor in
//! the same cell is marked out of reach: no hub can meet it on that
//! machine with that load generator. Any other goal against a hub that is
//! not met shows the repeats on both sides (a figure over a few seconds
//! moves with the machine) and what else the run shows about it
//! ([`Context`]): what a publish costs before its first write, how busy
//! each core was.

use std::fmt::Write as _;

use crate::report::{Spread, Summary, fmt};
use crate::suite::Placement;
use crate::targets::Target;

/// What a goal compares Herald's figure with.
#[derive(Debug, Clone, Copy)]
enum Reference {
    /// The same figure of another hub in the same cell.
    Hub(Target),
    /// A fixed number.
    Bound(f64),
}

/// Which way the ratio must go.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// What a goal measured against a hub adds, when it is not met (and not
/// out of reach), beside Herald's repeats and the hub's (min–max).
#[derive(Debug, Clone, Copy)]
enum Context {
    /// The p50 of Herald and of the one-write floor in the one-subscriber
    /// cell `label` (same group and placement): what a publish costs before
    /// its first write, with no fan-out behind it, against the slack the
    /// goal leaves over the reference.
    BeforeFirstWrite { label: &'static str },
    /// How busy the hub's core was, in Herald's cell and the reference's.
    HubCore,
    /// How busy the load generator's core was, in both cells.
    LoadGeneratorCore,
    /// The coalesced floor's figure over the one-write floor's in the same
    /// cell: at a rate where nothing queues the two write alike (each frame
    /// on its own), so how far apart they land is how finely the run tells
    /// one hub from another there.
    FloorTwin,
}

/// One goal: Herald's `metric` in `group`/`label` under `placement`, over
/// the reference, within `bound`.
#[derive(Debug, Clone, Copy)]
struct Goal {
    what: &'static str,
    placement: Placement,
    group: &'static str,
    /// The cases' labels, the goal being held by the worst of them; empty
    /// for every Herald row of the group.
    labels: &'static [&'static str],
    metric: &'static str,
    reference: Reference,
    bound: Bound,
    context: &'static [Context],
}

const GOALS: [Goal; 8] = [
    Goal {
        what: "single events, 4 producers, N=1000, pinned: delivered/s ≥ 2× the one-write floor",
        placement: Placement::Pinned,
        group: "fanout-single",
        labels: &["N=1000 100B, 4 producers"],
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtLeast(2.0),
        context: &[],
    },
    Goal {
        what: "single events, 4 producers, N=1000, pinned: delivered/s ≥ 2× naive axum with Nagle",
        placement: Placement::Pinned,
        group: "fanout-single",
        labels: &["N=1000 100B, 4 producers"],
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::NaiveAxumNagle),
        bound: Bound::AtLeast(2.0),
        context: &[],
    },
    Goal {
        what: "single events, 4 producers, N=1000, free: delivered/s ≥ 2× naive axum with Nagle",
        placement: Placement::Free,
        group: "fanout-single",
        labels: &["N=1000 100B, 4 producers"],
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::NaiveAxumNagle),
        bound: Bound::AtLeast(2.0),
        context: &[],
    },
    Goal {
        what: "100 single events/s, N=100, pinned: p99 ≤ 1.1× the one-write floor's",
        placement: Placement::Pinned,
        group: "latency",
        labels: &["N=100 100/s"],
        metric: "p99_us",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtMost(1.1),
        context: &[
            Context::BeforeFirstWrite { label: "N=1 100/s" },
            Context::HubCore,
            Context::FloorTwin,
        ],
    },
    Goal {
        what: "100 single events/s, N=1000, pinned: p99 ≤ 1.1× the one-write floor's",
        placement: Placement::Pinned,
        group: "latency",
        labels: &["N=1000 100/s"],
        metric: "p99_us",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtMost(1.1),
        context: &[
            Context::BeforeFirstWrite { label: "N=1 100/s" },
            Context::HubCore,
            Context::FloorTwin,
        ],
    },
    Goal {
        what: "1000 single events/s, N=1000, pinned: p99 ≤ 1.2× the coalesced floor's",
        placement: Placement::Pinned,
        group: "latency",
        labels: &["N=1000 1000/s"],
        metric: "p99_us",
        reference: Reference::Hub(Target::FloorCoalesced),
        bound: Bound::AtMost(1.2),
        context: &[Context::HubCore],
    },
    Goal {
        what: "batches, N=1000, 100 B and 2 KB, pinned: delivered/s ≥ 90 % of the coalesced floor",
        placement: Placement::Pinned,
        group: "fanout-batched",
        labels: &["N=1000 100B", "N=1000 2KB"],
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::FloorCoalesced),
        bound: Bound::AtLeast(0.9),
        context: &[Context::HubCore, Context::LoadGeneratorCore],
    },
    Goal {
        what: "idle, every N, pinned: server RSS ≤ 4 KiB per subscribed connection",
        placement: Placement::Pinned,
        group: "idle",
        labels: &[],
        metric: "rss_bytes_per_conn",
        reference: Reference::Bound(4096.0),
        bound: Bound::AtMost(1.0),
        context: &[],
    },
];

/// One checked goal: the figures it compared and whether it held.
struct Verdict {
    herald: f64,
    reference: f64,
    ratio: f64,
    met: bool,
    /// For a throughput goal not met: the coalesced floor's figure in the
    /// same cell, when the goal asks for more than it.
    beyond_floor: Option<f64>,
    /// For a goal against a hub not met (and not out of reach): what the
    /// same run shows about it ([`Context`]).
    why: Option<String>,
}

/// The summary of `target` in the cell `group`/`label` under `placement`.
fn cell<'a>(
    summaries: &'a [Summary],
    target: Target,
    placement: Placement,
    group: &str,
    label: &str,
) -> Option<&'a Summary> {
    summaries.iter().find(|s| {
        s.target == target && s.placement == placement && s.group == group && s.label == label
    })
}

impl Goal {
    /// The goal checked against `summaries`: for a group-wide goal, its
    /// worst row; `None` when its cells were not run.
    fn check(&self, summaries: &[Summary]) -> Option<Verdict> {
        let rows = summaries.iter().filter(|s| {
            s.target == Target::Herald
                && s.placement == self.placement
                && s.group == self.group
                && (self.labels.is_empty() || self.labels.contains(&s.label.as_str()))
        });
        let mut worst: Option<Verdict> = None;
        for herald in rows {
            let Some(h) = herald.metrics.get(self.metric) else {
                continue;
            };
            let same_cell = |target| {
                cell(
                    summaries,
                    target,
                    herald.placement,
                    herald.group,
                    &herald.label,
                )
            };
            let (reference, hub) = match self.reference {
                Reference::Bound(v) => (v, None),
                Reference::Hub(target) => {
                    let hub = same_cell(target)?;
                    let spread = hub.metrics.get(self.metric)?;
                    (spread.median, Some((hub, spread)))
                }
            };
            let ratio = if reference > 0.0 {
                h.median / reference
            } else {
                h.median
            };
            let met = match self.bound {
                Bound::AtLeast(b) => ratio >= b,
                Bound::AtMost(b) => ratio <= b,
            };
            let beyond_floor = match (self.bound, self.reference) {
                (Bound::AtLeast(b), Reference::Hub(_)) if !met => same_cell(Target::FloorCoalesced)
                    .and_then(|floor| floor.metrics.get(self.metric))
                    .map(|floor| floor.median)
                    .filter(|&floor| b * reference > floor),
                _ => None,
            };
            let why = match hub {
                Some((hub, spread)) if !met && beyond_floor.is_none() => {
                    Some(self.why(summaries, (herald, h), (hub, spread)))
                }
                _ => None,
            };
            let verdict = Verdict {
                herald: h.median,
                reference,
                ratio,
                met,
                beyond_floor,
                why,
            };
            let worse = worst.as_ref().is_none_or(|w| match self.bound {
                Bound::AtLeast(_) => verdict.ratio < w.ratio,
                Bound::AtMost(_) => verdict.ratio > w.ratio,
            });
            if worse {
                worst = Some(verdict);
            }
        }
        worst
    }

    /// What the run shows about this goal not met in Herald's cell: both
    /// sides' repeats, and the goal's [`Context`].
    fn why(
        &self,
        summaries: &[Summary],
        (herald, ours): (&Summary, &Spread),
        (hub, theirs): (&Summary, &Spread),
    ) -> String {
        let mut why = format!(
            "repeats {}–{} against {}–{}",
            fmt(ours.min),
            fmt(ours.max),
            fmt(theirs.min),
            fmt(theirs.max)
        );
        let median = |s: &Summary, metric: &str| s.metrics.get(metric).map(|v| v.median);
        let busy = |metric| median(herald, metric).zip(median(hub, metric));
        for context in self.context {
            match *context {
                Context::BeforeFirstWrite { label } => {
                    let p50 = |target| {
                        cell(summaries, target, herald.placement, herald.group, label)
                            .and_then(|s| median(s, "p50_us"))
                    };
                    if let (Some(h), Some(floor), Bound::AtMost(bound)) =
                        (p50(Target::Herald), p50(Target::Floor), self.bound)
                    {
                        let _ = write!(
                            why,
                            "; before its first write ({label}, p50) a publish takes {} µs \
                             against the floor's {} µs, where the goal allows {} µs over the \
                             reference's p99",
                            fmt(h),
                            fmt(floor),
                            fmt((bound - 1.0) * theirs.median)
                        );
                    }
                }
                Context::HubCore => {
                    if let Some((h, r)) = busy("server_cpu_pct") {
                        let _ = write!(
                            why,
                            "; the hub's core {h:.0} % busy (the reference's {r:.0} %)"
                        );
                    }
                }
                Context::FloorTwin => {
                    let twin = cell(
                        summaries,
                        Target::FloorCoalesced,
                        herald.placement,
                        herald.group,
                        &herald.label,
                    )
                    .and_then(|s| median(s, self.metric));
                    if let Some(twin) = twin
                        && theirs.median > 0.0
                    {
                        let _ = write!(
                            why,
                            "; the coalesced floor, which writes each frame on its own at this \
                             rate as the one-write floor does, got {:.2}× the one-write floor's \
                             figure in this cell",
                            twin / theirs.median
                        );
                    }
                }
                Context::LoadGeneratorCore => {
                    if let Some((h, r)) = busy("loadgen_cpu_pct") {
                        let _ = write!(
                            why,
                            "; the load generator's core {h:.0} % busy (in the reference's cell {r:.0} %)"
                        );
                    }
                }
            }
        }
        why
    }
}

/// Lost plus duplicated events over every Herald cell that counts them.
fn lossless(summaries: &[Summary]) -> Option<Verdict> {
    let mut counted = false;
    let mut total = 0.0;
    for s in summaries.iter().filter(|s| s.target == Target::Herald) {
        for name in ["lost", "duplicated"] {
            if let Some(v) = s.metrics.get(name) {
                counted = true;
                total += v.max;
            }
        }
    }
    counted.then_some(Verdict {
        herald: total,
        reference: 0.0,
        ratio: total,
        met: total == 0.0,
        beyond_floor: None,
        why: None,
    })
}

/// The goals section of the report.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut md = String::from(
        "\n## Goals\n\nEach goal compares Herald's median with the named hub's median in the same \
         cell of this run (or with a fixed bound); a group-wide goal shows its worst case. \
         A goal against a hub that is not met shows both sides' repeats (min–max) and what \
         else this run shows about it.\n\n\
         | goal | Herald | reference | ratio | met |\n|---|---:|---:|---:|---|\n",
    );
    let checked = GOALS
        .iter()
        .map(|goal| (goal.what, goal.check(summaries)))
        .chain([(
            "every Herald cell, both placements: nothing lost, nothing duplicated",
            lossless(summaries),
        )]);
    for (what, verdict) in checked {
        match verdict {
            Some(v) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.2} | {} |",
                    what,
                    fmt(v.herald),
                    fmt(v.reference),
                    v.ratio,
                    match (v.met, v.beyond_floor, v.why) {
                        (true, ..) => "yes".to_owned(),
                        (false, None, None) => "**no**".to_owned(),
                        (false, None, Some(why)) => format!("**no**: {why}"),
                        (false, Some(floor), _) => format!(
                            "**no**, out of reach: the coalesced floor delivered {} in this cell",
                            fmt(floor)
                        ),
                    }
                );
            }
            None => {
                let _ = writeln!(md, "| {what} | – | – | – | not measured |");
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn row(target: Target, group: &'static str, label: &str, metric: &str, v: f64) -> Summary {
        let spread = Spread {
            median: v,
            min: v,
            max: v,
            n: 1,
        };
        Summary {
            placement: Placement::Pinned,
            group,
            label: label.to_owned(),
            target,
            metrics: BTreeMap::from([(metric.to_owned(), spread)]),
            herald_ratio: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn verdict_line<'a>(md: &'a str, what: &str) -> &'a str {
        md.lines().find(|l| l.contains(what)).unwrap()
    }

    #[test]
    fn a_goal_compares_herald_with_the_named_hub_in_the_same_cell() {
        let cell = "N=1000 100B, 4 producers";
        let summaries = [
            row(
                Target::Herald,
                "fanout-single",
                cell,
                "delivered_per_s",
                1_500_000.0,
            ),
            row(
                Target::Floor,
                "fanout-single",
                cell,
                "delivered_per_s",
                500_000.0,
            ),
            row(
                Target::NaiveAxumNagle,
                "fanout-single",
                cell,
                "delivered_per_s",
                1_000_000.0,
            ),
        ];
        let md = markdown(&summaries);
        let floor = verdict_line(&md, "pinned: delivered/s ≥ 2× the one-write floor");
        assert!(floor.ends_with("| 3.00 | yes |"), "{floor}");
        let nagle = verdict_line(&md, "pinned: delivered/s ≥ 2× naive axum with Nagle");
        assert!(
            nagle.ends_with("| 1.50 | **no**: repeats 1500000–1500000 against 1000000–1000000 |"),
            "{nagle}"
        );
        let free = verdict_line(&md, "free: delivered/s");
        assert!(free.ends_with("not measured |"), "{free}");
    }

    #[test]
    fn a_throughput_goal_above_the_coalesced_floor_is_marked_out_of_reach() {
        let cell = "N=1000 100B, 4 producers";
        let single = |target, v| row(target, "fanout-single", cell, "delivered_per_s", v);
        let md = markdown(&[
            single(Target::Herald, 1_400_000.0),
            single(Target::NaiveAxumNagle, 1_700_000.0),
            single(Target::FloorCoalesced, 2_500_000.0),
        ]);
        let nagle = verdict_line(&md, "pinned: delivered/s ≥ 2× naive axum with Nagle");
        assert!(
            nagle.ends_with(
                "| **no**, out of reach: the coalesced floor delivered 2500000 in this cell |"
            ),
            "{nagle}"
        );
        // Within the floor's reach, a goal not met is only not met.
        let md = markdown(&[
            single(Target::Herald, 1_400_000.0),
            single(Target::NaiveAxumNagle, 1_000_000.0),
            single(Target::FloorCoalesced, 2_500_000.0),
        ]);
        let nagle = verdict_line(&md, "pinned: delivered/s ≥ 2× naive axum with Nagle");
        assert!(nagle.contains("| 1.40 | **no**: repeats"), "{nagle}");
    }

    /// A row whose figures spread over repeats: `(metric, min, median, max)`.
    fn spread_row(
        target: Target,
        group: &'static str,
        label: &str,
        figures: &[(&str, f64, f64, f64)],
    ) -> Summary {
        let mut summary = row(target, group, label, figures[0].0, 0.0);
        summary.metrics = figures
            .iter()
            .map(|&(metric, min, median, max)| {
                let spread = Spread {
                    median,
                    min,
                    max,
                    n: 3,
                };
                (metric.to_owned(), spread)
            })
            .collect();
        summary
    }

    #[test]
    fn a_latency_goal_not_met_shows_the_repeats_the_cost_before_the_first_write_and_the_hubs_core()
    {
        let latency = |target, label, p50: f64, p99: (f64, f64, f64), cpu: f64| {
            spread_row(
                target,
                "latency",
                label,
                &[
                    ("p50_us", p50, p50, p50),
                    ("p99_us", p99.0, p99.1, p99.2),
                    ("server_cpu_pct", cpu, cpu, cpu),
                ],
            )
        };
        let floor = latency(
            Target::Floor,
            "N=100 100/s",
            500.0,
            (776.0, 782.0, 1290.0),
            36.0,
        );
        let md = markdown(&[
            latency(
                Target::Herald,
                "N=100 100/s",
                700.0,
                (940.0, 1283.0, 1329.0),
                55.0,
            ),
            floor.clone(),
            latency(
                Target::Herald,
                "N=1 100/s",
                380.0,
                (500.0, 585.0, 880.0),
                4.0,
            ),
            latency(
                Target::Floor,
                "N=1 100/s",
                181.0,
                (300.0, 350.0, 400.0),
                2.0,
            ),
            latency(
                Target::FloorCoalesced,
                "N=100 100/s",
                510.0,
                (800.0, 1017.0, 1100.0),
                37.0,
            ),
        ]);
        let line = verdict_line(&md, "100 single events/s, N=100, pinned");
        assert!(
            line.ends_with(
                "| 1.64 | **no**: repeats 940–1329 against 776–1290; before its first write \
                 (N=1 100/s, p50) a publish takes 380 µs against the floor's 181 µs, where \
                 the goal allows 78.2 µs over the reference's p99; the hub's core 55 % busy \
                 (the reference's 36 %); the coalesced floor, which writes each frame on its \
                 own at this rate as the one-write floor does, got 1.30× the one-write \
                 floor's figure in this cell |"
            ),
            "{line}"
        );
        // Met, it says so and nothing more.
        let md = markdown(&[
            latency(
                Target::Herald,
                "N=100 100/s",
                700.0,
                (800.0, 830.0, 900.0),
                55.0,
            ),
            floor,
        ]);
        let line = verdict_line(&md, "100 single events/s, N=100, pinned");
        assert!(line.ends_with("| 1.06 | yes |"), "{line}");
    }

    #[test]
    fn a_batched_goal_not_met_shows_how_busy_each_side_of_the_wire_was() {
        let batched = |target, delivered: f64, hub: f64, loadgen: f64| {
            spread_row(
                target,
                "fanout-batched",
                "N=1000 100B",
                &[
                    ("delivered_per_s", delivered, delivered, delivered),
                    ("server_cpu_pct", hub, hub, hub),
                    ("loadgen_cpu_pct", loadgen, loadgen, loadgen),
                ],
            )
        };
        let md = markdown(&[
            batched(Target::Herald, 2_300_000.0, 52.0, 99.0),
            batched(Target::FloorCoalesced, 2_700_000.0, 84.0, 100.0),
        ]);
        let line = verdict_line(&md, "batches, N=1000");
        assert!(
            line.ends_with(
                "| 0.85 | **no**: repeats 2300000–2300000 against 2700000–2700000; the hub's \
                 core 52 % busy (the reference's 84 %); the load generator's core 99 % busy (in \
                 the reference's cell 100 %) |"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_group_wide_goal_reports_its_worst_row() {
        let summaries = [
            row(
                Target::Herald,
                "idle",
                "N=1000 hb=1s",
                "rss_bytes_per_conn",
                3000.0,
            ),
            row(
                Target::Herald,
                "idle",
                "N=9900 hb=1s",
                "rss_bytes_per_conn",
                5000.0,
            ),
        ];
        let md = markdown(&summaries);
        let idle = verdict_line(&md, "idle, every N");
        assert!(idle.contains("| 5000 | 4096 |"), "{idle}");
        assert!(idle.ends_with("| **no** |"), "{idle}");
    }

    #[test]
    fn the_batched_goal_is_held_by_its_worst_payload_at_n_1000() {
        let batched = |target, label, delivered: f64| {
            row(
                target,
                "fanout-batched",
                label,
                "delivered_per_s",
                delivered,
            )
        };
        let md = markdown(&[
            batched(Target::Herald, "N=1000 100B", 2_400_000.0),
            batched(Target::FloorCoalesced, "N=1000 100B", 2_500_000.0),
            batched(Target::Herald, "N=1000 2KB", 900_000.0),
            batched(Target::FloorCoalesced, "N=1000 2KB", 1_200_000.0),
            batched(Target::Herald, "N=100 100B", 100_000.0),
            batched(Target::FloorCoalesced, "N=100 100B", 2_000_000.0),
        ]);
        let line = verdict_line(&md, "batches, N=1000");
        assert!(
            line.contains("| 900000 | 1200000 | 0.75 | **no**"),
            "{line}"
        );
    }

    #[test]
    fn any_lost_or_duplicated_event_fails_the_lossless_goal() {
        let clean = [row(Target::Herald, "latency", "N=100 100/s", "lost", 0.0)];
        let md = markdown(&clean);
        assert!(verdict_line(&md, "nothing lost").ends_with("| yes |"));
        let lossy = [row(
            Target::Herald,
            "latency",
            "N=100 100/s",
            "duplicated",
            2.0,
        )];
        let md = markdown(&lossy);
        assert!(verdict_line(&md, "nothing lost").ends_with("| **no** |"));
    }
}
