//! The one way in for events: [`Publisher::publish`], for one event or a
//! batch, with [`PublishOptions`] saying who gets it and how long to wait.
//!
//! It fills in what the producer left out (a UUID id, the time), checks that
//! the audience fits the topic, and hands the batch to the broker, which
//! assigns the seqs, stores the events and delivers them through the node's
//! fan-out.

use std::sync::Arc;

use herald_protocol::{ErrorCode, EventId, PublishRequest, Topic};
use tokio_util::sync::CancellationToken;

use crate::core::broker::{Audience, Broker, BrokerError, Draft, Published, Wait};
use crate::core::clock::now_ms;
use crate::operations::metrics::Metrics;

/// Who gets an event and how long its publish waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Besides the topic's subscribers: everyone (topic `global` only) or
    /// the connections of the user a `user:{id}` topic names; or nobody at
    /// all (stored only).
    pub audience: Audience,
    pub wait: Wait,
}

impl PublishOptions {
    /// To `audience`, waiting until stored.
    pub fn to(audience: Audience) -> PublishOptions {
        PublishOptions {
            audience,
            wait: Wait::Stored,
        }
    }

    /// To the topic's subscribers, returning once the seq is assigned.
    pub fn fire_and_forget() -> PublishOptions {
        PublishOptions {
            audience: Audience::Subscribers,
            wait: Wait::Assigned,
        }
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Audience(String),
    #[error("event id {id:?} was already published on {topic} with other content")]
    Conflict { topic: Topic, id: String },
    #[error(transparent)]
    Store(BrokerError),
}

impl PublishError {
    /// The code reported to the producer.
    pub fn code(&self) -> ErrorCode {
        match self {
            PublishError::Audience(_) => ErrorCode::InvalidRequest,
            PublishError::Conflict { .. } => ErrorCode::Conflict,
            PublishError::ShuttingDown | PublishError::Store(_) => ErrorCode::Internal,
        }
    }

    /// Whether trying again later may succeed (the store is unreachable or
    /// the hub is restarting), as opposed to a request that is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PublishError::ShuttingDown | PublishError::Store(BrokerError::Unavailable(_))
        )
    }
}

impl From<BrokerError> for PublishError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::Conflict { topic, id } => PublishError::Conflict { topic, id },
            other => PublishError::Store(other),
        }
    }
}

/// One event (answered by one [`Published`]) or a batch (answered by one
/// per event, in order).
pub trait Events {
    type Output;
    fn into_requests(self) -> Vec<PublishRequest>;
    fn output(published: Vec<Published>) -> Option<Self::Output>;
}

impl Events for PublishRequest {
    type Output = Published;
    fn into_requests(self) -> Vec<PublishRequest> {
        vec![self]
    }
    fn output(published: Vec<Published>) -> Option<Published> {
        published.into_iter().next()
    }
}

impl Events for Vec<PublishRequest> {
    type Output = Vec<Published>;
    fn into_requests(self) -> Vec<PublishRequest> {
        self
    }
    fn output(published: Vec<Published>) -> Option<Vec<Published>> {
        Some(published)
    }
}

/// Publishes into the broker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Publisher {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        Publisher {
            broker,
            shutdown,
            metrics,
        }
    }

    /// Publishes one event or a batch, in order (see the module docs). A
    /// batch is stored together: with a durable store, one commit.
    pub async fn publish<E: Events>(
        &self,
        events: E,
        options: PublishOptions,
    ) -> Result<E::Output, PublishError> {
        // Once shutting down, only the hub's own notice to everyone goes out.
        if self.shutdown.is_cancelled() && options.audience != Audience::Everyone {
            return Err(PublishError::ShuttingDown);
        }
        let requests = events.into_requests();
        if let Some(topic) = requests
            .iter()
            .map(|r| &r.topic)
            .find(|topic| !fits(options.audience, topic))
        {
            return Err(PublishError::Audience(format!(
                "{:?} cannot be published to {:?}: everyone gets topic `global`, a user's connections `user:{{id}}`",
                topic.as_str(),
                options.audience
            )));
        }
        let now = now_ms();
        let drafts: Vec<Draft> = requests
            .into_iter()
            .map(|request| Draft::new(request, new_event_id, now))
            .collect();
        let published = self
            .broker
            .publish(drafts, options.audience, options.wait)
            .await?;
        let duplicates = published.iter().filter(|p| p.duplicate).count();
        if duplicates > 0 {
            self.metrics.events_duplicate.inc_by(duplicates as u64);
        }
        // Counted by the node it was published through, once (a duplicate
        // is not stored again): over nodes sharing a store, the counts add
        // up to what was published.
        self.metrics
            .events_published
            .inc_by((published.len() - duplicates) as u64);
        E::output(published).ok_or(PublishError::Store(BrokerError::Closed))
    }
}

/// Whether an audience goes with a topic: everyone with `global`, a user's
/// connections with that user's topic.
fn fits(audience: Audience, topic: &Topic) -> bool {
    match audience {
        Audience::Subscribers => true,
        Audience::Everyone => *topic == Topic::global(),
        Audience::User => topic.kind() == "user" && topic.id().is_some(),
        Audience::Nobody => true,
    }
}

#[allow(
    clippy::expect_used,
    reason = "a hyphenated UUID is 36 printable bytes: always a valid id"
)]
fn new_event_id() -> EventId {
    EventId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid event id")
}
