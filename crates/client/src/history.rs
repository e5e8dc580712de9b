//! A topic's retained events over HTTP: [`Publisher::history`].

use herald_protocol::Topic;
use herald_protocol::api::TopicHistory;
use reqwest::Method;

use crate::endpoint::HubUrl;
use crate::error::HttpError;
use crate::publisher::{Idempotency, Publisher};

impl Publisher {
    /// The retained events of `topic` with seq > `since`, oldest first, at
    /// most `limit` of them (the hub's default without one), with the
    /// topic's epoch and latest seq (`GET /api/v1/topics/{topic}/events`;
    /// a hub with `--api-keys` wants the `admin` scope).
    pub async fn history(
        &self,
        topic: &Topic,
        since: u64,
        limit: Option<usize>,
    ) -> Result<TopicHistory, HttpError> {
        let target = |hub: &HubUrl| {
            let mut url = hub.http_segments(&["api", "v1", "topics", topic.as_str(), "events"])?;
            url.query_pairs_mut()
                .append_pair("since", &since.to_string());
            if let Some(limit) = limit {
                url.query_pairs_mut()
                    .append_pair("limit", &limit.to_string());
            }
            Ok(url)
        };
        self.call(
            Method::GET,
            target,
            None::<&()>,
            self.timeout(),
            Idempotency::Idempotent,
        )
        .await
    }
}
