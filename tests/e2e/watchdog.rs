//! The watchdog: a stall is logged and counted. Provoked from a real
//! source: the hub process is stopped (SIGSTOP) for longer than the
//! threshold, then resumed (SIGCONT).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use herald_tests::{Hub, eventually, metric};

use crate::herald;

async fn stalls(hub: &Hub, kind: &str) -> Result<f64> {
    let reply = hub.http().get("/metrics").await?;
    metric(
        &reply.text,
        &format!("herald_watchdog_stalls_total{{kind=\"{kind}\"}}"),
    )
    .with_context(|| format!("no stall counter for {kind}:\n{}", reply.text))
}

#[tokio::test]
async fn a_paused_process_is_logged_and_counted_as_a_stall_once_it_runs_again() -> Result<()> {
    let hub = herald().start(&["--watchdog-threshold", "100ms"]).await?;
    ensure!(stalls(&hub, "process").await? == 0.0);
    hub.signal("STOP").await?;
    // The stimulus: the process must stay stopped past the threshold.
    tokio::time::sleep(Duration::from_millis(600)).await;
    hub.signal("CONT").await?;
    let counted = eventually(Duration::from_secs(5), "the stall is counted", || async {
        let n = stalls(&hub, "process").await?;
        Ok((n >= 1.0).then_some(n))
    })
    .await?;
    ensure!(counted == 1.0, "one pause counted {counted} times");
    let seconds = metric(
        &hub.http().get("/metrics").await?.text,
        "herald_watchdog_stall_seconds_count",
    );
    ensure!(
        seconds == Some(1.0),
        "stall length not observed: {seconds:?}"
    );
    let log = hub.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("stall") && l.contains("process"))
        .with_context(|| format!("no stall in the log:\n{log}"))?;
    ensure!(line.contains("WARN"), "{line}");
    ensure!(
        line.contains("paused_ms"),
        "the log does not say how long: {line}"
    );
    Ok(())
}
