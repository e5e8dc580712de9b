//! Embeds the console (`web-client/console/dist/`, built by `cargo xtask
//! console`) into the library: writes `$OUT_DIR/console_assets.rs`, a table
//! of every file there with its content type, an ETag and, when the build
//! wrote one, its gzipped copy (`NAME.gz`). Without a build the table is
//! empty and `/` explains how to build the console.

// A build script talks to Cargo on stdout.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let console = manifest.join("../../web-client/console");
    let dist = console.join("dist");
    // The console's folder is in the repository, so this path always exists
    // (a missing one would rerun this script on every build); Cargo rescans
    // it, `dist/` included, for changes.
    println!("cargo:rerun-if-changed={}", console.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut table = String::from(
        "/// The console's files (see `build.rs`); empty when it was not built.\n\
         pub(crate) static ASSETS: &[Asset] = &[\n",
    );
    for path in files(&dist) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".gz") {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else { continue };
        let gzipped = path.with_file_name(format!("{name}.gz"));
        let gzip = if gzipped.is_file() {
            format!("Some(include_bytes!({:?}))", gzipped.display().to_string())
        } else {
            "None".to_owned()
        };
        let _ = writeln!(
            table,
            "    Asset {{ name: {name:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}), gzip: {gzip} }},",
            content_type(name),
            fnv1a(&bytes),
            path.display().to_string(),
        );
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("console_assets.rs");
    if let Err(error) = fs::write(&out, table) {
        println!("cargo:warning=cannot write {}: {error}", out.display());
    }
}

/// The files directly in `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: a content hash for the ETag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
