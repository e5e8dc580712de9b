//! The hub's logs: `tracing` events on stderr, as text or JSON lines,
//! filtered by `HERALD_LOG` (default `info`), and the report of a failure
//! to start in the same format.

use clap::ValueEnum;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; colours only when stderr is a terminal.
pub(crate) fn init(format: LogFormat) {
    let given = std::env::var_os("HERALD_LOG").is_some();
    let (filter, refused) = match tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG") {
        Ok(filter) => (filter, None),
        Err(error) => (
            tracing_subscriber::EnvFilter::new("info"),
            given.then(|| error.to_string()),
        ),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(error) = refused {
        tracing::warn!(%error, "HERALD_LOG is not a log filter (such as `info` or `herald_server=debug`): logging at info");
    }
}

/// Reports the error that stops the command on stderr: `error: …` as
/// text; with JSON logs, one `ERROR` record shaped as the hub's other log
/// lines (`timestamp`, `level`, `fields.message`, `target`), so that a log
/// pipeline that parses JSON keeps the line that explains a crash loop.
/// The record is written whatever `HERALD_LOG` filters out, as the text is.
pub(crate) fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => {
            #[allow(
                clippy::print_stderr,
                reason = "the error report is the binary's output"
            )]
            {
                eprintln!("error: {message}");
            }
        }
        LogFormat::Json => {
            // A subscriber of its own, without the `HERALD_LOG` filter the
            // global one may have (it may be installed, or not yet).
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(target: "herald", "{message}");
            });
        }
    }
}
