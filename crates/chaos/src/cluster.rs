//! Redis and the nodes on it: started, killed with SIGKILL, replaced by new
//! ones (on new ports), and Redis restarted without its data, on a schedule.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use herald_tests::{Herald, Http, Hub, Redis, Rng};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a killed node stays down before a new one takes its place.
const DOWN_FOR: Duration = Duration::from_millis(1500);

/// A topic's stream at the end: its epoch and last seq.
pub(crate) type Heads = BTreeMap<String, (String, u64)>;

/// Redis and the nodes.
#[derive(Debug)]
pub(crate) struct Cluster {
    herald: Herald,
    redis: Mutex<Redis>,
    redis_url: String,
    nodes: Mutex<Vec<Option<Hub>>>,
    /// Each node slot's base URL while a node is up in it.
    urls: RwLock<Vec<Option<String>>>,
    rng: Mutex<Rng>,
    /// Redis restarts without data that have completed, counted once
    /// Redis answers again. A publish acknowledged before the count moved
    /// counts as acknowledged before the restart: its answer may have been
    /// in flight as the old Redis stopped, or it may have reached the new
    /// Redis in the moments before its first answered `PING`; the second
    /// case makes the soak excuse (under an `epoch_changed` gap) at most
    /// what was stored in that start-up window.
    data_losses: AtomicU64,
}

impl Cluster {
    pub(crate) async fn start(herald: Herald, nodes: usize, seed: u64) -> Result<Cluster> {
        let redis = Redis::start().await?;
        let cluster = Cluster {
            herald,
            redis_url: redis.url(),
            redis: Mutex::new(redis),
            nodes: Mutex::new((0..nodes).map(|_| None).collect()),
            urls: RwLock::new(vec![None; nodes]),
            rng: Mutex::new(Rng::new(seed)),
            data_losses: AtomicU64::new(0),
        };
        for slot in 0..nodes {
            cluster.start_node(slot).await?;
        }
        Ok(cluster)
    }

    pub(crate) fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// How many times Redis has come back from a restart without its data.
    pub(crate) fn data_losses(&self) -> u64 {
        self.data_losses.load(Ordering::SeqCst)
    }

    async fn start_node(&self, slot: usize) -> Result<()> {
        let hub = self
            .herald
            .start(&[
                "--store",
                &self.redis_url,
                "--heartbeat-interval",
                "1s",
                "--history-size",
                "100000",
                "--history-age",
                "30m",
            ])
            .await
            .with_context(|| format!("starting node {slot}"))?;
        let url = hub.http_url();
        self.nodes.lock().await[slot] = Some(hub);
        if let Ok(mut urls) = self.urls.write() {
            urls[slot] = Some(url);
        }
        Ok(())
    }

    /// The base URL of a node that is up, starting the search at `slot`.
    pub(crate) fn url_from(&self, slot: usize) -> Option<(usize, String)> {
        let urls = self.urls.read().ok()?;
        let n = urls.len();
        (0..n)
            .map(|i| (slot + i) % n)
            .find_map(|i| urls[i].clone().map(|url| (i, url)))
    }

    /// How many node slots there are.
    pub(crate) fn slots(&self) -> usize {
        self.urls.read().map_or(0, |urls| urls.len())
    }

    /// Kills a random node every `kill_every` (and starts a new one in its
    /// place after a moment), and restarts Redis once, half way, until
    /// `total` has passed.
    pub(crate) async fn run_schedule(&self, total: Duration, kill_every: Duration) -> Result<()> {
        let started = Instant::now();
        let mut redis_restarted = false;
        let mut next_kill = started + kill_every;
        while started.elapsed() < total {
            if !redis_restarted && started.elapsed() >= total / 2 {
                println!("chaos: restarting Redis without its data");
                self.redis.lock().await.restart().await?;
                self.data_losses.fetch_add(1, Ordering::SeqCst);
                redis_restarted = true;
            }
            if Instant::now() >= next_kill {
                let slot = self.rng.lock().await.range(0, self.slots() as u64) as usize;
                let killed = self.nodes.lock().await[slot].take();
                if let Some(mut hub) = killed {
                    if let Ok(mut urls) = self.urls.write() {
                        urls[slot] = None;
                    }
                    println!("chaos: SIGKILL node {slot} ({})", hub.http_url());
                    hub.kill9().await?;
                    tokio::time::sleep(DOWN_FOR).await;
                    self.start_node(slot).await?;
                    println!("chaos: node {slot} is back");
                }
                next_kill = Instant::now() + kill_every;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Each topic's epoch and last seq, read from a node that is up.
    pub(crate) async fn heads(&self, topics: &[&str]) -> Result<Heads> {
        let (_, url) = self.url_from(0).context("no node is up")?;
        let http = Http::new(url);
        let mut heads = Heads::new();
        for topic in topics {
            let reply = http
                .get(&format!("/api/v1/topics/{topic}/events?since=0&limit=0"))
                .await?
                .ok()?;
            let epoch = reply.body["epoch"].as_str().unwrap_or_default().to_owned();
            let seq = reply.body["seq"].as_u64().unwrap_or_default();
            heads.insert((*topic).to_owned(), (epoch, seq));
        }
        Ok(heads)
    }

    pub(crate) async fn stop(&self) {
        for hub in self.nodes.lock().await.iter_mut().flatten() {
            let _ = hub.kill9().await;
        }
        let _ = self.redis.lock().await.stop().await;
    }
}
