//! SIGTERM, and the command line's `--help`.

use std::time::Duration;

use anyhow::{Result, ensure};
use herald_tests::{frame_type, is_event_on};

use crate::{herald, str_field};

#[tokio::test]
async fn sigterm_sends_system_shutdown_to_every_connection_then_closes_1001() -> Result<()> {
    let mut hub = herald().start(&[]).await?;
    // One client subscribed to something else, one to nothing: system events
    // go on `global` to every connection.
    let mut subscribed = hub.ws("/ws?topics=crew:busy").await?;
    subscribed.expect_subscribed(&["crew:busy"]).await?;
    let mut idle = hub.ws("/ws").await?;
    idle.barrier().await?;
    hub.sigterm().await?;
    for client in [&mut subscribed, &mut idle] {
        let e = client.recv_until(|f| frame_type(f) == "event").await?;
        ensure!(is_event_on(&e, "global"), "{e}");
        ensure!(str_field(&e, "event_type") == "system.shutdown", "{e}");
        let (code, _) = client.expect_close().await?;
        ensure!(code == 1001, "close code {code}");
    }
    let status = hub.wait_exit(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        hub.stderr()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_exits_zero_within_ten_seconds_with_clients_connected() -> Result<()> {
    let mut hub = herald().start(&[]).await?;
    let _a = hub.ws("/ws?topics=crew:a").await?;
    let _b = hub.ws("/ws").await?;
    let status = hub.terminate(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        hub.stderr()
    );
    Ok(())
}

/// Every flag the contract names for `herald serve`.
const SERVE_FLAGS: [&str; 20] = [
    "--bind",
    "--store",
    "--unix-socket",
    "--max-connections",
    "--heartbeat-interval",
    "--heartbeat-timeout",
    "--queue-size",
    "--approval-timeout",
    "--history-size",
    "--history-age",
    "--max-frame-size",
    "--log-format",
    "--jwt-secret",
    "--jwt-public-key",
    "--api-keys",
    "--allowed-origins",
    "--client-rate-limit",
    "--publish-rate-limit",
    "--insecure",
    "HERALD_",
];

#[tokio::test]
async fn serve_help_mentions_every_flag_in_the_contract() -> Result<()> {
    let output = herald()
        .run(&["serve", "--help"], Duration::from_secs(20))
        .await?;
    ensure!(output.status.success(), "exit {}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<&str> = SERVE_FLAGS
        .iter()
        .copied()
        .filter(|f| !help.contains(f))
        .collect();
    ensure!(
        missing.is_empty(),
        "serve --help lacks {missing:?}:\n{help}"
    );
    // "list everything with defaults": the documented defaults appear.
    // Only the defaults whose spelling the contract fixes are checked.
    for default in ["127.0.0.1:8765", "10000", "30s"] {
        ensure!(
            help.contains(default),
            "serve --help does not show the default {default}:\n{help}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn top_level_help_lists_every_subcommand() -> Result<()> {
    let output = herald().run(&["--help"], Duration::from_secs(20)).await?;
    ensure!(output.status.success(), "exit {}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    // A command is listed as a line of its own in the commands section.
    let listed = |command: &str| {
        help.lines()
            .any(|line| line.split_whitespace().next() == Some(command))
    };
    for command in ["serve", "publish", "tail", "approve"] {
        ensure!(
            listed(command),
            "herald --help does not list {command}:\n{help}"
        );
    }
    Ok(())
}
