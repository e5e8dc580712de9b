//! The one error type of the HTTP API: a status and a JSON body
//! `{code, message}` (plus `index` for a bad event in a batch).

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::{DecodeError, ErrorCode};
use schemars::JsonSchema;
use serde::Serialize;

/// An HTTP API error, rendered as `{code, message[, index]}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// In a batch, the index of the event refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Seconds after which to try again, sent as `Retry-After`: over a rate
    /// limit (429), or while the hub cannot do it at all (its store is
    /// unreachable: 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            index: None,
            retry_after: None,
        }
    }

    /// The hub cannot do it now (its store is unreachable): 503, to be tried
    /// again after `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_S),
            ..ApiError::new(ErrorCode::Internal, message)
        }
    }

    pub fn at(mut self, index: usize) -> ApiError {
        self.index = Some(index);
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, what)
    }
}

impl From<&crate::core::broker::BrokerError> for ApiError {
    fn from(error: &crate::core::broker::BrokerError) -> Self {
        match error {
            crate::core::broker::BrokerError::Unavailable(_) => {
                ApiError::unavailable(error.to_string())
            }
            _ => ApiError::new(ErrorCode::Internal, error.to_string()),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        ApiError::new(error.code(), error.to_string())
    }
}

/// What `Retry-After` says while the store is unreachable.
const RETRY_AFTER_S: u64 = 1;

/// The code of an error answer, carried on the response for the router's
/// middleware to count (`herald_errors_total`) once, wherever it was made.
#[derive(Debug, Clone, Copy)]
pub struct Reported(pub ErrorCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match (self.retry_after, self.code) {
            (Some(_), ErrorCode::Internal) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let code = self.code;
        let mut response = match self.retry_after {
            Some(seconds) => {
                let header = (header::RETRY_AFTER, seconds.to_string());
                (status, [header], Json(self)).into_response()
            }
            None => (status, Json(self)).into_response(),
        };
        response.extensions_mut().insert(Reported(code));
        response
    }
}
