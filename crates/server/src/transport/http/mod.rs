//! HTTP: the router (every route, WebSocket endpoints included), who may
//! call what (API keys, origins, CORS), and the JSON API.
//!
//! # Layout
//!
//! - this module: [`router`] (the dialects' routes of `transport::compat`
//!   included), authorization and CORS.
//! - `events`: publishing (events, broadcasts, user messages), with the
//!   producers' rate limit.
//! - `approvals`: asking, long-polling, listing.
//! - `admin`: connections, topic history, status, health, metrics.
//! - `topics`: the topic list and a topic's snapshot.
//! - `console`: the console's embedded page and files, and what it asks
//!   the hub before signing in.
//! - `body`: reading JSON bodies and queries into typed requests.
//! - [`error`]: [`ApiError`], the one error type of the API.
//! - [`openapi`]: the OpenAPI 3.1 document, from the handlers and their types.

mod admin;
mod approvals;
pub(crate) mod body;
mod console;
pub mod error;
pub(crate) mod events;
pub mod openapi;
mod topics;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_protocol::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::core::hub::Hub;
use crate::operations::auth::{AuthError, Scope};
use crate::transport::compat;
use crate::transport::ws::upgrade as ws;
use error::ApiError;

/// Who published: the API key, or the remote address when no keys are configured.
#[derive(Debug, Clone)]
pub(crate) struct Producer(pub(crate) String);

/// The scopes a route takes (a key with any of them will do): `publish` for
/// events, broadcasts, user messages and approvals (creating, waiting and
/// listing them, which an operator's `admin` key may also read); `admin` for
/// the rest of the API. `/health`, `/metrics`, `/api/v1/openapi.json`, the
/// console's files and the WebSocket endpoints need no key. The dialects'
/// routes need what Herald's own need for the same operation.
fn scopes_for(method: &Method, path: &str) -> Option<&'static [Scope]> {
    const PUBLISH: &[Scope] = &[Scope::Publish];
    const ADMIN: &[Scope] = &[Scope::Admin];
    const APPROVALS_READ: &[Scope] = &[Scope::Publish, Scope::Admin];
    if let Some(dialect) = path.strip_prefix("/compat/") {
        return compat::scope_for(method, dialect).map(|scope| match scope {
            Scope::Publish => PUBLISH,
            Scope::Admin => ADMIN,
        });
    }
    let api = path.strip_prefix("/api/v1/")?;
    if api == "openapi.json" {
        return None;
    }
    let reads = method == Method::GET || method == Method::HEAD;
    // A producer's routes need `publish` whatever the method, so that a
    // method they do not take is 405 for the producer too, not "lacks the
    // admin scope".
    Some(match api.split('/').collect::<Vec<_>>().as_slice() {
        ["approvals"] | ["approvals", _] if reads => APPROVALS_READ,
        ["events" | "broadcast"] | ["users", _, "messages"] | ["approvals"] | ["approvals", _] => {
            PUBLISH
        }
        _ => ADMIN,
    })
}

async fn authorize(State(hub): State<Hub>, mut request: Request, next: Next) -> Response {
    let auth = &hub.config().auth;
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default();
    let mut producer = Producer(remote);
    if let Some(error) = foreign_browser_request(&hub, &request) {
        hub.metrics().error(error.code);
        return error.into_response();
    }
    if auth.requires_key()
        && let Some(scopes) = scopes_for(request.method(), request.uri().path())
    {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Refused for the first scope the route takes unless a key has one.
        let first = scopes.first().copied().unwrap_or(Scope::Admin);
        let checked = scopes
            .iter()
            .map(|scope| auth.check_key(header, *scope))
            .find(Result::is_ok)
            .unwrap_or_else(|| auth.check_key(header, first));
        match checked {
            Ok(key) => producer = Producer(key),
            Err(error) => {
                let code = match error {
                    AuthError::MissingScope(_) => ErrorCode::Forbidden,
                    _ => ErrorCode::Unauthorized,
                };
                hub.metrics().error(code);
                return ApiError::new(code, error.to_string()).into_response();
            }
        }
    }
    request.extensions_mut().insert(producer);
    let request = match whole_body(&hub, request).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let response = next.run(request).await;
    if let Some(error::Reported(code)) = response.extensions().get() {
        hub.metrics().error(*code);
    }
    response
}

/// The request with its body read whole, within `--header-timeout` of its
/// headers: hyper bounds the headers only, and a body that trickles in (a
/// byte every few seconds) would hold its connection for ever. Over the
/// limit: 408 and the connection closed. A body over `--max-body-size`:
/// 413, and the connection closed.
async fn whole_body(hub: &Hub, request: Request) -> Result<Request, Response> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let limit = hub.config().max_body_size;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit as u64) {
        return Err(refuse_and_close(hub, body::too_large(), None));
    }
    let (parts, body) = request.into_parts();
    let deadline = hub.config().header_timeout;
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Ok(Err(error)) => {
            let over = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            let error = if over {
                body::too_large()
            } else {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("reading the request body: {error}"),
                )
            };
            Err(refuse_and_close(hub, error, None))
        }
        Err(_) => {
            let message =
                format!("the request body did not arrive within {deadline:?} (--header-timeout)");
            let error = ApiError::new(ErrorCode::InvalidRequest, message);
            Err(refuse_and_close(
                hub,
                error,
                Some(axum::http::StatusCode::REQUEST_TIMEOUT),
            ))
        }
    }
}

