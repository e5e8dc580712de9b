//! Reading request bodies and queries: an over-limit body is 413, bad JSON
//! and a well-formed body with a bad field are 400, each with the contract's
//! error code.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use herald_protocol::{DecodeError, ErrorCode};
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

/// A JSON object body as `T`: [`json`], then [`decode`].
pub(crate) fn object<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = bytes(body)?;
    match straight(&bytes) {
        Some(value) => Ok(value),
        None => decode(parse(&bytes)?),
    }
}

/// `bytes` as `T` in one pass, when they hold one JSON object that is a
/// valid `T`; `None` otherwise, and the caller decodes them through
/// [`parse`] and [`decode`], which word the error. A valid body decodes
/// the same either way; this way skips building the body's tree first,
/// which is most of what reading a publish costs the hub.
pub(crate) fn straight<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        // serde would also take a struct as an array of its fields in order.
        return None;
    }
    serde_json::from_slice(bytes).ok()
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
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
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
    use herald_protocol::PublishRequest;

    use super::*;

    fn through_the_tree(body: &str) -> Result<PublishRequest, ApiError> {
        decode(parse(body.as_bytes())?)
    }

    #[test]
    fn a_valid_object_decodes_in_one_pass_as_it_does_through_its_tree() {
        let body = r#"
            {"topic": "run:1", "event_type": "step.completed", "priority": "high",
             "id": "e-1", "key": "step-3", "timestamp": 1700000000000,
             "data": {"n": 1, "big": 18446744073709551616, "list": [1.5, null, "x"]}}"#;
        let straight: PublishRequest = straight(body.as_bytes()).expect("decoded in one pass");
        let tree = through_the_tree(body).expect("decoded through the tree");
        assert_eq!(straight, tree);
    }

    #[test]
    fn a_body_the_tree_reads_otherwise_is_left_to_the_tree() {
        let bodies = [
            // serde would take a struct's fields in order from an array.
            r#"["run:1", "step.completed"]"#,
            // A tree keeps the last of a field named twice; serde refuses it.
            r#"{"topic": "run:1", "topic": "run:2", "event_type": "step.completed"}"#,
            r#"{"topic": "run:1", "event_type": "step.completed"} trailing"#,
            r#"{"topic": "run:1", "event_type": 7}"#,
            "",
        ];
        for body in bodies {
            assert!(
                straight::<PublishRequest>(body.as_bytes()).is_none(),
                "{body:?} was decoded in one pass"
            );
        }
        let twice = through_the_tree(bodies[1]).expect("the tree keeps the last");
        assert_eq!(twice.topic.as_str(), "run:2");
    }
}
