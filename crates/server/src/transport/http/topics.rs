//! The topics this hub holds: `GET /api/v1/topics` lists them (seq, epoch,
//! retained events, snapshot keys, this node's subscribers, last event), and
//! `GET /api/v1/topics/{topic}/snapshot` answers a topic's keyed snapshot.
//! Both need the `admin` scope, like the rest of the admin API.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use herald_protocol::api::{LastEvent, TopicList, TopicSummary};
use herald_protocol::frame::Snapshot;
use herald_protocol::{ErrorCode, EventFilter, Topic, TopicPattern};
use serde::Deserialize;

use super::body::query;
use super::error::ApiError;
use crate::core::broker::{TopicListing, TopicOrder};
use crate::core::hub::Hub;

/// How many topics one answer lists unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 1000;
/// The most topics one answer lists.
const MAX_LIMIT: usize = 10_000;

/// Query of `GET /api/v1/topics`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// At most this many (default 1000, at most 10,000).
    limit: Option<usize>,
    /// Only the topics under this topic or pattern (`run:*`).
    pattern: Option<String>,
    /// `name` (default) or `recent`: the newest latest event first.
    order: Option<ListOrder>,
}

// `order` of `GET /api/v1/topics` (a plain comment: the parameter's own
// description says what each means, and a doc comment would repeat it in
// the OpenAPI document).
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ListOrder {
    Name,
    Recent,
}

/// `GET /api/v1/topics?limit=N&pattern=P&order=name|recent`: the topics
/// whose streams the hub holds (under `pattern`), in topic order, or the
/// most recently published to first.
#[utoipa::path(
    get,
    path = "/api/v1/topics",
    operation_id = "list_topics",
    tag = "admin",
    summary = "Every topic the hub holds: position, retained events, snapshot keys, subscribers, last event",
    params(
        ("limit" = Option<usize>, Query, description = "At most this many (default 1000, at most 10,000); `truncated` says when more exist"),
        ("pattern" = Option<String>, Query, description = "Only the topics under this topic or pattern, e.g. `run:*` (default `*`: all)"),
        ("order" = inline(Option<ListOrder>), Query, description = "`name` (default): in topic order; `recent`: the topic whose latest event is newest first, ties in topic order"),
    ),
    responses(
        (status = 200, description = "The topics, in the order asked", body = ref("#/components/schemas/TopicList")),
        (status = "4XX", description = "Refused: a bad `limit` or `order` (400 `invalid_request`), a bad `pattern` (400 `invalid_topic`), or the API key (401, 403)", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The shared store is unreachable", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn list(
    State(hub): State<Hub>,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TopicList>, ApiError> {
    let list = query(list)?;
    let pattern = match &list.pattern {
        Some(pattern) => TopicPattern::parse(pattern)
            .map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?,
        None => TopicPattern::All,
    };
    let listing = TopicListing {
        pattern,
        order: match list.order {
            None | Some(ListOrder::Name) => TopicOrder::Name,
            Some(ListOrder::Recent) => TopicOrder::Recent,
        },
        limit: list.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
    };
    let (topics, truncated) = hub
        .broker()
        .topics(&listing)
        .await
        .map_err(|e| ApiError::from(&e))?;
    let subscribers = hub.subscriptions().counts();
    let topics = topics
        .into_iter()
        .map(|stats| TopicSummary {
            subscribers: subscribers.get(stats.topic.as_str()).copied().unwrap_or(0),
            topic: stats.topic,
            epoch: stats.position.epoch,
            seq: stats.position.seq,
            retained: stats.retained,
            retained_bytes: stats.retained_bytes,
            snapshot_keys: stats.snapshot_keys,
            last_event: stats
                .last_event
                .map(|(seq, event_type, timestamp)| LastEvent {
                    seq,
                    event_type,
                    timestamp,
                }),
        })
        .collect();
    Ok(Json(TopicList { topics, truncated }))
}

/// `GET /api/v1/topics/{topic}/snapshot`: the latest event per key, with
/// the epoch and seq it is consistent with.
#[utoipa::path(
    get,
    path = "/api/v1/topics/{topic}/snapshot",
    operation_id = "topic_snapshot",
    tag = "admin",
    summary = "A topic's keyed snapshot: the latest event per key, at an epoch and seq",
    params(("topic" = String, Path, description = "An exact topic, `kind` or `kind:id`")),
    responses(
        (status = 200, description = "The snapshot frame", body = ref("#/components/schemas/Snapshot")),
        (status = "4XX", description = "Refused: invalid_topic, or the API key (401, 403)", body = ref("#/components/schemas/ApiError")),
        (status = 503, description = "The shared store is unreachable", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["admin"]))
)]
pub(super) async fn snapshot(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let topic =
        Topic::parse(&topic).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let snapshot = hub
        .broker()
        .snapshot(&topic, &EventFilter::default())
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok(Json(snapshot))
}
