//! The SVG chart: delivered/s per fan-out case (single events, then
//! batches) and p99 latency per case, one bar per hub (median over
//! repeats, first placement of the run).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::Summary;
use crate::targets::Target;

const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Bars for one panel: case labels, and per hub its value per case.
struct Panel {
    title: &'static str,
    cases: Vec<String>,
    series: Vec<(Target, Vec<Option<f64>>)>,
    log: bool,
}

fn panel(
    summaries: &[Summary],
    title: &'static str,
    groups: &[&str],
    metric: &str,
    log: bool,
) -> Panel {
    let placement = summaries.first().map(|s| s.placement);
    let chosen: Vec<&Summary> = summaries
        .iter()
        .filter(|s| {
            Some(s.placement) == placement
                && groups.contains(&s.group)
                && s.metrics.contains_key(metric)
        })
        .collect();
    let mut cases: Vec<String> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for s in &chosen {
        let case = format!("{} {}", s.group, s.label);
        if !cases.contains(&case) {
            cases.push(case);
        }
        if !targets.contains(&s.target) {
            targets.push(s.target);
        }
    }
    let series = targets
        .into_iter()
        .map(|t| {
            let values = cases
                .iter()
                .map(|case| {
                    chosen
                        .iter()
                        .find(|s| s.target == t && format!("{} {}", s.group, s.label) == *case)
                        .and_then(|s| s.metrics.get(metric))
                        .map(|m| m.median)
                })
                .collect();
            (t, values)
        })
        .collect();
    Panel {
        title,
        cases,
        series,
        log,
    }
}

/// Draws the chart to `path`.
pub fn svg(summaries: &[Summary], path: &Path) -> Result<()> {
    let panels = [
        panel(
            summaries,
            "fan-out, single events: delivered frames/s (median)",
            &["fanout-single"],
            "delivered_per_s",
            false,
        ),
        panel(
            summaries,
            "fan-out, batches: delivered frames/s (median)",
            &["fanout-batched"],
            "delivered_per_s",
            false,
        ),
        panel(
            summaries,
            "p99 latency, µs (median, log scale)",
            &["fanout-single", "latency", "churn"],
            "p99_us",
            true,
        ),
    ];
    let width = 1400u32.max(
        panels
            .iter()
            .map(|p| p.cases.len() as u32 * 110)
            .max()
            .unwrap_or(0),
    );
    let root = SVGBackend::new(path, (width, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, p) in areas.iter().zip(&panels) {
        draw(area, p).map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(area: &Area<'_>, p: &Panel) -> Result<(), Box<dyn std::error::Error>> {
    if p.cases.is_empty() {
        return Ok(());
    }
    let n = p.cases.len();
    let max = p
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(1.0f64, |a, &b| a.max(b))
        * 1.15;
    let width = 0.8 / p.series.len().max(1) as f64;
    let x_range = -0.5f64..n as f64 - 0.5;
    let cases = p.cases.clone();
    let label = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 {
            cases.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(p.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80);
    macro_rules! bars {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels(n)
                .x_label_formatter(&label)
                .disable_x_mesh()
                .draw()?;
            for (j, (target, values)) in p.series.iter().enumerate() {
                let color = COLORS[j % COLORS.len()];
                let left = |i: usize| i as f64 - 0.4 + j as f64 * width;
                chart
                    .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                        v.map(|v| {
                            Rectangle::new(
                                [(left(i), $base), (left(i) + width * 0.95, v.max($base))],
                                color.filled(),
                            )
                        })
                    }))?
                    .label(target.name())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if p.log {
        bars!(
            builder.build_cartesian_2d(x_range, (1.0f64..max).log_scale())?,
            1.0
        );
    } else {
        bars!(builder.build_cartesian_2d(x_range, 0.0f64..max)?, 0.0);
    }
    Ok(())
}
