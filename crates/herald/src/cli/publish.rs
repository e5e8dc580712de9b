//! `herald publish`: one event over HTTP; prints the receipt.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use herald_protocol::{EventId, EventType, Label, Priority, PublishRequest, Topic};
use herald_server::config::parse_duration;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::hub::HubArgs;

/// Publish one event and print its receipt `{"id", "topic", "seq"}` as JSON.
#[derive(Debug, Clone, Args)]
pub(crate) struct PublishArgs {
    /// Topic to publish on: `kind` or `kind:id`, e.g. `run:r1`.
    #[arg(long)]
    topic: Topic,
    /// Event type, dotted lower-case `domain.action`, e.g. `step.completed`.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: EventType,
    /// Priority: low, normal, high or critical.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// Entity id: the hub keeps the latest event per (topic, key) as the topic's snapshot.
    #[arg(long)]
    key: Option<Label>,
    /// Who produced the event (e.g. `worker-7`).
    #[arg(long)]
    source: Option<Label>,
    /// The event's data as JSON; read from stdin when absent (empty stdin: null).
    #[arg(long)]
    data: Option<String>,
    /// Event id; publishing again with the same id is de-duplicated by the
    /// hub. A UUID v4 when absent (reused by retries).
    #[arg(long)]
    id: Option<EventId>,
    /// How long to try, retries included (`30`, `30s`, `500ms`): a hub that
    /// does not answer by then is an error. The event may still have been
    /// stored: publishing again with the same `--id` does not duplicate it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    hub: HubArgs,
}

/// Runs `herald publish`.
pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let text = match args.data {
        Some(text) => text,
        None => {
            let mut text = String::new();
            tokio::io::stdin()
                .read_to_string(&mut text)
                .await
                .context("reading the event's data from stdin")?;
            text
        }
    };
    let data: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).context("the event's data is not valid JSON")?
    };
    let mut request =
        PublishRequest::new(args.topic, args.event_type, data).priority(args.priority);
    request.key = args.key;
    request.source = args.source;
    request.id = args.id;
    let publisher = args.hub.publisher()?;
    let receipt = tokio::time::timeout(args.timeout, publisher.publish(request))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub did not answer within {:?} (--timeout)",
                args.timeout
            )
        })
        .and_then(|published| published.map_err(anyhow::Error::from))
        .with_context(|| format!("publishing to {}", publisher.url()))?;
    let line = serde_json::to_string(&receipt)?;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if !super::is_broken_pipe(&error) => Err(error.into()),
        _ => Ok(()),
    }
}
