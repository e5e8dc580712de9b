//! `herald config print`: the configuration `herald serve` would run with,
//! given the same flags, `HERALD_*` variables and `--config` file, as TOML
//! that `--config` reads back; each line says where its value came from,
//! and secrets are masked.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Subcommand};
use herald_server::Config;
use herald_server::config::format_duration;

use super::config_file::ConfigFile;
use super::serve::ServeArgs;

/// `herald config …`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of `herald serve` with these flags,
    /// `HERALD_*` variables and `--config` file, as TOML (secrets masked),
    /// after checking it as `serve` would.
    Print(ServeArgs),
}

/// What a masked secret prints as (refused as a secret when read back).
const MASK: &str = herald_server::auth::MASKED_SECRET;

/// Runs `herald config print`; `matches` are the `print` subcommand's.
pub(crate) fn run(
    args: ConfigArgs,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> anyhow::Result<()> {
    let ConfigCommand::Print(serve) = args.command;
    let printed = print(&serve, matches, file)?;
    let mut stderr = std::io::stderr().lock();
    for unknown in super::environment::unknown_in_environment() {
        match writeln!(stderr, "warning: {unknown}") {
            Err(error) if super::is_broken_pipe(&error) => break,
            written => written.context("writing a warning")?,
        }
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(printed.as_bytes()) {
        Err(error) if super::is_broken_pipe(&error) => Ok(()),
        written => written.context("writing the configuration"),
    }
}

/// The configuration `serve` makes, checked, as TOML with each value's
/// source; `matches` are the `print` subcommand's.
fn print(
    serve: &ServeArgs,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> anyhow::Result<String> {
    let config = serve.config()?;
    config.validate()?;
    let command = super::serve_command();
    let mut out = String::from(
        "# The configuration `herald serve` runs with: flags, then HERALD_* variables, then\n\
         # the --config file, then the defaults. Secrets are masked.\n",
    );
    for arg in command.get_arguments() {
        let Some(key) = arg.get_long() else { continue };
        if key == "config" || key == "help" {
            continue;
        }
        let id = arg.get_id().as_str();
        let raw: Option<Vec<String>> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("--{key}"),
            Some(ValueSource::EnvVariable) => arg.get_env().map_or_else(
                || "environment".to_owned(),
                |env| env.to_string_lossy().into_owned(),
            ),
            Some(ValueSource::DefaultValue) => file
                .and_then(|file| {
                    file.line_of(key)
                        .map(|line| format!("{}:{line}", file.path.display()))
                })
                .unwrap_or_else(|| "default".to_owned()),
            _ => "not set".to_owned(),
        };
        let value = match raw {
            Some(_) if arg.is_hide_env_values_set() => toml_string(MASK),
            Some(_) if key == "store" => toml_string(&config.store.redacted()),
            // Defaults derived from another setting or from the machine
            // are shown commented out, so that the printed file, read back,
            // derives them again (a longer interval, another host).
            Some(values) if key == "workers" && source == "default" => {
                let value = value_of(arg, &values, matches, &config);
                out.push_str(&format!(
                    "# {key} = {value}  # default: half the cores this process may use\n"
                ));
                continue;
            }
            Some(values) => value_of(arg, &values, matches, &config),
            None if key == "heartbeat-timeout" => {
                let value = toml_string(&format_duration(config.heartbeat_timeout));
                out.push_str(&format!(
                    "# {key} = {value}  # default: 2 × heartbeat-interval + 10s\n"
                ));
                continue;
            }
            None => {
                out.push_str(&format!("# {key} is not set\n"));
                continue;
            }
        };
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    Ok(out)
}

/// A flag's value as TOML that `--config` reads back to the same setting:
/// the value as read rather than as typed where they differ (TOML refuses
/// the leading zeros a flag takes: `--unix-socket-mode 0660`,
/// `--drain-window 05`, `--queue-size 010`).
fn value_of(arg: &Arg, values: &[String], matches: &ArgMatches, config: &Config) -> String {
    let id = arg.get_id().as_str();
    if arg.get_value_delimiter().is_some() {
        let items: Vec<String> = values
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| toml_string(v))
            .collect();
        format!("[{}]", items.join(", "))
    } else if arg.get_long() == Some("unix-socket-mode") {
        // Octal digits, as the file reads an integer for this key.
        format!("{:o}", config.unix_socket_mode)
    } else if let Ok(Some(duration)) = matches.try_get_one::<Duration>(id) {
        toml_string(&format_duration(*duration))
    } else {
        toml_value(&values.join(","))
    }
}

/// A flag's text as a TOML value: a number bare, as its value (`010` is
/// 10: TOML refuses leading zeros), a boolean bare, else a string.
fn toml_value(text: &str) -> String {
    if let Ok(number) = text.parse::<i64>() {
        number.to_string()
    } else if text == "true" || text == "false" {
        text.to_owned()
    } else {
        toml_string(text)
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::{Command, parse};

    /// What `herald config print ARGS` prints.
    fn printed(args: &[&str]) -> String {
        let args: Vec<OsString> = ["herald", "config", "print"]
            .iter()
            .chain(args)
            .map(OsString::from)
            .collect();
        let parsed = parse(&args).unwrap();
        let Command::Config(ConfigArgs {
            command: ConfigCommand::Print(serve),
        }) = &parsed.cli.command
        else {
            panic!("not config print: {:?}", parsed.cli.command);
        };
        let matches = parsed
            .matches
            .subcommand_matches("config")
            .and_then(|config| config.subcommand_matches("print"))
            .unwrap();
        print(serve, matches, parsed.file.as_ref()).unwrap()
    }

    /// The settings of a printed configuration, without where each came from.
    fn settings(printed: &str) -> Vec<String> {
        printed
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split("  # ").next().unwrap_or(line).to_owned())
            .collect()
    }

    #[test]
    fn values_typed_with_leading_zeros_print_as_toml_that_reads_back_the_same() {
        for flag in [
            ["--unix-socket-mode", "0660"],
            ["--queue-size", "010"],
            ["--drain-window", "05"],
            ["--max-frame-size", "065536"],
            ["--workers", "02"],
        ] {
            let first = printed(&flag);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("herald.toml");
            std::fs::write(&path, &first).unwrap();
            let again = printed(&["--config", path.to_str().unwrap()]);
            assert_eq!(settings(&again), settings(&first), "{flag:?}:\n{first}");
        }
        let first = printed(&["--unix-socket-mode", "0660", "--drain-window", "05"]);
        assert!(first.contains("\nunix-socket-mode = 660  #"), "{first}");
        assert!(first.contains("\ndrain-window = \"5s\"  #"), "{first}");
        let first = printed(&["--unix-socket-mode", "0o640"]);
        assert!(first.contains("\nunix-socket-mode = 640  #"), "{first}");
    }

    #[test]
    fn values_print_as_toml_that_reads_back_as_the_same_text() {
        for text in ["20000", "true", "30s", "sqlite:/var/lib/herald \"x\".db"] {
            let printed = toml_value(text);
            let parsed: toml::Table = toml::from_str(&format!("k = {printed}")).unwrap();
            let read = match &parsed["k"] {
                toml::Value::String(read) => read.clone(),
                other => other.to_string(),
            };
            assert_eq!(read, text, "printed as {printed}");
        }
        assert_eq!(toml_value("20000"), "20000", "numbers print bare");
        assert_eq!(toml_value("010"), "10", "numbers print as their value");
    }
}
