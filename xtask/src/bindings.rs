//! `cargo xtask bindings [--check]`: every file generated from
//! `herald-protocol`, never edited by hand:
//!
//! - `ts-bindings/`: the TypeScript types ([`herald_protocol::bindings::declarations`]);
//! - `crates/protocol/schema/`: the JSON Schema ([`herald_protocol::schema::render`]);
//! - `python-client/src/herald/models/`: the pydantic models generated from
//!   that schema ([`crate::pymodels`]);
//! - `crates/server/openapi/`: the HTTP API's OpenAPI 3.1 document, from the
//!   handlers and their types ([`herald_server::transport::http::openapi`]).
//!
//! `--check` compares in memory and names every differing, missing and extra
//! file in those directories; the test at the bottom runs it, so `cargo test`
//! catches stale bindings.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::pymodels;
use crate::workspace::Workspace;

/// Where the TypeScript bindings go, relative to the workspace root.
pub const DIR: &str = "ts-bindings";
/// Where the JSON Schema goes.
pub const SCHEMA_DIR: &str = "crates/protocol/schema";
/// The schema's file name in [`SCHEMA_DIR`].
pub const SCHEMA_FILE: &str = "herald-protocol.schema.json";
/// Where the Python models go.
pub const PYTHON_DIR: &str = "python-client/src/herald/models";
/// Where the OpenAPI document goes.
pub const OPENAPI_DIR: &str = "crates/server/openapi";
/// The OpenAPI document's file name in [`OPENAPI_DIR`].
pub const OPENAPI_FILE: &str = "herald.openapi.json";

/// Names inside a generated directory that are not ours to check (Python's
/// bytecode caches appear next to the models whenever they are imported).
const IGNORED: &[&str] = &["__pycache__"];

/// One generated directory: its path relative to the root, and its files
/// keyed by `/`-separated path relative to it.
struct Tree {
    dir: &'static str,
    files: BTreeMap<String, String>,
}

/// Everything `cargo xtask bindings` writes.
fn trees() -> Result<Vec<Tree>> {
    let schema = herald_protocol::schema::json_schema();
    let python = pymodels::generate(&schema).context("cannot generate the Python models")?;
    Ok(vec![
        Tree {
            dir: DIR,
            files: herald_protocol::bindings::declarations()
                .into_iter()
                .collect(),
        },
        Tree {
            dir: SCHEMA_DIR,
            files: BTreeMap::from([(SCHEMA_FILE.to_owned(), herald_protocol::schema::render())]),
        },
        Tree {
            dir: PYTHON_DIR,
            files: BTreeMap::from([("__init__.py".to_owned(), python)]),
        },
        Tree {
            dir: OPENAPI_DIR,
            files: BTreeMap::from([(
                OPENAPI_FILE.to_owned(),
                herald_server::transport::http::openapi::render(),
            )]),
        },
    ])
}

/// Writes every generated file and removes files that are no longer generated.
pub fn write(workspace: &Workspace) -> Result<()> {
    for tree in trees()? {
        let dir = workspace.path(tree.dir);
        let diff = diff(&dir, &tree.files)?;
        for (path, contents) in &tree.files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            // Only touch what changed, so timestamps (and watchers) stay quiet.
            if fs::read_to_string(&path).ok().as_ref() != Some(contents) {
                fs::write(&path, contents)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        for extra in &diff.extra {
            let path = dir.join(extra);
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
        println!(
            "{}/: {} files ({} changed, {} added, {} removed)",
            tree.dir,
            tree.files.len(),
            diff.differing.len(),
            diff.missing.len(),
            diff.extra.len()
        );
    }
    Ok(())
}

/// Fails, naming each file, unless every generated directory is exactly
/// what would be written.
pub fn check(workspace: &Workspace) -> Result<()> {
    let mut report = String::new();
    for tree in trees()? {
        let diff = diff(&workspace.path(tree.dir), &tree.files)?;
        for (label, paths) in [
            ("differs", &diff.differing),
            ("missing", &diff.missing),
            ("extra (not generated)", &diff.extra),
        ] {
            for path in paths {
                report.push_str(&format!("\n  {}/{path}: {label}", tree.dir));
            }
        }
        if diff.is_empty() {
            println!("{}/ is up to date", tree.dir);
        }
    }
    if report.is_empty() {
        return Ok(());
    }
    bail!("generated files are out of date; run `cargo xtask bindings`:{report}")
}

/// How the files on disk differ from the generated ones (paths relative to the dir).
#[derive(Debug, Default)]
struct Diff {
    differing: Vec<String>,
    missing: Vec<String>,
    extra: Vec<String>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.differing.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

fn diff(dir: &Path, expected: &BTreeMap<String, String>) -> Result<Diff> {
    let mut on_disk = BTreeMap::new();
    if dir.exists() {
        collect_files(dir, dir, &mut on_disk)?;
    }
    let mut diff = Diff::default();
    for (path, contents) in expected {
        match on_disk.get(path) {
            None => diff.missing.push(path.clone()),
            Some(actual) if actual.as_deref() != Some(contents.as_str()) => {
                diff.differing.push(path.clone());
            }
            Some(_) => {}
        }
    }
    diff.extra = on_disk
        .keys()
        .filter(|path| !expected.contains_key(*path))
        .cloned()
        .collect();
    Ok(diff)
}

/// Every file under `dir` (but [`IGNORED`] names), keyed by its
/// `/`-separated path relative to `base`; the contents are `None` when not
/// UTF-8 (which never matches).
fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Option<String>>,
) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path: PathBuf = entry?.path();
        if path
            .file_name()
            .is_some_and(|name| IGNORED.iter().any(|ignored| name == *ignored))
        {
            continue;
        }
        if path.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            let relative = path.strip_prefix(base).unwrap_or(&path);
            let key = relative.to_string_lossy().replace('\\', "/");
            out.insert(key, fs::read_to_string(&path).ok());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_up_to_date() {
        if let Err(error) = check(&Workspace::locate()) {
            panic!("{error:#}");
        }
    }

    #[test]
    fn check_names_differing_missing_and_extra_files() {
        let dir = std::env::temp_dir().join(format!("herald-bindings-diff-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("__pycache__")).unwrap();
        fs::write(dir.join("a.py"), "old").unwrap();
        fs::write(dir.join("stale.py"), "x").unwrap();
        fs::write(dir.join("__pycache__/a.cpython-311.pyc"), "ignored").unwrap();
        let expected = BTreeMap::from([
            ("a.py".to_owned(), "new".to_owned()),
            ("b.py".to_owned(), "b".to_owned()),
        ]);
        let diff = diff(&dir, &expected).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(diff.differing, ["a.py"]);
        assert_eq!(diff.missing, ["b.py"]);
        assert_eq!(diff.extra, ["stale.py"]);
    }
}
