//! `cargo xtask wasm`: builds the browser client package in `web-client/`.
//!
//! 1. `cargo build -p herald-client-wasm --target wasm32-unknown-unknown
//!    --profile wasm-release` (opt-level "z", LTO, panic = abort);
//! 2. `wasm-bindgen --target web` into `web-client/pkg/` (the CLI must be the
//!    exact version in `Cargo.lock`, installed first when it is not);
//! 3. `wasm-opt -Oz` from the npm `binaryen` package (Debian's wasm-opt 108
//!    breaks the module; see TOOLCHAIN.md);
//! 4. copies `ts-bindings/` to `web-client/src/protocol/` and compiles the
//!    TypeScript wrapper with `tsc` into `web-client/dist/`, then type-checks
//!    `web-client/test/types.check.ts` (the typed `on(...)` API) against it;
//! 5. prints the gzipped sizes of the `.wasm` and the JS.
//!
//! It first installs what it needs, as `cargo xtask ci` does (the wasm32
//! target, the exact `wasm-bindgen` CLI, the npm packages), so it stands
//! alone on a fresh clone. `pkg/`, `dist/` and `src/protocol/` are build
//! output, never committed.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::setup;
use crate::tsc::TSC;
use crate::workspace::{self, Workspace};

/// The wasm crate's package name.
const CRATE: &str = "herald-client-wasm";
/// The module wasm-bindgen reads, in the target directory: `<triple>/<profile>/<lib>.wasm`.
const WASM: &str = "wasm32-unknown-unknown/wasm-release/herald_client_wasm.wasm";
/// Where wasm-bindgen writes the package.
pub const PKG: &str = "web-client/pkg";
/// The wasm file in [`PKG`].
const PKG_WASM: &str = "web-client/pkg/herald_client_wasm_bg.wasm";
/// wasm-opt from the npm `binaryen` package.
const WASM_OPT: &str = "web-client/node_modules/.bin/wasm-opt";
/// The features rustc's wasm32 target enables by default; wasm-opt must
/// accept them (wasm-bindgen drops the target-features section).
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// `cargo xtask wasm [--no-opt]`.
pub fn run(workspace: &Workspace, args: &[&str]) -> Result<()> {
    let optimize = match args {
        [] => true,
        ["--no-opt"] => false,
        _ => bail!("usage: cargo xtask wasm [--no-opt]"),
    };
    build(workspace, optimize)
}

/// Builds the package (the ci step).
pub fn build_package(workspace: &Workspace) -> Result<()> {
    build(workspace, true)
}

fn build(workspace: &Workspace, optimize: bool) -> Result<()> {
    // Stands alone: installs what it needs, as `cargo xtask ci` does.
    setup::wasm_target(workspace)?;
    setup::wasm_bindgen(workspace)?;
    setup::npm_install(workspace)?;

    workspace::run(workspace.cargo().args([
        "build",
        "-p",
        CRATE,
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ]))?;

    let pkg = workspace.path(PKG);
    if pkg.exists() {
        fs::remove_dir_all(&pkg).with_context(|| format!("cannot clear {}", pkg.display()))?;
    }
    workspace::run(
        workspace
            .command("wasm-bindgen")
            .args(["--target", "web", "--out-dir"])
            .arg(&pkg)
            .arg(workspace.target_dir()?.join(WASM)),
    )?;

    let wasm_opt = workspace.path(WASM_OPT);
    if optimize {
        let wasm = workspace.path(PKG_WASM);
        workspace::run(
            workspace
                .command(&wasm_opt)
                .arg("-Oz")
                .args(WASM_FEATURES)
                .arg(&wasm)
                .arg("-o")
                .arg(&wasm),
        )?;
    }

    copy_bindings(workspace)?;
    let tsc = workspace.path(TSC);
    let dist = workspace.path("web-client/dist");
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot clear {}", dist.display()))?;
    }
    workspace::run(
        workspace
            .command(&tsc)
            .arg("--project")
            .arg(workspace.path("web-client/tsconfig.json")),
    )
    .context("the TypeScript wrapper does not compile")?;
    workspace::run(
        workspace
            .command(&tsc)
            .arg("--project")
            .arg(workspace.path("web-client/test/tsconfig.json")),
    )
    .context("web-client/test/types.check.ts does not type-check against dist/")?;

    println!("\nsizes (gzip -9):");
    for file in [
        PKG_WASM,
        "web-client/pkg/herald_client_wasm.js",
        "web-client/dist/index.js",
    ] {
        let path = workspace.path(file);
        let raw = fs::metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        println!("  {file}: {raw} bytes, {} gzipped", gzipped_len(&path)?);
    }
    Ok(())
}

/// The `wasm-bindgen` version `Cargo.lock` pins.
pub fn locked_wasm_bindgen_version(workspace: &Workspace) -> Result<String> {
    let lock_path = workspace.path("Cargo.lock");
    let lock = fs::read_to_string(&lock_path)
        .with_context(|| format!("cannot read {}", lock_path.display()))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == r#"name = "wasm-bindgen""#
            && let Some(version) = lines
                .next()
                .and_then(|line| line.trim().strip_prefix("version = "))
        {
            return Ok(version.trim_matches('"').to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

/// The installed CLI's version (`wasm-bindgen 0.2.130` → `0.2.130`), if any.
pub fn installed_wasm_bindgen_version(workspace: &Workspace) -> Option<String> {
    let output = workspace
        .command("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// `ts-bindings/**/*.ts` → `web-client/src/protocol/`, so the wrapper's
/// declarations in `dist/` are self-contained.
fn copy_bindings(workspace: &Workspace) -> Result<()> {
    let target = workspace.path("web-client/src/protocol");
    if target.exists() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("cannot clear {}", target.display()))?;
    }
    copy_ts(&workspace.path("ts-bindings"), &target)
}

fn copy_ts(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.is_dir() {
            copy_ts(&path, &to.join(name))?;
        } else if path.extension().is_some_and(|ext| ext == "ts") {
            fs::copy(&path, to.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// `gzip -9 -c FILE | wc -c`.
pub fn gzipped_len(path: &Path) -> Result<usize> {
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start gzip")?;
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut stdin = child.stdin.take().context("gzip has no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = child.wait_with_output().context("gzip failed")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))?
        .context("cannot write to gzip")?;
    Ok(output.stdout.len())
}
