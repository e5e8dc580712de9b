//! `cargo xtask console`: builds the console that `herald serve` embeds and
//! serves at `/` (see `crates/server/build.rs`), and its browser tests.
//!
//! 1. the browser client package (`cargo xtask wasm`, which installs what
//!    it needs first);
//! 2. `tsc --noEmit` on `web-client/console/` (strict, against the
//!    package's declarations and the generated bindings);
//! 3. esbuild bundles `web-client/console/src/main.tsx` (Preact, uPlot,
//!    dagre and the web client) into `console.js` and `console.css`,
//!    minified, into `web-client/console/dist/`, with `index.html` and the
//!    wasm module beside them;
//! 4. `gzip -9 -n` writes a `.gz` of each (the hub sends those to browsers
//!    that take gzip), and the sizes are printed.
//!
//! `dist/` is build output, never committed: Cargo rebuilds `herald-server`
//! when it changes, so the next `cargo build`/`cargo run` embeds it.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::setup::CHROMIUM;
use crate::workspace::{self, Workspace};
use crate::{python, tsc, wasm};

/// The console's sources.
const CONSOLE: &str = "web-client/console";
/// What the hub embeds.
const DIST: &str = "web-client/console/dist";
/// esbuild, installed by `npm install` in `web-client/`.
const ESBUILD: &str = "web-client/node_modules/.bin/esbuild";

/// `cargo xtask console`.
pub fn run(workspace: &Workspace, args: &[&str]) -> Result<()> {
    match args {
        [] => build(workspace),
        ["--test"] => build(workspace).and_then(|()| test(workspace)),
        _ => bail!("usage: cargo xtask console [--test]"),
    }
}

/// Builds the console (the ci step).
pub fn build(workspace: &Workspace) -> Result<()> {
    wasm::build_package(workspace)?;
    workspace::run(
        workspace
            .command(workspace.path(tsc::TSC))
            .arg("--project")
            .arg(workspace.path(CONSOLE).join("tsconfig.json")),
    )
    .context("the console does not type-check")?;

    let dist = workspace.path(DIST);
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot clear {}", dist.display()))?;
    }
    fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    workspace::run(
        workspace
            .command(workspace.path(ESBUILD))
            .arg(workspace.path(CONSOLE).join("src/main.tsx"))
            .args([
                "--bundle",
                "--format=esm",
                "--target=es2022",
                "--minify",
                "--jsx=automatic",
                "--jsx-import-source=preact",
                "--legal-comments=none",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", dist.join("console.js").display())),
    )
    .context("esbuild could not bundle the console")?;
    copy(
        &workspace.path(CONSOLE).join("index.html"),
        &dist.join("index.html"),
    )?;
    copy(
        &workspace.path(wasm::PKG).join("herald_client_wasm_bg.wasm"),
        &dist.join("herald_client_wasm_bg.wasm"),
    )?;

    println!("\nconsole sizes (gzip -9):");
    let mut total = 0;
    let mut files: Vec<_> = fs::read_dir(&dist)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    files.sort();
    for file in files {
        workspace::run(
            Command::new("gzip")
                .args(["-9", "-n", "-k", "-f"])
                .arg(&file),
        )?;
        let raw = fs::metadata(&file)?.len();
        let gzipped = wasm::gzipped_len(&file)?;
        total += gzipped;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name}: {raw} bytes, {gzipped} gzipped");
    }
    println!("  total: {total} bytes gzipped");
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

/// Builds `herald` (which embeds the console just built) and runs the
/// console's browser tests (`web-client/console/test/`) against it, with the
/// example producer run by the Python client's venv.
pub fn test(workspace: &Workspace) -> Result<()> {
    python::setup(workspace)?;
    workspace::run(
        workspace
            .cargo()
            .args(["build", "-p", "herald", "--bin", "herald"]),
    )?;
    let herald = workspace.target_dir()?.join("debug").join("herald");
    let mut command = workspace.command("node");
    command
        .args([
            "--test",
            "--test-concurrency=1",
            "console/test/console.test.mjs",
        ])
        .env("HERALD_BIN", &herald)
        .env("CHROMIUM", CHROMIUM)
        .env("HERALD_PYTHON_BIN", python::venv_bin(workspace, "python"))
        .current_dir(workspace.path("web-client"));
    if let Ok(dir) = std::env::var("CONSOLE_SCREENSHOTS") {
        command.env("CONSOLE_SCREENSHOTS", workspace.path(dir));
    }
    workspace::run(&mut command).context("console tests failed")
}