/// The answer to a request whose body was not read whole, counted, with
/// `Connection: close`: the connection cannot carry another request, and a
/// keep-alive client's next one on it would fail.
fn refuse_and_close(
    hub: &Hub,
    error: ApiError,
    status: Option<axum::http::StatusCode>,
) -> Response {
    hub.metrics().error(error.code);
    let mut response = error.into_response();
    if let Some(status) = status {
        *response.status_mut() = status;
    }
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Cross-origin HTTP calls from browser apps on `--allowed-origins` (the
/// origins that may also open WebSockets; `*` is any): preflights are
/// answered before authentication, and `Authorization` may be sent (no
/// cookies). `None` without the flag: no CORS headers, so browsers keep the
/// API to the hub's own origin.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(3600)),
    )
}

/// A request a browser sent from another site's page, that the hub refuses
/// before it does anything: one that reached an open hub on loopback under
/// another name than this machine's (DNS rebinding, see
/// [`Config::host_allowed`](crate::operations::config::Config::host_allowed)),
/// one from an origin that may not call it
/// ([`Config::origin_allowed`](crate::operations::config::Config::origin_allowed)),
/// or a `POST` whose body is not declared JSON (a form or `text/plain`
/// body, which a page may send anywhere without asking first; a JSON one
/// needs the CORS preflight). Requests without `Origin` (not from a
/// browser: curl, the clients) are concerned by the first rule only.
fn foreign_browser_request(hub: &Hub, request: &Request) -> Option<ApiError> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !hub.config().host_allowed(host, upgrade) {
        let open = if upgrade {
            "its WebSockets without subscriber tokens"
        } else {
            "its HTTP API without API keys"
        };
        return Some(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "host {:?} is not this machine: a hub on loopback with {open} answers \
                 `localhost` and IP addresses only",
                host.unwrap_or_default()
            ),
        ));
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)?
        .to_str()
        .unwrap_or("");
    if !hub.config().origin_allowed(origin, host) {
        return Some(ApiError::new(
            ErrorCode::Forbidden,
            format!("origin {origin:?} is not allowed"),
        ));
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    (request.method() == Method::POST && !json).then(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "a browser's POST must send Content-Type: application/json",
        )
    })
}

/// Every route of the hub.
pub fn router(hub: Hub) -> Router {
    let body_limit = hub.config().max_body_size;
    let static_dir = hub.config().static_dir.clone();
    let router = Router::new()
        .route("/ws", get(ws::any_topics))
        .route("/ws/executions/{id}", get(ws::execution))
        .route("/ws/crews/{id}", get(ws::crew))
        .route("/ws/runs/{id}", get(ws::run))
        .route("/ws/global", get(ws::global))
        .route("/ws/metrics", get(ws::metrics))
        .route("/ws/events", get(ws::events))
        .route("/api/v1/events", post(events::publish_events))
        .route("/api/v1/broadcast", post(events::broadcast))
        .route(
            "/api/v1/users/{user_id}/messages",
            post(events::user_message),
        )
        .route(
            "/api/v1/approvals",
            post(approvals::create).get(approvals::list),
        )
        .route("/api/v1/approvals/{id}", get(approvals::get))
        .route("/api/v1/connections", get(admin::connections))
        .route(
            "/api/v1/connections/{id}",
            get(admin::connection).delete(admin::disconnect),
        )
        .route("/api/v1/topics", get(topics::list))
        .route("/api/v1/topics/{topic}/events", get(admin::topic_events))
        .route("/api/v1/topics/{topic}/snapshot", get(topics::snapshot))
        .route("/api/v1/status", get(admin::status))
        .route("/api/v1/nodes", get(admin::nodes))
        .route("/api/v1/openapi.json", get(openapi::document_handler))
        .route("/", get(console::index))
        .route("/console/config", get(console::config))
        .route("/console/{file}", get(console::file))
        .route("/dashboard", get(console::dashboard))
        .route("/health", get(admin::health))
        .route("/health/live", get(admin::live))
        .route("/health/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .merge(compat::router())
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(middleware::from_fn_with_state(hub.clone(), authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower::util::option_layer(cors(
            &hub.config().allowed_origins,
        )))
        .with_state(hub);
    match static_dir {
        Some(dir) => router.nest_service("/app", tower_http::services::ServeDir::new(dir)),
        None => router,
    }
}
