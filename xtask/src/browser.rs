//! The browser client's CI steps: set-up (Chromium from apt, the exact
//! `wasm-bindgen` CLI), the package build, and the browser tests in
//! `web-client/test/` (node's test runner driving headless Chromium through
//! `playwright-core` against real `herald` processes).

use std::path::Path;

use anyhow::{Context, Result};

use crate::wasm;
use crate::workspace::{self, Workspace};

/// The system Chromium Playwright drives (never `npx playwright install`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `apt-get install chromium` unless it is there.
pub fn install_chromium(workspace: &Workspace) -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        println!("{CHROMIUM} exists");
        return Ok(());
    }
    workspace::run(workspace.command("apt-get").arg("update"))?;
    workspace::run(
        workspace
            .command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "chromium"]),
    )
}

/// `cargo install wasm-bindgen-cli --version X` unless `wasm-bindgen
/// --version` already says X, the version in `Cargo.lock` (no `--locked`:
/// see TOOLCHAIN.md).
pub fn install_wasm_bindgen(workspace: &Workspace) -> Result<()> {
    let version = wasm::locked_wasm_bindgen_version(workspace)?;
    if wasm::installed_wasm_bindgen_version(workspace).as_deref() == Some(version.as_str()) {
        println!("wasm-bindgen {version} is installed");
        return Ok(());
    }
    workspace::run(
        workspace
            .cargo()
            .args(["install", "wasm-bindgen-cli", "--version", &version]),
    )
}

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
