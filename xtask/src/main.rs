//! `cargo xtask`: the project's build tasks, in Rust so they run the same
//! everywhere CI and developers do.
//!
//! # Layout
//!
//! - [`workspace`]: where things are, and how commands are run and reported.
//! - [`bindings`]: `cargo xtask bindings [--check]`, the TypeScript types in
//!   `ts-bindings/`, the JSON Schema and the Python models, generated from
//!   `herald-protocol`, and the HTTP API's OpenAPI document.
//! - [`pymodels`]: the JSON Schema → pydantic translator behind the Python models.
//! - [`python`]: the Python client's CI steps (venv, wheel and sdist, mypy, pytest).
//! - [`redis`]: Redis for the tests, `cargo xtask chaos` (the soak of several
//!   nodes on one Redis) and `cargo xtask cluster` (three nodes, locally).
//! - [`openapi`]: the OpenAPI document validated as OpenAPI 3.1 (CI steps).
//! - [`tsc`]: type-checks the protocol's JSON fixtures against those bindings
//!   with the TypeScript compiler.
//! - `bench`: `cargo xtask bench [--smoke]`, the benchmark suite in `crates/bench`.
//! - [`wasm`]: `cargo xtask wasm`, the browser client package in `web-client/`.
//! - [`setup`]: idempotent set-up steps (wasm32 target, npm packages,
//!   Chromium, the `wasm-bindgen` CLI), run by every task that needs them.
//! - [`browser`]: the browser tests (Playwright + Chromium + a real hub).
//! - [`console`]: `cargo xtask console [--test]`, the console `herald serve`
//!   embeds, and its browser tests.
//! - [`compat`]: the seeds' own client code against the dialects (Node, Chromium, Python).
//! - [`ci`]: `cargo xtask ci`, the single command CI runs: idempotent set-up,
//!   then every check, failing fast.

// An xtask talks to the person or CI log that runs it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bindings;
mod browser;
mod ci;
mod compat;
mod console;
mod openapi;
mod pymodels;
mod python;
mod redis;
mod setup;
mod tsc;
mod wasm;
mod workspace;

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::workspace::Workspace;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bindings [--check]   write ts-bindings/, the JSON Schema and the Python models from
                       herald-protocol, and the OpenAPI document (--check: compare only)
  tsc                  type-check the protocol's JSON fixtures against ts-bindings/
  wasm [--no-opt]      build the browser client package (web-client/pkg and dist)
  console [--test]     build the console herald serve embeds at / (web-client/console/dist);
                       --test: then its browser tests against a real hub
  ci [--keep-going]    set up what is missing, then run every check CI runs, stopping
                       at the first failure (--keep-going: run all, fail at the end)
  bench [--smoke] ...  build in release and run the benchmark suite (bench/README.md)
  python               the Python client's CI steps only (venv, wheel + sdist, mypy, pytest)
  chaos [--smoke] ...  three nodes on one Redis, nodes and Redis killed and restarted while
                       events flow; fails on any loss or duplicate no gap announced
  cluster              three nodes on one Redis on this machine (:8765, :8766, :8767)
  compat               the dialects' CI steps only: the seeds' own clients (Node, Chromium,
                       Python) against herald
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let workspace = Workspace::locate();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["bindings"] => bindings::write(&workspace),
        ["bindings", "--check"] => bindings::check(&workspace),
        ["tsc"] => tsc::check_fixtures(&workspace),
        ["ci"] => ci::run(&workspace, false),
        ["ci", "--keep-going"] => ci::run(&workspace, true),
        // ---- Tasks other people add: dispatch them here. ----
        ["wasm", rest @ ..] => wasm::run(&workspace, rest),
        ["console", rest @ ..] => console::run(&workspace, rest),
        ["bench", rest @ ..] => bench::run(&workspace, rest),
        ["python"] => ci::run_python(&workspace),
        ["chaos", rest @ ..] => redis::chaos(&workspace, rest),
        ["cluster"] => redis::cluster(&workspace),
        ["compat"] => compat::run(&workspace),
        // ---- end of tasks added later ----
        [] | ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
}
