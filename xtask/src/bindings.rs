//! `cargo xtask bindings [--check]`: `ts-bindings/` is generated from
//! [`herald_protocol::bindings::declarations`] and never edited by hand.
//!
//! `--check` compares in memory and names every differing, missing and extra
//! file; the test at the bottom runs it, so `cargo test` catches stale bindings.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::workspace::Workspace;

/// Where the bindings go, relative to the workspace root.
pub const DIR: &str = "ts-bindings";

/// Writes every declaration and removes files that are no longer generated.
pub fn write(workspace: &Workspace) -> Result<()> {
    let dir = workspace.path(DIR);
    let expected = expected();
    let diff = diff(&dir, &expected)?;
    for (path, contents) in &expected {
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
        "{DIR}/: {} files ({} changed, {} added, {} removed)",
        expected.len(),
        diff.differing.len(),
        diff.missing.len(),
        diff.extra.len()
    );
    Ok(())
}

/// Fails, naming each file, unless `ts-bindings/` is exactly what would be written.
pub fn check(workspace: &Workspace) -> Result<()> {
    let diff = diff(&workspace.path(DIR), &expected())?;
    if diff.is_empty() {
        println!("{DIR}/ is up to date");
        return Ok(());
    }
    let mut report = String::new();
    for (label, paths) in [
        ("differs", &diff.differing),
        ("missing", &diff.missing),
        ("extra (not generated)", &diff.extra),
    ] {
        for path in paths {
            report.push_str(&format!("\n  {DIR}/{path}: {label}"));
        }
    }
    bail!("{DIR}/ is out of date; run `cargo xtask bindings`:{report}")
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

/// The generated files, keyed by path relative to [`DIR`].
fn expected() -> BTreeMap<String, String> {
    herald_protocol::bindings::declarations()
        .into_iter()
        .collect()
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

/// Every file under `dir`, keyed by its `/`-separated path relative to `base`;
/// the contents are `None` when not UTF-8 (which never matches).
fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Option<String>>,
) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path: PathBuf = entry?.path();
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
    fn ts_bindings_are_up_to_date() {
        if let Err(error) = check(&Workspace::locate()) {
            panic!("{error:#}");
        }
    }
}
