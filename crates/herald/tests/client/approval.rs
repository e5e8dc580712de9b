//! Approvals: a producer's `request_approval` gets the decision another
//! client sends with `confirm`.

use std::time::Duration;

use herald_client::{Publisher, Subscriber, SubscriberItem};
use herald_protocol::frame::RequestId;
use herald_protocol::payload::{ApprovalRequested, ApprovalStatus, NewApproval, TaskStepResult};
use herald_protocol::session::SessionConfig;
use herald_protocol::{ErrorCode, EventType, Topic};
use serde_json::json;
use tokio::task::JoinSet;

use crate::harness::{Hub, Relay, bounded, next_matching, subscribed};

pub fn new_approval(user: &str, task: &str) -> NewApproval {
    NewApproval {
        user_id: user.to_owned(),
        task_id: task.to_owned(),
        step: 2,
        step_result: TaskStepResult {
            step: "deploy".to_owned(),
            result: json!({"plan": "3 changes"}),
            completed: true,
            message: "ready to deploy".to_owned(),
            status: "waiting".to_owned(),
            error_code: None,
            error_message: None,
        },
        timeout_ms: Some(60_000),
        default_proceed: Some(false),
    }
}

#[tokio::test]
async fn request_approval_gets_the_decision_sent_by_another_clients_confirm() {
    let hub = Hub::start(&[]).await;
    let mut reviewer = alice(&hub.url, SessionConfig::default()).await;

    let publisher = Publisher::new(&hub.url).unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        publisher
            .request_approval(new_approval("alice", "task-1"))
            .await
    });

    let requested = next_matching(&mut reviewer, "approval.requested", |item| match item {
        SubscriberItem::Event(event) if event.event_type == EventType::ApprovalRequested => {
            Some(event)
        }
        _ => None,
    })
    .await;
    let requested: ApprovalRequested = requested.payload().unwrap();
    assert_eq!(requested.task_id, "task-1");
    let id = bounded(
        "confirm",
        reviewer.confirm(
            requested.callback_id.clone(),
            true,
            Some("ship it".to_owned()),
        ),
    )
    .await
    .unwrap();
    next_matching(&mut reviewer, "the ack of confirm", |item| match item {
        SubscriberItem::Ack(ack) if ack.reference == id => Some(()),
        SubscriberItem::Error(error) => panic!("confirm refused: {error:?}"),
        _ => None,
    })
    .await;

    let decision = bounded("request_approval", tasks.join_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(decision.callback_id, requested.callback_id);
    assert_eq!(decision.status, ApprovalStatus::Approved);
    assert_eq!(decision.proceed, Some(true));
    assert_eq!(decision.feedback.as_deref(), Some("ship it"));
    assert_eq!(decision.decided_by.as_deref(), Some("alice"));

    // The same answer again (a client that lost its link before the ack)
    // is acknowledged; another answer is refused with `conflict`, matched
    // by its request id.
    let repeated = bounded(
        "the same confirm again",
        reviewer.confirm(requested.callback_id.clone(), true, None),
    )
    .await
    .unwrap();
    acknowledged(&mut reviewer, &repeated, "the same answer").await;
    let again = bounded(
        "confirm again",
        reviewer.confirm(requested.callback_id.clone(), false, None),
    )
    .await
    .unwrap();
    let error = next_matching(
        &mut reviewer,
        "the error of the second confirm",
        |item| match item {
            SubscriberItem::Error(error) if error.reference.as_ref() == Some(&again) => Some(error),
            _ => None,
        },
    )
    .await;
    assert_eq!(error.code, ErrorCode::Conflict);
    let publisher = Publisher::new(&hub.url).unwrap();
    let unknown = "no-such-approval".parse().unwrap();
    let missing = bounded("unknown approval", publisher.approval(&unknown))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, herald_client::ApprovalError::NotFound(_)),
        "{missing:?}"
    );
}

#[tokio::test]
async fn an_answer_written_on_a_link_that_died_unnoticed_is_sent_again_and_decides_the_approval() {
    let hub = Hub::start(&[]).await;
    let relay = Relay::start(&hub.addr).await;
    let config = SessionConfig {
        initial_reconnect_delay: Duration::from_millis(50),
        max_reconnect_delay: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    let mut reviewer = alice(&relay.url, config).await;

    let publisher = Publisher::new(&hub.url).unwrap();
    let record = bounded(
        "create_approval",
        publisher.create_approval(&new_approval("alice", "task-1")),
    )
    .await
    .unwrap();

    relay.drop_client_bytes();
    let id = bounded(
        "confirm",
        reviewer.confirm(record.request.callback_id.clone(), true, None),
    )
    .await
    .unwrap();
    relay.dropped_some().await;
    let pending = bounded("approval", publisher.approval(&record.request.callback_id))
        .await
        .unwrap();
    assert_eq!(
        pending.status,
        ApprovalStatus::Pending,
        "the answer was lost"
    );

    relay.cut();
    acknowledged(&mut reviewer, &id, "the answer sent again").await;
    let decision = bounded("approval", publisher.approval(&record.request.callback_id))
        .await
        .unwrap();
    assert_eq!(decision.status, ApprovalStatus::Approved);
    assert_eq!(decision.decided_by.as_deref(), Some("alice"));
}

/// Waits for the hub's `ack` of request `id`; a refusal fails the test.
async fn acknowledged(subscriber: &mut Subscriber, id: &RequestId, what: &str) {
    next_matching(
        subscriber,
        &format!("the ack of {what}"),
        |item| match item {
            SubscriberItem::Ack(ack) if ack.reference == *id => Some(()),
            SubscriberItem::Error(error) => panic!("{what} refused: {error:?}"),
            _ => None,
        },
    )
    .await;
}

/// Alice, subscribed to `user:alice` on `url`, where her approvals come.
async fn alice(url: &str, config: SessionConfig) -> Subscriber {
    let user_topic: Topic = "user:alice".parse().unwrap();
    let mut reviewer = bounded(
        "connect",
        Subscriber::builder(url.to_owned())
            .user_id("alice")
            .config(config)
            .topics([user_topic.into()])
            .connect(),
    )
    .await
    .unwrap();
    subscribed(&mut reviewer).await;
    reviewer
}
