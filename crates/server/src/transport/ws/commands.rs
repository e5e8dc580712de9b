//! What each client frame does: subscriptions, replays and state requests go
//! to the core's [`Subscriptions`](crate::core::subscriptions::Subscriptions),
//! answers to the approvals service, control requests are published on the
//! task's or run's topic.

use std::sync::Arc;

use herald_protocol::frame::{Control, ErrorFrame, Heartbeat, Since};
use herald_protocol::payload::{ControlRequest, Payload as _};
use herald_protocol::{
    ClientMessage, ErrorCode, EventType, Priority, PublishRequest, ServerMessage, TopicPattern,
};

use crate::core::clock::now_ms;
use crate::core::connection::ConnHandle;
use crate::core::hub::Hub;
use crate::core::publish::PublishOptions;

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
        ClientMessage::Auth(auth) => conn.reauthenticate(&hub.config().auth, &auth.token),
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
            if let Some(task) = &control.task_id {
                hub.approvals().cancel_task(task.as_str()).await;
            }
            publish_control(hub, conn, EventType::ControlCancel, control).await
        }
        ClientMessage::Pause(control) => {
            publish_control(hub, conn, EventType::ControlPause, control).await
        }
        ClientMessage::Resume(control) => {
            publish_control(hub, conn, EventType::ControlResume, control).await
        }
    }
}

fn refused(error: ErrorFrame) -> (ErrorCode, String) {
    (error.code, error.message)
}

/// Publishes a `control.*` request on the task's or run's topic, for the
/// producer to act on.
async fn publish_control(
    hub: &Hub,
    conn: &ConnHandle,
    event_type: EventType,
    control: Control,
) -> Result<(), (ErrorCode, String)> {
    let topic = control
        .target_topic()
        .map_err(|e| (e.code(), e.to_string()))?;
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
