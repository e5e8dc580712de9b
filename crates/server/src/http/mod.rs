//! The HTTP side: the router, the JSON API, and the WebSocket endpoints.

mod api;
pub mod error;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_protocol::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{AuthError, Scope};
use crate::hub::Hub;
use error::ApiError;

/// The dashboard: one self-contained page over the JSON API and `/ws/events`.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../assets/dashboard.html"))
}

/// Who published: the API key, or the remote address when no keys are configured.
#[derive(Debug, Clone)]
pub(crate) struct Producer(pub(crate) String);

/// The scope a route needs: `publish` for events, broadcasts, user messages
/// and approvals (creating and waiting); `admin` for the rest of the API.
/// `/health`, `/metrics` and the WebSocket endpoints need no key.
fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    let api = path.strip_prefix("/api/v1/")?;
    let publish = matches!(
        (method, api.split('/').collect::<Vec<_>>().as_slice()),
        (&Method::POST, ["events" | "broadcast" | "approvals"])
            | (&Method::POST, ["users", _, "messages"])
            | (&Method::GET, ["approvals", _])
    );
    Some(if publish {
        Scope::Publish
    } else {
        Scope::Admin
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
    if auth.requires_key()
        && let Some(scope) = scope_for(request.method(), request.uri().path())
    {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check_key(header, scope) {
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
    next.run(request).await
}

/// Cross-origin HTTP calls from browser apps on `--allowed-origins` (the
/// origins that may also open WebSockets): preflights are answered before
/// authentication, and `Authorization` may be sent. Without the flag no
/// origin is named, so browsers keep the API to its own origin.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(3600))
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
        .route("/api/v1/events", post(api::publish_events))
        .route("/api/v1/broadcast", post(api::broadcast))
        .route("/api/v1/users/{user_id}/messages", post(api::user_message))
        .route(
            "/api/v1/approvals",
            post(api::create_approval).get(api::list_approvals),
        )
        .route("/api/v1/approvals/{id}", get(api::get_approval))
        .route("/api/v1/connections", get(api::connections))
        .route(
            "/api/v1/connections/{id}",
            get(api::connection).delete(api::disconnect),
        )
        .route("/api/v1/topics/{topic}/events", get(api::topic_events))
        .route("/api/v1/status", get(api::status))
        .route(
            "/",
            get(|| async { axum::response::Redirect::temporary("/dashboard") }),
        )
        .route("/dashboard", get(dashboard))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(hub.clone(), authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&hub.config().allowed_origins))
        .with_state(hub);
    match static_dir {
        Some(dir) => router.nest_service("/app", tower_http::services::ServeDir::new(dir)),
        None => router,
    }
}
