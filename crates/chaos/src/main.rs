//! `herald-chaos`: a bounded soak of several `herald` nodes on one Redis.
//!
//! Producers publish to a few topics through whichever node is up (an event
//! keeps its id across retries, so a retry is never stored twice);
//! subscribers sit on every node, move to another node when theirs dies, and
//! resume with `since`. A killer SIGKILLs random nodes and starts new ones on
//! a schedule, and restarts Redis (without persistence) once. At the end
//! producers stop, every subscriber catches up to each topic's head, and a
//! verdict line per subscriber says what it received, lost, got twice, and
//! which gaps the hub announced.
//!
//! The run fails unless, for every subscriber, every publish a producer had
//! acknowledged (HTTP 2xx; producer `P`'s `N`-th event has id `pP-N`)
//! arrived exactly once, with one exception: an event acknowledged before
//! Redis came back from its restart without data, never received, on a
//! topic where the subscriber got an `epoch_changed` gap. It also fails on
//! a hole or repeat in the hub's seqs that no gap announced, on any gap
//! other than `epoch_changed` (the nodes keep far more history than a soak
//! publishes), and on more than one `epoch_changed` gap per topic per
//! Redis restart.
//!
//! # Layout
//!
//! - `cluster`: Redis and the nodes: start, kill, restart, which are up.
//! - `producer`: publishing with retries across nodes.
//! - `subscriber`: a raw WebSocket subscriber that moves between nodes.
//! - `ledger`: per topic and stream, the hub's seqs a subscriber saw.
//! - `receipts`: which producers' events a subscriber got, checked against
//!   what producers had acknowledged.

// A soak reports to the person or CI log that runs it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cluster;
mod ledger;
mod producer;
mod receipts;
mod subscriber;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use herald_tests::Herald;
use tokio::sync::watch;

use crate::cluster::Cluster;

/// The topics every producer publishes to and every subscriber follows.
const TOPICS: [&str; 4] = ["chaos:a", "chaos:b", "chaos:c", "chaos:d"];

/// Several nodes on one Redis, killed and restarted while events flow.
#[derive(Debug, Parser)]
#[command(name = "herald-chaos")]
struct Args {
    /// The `herald` binary (default: `HERALD_BIN`).
    #[arg(long, env = "HERALD_BIN")]
    herald_bin: PathBuf,
    /// A short run for CI: seconds, one node kill, one Redis restart.
    #[arg(long)]
    smoke: bool,
    /// How long events flow, in seconds (smoke: 15).
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Subscribers per node.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
    /// Producers, each publishing `--rate` events a second.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Seconds between node kills (smoke: one kill).
    #[arg(long, default_value_t = 10)]
    kill_every: u64,
    /// Seed of the schedule's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let seconds = if args.smoke { 15 } else { args.seconds };
    let kill_every = if args.smoke {
        4
    } else {
        args.kill_every.max(2)
    };
    let herald = Herald::under_test(&args.herald_bin);
    let cluster = Arc::new(Cluster::start(herald, args.nodes, args.seed).await?);
    println!(
        "chaos: {} nodes on {}, {} producers x {}/s, {} subscribers per node, {seconds} s, a node killed every {kill_every} s, Redis restarted once",
        args.nodes,
        cluster.redis_url(),
        args.producers,
        args.rate,
        args.subscribers
    );
    let (stop, stopped) = watch::channel(false);
    let mut subscribers = Vec::new();
    for node in 0..args.nodes {
        for n in 0..args.subscribers {
            let name = format!("s{node}.{n}");
            subscribers.push(subscriber::start(cluster.clone(), name, node));
        }
    }
    // Every subscriber has its first `subscribed` before anything is published.
    for subscriber in &subscribers {
        subscriber.ready().await?;
    }
    let producers: Vec<_> = (0..args.producers)
        .map(|p| producer::start(cluster.clone(), p, args.rate, stopped.clone()))
        .collect();
    cluster
        .run_schedule(
            Duration::from_secs(seconds),
            Duration::from_secs(kill_every),
        )
        .await
        .context("the kill schedule")?;
    stop.send_replace(true);
    let mut acked = Vec::new();
    for producer in producers {
        acked.push(producer.finish().await?);
    }
    let published: u64 = acked.iter().map(|a| a.count).sum();
    let before: u64 = acked.iter().map(|a| a.before_restart).sum();
    let data_losses = cluster.data_losses();
    let heads = cluster
        .heads(&TOPICS)
        .await
        .context("reading the topics' heads")?;
    println!(
        "chaos: {published} publishes acknowledged ({before} before Redis came back from {data_losses} restart(s) without data); heads {heads:?}"
    );
    let mut clean = true;
    for subscriber in subscribers {
        let verdict = subscriber.finish(&heads, &acked, data_losses).await;
        println!("{verdict}");
        clean &= verdict.clean();
    }
    cluster.stop().await;
    println!(
        "chaos: {}",
        if clean {
            "every subscriber got every acknowledged event exactly once, except events the Redis restart wiped that an epoch_changed gap announced"
        } else {
            "FAILED: see the subscribers marked FAILED"
        }
    );
    Ok(clean)
}
