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
//! - `environment`: the `HERALD_*` variables: unknown ones warned about, bad
//!   values reported with the variable's name.
//! - `config`: `herald config print`, the effective configuration.
//! - `defaults`: `serve`'s defaults, spelled from `Config::default()`.
//! - `hub`: the flags a client command reaches a hub with (`--url`, …).
//! - `publish`, `tail`, `approve`: the client commands.

mod approve;
mod config;
mod config_file;
mod defaults;
mod environment;
mod hub;
mod publish;
mod serve;
mod tail;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{
    ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum as _,
};

use self::config_file::ConfigFile;
use crate::logs::LogFormat;

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
    let matches = matches_of(&Cli::command(), args)?;
    let file = match config_path(&matches) {
        Some(path) => Some(ConfigFile::read(&path, &serve_command())?),
        None => None,
    };
    let matches = match &file {
        Some(file) => matches_of(
            &Cli::command()
                .mut_subcommand("serve", |serve| file.apply(serve))
                .mut_subcommand("config", |config| {
                    config.mut_subcommand("print", |print| file.apply(print))
                }),
            args,
        )?,
        None => matches,
    };
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed { cli, matches, file })
}

/// `args` read by `command`; a bad value that came from a `HERALD_*`
/// variable is reported with the variable's name.
fn matches_of(command: &clap::Command, args: &[OsString]) -> Result<ArgMatches, clap::Error> {
    command.clone().try_get_matches_from(args).map_err(|error| {
        environment::name_the_variable(error, command, args, |name| std::env::var_os(name))
    })
}

/// The log format `herald serve ARGS` asks for, from its flag, its
/// variable or its configuration file, read leniently (whatever else is
/// wrong with them, which clap would refuse before reading it): a command
/// line that cannot be used is reported in the format the hub's logs would
/// have had. Text for the other commands, which are run by people.
pub(crate) fn requested_log_format(args: &[OsString]) -> LogFormat {
    let args: Vec<&str> = args.iter().filter_map(|arg| arg.to_str()).collect();
    let Some((&"serve", flags)) = args.get(1..).and_then(|rest| rest.split_first()) else {
        return LogFormat::Text;
    };
    let given = flag_text(flags, "log-format")
        .or_else(|| std::env::var("HERALD_LOG_FORMAT").ok())
        .or_else(|| {
            let path =
                flag_text(flags, "config").or_else(|| std::env::var("HERALD_CONFIG").ok())?;
            config_file::lenient_value(Path::new(&path), "log-format")
        });
    given
        .and_then(|text| LogFormat::from_str(&text, false).ok())
        .unwrap_or(LogFormat::Text)
}

/// The last value given to `--long` in `flags` (`--long VALUE` or
/// `--long=VALUE`), as clap would take it.
fn flag_text(flags: &[&str], long: &str) -> Option<String> {
    let flag = format!("--{long}");
    let mut found = None;
    for (i, arg) in flags.iter().enumerate() {
        if *arg == "--" {
            break;
        }
        if *arg == flag {
            found = flags.get(i + 1).map(|&value| value.to_owned());
        } else if let Some(value) = arg
            .strip_prefix(&flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_owned());
        }
    }
    found
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

    /// The format a failure to start is reported in: `serve`'s
    /// `--log-format`, so that a log pipeline that reads JSON keeps the
    /// line that explains a crash loop; text for the other commands.
    pub(crate) fn log_format(&self) -> LogFormat {
        match &self.cli.command {
            Command::Serve(args) => args.log_format,
            _ => LogFormat::Text,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn format_of(args: &[&str]) -> LogFormat {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        requested_log_format(&args)
    }

    #[test]
    fn a_failure_to_start_is_reported_in_the_log_format_serve_asks_for() {
        use LogFormat::{Json, Text};
        assert_eq!(
            format_of(&["herald", "serve", "--log-format", "json", "--bogus"]),
            Json
        );
        assert_eq!(
            format_of(&["herald", "serve", "--bogus", "--log-format=json"]),
            Json
        );
        assert_eq!(
            format_of(&["herald", "serve", "--max-connections", "0"]),
            Text
        );
        assert_eq!(
            format_of(&["herald", "serve", "--log-format", "yaml"]),
            Text
        );
        assert_eq!(
            format_of(&["herald", "publish", "--log-format", "json"]),
            Text,
            "the client commands report as text"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "log-format = \"json\"\nmax-conections = 3\n").unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(format_of(&["herald", "serve", "--config", path]), Json);
        assert_eq!(
            format_of(&["herald", "serve", "--config", path, "--log-format", "text"]),
            Text,
            "the flag wins over the file"
        );
    }
}
