//! `cargo xtask bench [--smoke] [SUITE OPTIONS]`: builds Herald and the
//! bench crate in release, then runs `herald-bench suite`, which installs the
//! peer hubs it needs, measures, and writes the report (`bench/results/`, or
//! `target/bench/smoke/` for `--smoke`). See `bench/README.md`.

use anyhow::Result;

use crate::workspace::{Workspace, run as run_command};

/// Builds in release, then runs the suite with `args` passed through.
pub fn run(workspace: &Workspace, args: &[&str]) -> Result<()> {
    run_command(workspace.cargo().args([
        "build",
        "--release",
        "-p",
        "herald-server",
        "-p",
        "herald-bench",
    ]))?;
    let suite = workspace.path("target/release/herald-bench");
    run_command(workspace.command(suite).arg("suite").args(args))
}
