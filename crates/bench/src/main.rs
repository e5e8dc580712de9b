//! `herald-bench`: Herald's load generator and benchmark suite.
//!
//! `herald-bench suite [--smoke]` runs every scenario against Herald, the
//! peer hubs in `bench/peers/` and a floor, and writes `bench/results/`;
//! `herald-bench load SPEC_JSON` measures one cell (the suite runs it as a
//! child process so it can be pinned to its own core); `herald-bench report
//! JSON` writes a report again from the raw records in its JSON. See
//! `bench/README.md`.
//!
//! # Layout
//!
//! - [`wire`]: the bench payload and the byte search that reads it back.
//! - [`board`]: N subscriber clients on one current-thread runtime.
//! - [`coverage`]: which missing events a `gap` frame announced.
//! - [`counted`]: clients that count the bytes on the wire and may speak
//!   `permessage-deflate`.
//! - [`publisher`], [`http`]: publishing into Herald (HTTP) or a peer (`/pub` WebSocket).
//! - [`load`]: the scenarios, one cell at a time.
//! - [`targets`]: the hubs under test: install, start, stop.
//! - [`plan`], [`suite`]: which cells to run, and running them interleaved.
//! - [`report`], [`chart`]: markdown, JSON and SVG output.
//! - [`procfs`]: CPU, RSS and machine facts from `/proc`.

// A benchmark driver talks to the person or CI log that runs it.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// Figures are converted between integer counts and floating-point rates throughout.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod board;
mod chart;
mod counted;
mod coverage;
mod goals;
mod http;
mod load;
mod plan;
mod procfs;
mod publisher;
mod report;
mod spec;
mod suite;
mod targets;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

/// Herald's load generator and benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "herald-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the benchmark suite and write the report.
    Suite(plan::SuiteArgs),
    /// Measure one cell (JSON `LoadSpec`) and print its JSON result.
    Load { spec: String },
    /// Write a report again from its JSON (`bench/results/latest.json`):
    /// the markdown, chart and summary beside it, computed anew from the
    /// run's raw records, as after a change to how the report is written.
    Report { json: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Load { spec } => load_cmd(&spec),
        Cmd::Suite(args) => suite_cmd(&args),
        Cmd::Report { json } => report::rewrite(&json).map(|_| {
            eprintln!("bench: wrote the report beside {}", json.display());
            ExitCode::SUCCESS
        }),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_cmd(spec: &str) -> Result<ExitCode> {
    let spec: spec::LoadSpec = serde_json::from_str(spec).context("reading the load spec")?;
    let result = load::run(&spec)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

fn suite_cmd(args: &plan::SuiteArgs) -> Result<ExitCode> {
    procfs::raise_nofile();
    let root = args
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let root = root.canonicalize().unwrap_or(root);
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .context("no directory for the bench binary")?
        .to_path_buf();
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work)?;
    let herald = args
        .herald_bin
        .clone()
        .unwrap_or_else(|| bin_dir.join("herald"));
    let paths = targets::Paths {
        root: root.clone(),
        herald,
        bin_dir,
        work,
    };
    let mut notes = Vec::new();
    let plan = plan::build(args, paths, &mut notes)?;
    let run = suite::run(&plan, notes)?;
    let name = if plan.smoke { "smoke" } else { "latest" };
    let summaries = report::write(&run, &plan.out_dir, name)?;
    eprintln!(
        "bench: wrote {}",
        plan.out_dir
            .join(format!("{name}.{{md,json,svg}}"))
            .display()
    );
    let failures = plan::verdict(&run, &summaries);
    for f in &failures {
        eprintln!("bench: FAIL {f}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
