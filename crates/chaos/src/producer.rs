//! A producer: publishes numbered events round the topics, at a steady rate,
//! through whichever node is up. Each event keeps its id across retries (to
//! another node, after a node died under it), so it is stored once.
//!
//! Producer `P`'s `N`-th event has id `pP-N`, data `{"producer": P, "n": N}`
//! and topic [`topic_of`]`(P, N)`. It publishes one event at a time, so the
//! events it had acknowledged at any moment are `1..=N`: what it reports
//! is the last `N` acknowledged, and the last one acknowledged before Redis
//! came back from its restart without data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use herald_tests::Http;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::TOPICS;
use crate::cluster::Cluster;
use crate::receipts::Acked;

/// How long one event may take to be stored, retries included.
const PUBLISH_LIMIT: Duration = Duration::from_secs(60);
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The topic of producer `producer`'s `n`-th event.
pub(crate) fn topic_of(producer: u64, n: u64) -> &'static str {
    TOPICS[((n + producer) % TOPICS.len() as u64) as usize]
}

/// A running producer.
#[derive(Debug)]
pub(crate) struct Producer {
    task: JoinSet<Result<Acked>>,
}

pub(crate) fn start(
    cluster: Arc<Cluster>,
    number: usize,
    rate: u64,
    stopped: watch::Receiver<bool>,
) -> Producer {
    let mut task = JoinSet::new();
    task.spawn(produce(cluster, number, rate, stopped));
    Producer { task }
}

impl Producer {
    /// Waits for the producer to stop; what it had acknowledged.
    pub(crate) async fn finish(mut self) -> Result<Acked> {
        match self.task.join_next().await {
            Some(Ok(published)) => published,
            Some(Err(error)) => bail!("a producer failed: {error}"),
            None => bail!("a producer vanished"),
        }
    }
}

async fn produce(
    cluster: Arc<Cluster>,
    number: usize,
    rate: u64,
    stopped: watch::Receiver<bool>,
) -> Result<Acked> {
    let mut clients: HashMap<String, Http> = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut n = 0u64;
    let mut before_restart = 0u64;
    while !*stopped.borrow() {
        ticks.tick().await;
        n += 1;
        let topic = topic_of(number as u64, n);
        let body = json!({
            "topic": topic, "event_type": "chaos.tick", "id": format!("p{number}-{n}"),
            "data": {"producer": number, "n": n},
        });
        let deadline = tokio::time::Instant::now() + PUBLISH_LIMIT;
        let mut attempt = number;
        loop {
            if let Some((_, url)) = cluster.url_from(attempt) {
                let http = clients.entry(url.clone()).or_insert_with(|| Http::new(url));
                if let Ok(reply) = http.post("/api/v1/events", &body).await
                    && (200..300).contains(&reply.status)
                {
                    if cluster.data_losses() == 0 {
                        before_restart = n;
                    }
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("producer {number} could not publish event {n} within {PUBLISH_LIMIT:?}");
            }
            attempt += 1;
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
    Ok(Acked {
        producer: number as u64,
        count: n,
        before_restart,
    })
}
