//! `cargo xtask ci`: the single command CI runs.
//!
//! Set-up first, idempotent (each step skips what is already there), then every
//! check; each step prints a header and its duration, and the first failure
//! stops the run with a non-zero exit. To add a step (wasm browser tests, bench
//! smoke, Redis), write a `fn(&Workspace) -> Result<()>` in its own module and
//! append it to [`steps`].

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::workspace::{self, Workspace};
use crate::{bench, bindings, browser, compat, console, openapi, python, redis, setup, tsc};

/// One step of the run.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub run: fn(&Workspace) -> Result<()>,
}

/// Every step, in order.
pub fn steps() -> Vec<Step> {
    vec![
        // Set-up: install what is missing.
        Step {
            name: "set-up: rust target wasm32-unknown-unknown",
            run: setup::wasm_target,
        },
        Step {
            name: "set-up: rustfmt and clippy",
            run: setup::components,
        },
        Step {
            name: "set-up: npm install in web-client",
            run: setup::npm_install,
        },
        // The Redis engine's tests and the chaos soak start their own
        // `redis-server` processes.
        Step {
            name: "set-up: redis-server",
            run: redis::install,
        },
        // Checks.
        Step {
            name: "cargo fmt --check",
            run: fmt,
        },
        Step {
            name: "cargo clippy",
            run: clippy,
        },
        Step {
            name: "cargo test",
            run: test,
        },
        Step {
            name: "herald-protocol builds for wasm32",
            run: wasm_protocol,
        },
        Step {
            name: "ts-bindings are up to date",
            run: bindings::check,
        },
        Step {
            name: "fixtures type-check with tsc",
            run: tsc::check_fixtures,
        },
        Step {
            name: "cargo doc",
            run: doc,
        },
        // ---- Later steps (wasm browser tests, bench smoke, redis) go here. ----
        // Browser client (H6): set-up, package build, browser tests.
        Step {
            name: "set-up: chromium",
            run: setup::chromium,
        },
        Step {
            name: "set-up: wasm-bindgen-cli (Cargo.lock version)",
            run: setup::wasm_bindgen,
        },
        Step {
            name: "cargo xtask console (the wasm package, then the console)",
            run: console::build,
        },
        Step {
            name: "browser tests (web-client)",
            run: browser::test,
        },
        // The console (H14): every panel in headless Chromium against a
        // real hub fed by the example producer.
        Step {
            name: "console tests (Playwright, real hub and producer)",
            run: console::test,
        },
        // Benchmarks (H7): a few seconds per scenario at small N; checks zero
        // loss and no duplicates for Herald, never speed.
        Step {
            name: "cargo xtask bench --smoke",
            run: bench_smoke,
        },
        // Several nodes on one Redis (H10): nodes and Redis killed while
        // events flow; fails on any loss or duplicate no gap announced.
        Step {
            name: "cargo xtask chaos --smoke",
            run: chaos_smoke,
        },
        // Python client (H11): venv with pinned tools, wheel + sdist,
        // mypy --strict, pytest against the real hub.
        Step {
            name: "set-up: python venv (python-client/.venv)",
            run: python::setup,
        },
        Step {
            name: "python-client: wheel and sdist, installed",
            run: python::build,
        },
        Step {
            name: "python-client: mypy --strict",
            run: python::typecheck,
        },
        Step {
            name: "python-client: pytest against herald",
            run: python::test,
        },
        // The replaced systems' dialects (H13): each seed's own client code
        // against the binary, through Node, Chromium and Python.
        Step {
            name: "set-up: compat runners (npm, chromium, python venv)",
            run: compat::setup,
        },
        Step {
            name: "compat: the seeds' JavaScript (node, chromium) against herald",
            run: compat::node,
        },
        Step {
            name: "compat: the seeds' Python against herald",
            run: compat::python,
        },
        // Operations (H15): the OpenAPI document is valid OpenAPI 3.1 (the
        // drain, watchdog, config file, compression, dashboard and
        // deployment files are tested by `cargo test`, the browser and
        // Python suites, and the bench smoke above).
        Step {
            name: "set-up: openapi-spec-validator venv",
            run: openapi::setup,
        },
        Step {
            name: "OpenAPI document validates as OpenAPI 3.1",
            run: openapi::validate,
        },
    ]
}

/// Runs only the Python client's steps (`cargo xtask python`).
pub fn run_python(workspace: &Workspace) -> Result<()> {
    for step in steps()
        .into_iter()
        .filter(|s| s.name.contains("python") && !s.name.contains("compat"))
    {
        run_step(workspace, step)?;
    }
    Ok(())
}

/// Runs one step with its header and duration.
pub fn run_step(workspace: &Workspace, step: Step) -> Result<()> {
    println!("\n==== {} ====", step.name);
    let started = Instant::now();
    (step.run)(workspace).map_err(|e| e.context(format!("step `{}` failed", step.name)))?;
    println!(
        "---- ok: {} ({:.1}s)",
        step.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn chaos_smoke(workspace: &Workspace) -> Result<()> {
    redis::chaos(workspace, &["--smoke"])
}

fn bench_smoke(workspace: &Workspace) -> Result<()> {
    bench::run(workspace, &["--smoke"])
}

/// Runs every step, stopping at the first failure; with `keep_going`, runs
/// them all and fails at the end, naming every step that failed.
pub fn run(workspace: &Workspace, keep_going: bool) -> Result<()> {
    let started = Instant::now();
    let mut timings: Vec<(&str, Duration, bool)> = Vec::new();
    let mut failed = Vec::new();
    for step in steps() {
        println!("\n==== {} ====", step.name);
        let step_started = Instant::now();
        let result = (step.run)(workspace);
        let took = step_started.elapsed();
        timings.push((step.name, took, result.is_ok()));
        match result {
            Ok(()) => println!("---- ok: {} ({:.1}s)", step.name, took.as_secs_f64()),
            Err(error) if keep_going => {
                println!(
                    "---- FAILED: {} ({:.1}s): {error:#}",
                    step.name,
                    took.as_secs_f64()
                );
                failed.push(step.name);
            }
            Err(error) => {
                print_timings(&timings);
                return Err(error.context(format!("ci step `{}` failed", step.name)));
            }
        }
    }
    print_timings(&timings);
    if !failed.is_empty() {
        bail!("ci failed: {}", failed.join(", "));
    }
    println!("ci passed in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn print_timings(timings: &[(&str, Duration, bool)]) {
    println!("\n==== timings ====");
    for (name, took, ok) in timings {
        let status = if *ok { "ok" } else { "FAILED" };
        println!("{:>7.1}s  {status:<6}  {name}", took.as_secs_f64());
    }
}

fn fmt(workspace: &Workspace) -> Result<()> {
    workspace::run(workspace.cargo().args(["fmt", "--all", "--check"]))
}

fn clippy(workspace: &Workspace) -> Result<()> {
    workspace::run(workspace.cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test(workspace: &Workspace) -> Result<()> {
    workspace::run(workspace.cargo().args(["test", "--workspace"]))
}

fn wasm_protocol(workspace: &Workspace) -> Result<()> {
    workspace::run(workspace.cargo().args([
        "build",
        "-p",
        "herald-protocol",
        "--target",
        "wasm32-unknown-unknown",
    ]))
}

fn doc(workspace: &Workspace) -> Result<()> {
    workspace::run(workspace.cargo().env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--workspace",
        "--no-deps",
    ]))
}
