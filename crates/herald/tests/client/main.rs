//! End-to-end tests of `herald-client` and of the client commands (`herald
//! publish`, `tail`, `approve`) against the real `herald` binary (started on
//! `127.0.0.1:0`; every network await bounded by a timeout; synchronised on
//! frames and receipts, never on sleeps).
//!
//! A test target of the `herald` package, so Cargo builds the binary first
//! and names it in `CARGO_BIN_EXE_herald` (`HERALD_BIN` overrides it; see
//! `harness::herald_bin`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failure is a panic"
)]

mod approval;
mod cli;
mod failover;
mod harness;
mod hub_calls;
mod publisher;
mod subscriber;
mod tls;
mod unix;
