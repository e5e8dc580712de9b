//! `herald approve`: answer an approval with a `confirm` frame.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use herald_client::SubscriberItem;
use herald_protocol::CallbackId;
use herald_server::config::parse_duration;

use super::hub::HubArgs;

/// Answer a pending approval: connects over WebSocket, sends `confirm` and
/// waits for the hub's `ack`; prints the decision as JSON. Fails (non-zero
/// exit) with the hub's message when it refuses, e.g. `conflict` when the
/// approval is already decided, `not_found` when it does not exist.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["proceed", "reject"])))]
pub(crate) struct ApproveArgs {
    /// The approval's `callback_id` (from the `approval.requested` event).
    #[arg(value_name = "CALLBACK_ID")]
    callback_id: CallbackId,
    /// Approve: the task proceeds.
    #[arg(long)]
    proceed: bool,
    /// Reject: the task stops.
    #[arg(long)]
    reject: bool,
    /// A note for the task's producer.
    #[arg(long, value_name = "TEXT")]
    feedback: Option<String>,
    /// Answer as this user (sent as `?user_id=`; with authentication on, the
    /// token names the user instead).
    #[arg(long, value_name = "USER_ID")]
    user: Option<String>,
    /// How long to wait for the hub to connect and answer (`10`, `10s`,
    /// `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    hub: HubArgs,
}

/// Runs `herald approve`.
pub(crate) async fn run(args: ApproveArgs) -> anyhow::Result<()> {
    let limit = args.timeout.max(Duration::from_millis(100));
    let mut builder = args.hub.subscriber()?.connect_timeout(limit);
    if let Some(user) = &args.user {
        builder = builder.user_id(user.clone());
    }
    let mut subscriber = builder
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.hub.shown_urls()))?;
    let id = subscriber
        .confirm(
            args.callback_id.clone(),
            args.proceed,
            args.feedback.clone(),
        )
        .await?;
    let answer = tokio::time::timeout(limit, async {
        while let Some(item) = subscriber.next().await {
            match item {
                SubscriberItem::Ack(ack) if ack.reference == id => return Ok(()),
                SubscriberItem::Error(error) if error.reference.as_ref() == Some(&id) => {
                    return Err(anyhow!(
                        "the hub refused: {}: {}",
                        error.code,
                        error.message
                    ));
                }
                _ => {}
            }
        }
        Err(anyhow!("the connection closed before the hub answered"))
    })
    .await;
    subscriber.close().await;
    match answer {
        Ok(result) => result?,
        Err(_) => bail!("the hub did not answer within {limit:?}"),
    }
    // The decision as the hub recorded it; the ack alone already means it was taken.
    let line = match args.hub.publisher()?.approval(&args.callback_id).await {
        Ok(decision) => serde_json::to_string(&decision)?,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "herald: the hub took the answer, but reading the decision back failed: {error:#}"
            );
            serde_json::json!({
            "callback_id": args.callback_id,
            "status": if args.proceed { "approved" } else { "rejected" },
            })
            .to_string()
        }
    };
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if !super::is_broken_pipe(&error) => Err(error.into()),
        _ => Ok(()),
    }
}
