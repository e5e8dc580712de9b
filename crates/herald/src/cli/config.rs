//! `herald config print`: the configuration `herald serve` would run with,
//! given the same flags, `HERALD_*` variables and `--config` file, as TOML
//! that `--config` reads back; each line says where its value came from,
//! and secrets are masked.

use std::io::Write as _;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};
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
            Some(values) if arg.get_value_delimiter().is_some() => format!(
                "[{}]",
                values
                    .iter()
                    .filter(|v| !v.is_empty())
                    .map(|v| toml_string(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(values) => toml_value(&values.join(",")),
            None if key == "heartbeat-timeout" => {
                let value = toml_string(&format_duration(config.heartbeat_timeout));
                out.push_str(&format!(
                    "{key} = {value}  # default: 2 × heartbeat-interval + 10s\n"
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
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        Err(error) if super::is_broken_pipe(&error) => Ok(()),
        written => written.context("writing the configuration"),
    }
}

/// A flag's text as a TOML value: a number or a boolean bare, else a string.
fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text == "true" || text == "false" {
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
    use super::*;

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
    }
}
