//! The browser tests in `web-client/test/` (node's test runner driving
//! headless Chromium through `playwright-core` against real `herald`
//! processes); their set-up (Chromium, the `wasm-bindgen` CLI) is in
//! [`setup`](crate::setup).

use anyhow::{Context, Result};

use crate::setup::CHROMIUM;
use crate::workspace::{self, Workspace};

/// Builds `herald` and runs `node --test` on `web-client/test/` against it
/// (its path goes to the tests in `HERALD_BIN`).
pub fn test(workspace: &Workspace) -> Result<()> {
    workspace::run(
        workspace
            .cargo()
            .args(["build", "-p", "herald", "--bin", "herald"]),
    )?;
    let herald = workspace.target_dir()?.join("debug").join("herald");
    let mut files: Vec<String> = std::fs::read_dir(workspace.path("web-client/test"))
        .context("cannot read web-client/test")?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    workspace::run(
        workspace
            .command("node")
            .args(["--test", "--test-concurrency=1"])
            .args(&files)
            .env("HERALD_BIN", &herald)
            .env("CHROMIUM", CHROMIUM)
            .current_dir(workspace.path("web-client")),
    )
    .context("browser tests failed")
}
