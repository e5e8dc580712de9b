//! `herald tail`: follow topics over WebSocket and print their events.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context as _, bail};
use clap::Args;
use futures::StreamExt;
use herald_client::{Publisher, SubscriberItem};
use herald_protocol::frame::{Gap, GapReason};
use herald_protocol::session::{Checkpoint, Checkpoints, ClosedReason, ConnectionState};
use herald_protocol::{CloseReason, ErrorCode};
use herald_protocol::{Event, ServerMessage, TopicPattern};

use super::hub::HubArgs;
use super::is_broken_pipe;

/// Follow topics and print one line per event on stdout; connection state,
/// gaps and errors go to stderr. Broadcasts (topic `global`) are printed
/// too: every connection gets them. Reconnects by itself and resumes where
/// it left off; when a topic's stream was replaced (a hub that lost its
/// history, or `--since` past its end), the new stream's events up to now
/// are read from its history and printed first. Runs until interrupted,
/// until the hub closes for good, until it refuses every topic asked for,
/// or until the token expires (then the exit is non-zero).
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
    /// `TOPIC #SEQ TYPE PRIORITY DATA`, and each `gap` frame (events that
    /// will not come) too.
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
            "gap {topic} #{from}..#{to}: a new stream (epoch changed: --since past its end, or the \
             hub lost its history), these could not be read from its history"
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

/// Where the lines go: stdout, as text or JSON.
struct Output {
    json: bool,
}

impl Output {
    /// Prints an event; breaks once stdout is a closed pipe (nobody reads).
    fn event(&self, event: Event) -> anyhow::Result<ControlFlow<()>> {
        let line = if self.json {
            ServerMessage::Event(event).encode()
        } else {
            format_event(&event)
        };
        self.line(&line)
    }

    /// Says what will not come: on stderr, and on stdout as a `gap` frame
    /// with `--json`.
    fn gap(&self, gap: Gap) -> anyhow::Result<ControlFlow<()>> {
        note(&format_gap(&gap));
        if self.json {
            return self.line(&ServerMessage::Gap(gap).encode());
        }
        Ok(ControlFlow::Continue(()))
    }

    fn line(&self, line: &str) -> anyhow::Result<ControlFlow<()>> {
        match writeln!(std::io::stdout().lock(), "{line}") {
            Ok(()) => Ok(ControlFlow::Continue(())),
            Err(error) if is_broken_pipe(&error) => Ok(ControlFlow::Break(())),
            Err(error) => Err(error.into()),
        }
    }
}

/// Prints the events `gap` says a new stream has up to now, read from the
/// topic's history (the hub does not replay a stream other than the one
/// asked from); what the history no longer holds, or a failed read, is
/// told as the gap it is. Breaks once stdout is a closed pipe.
async fn fill_from_history(
    history: &Publisher,
    gap: Gap,
    output: &Output,
) -> anyhow::Result<ControlFlow<()>> {
    let (topic, last) = (gap.topic.clone(), gap.to_seq);
    let mut next = gap.from_seq;
    while next <= last {
        let page = match history.history(&topic, next - 1, None).await {
            Ok(page) if gap.epoch.as_ref().is_none_or(|epoch| *epoch == page.epoch) => page,
            Ok(_) => {
                note(&format!(
                    "{topic} changed stream again while its history was read"
                ));
                break;
            }
            Err(error) => {
                note(&format!("reading the history of {topic}: {error:#}"));
                break;
            }
        };
        let Some(first) = page.events.first().map(|event| event.seq) else {
            // Nothing retained from `next` on: past the history's reach.
            return output.gap(Gap {
                from_seq: next,
                reason: GapReason::Trimmed,
                epoch: None,
                ..gap
            });
        };
        let before = next;
        if first > next {
            let trimmed = Gap {
                from_seq: next,
                to_seq: (first - 1).min(last),
                reason: GapReason::Trimmed,
                epoch: None,
                ..gap.clone()
            };
            if output.gap(trimmed)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        for event in page
            .events
            .into_iter()
            .filter(|event| (before..=last).contains(&event.seq))
        {
            next = event.seq + 1;
            if output.event(event)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if first > last {
            return Ok(ControlFlow::Continue(()));
        }
        if next == before {
            note(&format!("the history of {topic} did not move past #{next}"));
            break;
        }
    }
    if next <= last {
        return output.gap(Gap {
            from_seq: next,
            ..gap
        });
    }
    Ok(ControlFlow::Continue(()))
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
    let output = Output { json: args.json };
    let history = args.hub.publisher()?;
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
                let ControlFlow::Continue(()) = output.event(event)? else {
                    return Ok(());
                };
            }
            SubscriberItem::Gap(gap) => {
                let flow = if gap.reason == GapReason::EpochChanged && gap.to_seq >= gap.from_seq {
                    note(&format!(
                        "{} is a new stream (epoch changed: --since past its end, or the hub lost \
                         its history); its events #{}..#{} come from its history",
                        gap.topic, gap.from_seq, gap.to_seq
                    ));
                    fill_from_history(&history, gap, &output).await?
                } else if gap.reason == GapReason::EpochChanged {
                    note(&format!(
                        "{} is a new stream (epoch changed: --since past its end, or the hub lost \
                         its history), with no event yet",
                        gap.topic
                    ));
                    ControlFlow::Continue(())
                } else {
                    output.gap(gap)?
                };
                let ControlFlow::Continue(()) = flow else {
                    return Ok(());
                };
            }
            SubscriberItem::State(ConnectionState::Reconnecting {
                code: Some(CloseReason::TOKEN_EXPIRED),
                ..
            }) => {
                bail!(
                    "the hub closed the connection: the token expired (close code 4001); \
                     run again with a fresh --token"
                );
            }
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
