//! A subscriber that sits on one node, moves to the next node that is up
//! when its connection ends, and resumes there with `since` (seq and epoch
//! per topic). It checks every frame against its [`TopicLedger`]s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use herald_tests::{WsClient, frame_type};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::TOPICS;
use crate::cluster::{Cluster, Heads};
use crate::ledger::TopicLedger;

/// How long a subscriber may take to catch up once producers stop.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// A read that sees nothing for this long checks whether it is done.
const QUIET: Duration = Duration::from_millis(250);

/// What a subscriber shares with its task.
#[derive(Debug, Default)]
struct Seen {
    topics: BTreeMap<String, TopicLedger>,
    reconnects: u64,
}

/// A running subscriber.
#[derive(Debug)]
pub(crate) struct Subscriber {
    name: String,
    home: usize,
    seen: Arc<Mutex<Seen>>,
    /// The heads to catch up to, once producers stopped.
    target: watch::Sender<Option<Heads>>,
    /// Becomes true at the first `subscribed` frame.
    subscribed: watch::Receiver<bool>,
    task: JoinSet<()>,
}

pub(crate) fn start(cluster: Arc<Cluster>, name: String, home: usize) -> Subscriber {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (target, targets) = watch::channel(None);
    let (subscribed_once, subscribed) = watch::channel(false);
    let mut task = JoinSet::new();
    let links = Links {
        seen: seen.clone(),
        targets,
        subscribed_once,
    };
    task.spawn(follow(cluster, home, links));
    Subscriber {
        name,
        home,
        seen,
        target,
        subscribed,
        task,
    }
}

impl Subscriber {
    /// Waits until the first subscription is in place.
    pub(crate) async fn ready(&self) -> Result<()> {
        let mut subscribed = self.subscribed.clone();
        match tokio::time::timeout(Duration::from_secs(20), subscribed.wait_for(|s| *s)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => bail!("subscriber {} stopped before it subscribed", self.name),
            Err(_) => bail!("subscriber {} never got subscribed", self.name),
        }
    }

    /// Catches up to `heads` (bounded), stops, and says what it saw.
    pub(crate) async fn finish(mut self, heads: &Heads) -> Verdict {
        self.target.send_replace(Some(heads.clone()));
        let done = tokio::time::timeout(CATCH_UP_LIMIT, self.task.join_next()).await;
        self.task.abort_all();
        let mut seen = self.seen.lock().map_or_else(
            |poisoned| std::mem::take(&mut *poisoned.into_inner()),
            |mut s| std::mem::take(&mut *s),
        );
        // What it never got to, by the end, is lost.
        for (topic, (_, head)) in heads {
            let ledger = seen.topics.entry(topic.clone()).or_default();
            let last = ledger.last.unwrap_or(0);
            if *head > last {
                ledger.lost += head - last;
            }
        }
        Verdict {
            name: self.name,
            home: self.home,
            caught_up: done.is_ok(),
            seen,
        }
    }
}

/// Whether every topic reached its head.
fn caught_up(seen: &Seen, heads: &Heads) -> bool {
    heads.iter().all(|(topic, (epoch, head))| {
        seen.topics.get(topic).is_some_and(|ledger| {
            ledger.last.unwrap_or(0) >= *head
                && ledger.epoch.as_deref().is_none_or(|known| known == epoch)
        })
    })
}

/// What a subscriber's task shares with its owner.
struct Links {
    seen: Arc<Mutex<Seen>>,
    targets: watch::Receiver<Option<Heads>>,
    subscribed_once: watch::Sender<bool>,
}

async fn follow(cluster: Arc<Cluster>, home: usize, links: Links) {
    let Links {
        seen,
        mut targets,
        subscribed_once,
    } = links;
    let mut slot = home;
    loop {
        if let Some((up, url)) = cluster.url_from(slot) {
            slot = up;
            match session(&url, &seen, &mut targets, &subscribed_once).await {
                Ok(()) => return,
                Err(_) => {
                    if let Ok(mut seen) = seen.lock() {
                        seen.reconnects += 1;
                    }
                }
            }
        }
        // The next node, after a moment.
        slot = (slot + 1) % cluster.slots().max(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One connection: subscribe with `since`, then read until it ends (`Err`)
/// or every topic reached the target heads (`Ok`).
async fn session(
    url: &str,
    seen: &Mutex<Seen>,
    targets: &mut watch::Receiver<Option<Heads>>,
    subscribed_once: &watch::Sender<bool>,
) -> Result<()> {
    let ws = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let mut client = WsClient::connect(&ws).await?;
    client.timeout = QUIET;
    let since: serde_json::Map<String, Value> = {
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        seen.topics
            .iter()
            .filter_map(|(topic, ledger)| {
                let seq = ledger.last?;
                let since = match &ledger.epoch {
                    Some(epoch) => json!({"seq": seq, "epoch": epoch}),
                    None => json!(seq),
                };
                Some((topic.clone(), since))
            })
            .collect()
    };
    client
        .send_json(&json!({"action": "subscribe", "topics": TOPICS, "since": since}))
        .await?;
    loop {
        let frame = match client.recv_frame().await {
            Ok(frame) => frame,
            Err(error) if error.to_string().contains("no frame within") => {
                let target = targets.borrow().clone();
                if let Some(heads) = target
                    && seen.lock().is_ok_and(|seen| caught_up(&seen, &heads))
                {
                    return Ok(());
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let topic = frame["topic"].as_str().unwrap_or_default().to_owned();
        match frame_type(&frame) {
            "subscribed" => {
                let epoch = frame["epoch"]
                    .as_str()
                    .context("subscribed without epoch")?;
                let seq = frame["seq"].as_u64().unwrap_or(0);
                seen.topics.entry(topic).or_default().subscribed(epoch, seq);
                subscribed_once.send_replace(true);
            }
            "event" => {
                let seq = frame["seq"].as_u64().unwrap_or(0);
                seen.topics.entry(topic).or_default().event(seq);
            }
            "gap" => {
                let from = frame["from_seq"].as_u64().unwrap_or(0);
                let to = frame["to_seq"].as_u64().unwrap_or(0);
                let reason = frame["reason"].as_str().unwrap_or("unknown");
                seen.topics.entry(topic).or_default().gap(from, to, reason);
            }
            _ => {}
        }
    }
}

/// What one subscriber saw, for the verdict line.
#[derive(Debug)]
pub(crate) struct Verdict {
    name: String,
    home: usize,
    caught_up: bool,
    seen: Seen,
}

impl Verdict {
    /// Nothing lost or duplicated without a gap.
    pub(crate) fn clean(&self) -> bool {
        self.caught_up
            && self
                .seen
                .topics
                .values()
                .all(|ledger| ledger.lost == 0 && ledger.duplicated == 0)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum =
            |field: fn(&TopicLedger) -> u64| -> u64 { self.seen.topics.values().map(field).sum() };
        let mut gaps: BTreeMap<&str, u64> = BTreeMap::new();
        for ledger in self.seen.topics.values() {
            for (reason, n) in &ledger.gaps {
                *gaps.entry(reason).or_default() += n;
            }
        }
        write!(
            f,
            "subscriber {} (node {}): {} received, {} lost, {} duplicated, gaps announced {:?}, {} reconnects{}",
            self.name,
            self.home,
            sum(|l| l.received),
            sum(|l| l.lost),
            sum(|l| l.duplicated),
            gaps,
            self.seen.reconnects,
            if self.caught_up {
                ""
            } else {
                ", DID NOT CATCH UP"
            }
        )
    }
}
