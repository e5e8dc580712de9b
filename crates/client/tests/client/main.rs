//! End-to-end tests of `herald-client` against the real `herald` binary
//! (started on `127.0.0.1:0`; every network await bounded by a timeout;
//! synchronised on frames and receipts, never on sleeps).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a failure is a panic"
)]

mod approval;
mod cli;
mod harness;
mod publisher;
mod subscriber;
mod tls;
mod unix;
