//! Error codes, decode errors and close codes: everything that tells a peer
//! what went wrong and whether to reconnect.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The closed set of error codes in `error` frames and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, TS, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body is not valid JSON.
    InvalidJson,
    /// The frame's `action` is not one the hub knows.
    UnknownAction,
    /// A well-formed frame with a bad or missing field.
    InvalidRequest,
    /// A topic or pattern that breaks the grammar.
    InvalidTopic,
    /// No credentials, or bad ones.
    Unauthorized,
    /// Credentials that do not allow this.
    Forbidden,
    /// Too many frames or publishes.
    RateLimited,
    /// Over a size limit.
    TooLarge,
    /// No such connection, topic, approval, ….
    NotFound,
    /// The request conflicts with the current state (e.g. an approval already resolved).
    Conflict,
    /// The hub failed; not the client's fault. A code this version does not
    /// know (a newer hub's) reads as this one, so the frame that carries it
    /// still answers its request instead of being dropped.
    #[serde(other)]
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidTopic,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::UnknownAction
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidTopic => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame or body could not be decoded. Each maps to one [`ErrorCode`],
/// and its message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidTopic(String),
}

impl DecodeError {
    /// The code an `error` frame or HTTP body carries for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidJson(_) => ErrorCode::InvalidJson,
            DecodeError::UnknownAction(_) => ErrorCode::UnknownAction,
            DecodeError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            DecodeError::InvalidTopic(_) => ErrorCode::InvalidTopic,
        }
    }

    /// Classifies a serde_json error: syntax problems are `invalid_json`,
    /// anything about the data's shape is `invalid_request` (or `invalid_topic`
    /// when a topic broke the grammar).
    pub fn from_json(error: &serde_json::Error) -> DecodeError {
        use serde_json::error::Category;
        match error.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                DecodeError::InvalidJson(error.to_string())
            }
            Category::Data => {
                let message = error.to_string();
                if message.starts_with("topic ") || message.starts_with("pattern ") {
                    DecodeError::InvalidTopic(message)
                } else {
                    DecodeError::InvalidRequest(message)
                }
            }
        }
    }
}

/// A WebSocket close code, and what a client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseReason(pub u16);

impl CloseReason {
    /// Normal closure.
    pub const NORMAL: CloseReason = CloseReason(1000);
    /// The hub is shutting down: reconnect.
    pub const GOING_AWAY: CloseReason = CloseReason(1001);
    /// The peer broke the WebSocket protocol (RFC 6455 §7.4.1): a client
    /// bug, so reconnecting would only repeat it.
    pub const PROTOCOL_ERROR: CloseReason = CloseReason(1002);
    /// A text message that is not UTF-8 (RFC 6455 §8.1): a client bug.
    pub const INVALID_PAYLOAD: CloseReason = CloseReason(1007);
    /// Policy violation: do not reconnect blindly.
    pub const POLICY_VIOLATION: CloseReason = CloseReason(1008);
    /// A frame over the size limit: do not reconnect blindly.
    pub const TOO_BIG: CloseReason = CloseReason(1009);
    /// The hub failed: reconnect.
    pub const INTERNAL_ERROR: CloseReason = CloseReason(1011);
    /// Overloaded, or too slow a consumer: reconnect with backoff and replay.
    pub const TRY_AGAIN_LATER: CloseReason = CloseReason(1013);
    /// The heartbeat went unanswered: reconnect.
    pub const HEARTBEAT_TIMEOUT: CloseReason = CloseReason(4000);
    /// The token expired: reconnect with a fresh token.
    pub const TOKEN_EXPIRED: CloseReason = CloseReason(4001);
    /// Too many frames for too long: reconnect later.
    pub const RATE_LIMITED: CloseReason = CloseReason(4029);
    /// An admin disconnected the connection: terminal.
    pub const DISCONNECTED_BY_ADMIN: CloseReason = CloseReason(4500);
    /// Not allowed: terminal.
    pub const FORBIDDEN: CloseReason = CloseReason(4503);

    /// What the code says, for people: `None` for codes the protocol does
    /// not name.
    pub fn meaning(self) -> Option<&'static str> {
        Some(match self.0 {
            1000 => "a normal close",
            1001 => "the hub is going away",
            1002 => "the client broke the WebSocket protocol",
            1006 => "the connection dropped without a close frame",
            1007 => "the client sent text that is not UTF-8",
            1008 => "a policy violation",
            1009 => "a frame over the hub's size limit",
            1011 => "the hub failed",
            1013 => "try again later",
            4000 => "heartbeat timeout",
            4001 => "the token expired",
            4029 => "too many frames",
            4500 => "disconnected by an admin",
            4503 => "forbidden",
            _ => return None,
        })
    }

    /// Whether a client should reconnect (with backoff) after this close.
    pub fn should_reconnect(self) -> bool {
        match self.0 {
            1000 | 1002 | 1007 | 1008 | 1009 => false,
            4000..=4499 => true,
            4500..=4999 => false,
            // 1001, 1006 (abnormal), 1011, 1012, 1013 and anything unknown: the
            // network or the hub had a problem, not the client.
            _ => true,
        }
    }
}

impl std::fmt::Display for CloseReason {
    /// `4500 (disconnected by an admin)`, or the bare code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.meaning() {
            Some(meaning) => write!(f, "{} ({meaning})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_code_reads_with_its_meaning_when_the_protocol_names_it() {
        assert_eq!(
            CloseReason::DISCONNECTED_BY_ADMIN.to_string(),
            "4500 (disconnected by an admin)"
        );
        assert_eq!(
            CloseReason::INVALID_PAYLOAD.to_string(),
            "1007 (the client sent text that is not UTF-8)"
        );
        assert_eq!(CloseReason(3000).to_string(), "3000");
    }
}
