//! The example Grafana dashboard (`deploy/grafana/herald-dashboard.json`)
//! only queries metrics a real hub exports.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use herald_tests::workspace_root;
use serde_json::Value;

use crate::herald;

/// Every `herald_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("herald_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Every `expr` of every panel's targets.
fn expressions(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(herald_publish_to_send_seconds_bucket[5m]))) / herald_x_total"
        ),
        ["herald_publish_to_send_seconds_bucket", "herald_x_total"]
    );
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() -> Result<()> {
    let path = workspace_root().join("deploy/grafana/herald-dashboard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let dashboard: Value = serde_json::from_str(&text).context("the dashboard is not JSON")?;
    let queried: BTreeSet<String> = expressions(&dashboard)
        .iter()
        .flat_map(|expr| metric_names(expr))
        .collect();
    ensure!(
        queried.len() >= 20,
        "the dashboard queries only {queried:?}"
    );
    let hub = herald().start(&[]).await?;
    let exported = hub.http().get("/metrics").await?.text;
    let samples: BTreeSet<&str> = exported
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !samples.contains(name.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not export:\n{exported}"
    );
    Ok(())
}

#[tokio::test]
async fn every_metric_is_described_in_one_sentence() -> Result<()> {
    let hub = herald().start(&[]).await?;
    let text = hub.http().get("/metrics").await?.text;
    let described: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    ensure!(!described.is_empty(), "{text}");
    for line in described {
        ensure!(
            line.ends_with('.') && !line.ends_with(".."),
            "not one sentence: {line}"
        );
    }
    Ok(())
}
