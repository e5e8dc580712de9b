//! A subscriber that sits on one node, moves to the next node that is up
//! when its connection ends, and resumes there with `since` (seq and epoch
//! per topic). It checks every frame against its [`TopicLedger`]s (the
//! hub's seqs) and records each event's producer and number in its
//! [`Receipts`], checked at the end against what producers had
//! acknowledged.

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
use crate::receipts::{Acked, Delivery, Receipts};

/// How long a subscriber may take to catch up once producers stop.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// A read that sees nothing for this long checks whether it is done.
const QUIET: Duration = Duration::from_millis(250);

/// What a subscriber shares with its task.
#[derive(Debug, Default)]
struct Seen {
    topics: BTreeMap<String, TopicLedger>,
    receipts: Receipts,
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

    /// Catches up to `heads` (bounded), stops, and says what it saw of the
    /// events producers had acknowledged (`acked`), given `data_losses`
    /// Redis restarts without data.
    pub(crate) async fn finish(
        mut self,
        heads: &Heads,
        acked: &[Acked],
        data_losses: u64,
    ) -> Verdict {
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
        let delivery = seen.receipts.check(acked, |topic| {
            seen.topics
                .get(topic)
                .is_some_and(|ledger| ledger.gaps.contains_key(EPOCH_CHANGED))
        });
        Verdict {
            name: self.name,
            home: self.home,
            caught_up: done.is_ok(),
            delivery,
            data_losses,
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
                seen.receipts.event(&frame["data"]);
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

/// The one gap reason a soak may see: the nodes keep far more history than
/// a soak publishes (`trimmed`, `shed` cannot be legitimate), and only the
/// Redis restart without data starts new streams.
const EPOCH_CHANGED: &str = "epoch_changed";

/// What one subscriber saw, for the verdict line.
#[derive(Debug)]
pub(crate) struct Verdict {
    name: String,
    home: usize,
    caught_up: bool,
    /// The acknowledged events against what it received.
    delivery: Delivery,
    /// Redis restarts without data: at most this many `epoch_changed`
    /// gaps per topic.
    data_losses: u64,
    seen: Seen,
}

impl Verdict {
    /// Every acknowledged event received exactly once unless the Redis
    /// restart wiped it and an `epoch_changed` gap announced that; the
    /// hub's seqs without an unannounced hole or repeat; only
    /// `epoch_changed` gaps, at most one per topic per Redis restart.
    pub(crate) fn clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// Why the subscriber fails, one phrase each.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.caught_up {
            problems.push("did not catch up".to_owned());
        }
        let d = &self.delivery;
        let r = &self.seen.receipts;
        if d.lost > 0 {
            problems.push(format!("{} acknowledged events lost", d.lost));
        }
        if r.duplicated > 0 {
            problems.push(format!("{} events received twice", r.duplicated));
        }
        if r.unidentified > 0 {
            problems.push(format!("{} events without producer and n", r.unidentified));
        }
        for (topic, ledger) in &self.seen.topics {
            if ledger.lost > 0 {
                problems.push(format!(
                    "{topic}: {} seqs skipped without a gap",
                    ledger.lost
                ));
            }
            if ledger.duplicated > 0 {
                problems.push(format!("{topic}: {} seqs repeated", ledger.duplicated));
            }
            for (reason, &n) in &ledger.gaps {
                if reason != EPOCH_CHANGED {
                    problems.push(format!("{topic}: {n} `{reason}` gaps"));
                } else if n > self.data_losses {
                    problems.push(format!(
                        "{topic}: {n} `epoch_changed` gaps for {} Redis restarts without data",
                        self.data_losses
                    ));
                }
            }
        }
        problems
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut gaps: BTreeMap<&str, u64> = BTreeMap::new();
        for ledger in self.seen.topics.values() {
            for (reason, n) in &ledger.gaps {
                *gaps.entry(reason).or_default() += n;
            }
        }
        let problems = self.problems();
        write!(
            f,
            "subscriber {} (node {}): {} received, {} lost, {} duplicated, {} wiped by the Redis restart under an epoch_changed gap, gaps announced {:?}, {} reconnects: {}",
            self.name,
            self.home,
            self.delivery.received,
            self.delivery.lost,
            self.seen.receipts.duplicated,
            self.delivery.wiped,
            gaps,
            self.seen.reconnects,
            if problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("FAILED ({})", problems.join("; "))
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(topics: &[(&str, TopicLedger)], data_losses: u64) -> Verdict {
        Verdict {
            name: "s0.0".into(),
            home: 0,
            caught_up: true,
            delivery: Delivery::default(),
            data_losses,
            seen: Seen {
                topics: topics
                    .iter()
                    .map(|(t, l)| ((*t).to_owned(), l.clone()))
                    .collect(),
                ..Seen::default()
            },
        }
    }

    fn with_gaps(reasons: &[&str]) -> TopicLedger {
        let mut ledger = TopicLedger::default();
        ledger.subscribed("e1", 0);
        for reason in reasons {
            ledger.gap(1, 0, reason);
        }
        ledger
    }

    #[test]
    fn only_one_epoch_changed_gap_per_topic_per_redis_restart_passes() {
        assert!(verdict(&[("chaos:a", with_gaps(&["epoch_changed"]))], 1).clean());
        assert!(!verdict(&[("chaos:a", with_gaps(&["epoch_changed"]))], 0).clean());
        let twice = verdict(
            &[("chaos:a", with_gaps(&["epoch_changed", "epoch_changed"]))],
            1,
        );
        assert!(!twice.clean());
    }

    #[test]
    fn a_trimmed_shed_or_unknown_gap_fails() {
        for reason in ["trimmed", "shed", "unknown"] {
            let v = verdict(&[("chaos:a", with_gaps(&[reason]))], 1);
            assert!(!v.clean(), "{reason}");
            assert!(v.to_string().contains(&format!("`{reason}` gaps")));
        }
    }

    #[test]
    fn an_acknowledged_event_lost_fails_the_subscriber() {
        let mut v = verdict(&[], 1);
        assert!(v.clean());
        v.delivery.lost = 1;
        assert!(!v.clean());
    }
}
