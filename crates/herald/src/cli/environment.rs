//! The `HERALD_*` environment variables: the ones `herald` reads, a
//! warning for any other (a misspelled variable would otherwise be ignored
//! without a word, as a misspelled key of a configuration file is not), and
//! value errors that name the variable a bad value came from.

use std::ffi::{OsStr, OsString};
use std::fmt;

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, Command};

/// The prefix of the variables `herald` reads.
const PREFIX: &str = "HERALD_";

/// Variables read outside clap: the log filter (see `logs`).
const READ_DIRECTLY: [&str; 1] = ["HERALD_LOG"];

/// Variables the repository's own tests and tools read (the e2e harness,
/// bench, chaos, xtask, the Python client's tests): a shell that runs them
/// passes them on to the `herald` they start, which is no mistake.
const READ_BY_TOOLS: [&str; 5] = [
    "HERALD_BIN",
    "HERALD_TEST_LOG",
    "HERALD_TEST_INSTALLED",
    "HERALD_PYTHON",
    "HERALD_PYTHON_BIN",
];

/// A `HERALD_*` variable that nothing reads, with the known one nearest it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownVariable {
    pub(crate) name: String,
    pub(crate) nearest: Option<String>,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a variable herald reads: ignored", self.name)?;
        if let Some(nearest) = &self.nearest {
            write!(f, " (did you mean {nearest}?)")?;
        }
        Ok(())
    }
}

/// Every variable `command`'s tree maps onto a flag (`serve`'s and the
/// client commands'), and those read directly.
fn known(command: &Command) -> Vec<String> {
    let mut names: Vec<String> = READ_DIRECTLY.iter().map(|&name| name.to_owned()).collect();
    collect_env(command, &mut names);
    names
}

fn collect_env(command: &Command, names: &mut Vec<String>) {
    names.extend(
        command
            .get_arguments()
            .filter_map(Arg::get_env)
            .map(|env| env.to_string_lossy().into_owned()),
    );
    for sub in command.get_subcommands() {
        collect_env(sub, names);
    }
}

/// The `HERALD_*` names among `variables` that neither `command` nor the
/// repository's tools read, in the order given.
pub(crate) fn unknown_variables(
    command: &Command,
    variables: impl IntoIterator<Item = OsString>,
) -> Vec<UnknownVariable> {
    let known = known(command);
    variables
        .into_iter()
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .filter(|name| !known.contains(name) && !READ_BY_TOOLS.contains(&name.as_str()))
        .map(|name| UnknownVariable {
            nearest: super::config_file::nearest(&name, known.iter().map(String::as_str))
                .map(str::to_owned),
            name,
        })
        .collect()
}

/// The unknown `HERALD_*` variables of this process's environment.
pub(crate) fn unknown_in_environment() -> Vec<UnknownVariable> {
    let command = <super::Cli as clap::CommandFactory>::command();
    unknown_variables(&command, std::env::vars_os().map(|(name, _)| name))
}

/// `error` naming the variable its bad value came from (clap names the
/// flag, `--max-connections`, which the operator may never have typed):
/// when the value it refuses is a flag's variable's, `lookup` gives that
/// variable, and `args` do not give the flag.
pub(crate) fn name_the_variable(
    mut error: clap::Error,
    command: &Command,
    args: &[OsString],
    lookup: impl Fn(&OsStr) -> Option<OsString>,
) -> clap::Error {
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    // `--max-connections <MAX_CONNECTIONS>`: the flag's long name.
    let Some(long) = flag
        .strip_prefix("--")
        .and_then(|rest| rest.split([' ', '=']).next())
    else {
        return error;
    };
    let given_as_flag = args.iter().any(|arg| {
        arg.to_str().is_some_and(|arg| {
            arg.strip_prefix("--")
                .and_then(|arg| arg.strip_prefix(long))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
    });
    if given_as_flag {
        return error;
    }
    let Some(variable) = env_of(command, long) else {
        return error;
    };
    let from_variable = lookup(OsStr::new(&variable)).is_some_and(|set| {
        set.to_str()
            .is_some_and(|set| set == value || set.split(',').any(|part| part == value))
    });
    if from_variable {
        let named = format!("{variable} (--{long})");
        error.insert(ContextKind::InvalidArg, ContextValue::String(named));
    }
    error
}

/// The variable of the flag `--long` anywhere in `command`'s tree.
fn env_of(command: &Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(Arg::get_env)
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::Cli;

    fn unknown(names: &[&str]) -> Vec<String> {
        unknown_variables(&Cli::command(), names.iter().map(OsString::from))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelled_variable_is_reported_with_the_one_it_is_nearest() {
        assert_eq!(
            unknown(&["HERALD_MAX_CONECTIONS", "PATH", "HERALD_LOGG"]),
            [
                "HERALD_MAX_CONECTIONS is not a variable herald reads: ignored (did you mean HERALD_MAX_CONNECTIONS?)",
                "HERALD_LOGG is not a variable herald reads: ignored (did you mean HERALD_LOG?)",
            ]
        );
        assert_eq!(
            unknown(&["HERALD_SOMETHING_ELSE_ENTIRELY"]),
            ["HERALD_SOMETHING_ELSE_ENTIRELY is not a variable herald reads: ignored"]
        );
    }

    #[test]
    fn the_variables_herald_and_its_tools_read_are_not_reported() {
        assert!(
            unknown(&[
                "HERALD_MAX_CONNECTIONS",
                "HERALD_CONFIG",
                "HERALD_LOG",
                "HERALD_LOG_FORMAT",
                "HERALD_URL",
                "HERALD_TOKEN",
                "HERALD_BIN",
            ])
            .is_empty()
        );
    }

    /// The first line of the error `herald ARGS` gets with `env` as its
    /// environment: the variables' values are given to clap as their flags'
    /// defaults, which it checks alike, as setting this process's variables
    /// is unsafe while other tests run.
    fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let lookup = |name: &OsStr| {
            env.iter()
                .find(|(key, _)| OsStr::new(key) == name)
                .map(|(_, value)| OsString::from(value))
        };
        let command = Cli::command().mut_subcommand("serve", |serve| {
            serve.mut_args(|arg| match arg.get_env().and_then(&lookup) {
                Some(value) => arg.default_value(value),
                None => arg,
            })
        });
        let error = command.clone().try_get_matches_from(&args).unwrap_err();
        let error = name_the_variable(error, &command, &args, lookup);
        error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn a_bad_value_from_a_variable_names_the_variable() {
        let said = refusal(&["herald", "serve"], &[("HERALD_MAX_CONNECTIONS", "abc")]);
        assert!(
            said.contains("'abc' for 'HERALD_MAX_CONNECTIONS (--max-connections)'"),
            "{said}"
        );
        let said = refusal(
            &["herald", "serve", "--max-connections=abc"],
            &[("HERALD_MAX_CONNECTIONS", "abc")],
        );
        assert!(
            said.contains("for '--max-connections") && !said.contains("HERALD_"),
            "a flag's value is said to be the variable's: {said}"
        );
    }
}
