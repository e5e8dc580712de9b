//! Where the workspace is, and how tasks run commands in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Herald checkout the tasks work on.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace this xtask was built from (the parent of `xtask/`).
    pub fn locate() -> Workspace {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        Workspace { root }
    }

    /// `path`, relative to the root.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.root.join(path)
    }

    /// The directory Cargo builds into, as `cargo metadata` reports it (so
    /// `CARGO_TARGET_DIR` and `build.target-dir` are honoured). A binary
    /// built with a profile is in its `debug/` or `release/` folder.
    pub fn target_dir(&self) -> Result<PathBuf> {
        let text = read(
            self.cargo()
                .args(["metadata", "--format-version", "1", "--no-deps"]),
        )?;
        let metadata: serde_json::Value =
            serde_json::from_str(&text).context("`cargo metadata` printed invalid JSON")?;
        metadata
            .get("target_directory")
            .and_then(serde_json::Value::as_str)
            .map(PathBuf::from)
            .context("`cargo metadata` names no target_directory")
    }

    /// `cargo` (the one running this xtask), in the workspace root.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        self.command(cargo)
    }

    /// Any program, in the workspace root.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.root);
        command
    }
}

/// Runs `command` with inherited output, and fails unless it exits with 0.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns its stdout; fails unless it exits with 0.
pub fn read(command: &mut Command) -> Result<String> {
    let shown = display(command);
    let output = command
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// The command line, for logs: environment overrides, program and arguments.
fn display(command: &Command) -> String {
    let mut parts: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| {
            Some(format!(
                "{}={}",
                key.to_string_lossy(),
                value?.to_string_lossy()
            ))
        })
        .collect();
    let program = Path::new(command.get_program());
    // Show `cargo` rather than the absolute path of the toolchain's cargo.
    let program = program.file_name().map_or(program.as_os_str(), |name| name);
    parts.push(program.to_string_lossy().into_owned());
    parts.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_is_where_cargo_built_this_test() {
        let target = Workspace::locate().target_dir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let target = target.canonicalize().unwrap();
        assert!(
            exe.canonicalize().unwrap().starts_with(&target),
            "{} is not under {}",
            exe.display(),
            target.display()
        );
    }
}
