//! [`Publisher`]: publishes over HTTP with idempotent retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use herald_protocol::{EventId, PublishReceipt, PublishRequest};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::HubUrl;
use crate::error::{HttpError, HubError, PublishError, UrlError};
use crate::retry::RetryPolicy;
use crate::tls::ExtraRoots;

/// The longest part of an unexpected error body kept in [`HttpError::Status`].
const MAX_BODY_EXCERPT: usize = 512;

/// The largest answer read from a hub: a receipt per event of the largest
/// batch takes about 1 MiB, so an answer past this is not a hub's.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Publishes events (and asks for approvals) over the hub's HTTP API.
///
/// Every event gets a UUID v4 `id` before its first attempt unless the caller
/// set one; retries (after connection errors, timeouts, 5xx and 429) resend
/// the same `id`, which the hub de-duplicates, so a retried event is stored
/// and delivered once. That id lives inside one call: an application that
/// tries again itself (after an error, or its own timeout around the call)
/// must set the request's `id` first, or its retry is a new event. With
/// several nodes ([`PublisherBuilder::failover`]),
/// a retry goes to the next node. Cloning is cheap and shares the
/// connection pool.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    /// The hub's URL first, then the other nodes'.
    hubs: Arc<[HubUrl]>,
    /// Which of `hubs` requests go to now.
    current: Arc<AtomicUsize>,
    retry: RetryPolicy,
    timeout: Duration,
    token: Option<String>,
}

/// Options of a [`Publisher`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    urls: Vec<String>,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
    roots: ExtraRoots,
}

impl PublisherBuilder {
    /// How failed attempts are retried. Default: [`RetryPolicy::default`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The time limit of one attempt (a long-poll adds its wait). Default: 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time limit of opening a connection. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// An API key or token sent as `Authorization: Bearer …`. Default: none.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also trust the certificates of this PEM text (one or several
    /// `CERTIFICATE` blocks) for an `https://` hub: a private CA, or a
    /// proxy's self-signed certificate. Checked by [`build`](Self::build).
    /// Default: the Mozilla roots only (see [`crate::tls`]).
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Another node of the same hub (several nodes on one Redis): an attempt
    /// that fails for want of a node (a connection error, a timeout, a 5xx)
    /// is retried on the next URL, in turn. Default: none.
    pub fn failover(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Builds the publisher (no request is made yet).
    pub fn build(self) -> Result<Publisher, HttpError> {
        let hubs = self
            .urls
            .iter()
            .map(|url| HubUrl::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .use_preconfigured_tls(self.roots.client_config()?)
            .build()
            .map_err(HttpError::Client)?;
        Ok(Publisher {
            http,
            hubs: hubs.into(),
            current: Arc::new(AtomicUsize::new(0)),
            retry: self.retry,
            timeout: self.timeout,
            token: self.token,
        })
    }
}

/// Whether a request may be sent again after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Retries are harmless (reads, and events with an `id`).
    Idempotent,
    /// Retried only when the connection could not even be opened.
    Once,
}

impl Publisher {
    /// A publisher for the hub at `url` (e.g. `http://127.0.0.1:8765`) with
    /// the default options.
    pub fn new(url: &str) -> Result<Publisher, HttpError> {
        Publisher::builder(url).build()
    }

    /// Options for a publisher for the hub at `url`.
    pub fn builder(url: impl Into<String>) -> PublisherBuilder {
        PublisherBuilder {
            urls: vec![url.into()],
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            token: None,
            roots: ExtraRoots::default(),
        }
    }

    /// The base URL of the node requests go to now.
    pub fn url(&self) -> &HubUrl {
        &self.hubs[self.current.load(Relaxed) % self.hubs.len()]
    }

    /// Requests go to the next node from now on.
    fn fail_over(&self) {
        if self.hubs.len() > 1 {
            self.current.fetch_add(1, Relaxed);
        }
    }

    /// Publishes one event (`POST /api/v1/events`) and returns its receipt.
    ///
    /// An event without an `id` is given one, reused by this call's own
    /// retries. To try again after an error whose outcome is unknown (the
    /// hub may have stored it: a transport failure, a 5xx), give the event
    /// an id first ([`assign_id`]) and publish it again under that id: the
    /// hub stores it at most once.
    pub async fn publish(
        &self,
        mut request: PublishRequest,
    ) -> Result<PublishReceipt, PublishError> {
        assign_id(&mut request);
        let receipt = self
            .call(
                Method::POST,
                |hub| hub.http("api/v1/events"),
                Some(&request),
                self.timeout,
                Idempotency::Idempotent,
            )
            .await?;
        check_receipt(&request, &receipt)?;
        Ok(receipt)
    }

    /// Publishes a batch in one request: the hub validates it whole (one
    /// invalid event: nothing is published, and [`HubError::index`] names
    /// it) and answers the receipts in the same order. An event whose id was
    /// already stored with other content is answered `409 conflict` with its
    /// index, once the events before it were published: to finish such a
    /// batch, or one whose outcome is unknown, without storing an event
    /// twice, give the events ids first ([`assign_id`]) and send them again
    /// under those ids (those stored get their first receipts).
    /// Events without an id are given one here, which the caller does not
    /// see.
    pub async fn publish_batch(
        &self,
        mut requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishReceipt>, PublishError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        requests.iter_mut().for_each(assign_id);
        self.publish_identified(&requests).await
    }

