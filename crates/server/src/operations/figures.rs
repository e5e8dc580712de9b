//! The hub's own figures as a live stream: every `--metrics-interval`, a
//! `metrics.updated` event on topic `metrics` (what `/ws/metrics` follows,
//! the seeds' "performance metrics stream"), published only while that topic
//! has a subscriber. Key `hub`, so the topic's snapshot is the latest figures;
//! priority `low`, so a slow dashboard sheds them first. Each node sharing a
//! store publishes its own figures there, naming itself in `data.node`.
//!
//! Prometheus `/metrics` stays the place for scraping; this is for people
//! watching a page.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_protocol::payload::Metrics as MetricsPayload;
use herald_protocol::{EventType, Label, Priority, PublishRequest, Topic};
use tokio::time::Instant;

use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;
use crate::operations::metrics::Reading;

/// Counters sampled at one tick, to turn totals into rates.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    published: u64,
    delivered: u64,
    shed: u64,
    /// Publish-to-send latency so far.
    lag: Reading,
}

impl Sample {
    fn take(hub: &Hub) -> Sample {
        let metrics = hub.metrics();
        Sample {
            at: Instant::now(),
            published: metrics.events_published.get(),
            delivered: metrics.events_delivered.get(),
            shed: metrics.events_shed.get(),
            lag: metrics.publish_to_send.reading(),
        }
    }
}

/// Publishes the figures every `interval` until the hub shuts down.
pub(crate) async fn run(hub: Hub, interval: Duration) {
    let token = hub.shutdown_token().clone();
    let topic = Topic::metrics();
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Sample::take(&hub);
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = Sample::take(&hub);
        if !hub.subscriptions().has_subscribers(&topic) {
            last = now;
            continue;
        }
        let figures = figures(&hub, &last, &now);
        // Counted in the figures it reports next time, like any event.
        let options = PublishOptions::default();
        let request = request(&topic, figures, hub.node_id());
        if let Err(error) = hub.publish(request, options).await {
            tracing::debug!(%error, "could not publish the hub's metrics");
        }
        last = now;
    }
}

/// The figures between two samples. `delivery_lag_p99_ms` (publish to
/// socket write, 99th percentile, to the bucket bound) is left out when no
/// frame was written in between.
fn figures(hub: &Hub, last: &Sample, now: &Sample) -> BTreeMap<String, f64> {
    let seconds = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    let rate = |from: u64, to: u64| to.saturating_sub(from) as f64 / seconds;
    let stats = hub.broker().stats();
    let mut figures = BTreeMap::from([
        (
            "active_connections".to_owned(),
            hub.connections().count() as f64,
        ),
        ("topics".to_owned(), stats.topics as f64),
        (
            "pending_approvals".to_owned(),
            stats.pending_approvals as f64,
        ),
        ("retained_bytes".to_owned(), stats.retained_bytes as f64),
        ("events_published_total".to_owned(), now.published as f64),
        ("events_delivered_total".to_owned(), now.delivered as f64),
        ("events_shed_total".to_owned(), now.shed as f64),
        ("events_shed_per_s".to_owned(), rate(last.shed, now.shed)),
        (
            "events_per_s".to_owned(),
            rate(last.published, now.published),
        ),
        (
            "deliveries_per_s".to_owned(),
            rate(last.delivered, now.delivered),
        ),
        ("uptime_s".to_owned(), hub.uptime_s() as f64),
    ]);
    if let Some(p99) = now.lag.quantile_since(&last.lag, 0.99) {
        figures.insert("delivery_lag_p99_ms".to_owned(), p99 * 1000.0);
    }
    figures
}

fn request(topic: &Topic, figures: BTreeMap<String, f64>, node: &str) -> PublishRequest {
    let payload = MetricsPayload {
        metrics: figures,
        node: Some(node.to_owned()),
    };
    let data = serde_json::to_value(payload).unwrap_or_default();
    let mut request =
        PublishRequest::new(topic.clone(), EventType::MetricsUpdated, data).priority(Priority::Low);
    request.key = Label::new("hub").ok();
    request.source = Label::new("herald").ok();
    request
}
