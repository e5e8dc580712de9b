//! The throughput, latency and memory goals Herald is held to, checked
//! against the run's own figures: each goal compares a Herald median with a
//! peer's or a floor's median from the same run and placement (or with a
//! fixed bound), and the report prints whether it was met. A goal whose
//! cells were not run is listed as not measured. A throughput goal that
//! asks for more than the load generator read from the coalesced floor in
//! the same cell is marked out of reach: no hub can meet it on that
//! machine with that load generator.

use std::fmt::Write as _;

use crate::report::{Summary, fmt};
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

/// One goal: Herald's `metric` in `group`/`label` under `placement`, over
/// the reference, within `bound`.
#[derive(Debug, Clone, Copy)]
struct Goal {
    what: &'static str,
    placement: Placement,
    group: &'static str,
    /// The case's label; `None` for every Herald row of the group.
    label: Option<&'static str>,
    metric: &'static str,
    reference: Reference,
    bound: Bound,
}

const GOALS: [Goal; 8] = [
    Goal {
        what: "single events, 4 producers, N=1000, pinned: delivered/s ≥ 2× the one-write floor",
        placement: Placement::Pinned,
        group: "fanout-single",
        label: Some("N=1000 100B, 4 producers"),
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtLeast(2.0),
    },
    Goal {
        what: "single events, 4 producers, N=1000, pinned: delivered/s ≥ 2× naive axum with Nagle",
        placement: Placement::Pinned,
        group: "fanout-single",
        label: Some("N=1000 100B, 4 producers"),
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::NaiveAxumNagle),
        bound: Bound::AtLeast(2.0),
    },
    Goal {
        what: "single events, 4 producers, N=1000, free: delivered/s ≥ 2× naive axum with Nagle",
        placement: Placement::Free,
        group: "fanout-single",
        label: Some("N=1000 100B, 4 producers"),
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::NaiveAxumNagle),
        bound: Bound::AtLeast(2.0),
    },
    Goal {
        what: "100 single events/s, N=100, pinned: p99 ≤ 1.1× the one-write floor's",
        placement: Placement::Pinned,
        group: "latency",
        label: Some("N=100 100/s"),
        metric: "p99_us",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtMost(1.1),
    },
    Goal {
        what: "100 single events/s, N=1000, pinned: p99 ≤ 1.1× the one-write floor's",
        placement: Placement::Pinned,
        group: "latency",
        label: Some("N=1000 100/s"),
        metric: "p99_us",
        reference: Reference::Hub(Target::Floor),
        bound: Bound::AtMost(1.1),
    },
    Goal {
        what: "1000 single events/s, N=1000, pinned: p99 ≤ 1.2× the coalesced floor's",
        placement: Placement::Pinned,
        group: "latency",
        label: Some("N=1000 1000/s"),
        metric: "p99_us",
        reference: Reference::Hub(Target::FloorCoalesced),
        bound: Bound::AtMost(1.2),
    },
    Goal {
        what: "batches, N=1000, 100 B, pinned: delivered/s ≥ 90 % of the coalesced floor",
        placement: Placement::Pinned,
        group: "fanout-batched",
        label: Some("N=1000 100B"),
        metric: "delivered_per_s",
        reference: Reference::Hub(Target::FloorCoalesced),
        bound: Bound::AtLeast(0.9),
    },
    Goal {
        what: "idle, every N, pinned: server RSS ≤ 4 KiB per subscribed connection",
        placement: Placement::Pinned,
        group: "idle",
        label: None,
        metric: "rss_bytes_per_conn",
        reference: Reference::Bound(4096.0),
        bound: Bound::AtMost(1.0),
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
}

impl Goal {
    /// The goal checked against `summaries`: for a group-wide goal, its
    /// worst row; `None` when its cells were not run.
    fn check(&self, summaries: &[Summary]) -> Option<Verdict> {
        let rows = summaries.iter().filter(|s| {
            s.target == Target::Herald
                && s.placement == self.placement
                && s.group == self.group
                && self.label.is_none_or(|l| s.label == l)
        });
        let mut worst: Option<Verdict> = None;
        for herald in rows {
            let Some(h) = herald.metrics.get(self.metric) else {
                continue;
            };
            let reference = match self.reference {
                Reference::Bound(v) => v,
                Reference::Hub(target) => {
                    let hub = summaries.iter().find(|s| {
                        s.target == target
                            && s.placement == herald.placement
                            && s.group == herald.group
                            && s.label == herald.label
                    })?;
                    hub.metrics.get(self.metric)?.median
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
                (Bound::AtLeast(b), Reference::Hub(_)) if !met => summaries
                    .iter()
                    .find(|s| {
                        s.target == Target::FloorCoalesced
                            && s.placement == herald.placement
                            && s.group == herald.group
                            && s.label == herald.label
                    })
                    .and_then(|floor| floor.metrics.get(self.metric))
                    .map(|floor| floor.median)
                    .filter(|&floor| b * reference > floor),
                _ => None,
            };
            let verdict = Verdict {
                herald: h.median,
                reference,
                ratio,
                met,
                beyond_floor,
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
    })
}

/// The goals section of the report.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut md = String::from(
        "\n## Goals\n\nEach goal compares Herald's median with the named hub's median in the same \
         cell of this run (or with a fixed bound); a group-wide goal shows its worst case.\n\n\
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
                    match (v.met, v.beyond_floor) {
                        (true, _) => "yes".to_owned(),
                        (false, None) => "**no**".to_owned(),
                        (false, Some(floor)) => format!(
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
    use crate::report::Spread;

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
        assert!(nagle.ends_with("| 1.50 | **no** |"), "{nagle}");
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
        assert!(nagle.ends_with("| 1.40 | **no** |"), "{nagle}");
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
