//! The errors of each operation: [`HttpError`] (one HTTP exchange with the
//! hub, after retries), [`PublishError`], [`ApprovalError`] and
//! [`SubscribeError`]; and [`HubError`], the hub's `{code, message}` body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::session::SessionError;
use herald_protocol::{CallbackId, ErrorCode};
use serde::Deserialize;

use crate::tls::TlsError;

/// A URL that cannot name a hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub url {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

/// The body of a hub's HTTP error: `{code, message}`, plus `index` (the
/// offending event of a batch).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HubError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub index: Option<usize>,
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(index) = self.index {
            write!(f, " (event {index} of the batch)")?;
        }
        Ok(())
    }
}

/// One HTTP exchange with the hub failed, after the retries it was allowed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL does not name a hub endpoint.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The extra trusted certificates were not accepted.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No answer: connection refused or reset, or a timeout, on every
    /// attempt. The last attempt's error is the source (its chain ends at
    /// the cause, e.g. "Connection refused").
    #[error(
        "could not reach the hub after {attempts} attempt(s) ({})",
        transport_failure(source)
    )]
    Transport {
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// The hub answered with an error status (after retries, for 5xx and 429).
    #[error("the hub answered HTTP {status}{}", describe(error.as_ref(), body))]
    Status {
        status: u16,
        /// The hub's `{code, message}` when the body had that shape.
        error: Option<HubError>,
        /// The start of the body when it did not.
        body: String,
        attempts: u32,
    },
    /// The answer's body ran past the most a hub's answer can take (16 MiB):
    /// it was not read further.
    #[error("the hub's answer is larger than {limit} bytes")]
    AnswerTooLarge { limit: usize },
    /// A success status whose body is not what the contract says.
    #[error("the hub's answer does not decode: {0}")]
    Decode(#[source] serde_json::Error),
}

/// What kind of transport failure `error` is, in a few words (its chain
/// says the rest).
fn transport_failure(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    }
}

fn describe(error: Option<&HubError>, body: &str) -> String {
    match error {
        Some(error) => format!(": {error}"),
        None if body.is_empty() => String::new(),
        None => format!(": {body}"),
    }
}

impl HttpError {
    /// The HTTP status, when the hub answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The hub's `{code, message}`, when it sent one.
    pub fn hub_error(&self) -> Option<&HubError> {
        match self {
            HttpError::Status { error, .. } => error.as_ref(),
            _ => None,
        }
    }
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The request (or the batch) failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The batch a queued event was flushed in failed (shared by every event
    /// of that batch).
    #[error("the batch this event was flushed in failed: {0}")]
    Batch(Arc<HttpError>),
    /// The hub answered a batch with another number of receipts than events.
    #[error("the hub answered {got} receipts for a batch of {sent} events")]
    ReceiptCount { sent: usize, got: usize },
    /// The hub answered a receipt that names another event than the one
    /// sent in its place: it would report a publish that did not happen.
    #[error("the hub answered a receipt for {receipt} to event {sent}")]
    ReceiptMismatch { sent: String, receipt: String },
    /// The batching publisher stopped before the event was sent: it was
    /// not published.
    #[error("the batching publisher has stopped")]
    Stopped,
    /// The batching publisher was dropped while a request carrying the event
    /// was under way: the hub may have stored it. Publishing it again under
    /// its id ([`PendingReceipt::id`](crate::PendingReceipt::id)) stores it
    /// at most once.
    #[error(
        "the batching publisher stopped while the event was being sent: it may have been published"
    )]
    StoppedWhileSending,
}

impl PublishError {
    /// The hub's `{code, message}`, when it sent one.
    pub fn hub_error(&self) -> Option<&HubError> {
        match self {
            PublishError::Http(error) => error.hub_error(),
            PublishError::Batch(error) => error.hub_error(),
            _ => None,
        }
    }
}

/// An approval call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The hub does not know the approval (never created, or lost when a hub
    /// without a durable store restarted).
    #[error("approval {0} is unknown to the hub")]
    NotFound(CallbackId),
}

/// A subscriber could not connect, or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The URL does not name a hub.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The extra trusted certificates were not accepted.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The first connection attempt failed (later ones are retried by the session).
    #[error("could not connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The hub answered the first connection's upgrade with an HTTP error,
    /// and its message (401: no valid token; 403: an origin or topics not
    /// allowed; 503: the node is draining).
    #[error("{url} refused the connection: HTTP {status}: {message}")]
    Rejected {
        url: String,
        status: u16,
        message: String,
    },
    /// The hub closed the first connection before welcoming it (1013: over
    /// its connection limit; 4503: not allowed; 1001: shutting down).
    #[error("the hub closed the connection before welcoming it: {code} {reason}")]
    Refused { code: u16, reason: String },
    /// The first connection attempt did not open and get `welcome` in time.
    #[error("could not connect to {url} within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    /// The session refused the call (closed, or no topics).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The session closed for good (a terminal close code, exhausted
    /// attempts, or `close()`): the connection task has stopped.
    #[error("the subscriber has stopped")]
    Stopped,
}
