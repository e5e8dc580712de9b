//! `--config FILE`: a TOML file whose keys are `serve`'s flags, spelled as
//! the flags are (`max-connections = 20000`, `drain-window = "5s"`).
//!
//! Each value becomes the default of its flag, so the command line and the
//! `HERALD_*` variables still override it; it is checked with the flag's
//! own parser when the file is read, so a bad value is reported with the
//! file, the line and the key. Strings, integers, floats and booleans are
//! taken as a flag's text is; an array is a comma-separated list (for
//! `allowed-origins`); an octal integer (`0o660`) keeps its octal digits,
//! as `unix-socket-mode` reads them.

use std::ffi::OsStr;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::builder::{BoolishValueParser, TypedValueParser as _};
use clap::{Arg, Command};
use toml::de::{DeTable, DeValue};

/// The keys a file may not set: where the file itself is.
const NOT_IN_A_FILE: [&str; 1] = ["config"];

/// A file that cannot be used: what is wrong, where.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One key of the file, as the flag's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The flag's name without `--`: the key.
    pub(crate) key: String,
    /// The flag's id in the clap command.
    id: String,
    /// The value as the flag would take it (a list joined with `,`).
    pub(crate) value: String,
    /// 1-based.
    pub(crate) line: usize,
}

/// A read and checked configuration file.
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    pub(crate) path: PathBuf,
    pub(crate) settings: Vec<Setting>,
}

impl ConfigFile {
    /// Reads `path` and checks every key and value against `serve`'s flags.
    pub(crate) fn read(path: &Path, serve: &Command) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text, serve)
    }

    fn parse(path: &Path, text: &str, serve: &Command) -> Result<ConfigFile, ConfigFileError> {
        let at = |span: Range<usize>, message: String| ConfigFileError::At {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message,
        };
        let table = DeTable::parse(text).map_err(|error| {
            at(
                error.span().unwrap_or(0..0),
                format!("not TOML: {}", error.message()),
            )
        })?;
        let mut settings = Vec::new();
        for (key, value) in table.get_ref() {
            let name = key.get_ref().as_ref();
            let arg = flag(serve, name).ok_or_else(|| at(key.span(), unknown_key(name, serve)))?;
            let flag_value = flag_text(value.get_ref())
                .map_err(|why| at(value.span(), format!("`{name}`: {why}")))?;
            check(serve, arg, &flag_value)
                .map_err(|error| at(value.span(), format!("`{name}`: {}", first_line(&error))))?;
            settings.push(Setting {
                key: name.to_owned(),
                id: arg.get_id().to_string(),
                value: flag_value,
                line: line_of(text, key.span().start),
            });
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            settings,
        })
    }

    /// `serve` (wherever it is in `command`'s tree) with the file's values
    /// as the defaults of their flags.
    pub(crate) fn apply(&self, serve: Command) -> Command {
        self.settings.iter().fold(serve, |serve, setting| {
            serve.mut_arg(setting.id.as_str(), |arg| {
                arg.default_value(setting.value.clone())
            })
        })
    }

    /// The line a key was set on, if the file sets it.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        self.settings
            .iter()
            .find(|setting| setting.key == key)
            .map(|setting| setting.line)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.key, self.value)
    }
}

/// The string value of `key` in the file at `path` if the file is TOML,
/// whatever else is wrong with it: for reporting a file that cannot be
/// used in the log format it asks for.
pub(crate) fn lenient_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get(key)?.as_str().map(str::to_owned)
}

/// The flag a key names: a long option of `serve`, not `--config` itself.
fn flag<'c>(serve: &'c Command, key: &str) -> Option<&'c Arg> {
    if NOT_IN_A_FILE.contains(&key) {
        return None;
    }
    serve
        .get_arguments()
        .find(|arg| arg.get_long() == Some(key))
}

