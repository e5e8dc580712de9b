//! Events the hub addresses itself: [`Publisher::broadcast`] (on `global`,
//! to every connection) and [`Publisher::send_to_user`] (on `user:{id}`, to
//! every connection of that user), subscribed or not.

use herald_protocol::{EventType, Label, Priority, PublishReceipt};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::error::PublishError;
use crate::publisher::{Idempotency, Publisher};

/// A broadcast or a user message, as the hub takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub event_type: EventType,
    pub data: Value,
    pub priority: Priority,
    /// Keeps the latest event of this key in the topic's snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Label>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Label>,
}

impl Notice {
    /// A notice of `normal` priority, with no key or source.
    pub fn new(event_type: EventType, data: Value) -> Notice {
        Notice {
            event_type,
            data,
            priority: Priority::Normal,
            key: None,
            source: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Notice {
        self.priority = priority;
        self
    }
}

impl Publisher {
    /// Publishes `notice` on `global`, delivered to every connection
    /// (`POST /api/v1/broadcast`). Retried only when the connection cannot
    /// be opened: the request has no id the hub could tell a retry by.
    pub async fn broadcast(&self, notice: &Notice) -> Result<PublishReceipt, PublishError> {
        Ok(self
            .call(
                Method::POST,
                |hub| hub.http("api/v1/broadcast"),
                Some(notice),
                self.timeout(),
                Idempotency::Once,
            )
            .await?)
    }

    /// Publishes `notice` on `user:{user_id}`, delivered to every connection
    /// of that user (`POST /api/v1/users/{user_id}/messages`); retried as
    /// [`broadcast`](Publisher::broadcast) is.
    pub async fn send_to_user(
        &self,
        user_id: &str,
        notice: &Notice,
    ) -> Result<PublishReceipt, PublishError> {
        Ok(self
            .call(
                Method::POST,
                |hub| hub.http_segments(&["api", "v1", "users", user_id, "messages"]),
                Some(notice),
                self.timeout(),
                Idempotency::Once,
            )
            .await?)
    }
}
