//! The one error type of the HTTP API: a status and a JSON body
//! `{code, message}` (plus `index` for a bad event in a batch).

use axum::Json;
use axum::http::StatusCode;
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
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            index: None,
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

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        ApiError::new(error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}
