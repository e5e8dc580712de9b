//! What each client frame does: subscriptions, replays and state requests go
//! to the core's [`Subscriptions`](crate::core::subscriptions::Subscriptions),
//! answers to the approvals service, control requests are published on the
//! task's or run's topic.

use std::sync::Arc;

use herald_protocol::frame::{Control, ErrorFrame, Heartbeat, Since};
use herald_protocol::payload::{ControlRequest, Payload as _};
use herald_protocol::{
    ClientMessage, ErrorCode, EventType, Priority, PublishRequest, ServerMessage, Topic,
    TopicPattern,
};

use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;
use crate::transport::ws::connection::send_error;

/// Carries out one client message.
pub(crate) async fn dispatch(
    hub: &Hub,
    conn: &Arc<ConnHandle>,
    message: ClientMessage,
) -> Result<(), (ErrorCode, String)> {
    let subscriptions = hub.subscriptions();
    match message {
        ClientMessage::Subscribe(request) => {
            conn.check_access(&request.topics)?;
            subscriptions
                .subscribe(conn, &request)
                .await
                .map_err(refused)
        }
        ClientMessage::Unsubscribe(request) => {
            subscriptions.unsubscribe(conn, &request.topics).await;
            Ok(())
        }
        ClientMessage::Replay(request) => {
            conn.check_access(&[TopicPattern::Exact(request.topic.clone())])?;
            let limit = request.limit.map_or(usize::MAX, |l| l as usize);
            let since = Since::Seq {
                seq: request.since_seq,
                epoch: request.epoch,
            };
            subscriptions
                .replay(conn, &request.topic, &since, limit)
                .await
                .map_err(refused)
        }
        ClientMessage::RequestState(request) => subscriptions
            .send_state(conn, request.topics)
            .await
            .map_err(refused),
        ClientMessage::Ping(ping) => {
            conn.send(&ServerMessage::Pong(Heartbeat {
                timestamp: ping.timestamp.or(Some(now_ms())),
            }));
            Ok(())
        }
        ClientMessage::Pong(_) | ClientMessage::Ack(_) => Ok(()),
        // In open mode there is no token to replace.
        ClientMessage::Auth(auth) => {
            conn.reauthenticate(&hub.config().auth, &auth.token)?;
            // The token is taken (the request is acknowledged); what it does
            // not cover stops, and the client is told which by an `error`
            // of its own, not the request's answer; the rest goes on.
            let revoked: Vec<TopicPattern> = conn
                .subscriptions()
                .into_iter()
                .filter(|pattern| !conn.may_subscribe(pattern))
                .collect();
            if !revoked.is_empty() {
                subscriptions.unsubscribe(conn, &revoked).await;
                let names: Vec<String> = revoked.iter().map(ToString::to_string).collect();
                let message = format!(
                    "the new token does not allow {}: unsubscribed",
                    names.join(", ")
                );
                send_error(hub, conn, ErrorCode::Forbidden, message, None);
            }
            Ok(())
        }
        ClientMessage::Confirm(confirm) => {
            let decided_by = conn
                .user_id
                .as_deref()
                .map_or_else(|| format!("session:{}", conn.id), str::to_owned);
            hub.approvals()
                .decide(
                    confirm.callback_id.as_str(),
                    confirm.proceed,
                    confirm.feedback,
                    Some(decided_by),
                    conn.verified_user(),
                )
                .await
                .map(|_| ())
                .map_err(|e| (e.code(), e.to_string()))
        }
        ClientMessage::Cancel(control) => {
            let topic = steered(hub, conn, &control).await?;
            if let Some(task) = &control.task_id {
                hub.approvals().cancel_task(task.as_str()).await;
            }
            publish_control(hub, conn, topic, EventType::ControlCancel, control).await
        }
        ClientMessage::Pause(control) => {
            let topic = steered(hub, conn, &control).await?;
            publish_control(hub, conn, topic, EventType::ControlPause, control).await
        }
        ClientMessage::Resume(control) => {
            let topic = steered(hub, conn, &control).await?;
            publish_control(hub, conn, topic, EventType::ControlResume, control).await
        }
    }
}

fn refused(error: ErrorFrame) -> (ErrorCode, String) {
    (error.code, error.message)
}

/// The topic of the task or run a control request is for, once the
/// connection may steer it ([`check_steering`]).
async fn steered(
    hub: &Hub,
    conn: &ConnHandle,
    control: &Control,
) -> Result<Topic, (ErrorCode, String)> {
    let topic = control
        .target_topic()
        .map_err(|e| (e.code(), e.to_string()))?;
    let task = control.task_id.as_ref().map(|task| task.as_str());
    check_steering(hub, conn, &topic, task).await?;
    Ok(topic)
}

/// Refuses (`forbidden`) a control request for the task or run on `topic`
/// unless the connection may steer it: in open mode anyone may; with
/// authentication, a user whose token lets them watch the topic, or who
/// was asked an approval on the task (`task_id`). A client steers only
/// what it may see or was asked about.
pub(crate) async fn check_steering(
    hub: &Hub,
    conn: &ConnHandle,
    topic: &Topic,
    task_id: Option<&str>,
) -> Result<(), (ErrorCode, String)> {
    if conn.may_subscribe(&TopicPattern::Exact(topic.clone())) {
        return Ok(());
    }
    if let (Some(user), Some(task)) = (conn.verified_user(), task_id)
        && hub.approvals().asked_on_task(user, task).await
    {
        return Ok(());
    }
    Err((
        ErrorCode::Forbidden,
        format!("not allowed to steer {topic}"),
    ))
}

/// Publishes a `control.*` request on the task's or run's `topic`, for the
/// producer to act on.
async fn publish_control(
    hub: &Hub,
    conn: &ConnHandle,
    topic: Topic,
    event_type: EventType,
    control: Control,
) -> Result<(), (ErrorCode, String)> {
    let data = ControlRequest {
        task_id: control.task_id.map(|t| t.to_string()),
        run_id: control.run_id.map(|r| r.to_string()),
        reason: control.reason,
        requested_by: conn.user_id.as_deref().map(str::to_owned),
    }
    .to_data();
    let request = PublishRequest::new(topic, event_type, data).priority(Priority::High);
    hub.publish(request, PublishOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), e.to_string()))
}
