//! The client commands of the `herald` binary: `herald publish`, `herald
//! tail` and `herald approve`. Each is a clap `Args` struct and
//! an async `run_*` function; the binary parses and dispatches, and prints
//! the error a `run_*` returns.
//!
//! Output is written with `writeln!` on a locked stdout/stderr, so a closed
//! pipe (`herald tail | head`) ends the command quietly instead of panicking.
//!
//! # Layout
//!
//! - `publish`: [`PublishArgs`], [`run_publish`].
//! - `tail`: [`TailArgs`], [`run_tail`] and the line format.
//! - `approve`: [`ApproveArgs`], [`run_approve`].

mod approve;
mod publish;
mod tail;

use clap::Args;

pub use self::approve::{ApproveArgs, run_approve};
pub use self::publish::{PublishArgs, run_publish};
pub use self::tail::{TailArgs, format_event, run_tail};

/// The hub a client command talks to.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// The hub's base URL (the WebSocket URL is derived from it: http → ws, + /ws).
    #[arg(long, env = "HERALD_URL", default_value = crate::DEFAULT_URL)]
    pub url: String,
}

/// Whether an IO error is the reader going away (a closed pipe).
fn is_broken_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
