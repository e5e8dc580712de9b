//! The command line: [`Cli`], its subcommands, and the dispatch to them.
//!
//! Each subcommand is a clap `Args` struct in its own module with a `run`;
//! [`Parsed::run`] calls it, and `main` prints the error it returns. The
//! command line is read by [`parse`]: for `serve` and `config print`, the
//! keys of `--config FILE` become the defaults of their flags first.
//! Output is written with `writeln!` on a locked stdout/stderr, so a closed
//! pipe (`herald tail | head`) ends a command quietly instead of panicking.
//!
//! # Layout
//!
//! - `serve`: [`ServeArgs`](serve::ServeArgs), their [`Config`](herald_server::Config), and running the hub.
//! - `config_file`: `--config FILE`, read and checked against `serve`'s flags.
//! - `config`: `herald config print`, the effective configuration.
//! - `defaults`: `serve`'s defaults, spelled from `Config::default()`.
//! - `hub`: the flags a client command reaches a hub with (`--url`, …).
//! - `publish`, `tail`, `approve`: the client commands.

mod approve;
mod config;
mod config_file;
mod defaults;
mod hub;
mod publish;
mod serve;
mod tail;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use self::config_file::ConfigFile;

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
    /// Show the configuration `herald serve` would run with.
    Config(config::ConfigArgs),
}

/// A command line, read.
#[derive(Debug)]
pub(crate) struct Parsed {
    cli: Cli,
    matches: ArgMatches,
    file: Option<ConfigFile>,
}

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    /// Wrong flags, or `--help`/`--version` (clap prints and exits).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    ConfigFile(#[from] config_file::ConfigFileError),
}

/// Reads `args` (the program name first). With `--config FILE` (or
/// `HERALD_CONFIG`) on `serve` or `config print`, the file is read and
/// checked, and its keys become the defaults of their flags, so flags and
/// `HERALD_*` variables still win.
pub(crate) fn parse(args: &[OsString]) -> Result<Parsed, ParseError> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let file = match config_path(&matches) {
        Some(path) => Some(ConfigFile::read(&path, &serve_command())?),
        None => None,
    };
    let matches = match &file {
        Some(file) => Cli::command()
            .mut_subcommand("serve", |serve| file.apply(serve))
            .mut_subcommand("config", |config| {
                config.mut_subcommand("print", |print| file.apply(print))
            })
            .try_get_matches_from(args)?,
        None => matches,
    };
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed { cli, matches, file })
}

/// The `--config` of `serve` or `config print`, if given.
fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    let serving = match matches.subcommand()? {
        ("serve", serve) => serve,
        ("config", config) => config.subcommand_matches("print")?,
        _ => return None,
    };
    serving.get_one::<PathBuf>("config").cloned()
}

/// `herald serve`'s command: its flags are the keys of a configuration file.
fn serve_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.find_subcommand_mut("serve")
        .map(|serve| serve.clone())
        .unwrap_or_default()
}

impl Parsed {
    /// The runtime worker threads the command runs on: `serve`'s
    /// `--workers`; one for the client commands, which hold one connection.
    pub(crate) fn workers(&self) -> usize {
        match &self.cli.command {
            Command::Serve(args) => usize::from(args.workers),
            _ => 1,
        }
    }

    /// Runs the command to its end.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.cli.command {
            Command::Serve(args) => serve::run(args, self.file.as_ref()).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Approve(args) => approve::run(args).await,
            Command::Config(args) => {
                let print = self
                    .matches
                    .subcommand_matches("config")
                    .and_then(|config| config.subcommand_matches("print"))
                    .unwrap_or(&self.matches);
                config::run(args, print, self.file.as_ref())
            }
        }
    }
}

/// Whether an IO error is the reader going away (a closed pipe).
fn is_broken_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
