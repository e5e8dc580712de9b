//! The command line: [`Cli`], its subcommands, and the dispatch to them.
//!
//! Each subcommand is a clap `Args` struct in its own module with an async
//! `run`; [`Command::run`] calls it, and `main` prints the error it returns.
//! Output is written with `writeln!` on a locked stdout/stderr, so a closed
//! pipe (`herald tail | head`) ends a command quietly instead of panicking.
//!
//! # Layout
//!
//! - `serve`: [`ServeArgs`](serve::ServeArgs), their [`Config`](herald_server::Config), and running the hub.
//! - `defaults`: `serve`'s defaults, spelled from `Config::default()`.
//! - `hub`: the flags a client command reaches a hub with (`--url`, …).
//! - `publish`, `tail`, `approve`: the client commands.

mod approve;
mod defaults;
mod hub;
mod publish;
mod serve;
mod tail;

use clap::{Parser, Subcommand};

/// Herald: a typed real-time event hub.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the hub. Every flag is also an environment variable (`HERALD_<FLAG>`).
    Serve(serve::ServeArgs),
    /// Publish one event over HTTP and print its receipt.
    Publish(publish::PublishArgs),
    /// Follow topics over WebSocket and print their events.
    Tail(tail::TailArgs),
    /// Answer a pending approval (proceed or reject).
    Approve(approve::ApproveArgs),
}

impl Command {
    /// Runs the command to its end.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Approve(args) => approve::run(args).await,
        }
    }
}

/// Whether an IO error is the reader going away (a closed pipe).
fn is_broken_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