    /// [`publish_batch`](Publisher::publish_batch) of events that already
    /// have their ids (`requests` is not empty).
    pub(crate) async fn publish_identified(
        &self,
        requests: &[PublishRequest],
    ) -> Result<Vec<PublishReceipt>, PublishError> {
        let receipts: Vec<PublishReceipt> = self
            .call(
                Method::POST,
                |hub| hub.http("api/v1/events"),
                Some(requests),
                self.timeout,
                Idempotency::Idempotent,
            )
            .await?;
        if receipts.len() != requests.len() {
            return Err(PublishError::ReceiptCount {
                sent: requests.len(),
                got: receipts.len(),
            });
        }
        for (request, receipt) in requests.iter().zip(&receipts) {
            check_receipt(request, receipt)?;
        }
        Ok(receipts)
    }

    /// One JSON call with retries, to the URL `target` names on the node of
    /// each attempt; `body` is serialized once.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        target: impl Fn(&HubUrl) -> Result<Url, UrlError>,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
        idempotency: Idempotency,
    ) -> Result<T, HttpError> {
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(HttpError::Decode)?),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let may_retry = attempt < self.retry.max_attempts.max(1);
            let url = target(self.url())?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .timeout(timeout);
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let answer = async {
                let mut response = request.send().await?;
                let status = response.status();
                // `None`: the answer ran past `MAX_ANSWER_BYTES`.
                let mut bytes = Some(Vec::new());
                while let Some(chunk) = response.chunk().await? {
                    let Some(read) = &mut bytes else { break };
                    if read.len() + chunk.len() > MAX_ANSWER_BYTES {
                        bytes = None;
                        break;
                    }
                    read.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            match answer {
                Ok((_, None)) => {
                    return Err(HttpError::AnswerTooLarge {
                        limit: MAX_ANSWER_BYTES,
                    });
                }
                Ok((status, Some(bytes))) if status.is_success() => {
                    return serde_json::from_slice(&bytes).map_err(HttpError::Decode);
                }
                Ok((status, Some(bytes))) => {
                    let retryable =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if retryable && may_retry && idempotency == Idempotency::Idempotent {
                        tracing::debug!(%url, %status, attempt, "retrying after an error status");
                        if status.is_server_error() {
                            self.fail_over();
                        }
                    } else {
                        return Err(status_error(status, &bytes, attempt));
                    }
                }
                Err(error) => {
                    // A certificate that is not trusted stays so: say it now.
                    let retryable = !is_tls_refusal(&error)
                        && match idempotency {
                            Idempotency::Idempotent => !error.is_builder(),
                            Idempotency::Once => error.is_connect(),
                        };
                    if !(retryable && may_retry) {
                        return Err(HttpError::Transport {
                            attempts: attempt,
                            source: error,
                        });
                    }
                    tracing::debug!(%url, %error, attempt, "retrying after a transport error");
                    self.fail_over();
                }
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }

    /// The retry policy (the approval long-poll reuses it between polls).
    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The time limit of one attempt.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Gives `request` a UUID v4 `id` unless it has one, so that publishing it
/// again (a retry) stores it at most once.
pub fn assign_id(request: &mut PublishRequest) {
    if request.id.is_none() {
        // A UUID is always a valid id (36 ASCII bytes).
        request.id = EventId::new(uuid::Uuid::new_v4().to_string()).ok();
    }
}

fn status_error(status: StatusCode, bytes: &[u8], attempts: u32) -> HttpError {
    let error = serde_json::from_slice::<HubError>(bytes).ok();
    let body = if error.is_some() {
        String::new()
    } else {
        let text = String::from_utf8_lossy(bytes);
        let mut end = text.len().min(MAX_BODY_EXCERPT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].trim().to_owned()
    };
    HttpError::Status {
        status: status.as_u16(),
        error,
        body,
        attempts,
    }
}

/// Whether TLS refused the hub (its certificate, or the handshake): the next
/// attempt would be refused the same way.
fn is_tls_refusal(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        // rustls's error arrives wrapped in `io::Error`s, whose `source`
        // skips the error each wraps.
        let mut wrapped = cause;
        while let Some(inner) = wrapped
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            wrapped = inner;
        }
        if wrapped.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether `receipt` names the event of `request` (its topic, and its id):
/// a receipt for another event would report a publish that did not happen.
fn check_receipt(request: &PublishRequest, receipt: &PublishReceipt) -> Result<(), PublishError> {
    let same_id = request.id.as_ref().is_none_or(|id| *id == receipt.id);
    if receipt.topic == request.topic && same_id {
        return Ok(());
    }
    let id = request.id.as_ref().map_or("(no id)", |id| id.as_str());
    Err(PublishError::ReceiptMismatch {
        sent: format!("{id} on {}", request.topic),
        receipt: format!("{} on {}", receipt.id, receipt.topic),
    })
}
