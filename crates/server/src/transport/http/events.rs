//! Publishing over HTTP: events (one or a batch), broadcasts to everyone,
//! messages to one user's connections; each under the producer's publish
//! rate limit (`--publish-rate-limit`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use herald_protocol::{
    ErrorCode, EventId, EventType, Label, Priority, PublishReceipt, PublishRequest, Topic,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Producer;
use super::body::{bytes, decode, json, one_event, parse};
use super::error::ApiError;
use crate::core::broker::{Audience, Content};
use crate::core::hub::Hub;
use crate::core::publish::{PublishError, PublishOptions};
use crate::operations::limits::Admission;

/// The answer of `POST /api/v1/events`: a receipt for one event, an array
/// of receipts (in order) for a batch.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub(super) enum PublishAnswer {
    One(PublishReceipt),
    Batch(Vec<PublishReceipt>),
}

/// `POST /api/v1/events`: one event (object) or a batch (array), validated
/// whole before anything is published.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    summary = "Publish one event or a batch",
    description = "One event (an object) is answered by its receipt; a batch (an array) by an \
        array of receipts in the same order. A batch is validated whole first: one bad event is \
        400 with its `index`, and nothing is published. The same `id` again while retained \
        answers the first receipt; with other content, 409.",
    request_body = ref("#/components/schemas/PublishBody"),
    responses(
        (status = 200, description = "Stored and delivered", body = ref("#/components/schemas/PublishAnswer")),
        (status = "4XX", description = "Refused: invalid_json, invalid_request (any bad field, the topic included, naming it; with `index` in a batch), unauthorized, forbidden, conflict, too_large", body = ref("#/components/schemas/ApiError")),
        (status = 429, description = "Over the publish rate limit (`--publish-rate-limit`): try again after `Retry-After`", body = ref("#/components/schemas/ApiError")),
        (status = "5XX", description = "The store failed (500) or is unavailable (503 with `Retry-After`)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]))
)]
pub(super) async fn publish_events(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishAnswer>, ApiError> {
    let body = bytes(body)?;
    if let Some(request) = one_event(&body) {
        limit(&hub, &producer, 1)?;
        let receipt = publish(&hub, request, Audience::Subscribers).await?;
        return Ok(Json(PublishAnswer::One(receipt)));
    }
    match parse(&body)? {
        Value::Array(items) => {
            whole_in_a_queue(&hub, items.len())?;
            limit(&hub, &producer, items.len())?;
            let mut requests = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                requests.push(decode::<PublishRequest>(item).map_err(|e| e.at(index))?);
            }
            conflict_within(&requests)?;
            let ids: Vec<(Topic, Option<EventId>)> = requests
                .iter()
                .map(|r| (r.topic.clone(), r.id.clone()))
                .collect();
            let published = hub
                .publish(requests, PublishOptions::default())
                .await
                .map_err(|error| {
                    // A conflict names the event it is about.
                    let index = match &error {
                        PublishError::Conflict { topic, id } => ids.iter().position(|(t, i)| {
                            t == topic && i.as_ref().is_some_and(|i| i.as_str() == id)
                        }),
                        _ => None,
                    };
                    let error = refused(&error);
                    match index {
                        Some(index) => error.at(index),
                        None => error,
                    }
                })?;
            let receipts: Vec<PublishReceipt> = published.into_iter().map(|p| p.receipt).collect();
            Ok(Json(PublishAnswer::Batch(receipts)))
        }
        value @ Value::Object(_) => {
            limit(&hub, &producer, 1)?;
            let request = decode::<PublishRequest>(value)?;
            let receipt = publish(&hub, request, Audience::Subscribers).await?;
            Ok(Json(PublishAnswer::One(receipt)))
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "body must be an event object or an array of events",
        )),
    }
}

/// Refuses (409 `conflict`, with its `index`) the first event of a batch
/// that reuses the id of an earlier one on the same topic with other
/// content, before anything is published: the hub would store the first and
/// refuse the second, and a producer resending from the index would publish
/// what lies between again.
fn conflict_within(requests: &[PublishRequest]) -> Result<(), ApiError> {
    let mut seen: HashMap<(&Topic, &EventId), &PublishRequest> = HashMap::new();
    for (index, request) in requests.iter().enumerate() {
        let Some(id) = &request.id else { continue };
        match seen.entry((&request.topic, id)) {
            Entry::Vacant(first) => {
                first.insert(request);
            }
            Entry::Occupied(first)
                if Content::of_request(first.get()) == Content::of_request(request) => {}
            Entry::Occupied(_) => {
                let refused = ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "event id {:?} is used twice on {} with other content in this batch; \
                         nothing was published",
                        id.as_str(),
                        request.topic
                    ),
                );
                return Err(refused.at(index));
            }
        }
    }
    Ok(())
}

