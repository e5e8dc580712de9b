//! The Python client's CI steps, in order: a virtualenv with the pinned
//! tools (`python-client/requirements-dev.txt`, installed only when the file
//! changed), the wheel and sdist, the wheel installed, `mypy --strict` over
//! the package, its examples and its tests, and pytest against the real
//! `herald` binary (`cargo build -p herald`, passed as `HERALD_BIN`).
//!
//! Every step is idempotent; the venv lives in `python-client/.venv`
//! (gitignored). `HERALD_PYTHON` names the interpreter that creates it
//! (default `python3`, at least 3.10).

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::workspace::{self, Workspace};

/// The Python package, relative to the workspace root.
pub const DIR: &str = "python-client";
/// The virtualenv, relative to the workspace root.
const VENV: &str = "python-client/.venv";
/// The pinned tools.
const REQUIREMENTS: &str = "python-client/requirements-dev.txt";
/// A copy of the requirements the venv was last set up with; inside the
/// venv, so removing the venv also forgets it.
const STAMP: &str = "python-client/.venv/.herald-requirements-dev.txt";
/// Where the wheel and sdist are built.
const DIST: &str = "python-client/dist";

pub fn venv_bin(workspace: &Workspace, program: &str) -> PathBuf {
    workspace.path(VENV).join("bin").join(program)
}

/// Creates the venv if missing and installs the pinned tools when
/// `requirements-dev.txt` changed since the last install.
pub fn setup(workspace: &Workspace) -> Result<()> {
    let python = venv_bin(workspace, "python");
    if !python.exists() {
        let interpreter = std::env::var("HERALD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let version = workspace::read(
            workspace
                .command(&interpreter)
                .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
        )?;
        let (major, minor) = version
            .trim()
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .with_context(|| format!("cannot read the version of {interpreter}: {version:?}"))?;
        if (major, minor) < (3, 10) {
            bail!(
                "{interpreter} is Python {major}.{minor}; the client needs 3.10 or later (set HERALD_PYTHON)"
            );
        }
        workspace::run(workspace.command(&interpreter).args(["-m", "venv", VENV]))?;
    }
    let requirements = fs::read_to_string(workspace.path(REQUIREMENTS))
        .with_context(|| format!("cannot read {REQUIREMENTS}"))?;
    if fs::read_to_string(workspace.path(STAMP)).is_ok_and(|installed| installed == requirements) {
        println!("{VENV} matches {REQUIREMENTS}");
        return Ok(());
    }
    workspace::run(workspace.command(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
        REQUIREMENTS,
    ]))?;
    fs::write(workspace.path(STAMP), requirements).with_context(|| format!("cannot write {STAMP}"))
}

/// Builds the wheel and the sdist (no build isolation: the pinned hatchling
/// in the venv, no network) and installs the wheel in the venv.
pub fn build(workspace: &Workspace) -> Result<()> {
    let dist = workspace.path(DIST);
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot remove {DIST}"))?;
    }
    let python = venv_bin(workspace, "python");
    workspace::run(workspace.command(&python).args([
        "-m",
        "build",
        "--no-isolation",
        "--wheel",
        "--sdist",
        "--outdir",
        DIST,
        DIR,
    ]))?;
    let mut wheels = Vec::new();
    let mut sdists = 0;
    for entry in fs::read_dir(&dist).with_context(|| format!("cannot read {DIST}"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".whl") {
            wheels.push(path);
        } else if name.ends_with(".tar.gz") {
            sdists += 1;
        }
    }
    let [wheel] = wheels.as_slice() else {
        bail!("expected one wheel in {DIST}, found {}", wheels.len());
    };
    if sdists != 1 {
        bail!("expected one sdist in {DIST}, found {sdists}");
    }
    workspace::run(
        workspace
            .command(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(wheel),
    )?;
    // The wheel's declared dependencies are satisfied by what is installed.
    workspace::run(workspace.command(&python).args(["-m", "pip", "check"]))
}

/// `mypy --strict` over the package, its examples and its tests.
pub fn typecheck(workspace: &Workspace) -> Result<()> {
    workspace::run(
        workspace
            .command(venv_bin(workspace, "mypy"))
            .current_dir(workspace.path(DIR))
            .env("MYPYPATH", "src")
            .args(["--strict", "src/herald", "examples", "tests"]),
    )
}

/// pytest against the real hub: builds `herald` and passes its path as
/// `HERALD_BIN`; the tests import the installed wheel, not `src/`.
pub fn test(workspace: &Workspace) -> Result<()> {
    workspace::run(
        workspace
            .cargo()
            .args(["build", "-p", "herald", "--bin", "herald"]),
    )?;
    let herald = workspace.target_dir()?.join("debug").join("herald");
    if !herald.exists() {
        bail!(
            "{} is missing after `cargo build -p herald --bin herald`",
            herald.display()
        );
    }
    workspace::run(
        workspace
            .command(venv_bin(workspace, "python"))
            .current_dir(workspace.path(DIR))
            .env("HERALD_BIN", &herald)
            .env("HERALD_TEST_INSTALLED", "1")
            .args(["-m", "pytest", "-q", "-ra", "tests"]),
    )
}
