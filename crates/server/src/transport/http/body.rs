//! Reading request bodies and queries: an over-limit body is 413, bad JSON
//! and a well-formed body with a bad field are 400, each with the contract's
//! error code.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use herald_protocol::{
    DecodeError, ErrorCode, EventId, EventType, Label, Priority, PublishRequest, Topic,
};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// The answer to a body over `--max-body-size` (413).
pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        "request body is over the size limit (--max-body-size)",
    )
}

/// Reads a JSON body.
pub(crate) fn json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    parse(&bytes(body)?)
}

/// A body's bytes, or the answer to a body that could not be read whole.
pub(crate) fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
        }
    })
}

/// `bytes` as JSON.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()).into())
}

/// `bytes` as one event to publish, decoded in one pass, when they hold
/// a JSON object with a valid event's fields and no others; `None`
/// otherwise, and the caller decodes them through [`parse`] and
/// [`decode`], which word the error. A body taken here decodes the same
/// either way; this way skips building the body's tree first, most of
/// what reading a publish costs the hub. Unknown fields send a body the
/// long way: serde skips their values checking only their syntax, where
/// the tree refuses numbers out of range, lone surrogates, bytes that are
/// not UTF-8 and nesting past its limit.
pub(crate) fn one_event(bytes: &[u8]) -> Option<PublishRequest> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        // serde would also take a struct as an array of its fields in order.
        return None;
    }
    serde_json::from_slice::<KnownFields>(bytes)
        .ok()
        .map(PublishRequest::from)
}

/// [`PublishRequest`]'s fields, and no others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownFields {
    topic: Topic,
    event_type: EventType,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    key: Option<Label>,
    #[serde(default)]
    source: Option<Label>,
    #[serde(default)]
    id: Option<EventId>,
    #[serde(default)]
    timestamp: Option<u64>,
}

impl From<KnownFields> for PublishRequest {
    fn from(fields: KnownFields) -> PublishRequest {
        PublishRequest {
            topic: fields.topic,
            event_type: fields.event_type,
            data: fields.data,
            priority: fields.priority,
            key: fields.key,
            source: fields.source,
            id: fields.id,
            timestamp: fields.timestamp,
        }
    }
}

/// A JSON object as `T`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    // serde would also take a struct as an array of its fields in order.
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "expected a JSON object with named fields",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        // Named by its path (`step_result.step: invalid type …`): serde's
        // own message does not say which field.
        let path = e.path().to_string();
        let message = DecodeError::from_json(e.inner()).to_string();
        let message = if path == "." || message.starts_with(&path) {
            message
        } else {
            format!("{path}: {message}")
        };
        // A well-formed body with a bad field is `invalid_request`, whatever the field.
        ApiError::new(ErrorCode::InvalidRequest, message)
    })
}

/// A query string as `T`.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))
}

/// A query string as `T`, extracted: a malformed one is refused as
/// `invalid_request` in the API's JSON error shape (axum's own `Query`
/// answers in plain text).
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        query(Query::<T>::from_request_parts(parts, state).await).map(Params)
    }
}

/// A query string switch: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`
/// (any case), as the environment's switches take; absent is `false`.
pub(crate) fn switch<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(deserializer)?;
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "{other:?} is not a switch: true or false, 1 or 0, yes or no, on or off"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn through_the_tree(body: &str) -> Result<PublishRequest, ApiError> {
        decode(parse(body.as_bytes())?)
    }

    #[test]
    fn a_valid_event_decodes_in_one_pass_as_it_does_through_its_tree() {
        let body = r#"
            {"topic": "run:1", "event_type": "step.completed", "priority": "high",
             "id": "e-1", "key": "step-3", "source": "worker-2", "timestamp": 1700000000000,
             "data": {"n": 1, "big": 18446744073709551616, "list": [1.5, null, "x\u00e9"]}}"#;
        let one_pass = one_event(body.as_bytes()).expect("decoded in one pass");
        let tree = through_the_tree(body).expect("decoded through the tree");
        assert_eq!(one_pass, tree);
    }

    #[test]
    fn every_field_an_event_has_is_taken_in_one_pass() {
        let mut request = PublishRequest::new(
            Topic::parse("run:1").unwrap(),
            EventType::StepCompleted,
            json!({"n": 1}),
        );
        request.priority = Priority::High;
        request.key = Some("k".parse().unwrap());
        request.source = Some("s".parse().unwrap());
        request.id = Some("e-1".parse().unwrap());
        request.timestamp = Some(1);
        let body = serde_json::to_vec(&request).unwrap();
        assert_eq!(one_event(&body), Some(request));
    }

    #[test]
    fn a_body_the_tree_reads_otherwise_is_left_to_the_tree() {
        let event = r#""topic": "run:1", "event_type": "step.completed""#;
        let bodies = [
            // serde would take a struct's fields in order from an array.
            r#"["run:1", "step.completed"]"#.to_owned(),
            // A tree keeps the last of a field named twice; serde refuses it.
            format!(r#"{{{event}, "topic": "run:2"}}"#),
            format!(r#"{{{event}}} trailing"#),
            r#"{"topic": "run:1", "event_type": 7}"#.to_owned(),
            String::new(),
            // Unknown fields, whose values serde would skip checking only
            // their syntax.
            format!(r#"{{{event}, "extra": 1}}"#),
            format!(r#"{{{event}, "extra": 1e400}}"#),
            format!(r#"{{{event}, "extra": "\ud800"}}"#),
        ];
        for body in &bodies {
            assert!(
                one_event(body.as_bytes()).is_none(),
                "{body:?} was decoded in one pass"
            );
        }
        let twice = through_the_tree(&bodies[1]).expect("the tree keeps the last");
        assert_eq!(twice.topic.as_str(), "run:2");
        assert!(through_the_tree(&bodies[5]).is_ok());
        for refused in &bodies[6..] {
            let error = through_the_tree(refused).expect_err("not JSON");
            assert_eq!(error.code, ErrorCode::InvalidJson, "{refused}");
        }
    }
}
