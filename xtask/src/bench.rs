//! `cargo xtask bench [--smoke] [SUITE OPTIONS]`: builds `herald` and the
//! bench crate in release, then runs `herald-bench suite` on that `herald`
//! (passed in `HERALD_BIN`; a `--herald-bin` among the options wins), which
//! installs the peer hubs it needs, measures, and writes the report
//! (`bench/results/`, or `target/bench/smoke/` for `--smoke`). See
//! `bench/README.md`.

use anyhow::Result;

use crate::workspace::{Workspace, run as run_command};

/// Builds in release, then runs the suite with `args` passed through.
pub fn run(workspace: &Workspace, args: &[&str]) -> Result<()> {
    run_command(workspace.cargo().args([
        "build",
        "--release",
        "-p",
        "herald",
        "-p",
        "herald-bench",
    ]))?;
    let release = workspace.target_dir()?.join("release");
    run_command(
        workspace
            .command(release.join("herald-bench"))
            .env("HERALD_BIN", release.join("herald"))
            .arg("suite")
            .args(args),
    )
}
