//! The compat CI steps (H13): the seed documents' own client code, as
//! printed in `tests/compat/seeds/` with only its base URL changed, against
//! the real `herald` binary's dialects (`/compat/…`):
//!
//! - Node (`node --test` on `tests/compat/node/`): the seeds' JavaScript in
//!   a fresh V8 context with Node's WebSocket, and the AIECS page in
//!   headless Chromium through `playwright-core` (the approval round trip
//!   in the browser's own confirm dialog). Reuses `web-client/node_modules`
//!   and its test harness.
//! - Python (`mypy --strict`, then pytest on `tests/compat/python/`): the
//!   seeds' Python, in the venv the Python client's steps set up
//!   (`python-client/.venv`).
//!
//! Set-up is idempotent (npm, Chromium, the venv: each skipped when there).

use anyhow::{Context, Result, bail};

use crate::workspace::{self, Workspace};
use crate::{ci, python, setup};

/// Where the seeds' runners are, relative to the workspace root.
const NODE_TESTS: &str = "tests/compat/node";
const PYTHON_TESTS: &str = "tests/compat/python";

/// What the compat runners need: web-client's npm packages (playwright-core),
/// Chromium, and the Python client's venv.
pub fn setup(workspace: &Workspace) -> Result<()> {
    setup::npm_install(workspace)?;
    setup::chromium(workspace)?;
    python::setup(workspace)
}

/// Builds `herald` (debug) and returns its path.
fn herald(workspace: &Workspace) -> Result<std::path::PathBuf> {
    workspace::run(
        workspace
            .cargo()
            .args(["build", "-p", "herald", "--bin", "herald"]),
    )?;
    let herald = workspace.target_dir()?.join("debug").join("herald");
    if !herald.exists() {
        bail!("{} is missing after the build", herald.display());
    }
    Ok(herald)
}

/// The seeds' JavaScript through Node, and the AIECS page in Chromium.
pub fn node(workspace: &Workspace) -> Result<()> {
    let herald = herald(workspace)?;
    let mut files: Vec<String> = std::fs::read_dir(workspace.path(NODE_TESTS))
        .with_context(|| format!("cannot read {NODE_TESTS}"))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("{NODE_TESTS}/{name}"))
        .collect();
    files.sort();
    workspace::run(
        workspace
            .command("node")
            // Node 20: the browser WebSocket the seeds' scripts use, and ES
            // modules in a V8 context for the cmbagent integration snippet.
            .args([
                "--experimental-websocket",
                "--experimental-vm-modules",
                "--no-warnings=ExperimentalWarning",
                "--test",
                "--test-concurrency=1",
            ])
            .args(&files)
            .env("HERALD_BIN", &herald)
            .env("CHROMIUM", setup::CHROMIUM),
    )
    .context("the seeds' JavaScript failed against herald")
}

/// The seeds' Python and its stand-ins, type-checked (`mypy --strict`),
/// then through pytest, in the Python client's venv.
pub fn python(workspace: &Workspace) -> Result<()> {
    workspace::run(
        workspace
            .command(python::venv_bin(workspace, "mypy"))
            .current_dir(workspace.path(PYTHON_TESTS))
            .env("MYPYPATH", ".:crewai_app")
            .args(["--strict", "--explicit-package-bases", "."]),
    )?;
    let herald = herald(workspace)?;
    let interpreter = python::venv_bin(workspace, "python");
    workspace::run(
        workspace
            .command(&interpreter)
            .current_dir(workspace.path(PYTHON_TESTS))
            .env("HERALD_BIN", &herald)
            .args(["-m", "pytest", "-q", "-ra"]),
    )
    .context("the seeds' Python failed against herald")
}

/// `cargo xtask compat`: set-up, then both runners.
pub fn run(workspace: &Workspace) -> Result<()> {
    for step in ci::steps()
        .into_iter()
        .filter(|step| step.name.contains("compat"))
    {
        ci::run_step(workspace, step)?;
    }
    Ok(())
}
