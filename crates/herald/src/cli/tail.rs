//! `herald tail`: follow topics over WebSocket and print their events.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::Args;
use futures::StreamExt;
use herald_client::SubscriberItem;
use herald_protocol::frame::{Gap, GapReason};
use herald_protocol::session::{Checkpoint, Checkpoints, ClosedReason, ConnectionState};
use herald_protocol::{CloseReason, ErrorCode};
use herald_protocol::{Event, ServerMessage, TopicPattern};

use super::hub::HubArgs;
use super::is_broken_pipe;

/// Follow topics and print one line per event on stdout; connection state,
/// gaps and errors go to stderr. Broadcasts (topic `global`) are printed
/// too: every connection gets them. Reconnects by itself and resumes where
/// it left off. Runs until interrupted, until the hub closes for good, or
/// until it refuses every topic asked for (then the exit is non-zero).
#[derive(Debug, Clone, Args)]
pub(crate) struct TailArgs {
    /// Topics or patterns, comma-separated: `run:r1,execution:*`.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    topics: Vec<TopicPattern>,
    /// Replay what every exact topic listed retained after this seq first
    /// (`0`: from the start), then go live. Patterns are followed live only.
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
    /// Print each event frame as a JSON line (the wire format) instead of
    /// `TOPIC #SEQ TYPE PRIORITY DATA`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// One readable line: `run:r1 #42 step.completed normal {"step":3}`.
fn format_event(event: &Event) -> String {
    format!(
        "{} #{} {} {} {}",
        event.topic, event.seq, event.event_type, event.priority, event.data
    )
}

fn format_gap(gap: &Gap) -> String {
    let (topic, from, to) = (&gap.topic, gap.from_seq, gap.to_seq);
    match gap.reason {
        GapReason::EpochChanged => format!(
            "{topic} is not the stream asked from (epoch changed: --since past its end, or the \
             hub lost its history); it is followed from its start"
        ),
        GapReason::Trimmed => {
            format!(
                "gap {topic} #{from}..#{to}: no longer to be had (past the hub's retention, or more \
                 topics than a reconnect resumes), these will not come"
            )
        }
        GapReason::Shed => format!(
            "gap {topic} #{from}..#{to}: dropped because this client read too slowly, these will not come"
        ),
    }
}

fn format_state(state: &ConnectionState) -> String {
    match state {
        ConnectionState::Connecting => "connecting".to_owned(),
        ConnectionState::Open => "connected".to_owned(),
        ConnectionState::Reconnecting {
            attempt,
            delay_ms,
            code,
        } => {
            let closed = code
                .map(|code| format!(" (close code {code})"))
                .unwrap_or_default();
            format!("disconnected{closed}; reconnect attempt {attempt} in {delay_ms} ms")
        }
        ConnectionState::Closed { reason } => format!("closed: {reason:?}"),
    }
}

/// Runs `herald tail`.
pub(crate) async fn run(args: TailArgs) -> anyhow::Result<()> {
    let mut since = Checkpoints::new();
    if let Some(seq) = args.since {
        for pattern in &args.topics {
            match pattern.as_topic() {
                Some(topic) => since.insert(topic.clone(), Checkpoint { seq, epoch: None }),
                None => note(&format!("--since does not apply to the pattern {pattern}")),
            }
        }
    }
    // One subscription per topic: the hub refuses a subscription whole when
    // one of its topics is outside the token's claims, and the others are
    // still followed.
    let mut topics = args.topics.into_iter();
    let first = topics.next().context("no topic to follow")?;
    let mut subscriber = args
        .hub
        .subscriber()?
        .topics([first])
        .since(since)
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.hub.shown_urls()))?;
    let mut asked = 1;
    for topic in topics {
        subscriber
            .subscribe([topic], None, false)
            .await
            .context("subscribing")?;
        asked += 1;
    }
    // On this connection: whether the hub took a topic, and how many it
    // refused; one that refuses every topic leaves nothing to follow.
    let mut following = false;
    let mut refused = 0;
    while let Some(item) = subscriber.next().await {
        match item {
            SubscriberItem::Subscribed(_) => following = true,
            SubscriberItem::State(ConnectionState::Open) => {
                following = false;
                refused = 0;
                note(&format_state(&ConnectionState::Open));
            }
            SubscriberItem::Error(error)
                if matches!(error.code, ErrorCode::Forbidden | ErrorCode::InvalidTopic) =>
            {
                refused += 1;
                if !following && refused == asked {
                    bail!(
                        "the hub refused every topic: {}: {}",
                        error.code,
                        error.message
                    );
                }
                note(&format!("refused: {}: {}", error.code, error.message));
            }
            SubscriberItem::Event(event) => {
                let line = if args.json {
                    ServerMessage::Event(event).encode()
                } else {
                    format_event(&event)
                };
                if let Err(error) = writeln!(std::io::stdout().lock(), "{line}") {
                    if is_broken_pipe(&error) {
                        return Ok(());
                    }
                    return Err(error.into());
                }
            }
            SubscriberItem::Gap(gap) => note(&format_gap(&gap)),
            SubscriberItem::State(ConnectionState::Closed { reason }) => {
                return match reason {
                    ClosedReason::Terminal(CloseReason::NORMAL) => {
                        note("the hub closed the connection (1000)");
                        Ok(())
                    }
                    ClosedReason::Terminal(code) => {
                        bail!("the hub closed the connection for good: {code}")
                    }
                    ClosedReason::AttemptsExhausted { attempts } => {
                        bail!("could not reach the hub in {attempts} attempts")
                    }
                    ClosedReason::Disconnected => Ok(()),
                };
            }
            SubscriberItem::State(state) => note(&format_state(&state)),
            SubscriberItem::Error(error) => {
                note(&format!("error: {}: {}", error.code, error.message));
            }
            SubscriberItem::Malformed(error) => {
                note(&format!("skipped a malformed frame: {error}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A line on stderr (best effort: stderr going away is not an error).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "herald: {line}");
}
