//! Idempotent set-up steps: each installs what is missing and skips what is
//! there, so every task that needs one runs it first and stands alone.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::workspace::{self, Workspace};
use crate::{tsc, wasm};

/// The system Chromium Playwright drives (never `npx playwright install`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `rustup target add wasm32-unknown-unknown` unless it is installed.
pub fn wasm_target(workspace: &Workspace) -> Result<()> {
    let installed =
        workspace::read(
            workspace
                .command("rustup")
                .args(["target", "list", "--installed"]),
        )?;
    if installed
        .lines()
        .any(|line| line.trim() == "wasm32-unknown-unknown")
    {
        println!("already installed");
        return Ok(());
    }
    workspace::run(
        workspace
            .command("rustup")
            .args(["target", "add", "wasm32-unknown-unknown"]),
    )
}

/// `rustup component add rustfmt clippy` for those missing.
pub fn components(workspace: &Workspace) -> Result<()> {
    let installed =
        workspace::read(
            workspace
                .command("rustup")
                .args(["component", "list", "--installed"]),
        )?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|component| {
            !installed
                .lines()
                .any(|line| line.split('-').next() == Some(*component))
        })
        .collect();
    if missing.is_empty() {
        println!("already installed");
        return Ok(());
    }
    workspace::run(
        workspace
            .command("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

/// A copy of the lockfile `npm install` last succeeded with, inside
/// `node_modules/` so that removing `node_modules/` also forgets it.
const NPM_STAMP: &str = "web-client/node_modules/.herald-installed-package-lock.json";

/// `npm install` when `node_modules/` is missing or the lockfile changed since
/// the last install (never `npm ci`: see TOOLCHAIN.md).
pub fn npm_install(workspace: &Workspace) -> Result<()> {
    let lock_path = workspace.path("web-client/package-lock.json");
    let lock = fs::read_to_string(&lock_path)
        .with_context(|| format!("cannot read {}", lock_path.display()))?;
    let stamp = workspace.path(NPM_STAMP);
    let up_to_date = workspace.path(tsc::TSC).exists()
        && fs::read_to_string(&stamp).is_ok_and(|installed| installed == lock);
    if up_to_date {
        println!("node_modules matches package-lock.json");
        return Ok(());
    }
    workspace::run(
        workspace
            .command("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(workspace.path("web-client")),
    )?;
    // npm may rewrite the lockfile (e.g. new metadata): stamp what is there now.
    let lock = fs::read_to_string(&lock_path)
        .with_context(|| format!("cannot read {}", lock_path.display()))?;
    fs::write(&stamp, lock).with_context(|| format!("cannot write {}", stamp.display()))
}

/// `apt-get install chromium` unless it is there.
pub fn chromium(workspace: &Workspace) -> Result<()> {
    apt_install(workspace, CHROMIUM, "chromium")
}

/// `apt-get install PACKAGE` unless `binary` (what it installs) exists.
pub fn apt_install(workspace: &Workspace, binary: &str, package: &str) -> Result<()> {
    if Path::new(binary).exists() {
        println!("{binary} exists");
        return Ok(());
    }
    workspace::run(workspace.command("apt-get").arg("update"))?;
    workspace::run(
        workspace
            .command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", package]),
    )
}

/// `cargo install wasm-bindgen-cli --version X` unless `wasm-bindgen
/// --version` already says X, the version in `Cargo.lock` (no `--locked`:
/// see TOOLCHAIN.md).
pub fn wasm_bindgen(workspace: &Workspace) -> Result<()> {
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