/// Refuses (413 `too_large`) a batch of more events than a connection's
/// queue holds (`--queue-size`): its events reach every subscriber at once,
/// so a subscriber reading as fast as it can would still be sent `shed`
/// gaps for its oldest events, or be closed 1013 for `high` ones.
fn whole_in_a_queue(hub: &Hub, events: usize) -> Result<(), ApiError> {
    let most = hub.config().queue_size;
    if events <= most {
        return Ok(());
    }
    let refused = ApiError::new(
        ErrorCode::TooLarge,
        format!(
            "a batch of {events} events is more than a subscriber's queue holds \
             (--queue-size {most}): split it"
        ),
    );
    Err(refused)
}

/// Applies the producer's publish rate limit (`--publish-rate-limit`): 429
/// with `Retry-After` (whole seconds, rounded up) over the rate; a batch
/// larger than the limit's burst can never pass, and is refused as
/// `too_large` (413), which no client retries.
pub(crate) fn limit(hub: &Hub, producer: &Producer, events: usize) -> Result<(), ApiError> {
    let rate = hub.config().publish_rate_limit;
    let refused = match hub.publish_limiter().admit(&producer.0, events) {
        Admission::Now => return Ok(()),
        Admission::Later(wait) => ApiError {
            retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("publish rate limit: at most {rate} events a second"),
            )
        },
        Admission::Never => ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "a batch of {events} events is larger than the publish rate limit's burst \
                 ({} events): split it",
                u64::from(rate) * 2
            ),
        ),
    };
    Err(refused)
}

/// A failed publish as the producer sees it (and counted): 503 with
/// `Retry-After` when trying again later may work.
fn refused(error: &PublishError) -> ApiError {
    if error.is_transient() {
        ApiError::unavailable(error.to_string())
    } else {
        ApiError::new(error.code(), error.to_string())
    }
}

async fn publish(
    hub: &Hub,
    request: PublishRequest,
    audience: Audience,
) -> Result<PublishReceipt, ApiError> {
    hub.publish(request, PublishOptions::to(audience))
        .await
        .map(|published| published.receipt)
        .map_err(|error| refused(&error))
}

/// The body of broadcasts and user messages.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct Notice {
    event_type: EventType,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    key: Option<Label>,
    #[serde(default)]
    source: Option<Label>,
}

impl Notice {
    fn into_request(self, topic: Topic) -> PublishRequest {
        let mut request =
            PublishRequest::new(topic, self.event_type, self.data).priority(self.priority);
        request.key = self.key;
        request.source = self.source;
        request
    }
}

/// `POST /api/v1/broadcast`: on topic `global`, to every connection.
#[utoipa::path(
    post,
    path = "/api/v1/broadcast",
    tag = "events",
    summary = "Publish on `global` to every connection, subscribed or not",
    request_body = ref("#/components/schemas/Notice"),
    responses(
        (status = 200, description = "Stored and delivered", body = ref("#/components/schemas/PublishReceipt")),
        (status = "4XX", description = "Refused", body = ref("#/components/schemas/ApiError")),
        (status = 429, description = "Over the publish rate limit (`--publish-rate-limit`): try again after `Retry-After`", body = ref("#/components/schemas/ApiError")),
        (status = "5XX", description = "The store failed (500) or is unavailable (503 with `Retry-After`)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]))
)]
pub(super) async fn broadcast(
    State(hub): State<Hub>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReceipt>, ApiError> {
    limit(&hub, &producer, 1)?;
    let notice: Notice = decode(json(body)?)?;
    let request = notice.into_request(Topic::global());
    Ok(Json(publish(&hub, request, Audience::Everyone).await?))
}

/// `POST /api/v1/users/{user_id}/messages`: on `user:{user_id}`, to every
/// connection of that user.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/messages",
    tag = "events",
    summary = "Publish on `user:{user_id}` to every connection of that user, subscribed or not",
    params(("user_id" = String, Path, description = "A topic id: `[A-Za-z0-9_.@-]{1,128}`")),
    request_body = ref("#/components/schemas/Notice"),
    responses(
        (status = 200, description = "Stored and delivered", body = ref("#/components/schemas/PublishReceipt")),
        (status = "4XX", description = "Refused (invalid_topic for a bad user id)", body = ref("#/components/schemas/ApiError")),
        (status = 429, description = "Over the publish rate limit (`--publish-rate-limit`): try again after `Retry-After`", body = ref("#/components/schemas/ApiError")),
        (status = "5XX", description = "The store failed (500) or is unavailable (503 with `Retry-After`)", body = ref("#/components/schemas/ApiError")),
    ),
    security(("api_key" = ["publish"]))
)]
pub(super) async fn user_message(
    State(hub): State<Hub>,
    Path(user_id): Path<String>,
    Extension(producer): Extension<Producer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReceipt>, ApiError> {
    limit(&hub, &producer, 1)?;
    let topic =
        Topic::user(&user_id).map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
    let notice: Notice = decode(json(body)?)?;
    let request = notice.into_request(topic);
    Ok(Json(publish(&hub, request, Audience::User).await?))
}
