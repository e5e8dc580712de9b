//! The `herald` command: glue over `herald-server` and `herald-client`.
//!
//! - `herald serve` runs the hub (`herald_server`): every flag `--foo-bar`
//!   is also the environment variable `HERALD_FOO_BAR`, and its first line on
//!   stdout is `listening on http://HOST:PORT`, with the bound address.
//!   `herald serve --config herald.toml` reads the same flags from a TOML
//!   file (flags and variables win), and `herald config print` shows the
//!   effective configuration, secrets masked.
//! - `herald publish`, `herald tail` and `herald approve` talk to a running
//!   hub (`--url`, default `http://127.0.0.1:8765`) through `herald_client`.
//!
//! ```bash
//! herald serve --bind 127.0.0.1:0 --store sqlite:herald.db                # prints `listening on http://127.0.0.1:PORT`
//! herald publish --topic run:r1 --type step.completed --data '{"step":3}'  # data from stdin without --data
//! herald tail --topics 'run:r1,execution:*' --since 0                     # one line per event; --json for raw frames
//! herald approve CALLBACK_ID --proceed --feedback "retry"                 # or --reject
//! ```
//!
//! The client commands take `--api-key` (`HERALD_API_KEY`, for the HTTP API)
//! and `--token` (`HERALD_TOKEN`, a JWT for the WebSocket) against a secured
//! hub, and `--ca-cert FILE.pem` (`HERALD_CA_CERT`) for an `https://` hub
//! behind a TLS proxy with a private CA or a self-signed certificate.
//!
//! `herald --help` and `herald COMMAND --help` list every flag; `serve`'s
//! defaults are the hub's own (`herald_server::Config::default()`), shown as
//! the flags are written. A command that fails exits non-zero with its error
//! chain on stderr.
//!
//! # Layout
//!
//! - `main.rs`: the runtime, the dispatch, the error report (as a JSON log
//!   record when `serve`'s logs are JSON).
//! - `cli`: the clap tree (`Cli`, `Command`) and a module per command:
//!   `cli::serve` (the hub's flags, its `Config`, the run), `cli::defaults`
//!   (`serve`'s defaults spelled from `Config::default()`), `cli::hub` (the
//!   flags a client command reaches a hub with), `cli::publish`, `cli::tail`,
//!   `cli::approve`.
//! - `logs`: `tracing` on stderr, as text or JSON (`--log-format`, `HERALD_LOG`).
//!
//! The tests are test targets of this package, so Cargo builds the binary
//! before them and names it in `CARGO_BIN_EXE_herald`: `e2e` (the contract,
//! in the repository's `tests/e2e/`, with the `herald-tests` harness) and
//! `client` (`tests/client/`: the Rust client and the client commands).

mod cli;
mod logs;

use std::process::ExitCode;

use herald_server::server;

use crate::cli::ParseError;
use crate::logs::LogFormat;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    let parsed = match cli::parse(&args) {
        Ok(parsed) => parsed,
        // Help and version, on stdout, and usage errors, printed as clap
        // prints them unless the hub's logs are JSON.
        Err(ParseError::Clap(error)) => {
            let format = cli::requested_log_format(&args);
            if !error.use_stderr() || format == LogFormat::Text {
                error.exit();
            }
            logs::fatal(format, &clap_message(&error));
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        Err(error) => {
            logs::fatal(cli::requested_log_format(&args), &error.to_string());
            return ExitCode::from(2);
        }
    };
    let format = parsed.log_format();
    // One runtime for every command: the hub's, tuned for fan-out.
    let runtime = match server::runtime(parsed.workers()).build() {
        Ok(runtime) => runtime,
        Err(error) => {
            logs::fatal(format, &format!("could not start the runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(parsed.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logs::fatal(format, &report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The first line of a clap error (what is wrong, without the usage and
/// the pointer to `--help` that follow), without its `error: ` prefix.
fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.trim().lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `error` and its causes, joined by `: `; a cause is left out when what
/// comes before already says it (libraries often repeat their source's
/// text in their own message).
fn report(error: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(io)
            .context("could not listen on 127.0.0.1:1: Address already in use");
        assert_eq!(
            report(&error),
            "could not listen on 127.0.0.1:1: Address already in use"
        );
        let error = anyhow::anyhow!("refused").context("connecting");
        assert_eq!(report(&error), "connecting: refused");
    }
}
