//! Redis for the Redis engine's tests, the chaos soak and the local
//! cluster: installed from Debian when missing; `cargo xtask chaos`
//! (a bounded soak of several nodes on one Redis, `crates/chaos`) and
//! `cargo xtask cluster` (three nodes on one Redis, on this machine, until
//! Ctrl-C).

use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::setup;
use crate::workspace::{self, Workspace};

/// Where Debian's `redis-server` lands.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// `apt-get install redis-server` unless it is there.
pub fn install(workspace: &Workspace) -> Result<()> {
    setup::apt_install(workspace, REDIS_SERVER, "redis-server")
}

/// Builds `herald` and the soak, then runs the soak on that `herald` with
/// `args` (e.g. `--smoke`, `--seconds 600`).
pub fn chaos(workspace: &Workspace, args: &[&str]) -> Result<()> {
    workspace::run(
        workspace
            .cargo()
            .args(["build", "-p", "herald", "-p", "herald-chaos"]),
    )?;
    let debug = workspace.target_dir()?.join("debug");
    workspace::run(
        workspace
            .command(debug.join("herald-chaos"))
            .env("HERALD_BIN", debug.join("herald"))
            .args(args),
    )
}

/// Three `herald` nodes on one Redis on this machine, on ports 8765, 8766
/// and 8767 (Redis on 6380, without persistence), until Ctrl-C.
pub fn cluster(workspace: &Workspace) -> Result<()> {
    workspace::run(
        workspace
            .cargo()
            .args(["build", "--release", "-p", "herald"]),
    )?;
    let herald = workspace.target_dir()?.join("release").join("herald");
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            "6380",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--maxmemory-policy", "noeviction"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (install it: apt-get install redis-server)")?;
    let mut nodes = Vec::new();
    for port in [8765, 8766, 8767] {
        let node = std::process::Command::new(&herald)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--store", "redis://127.0.0.1:6380"])
            .spawn()
            .with_context(|| format!("starting the node on port {port}"))?;
        nodes.push(node);
    }
    println!(
        "three nodes on redis://127.0.0.1:6380: http://127.0.0.1:8765, :8766, :8767 (Ctrl-C stops them)"
    );
    let mut failed = None;
    for node in &mut nodes {
        let status = node.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some(status);
        }
    }
    let _ = redis.kill();
    let _ = redis.wait();
    if let Some(status) = failed {
        bail!("a node exited with {status}");
    }
    Ok(())
}
