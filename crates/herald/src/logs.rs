//! The hub's logs: `tracing` events on stderr, as text or JSON lines,
//! filtered by `HERALD_LOG` (default `info`).

use clap::ValueEnum;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, ValueEnum)]
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