/// Reads `value` as its flag would be read on the command line (the
/// environment aside), so a file is held to the flag's own parser.
fn check(serve: &Command, arg: &Arg, value: &str) -> Result<(), clap::Error> {
    if !arg.get_action().takes_values() {
        // A switch (`--insecure`): the file says true or false.
        return BoolishValueParser::new()
            .parse_ref(serve, None, OsStr::new(value))
            .map(drop)
            .map_err(|_| {
                let message = format!("{value:?} is not a switch's value: use true or false");
                serve
                    .clone()
                    .error(clap::error::ErrorKind::InvalidValue, message)
            });
    }
    let long = arg.get_long().unwrap_or_default();
    serve
        .clone()
        .mut_args(|arg| arg.env(None))
        .try_get_matches_from([serve.get_name().to_owned(), format!("--{long}={value}")])
        .map(drop)
}

/// "unknown key", with the nearest flag when one is close.
fn unknown_key(key: &str, serve: &Command) -> String {
    let longs = serve
        .get_arguments()
        .filter_map(Arg::get_long)
        .filter(|long| !NOT_IN_A_FILE.contains(long));
    match nearest(key, longs) {
        Some(long) => format!("unknown key `{key}` (did you mean `{long}`?)"),
        None => format!("unknown key `{key}`: keys are `herald serve` flags without `--`"),
    }
}

/// The name among `known` that `word` is likely a typo of: the nearest by
/// edit distance, if at most three edits away.
pub(crate) fn nearest<'k>(word: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|name| (strsim::levenshtein(word, name), name))
        .min()
        .filter(|(distance, _)| *distance <= 3)
        .map(|(_, name)| name)
}

/// A TOML value as the text its flag takes.
fn flag_text(value: &DeValue<'_>) -> Result<String, &'static str> {
    Ok(match value {
        DeValue::String(text) => text.to_string(),
        // Octal digits stay octal: `unix-socket-mode = 0o660` is `660`.
        DeValue::Integer(integer) if integer.radix() == 8 => integer.as_str().to_owned(),
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .map_err(|_| "an integer too large")?
            .to_string(),
        DeValue::Float(float) => float.as_str().to_owned(),
        DeValue::Boolean(flag) => flag.to_string(),
        // The flags that take lists take names (origins, audiences).
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(text) => Ok(text.to_string()),
                _ => Err("a list of strings"),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        DeValue::Datetime(_) => return Err("a date is not a value any flag takes"),
        DeValue::Table(_) => {
            return Err("a table is not a value any flag takes: keys are top-level");
        }
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The first line of a clap error, without clap's `error: ` prefix.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ConfigFile, ConfigFileError> {
        ConfigFile::parse(
            Path::new("herald.toml"),
            text,
            &super::super::serve_command(),
        )
    }

    fn error(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }

    #[test]
    fn values_become_the_flags_text_with_the_line_of_their_key() {
        let file = read(
            "# comment\nmax-connections = 20_000\nunix-socket-mode = 0o600\nallowed-origins = [\"https://a\", \"https://b\"]\n\ncompression = true\nheartbeat-interval = 1.5\n",
        )
        .unwrap();
        let settings: Vec<(&str, &str, usize)> = file
            .settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str(), s.line))
            .collect();
        for expected in [
            ("max-connections", "20000", 2),
            ("unix-socket-mode", "600", 3),
            ("allowed-origins", "https://a,https://b", 4),
            ("compression", "true", 6),
            ("heartbeat-interval", "1.5", 7),
        ] {
            assert!(
                settings.contains(&expected),
                "{expected:?} not in {settings:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        assert_eq!(
            error("bind = \"127.0.0.1:0\"\nqueue-sise = 10\n"),
            "herald.toml:2: unknown key `queue-sise` (did you mean `queue-size`?)"
        );
        assert!(
            error("config = \"other.toml\"\n").starts_with("herald.toml:1: unknown key `config`")
        );
        assert!(
            error("\n\nmax-connections = \"many\"\n")
                .starts_with("herald.toml:3: `max-connections`: invalid value")
        );
        assert!(
            error("[limits]\nqueue-size = 1\n").starts_with("herald.toml:1: unknown key `limits`")
        );
        assert_eq!(
            error("insecure = \"maybe\"\n"),
            "herald.toml:1: `insecure`: \"maybe\" is not a switch's value: use true or false"
        );
        assert!(error("bind = \n").starts_with("herald.toml:1: not TOML"));
        assert!(
            error("allowed-origins = [\"https://a\", 42]\n").contains("a list of strings"),
            "{}",
            error("allowed-origins = [\"https://a\", 42]\n")
        );
    }
}
