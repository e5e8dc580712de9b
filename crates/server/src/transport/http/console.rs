//! The console: the web page at `/` that watches and steers the hub (topics,
//! runs, approvals, connections, live figures), built by `cargo xtask
//! console` from `web-client/console/` and embedded here at compile time
//! (see `build.rs`). Its files are served under `/console/`; `/dashboard`
//! (the page it replaces) redirects to it. A binary built before the
//! console was answers `/` with a page that says how to build it.
//!
//! The page needs no key to load; its API calls and its WebSocket carry the
//! credentials the user types in (`GET /console/config` tells it which).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use herald_protocol::api::ConsoleConfig;

use crate::core::hub::Hub;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    /// A quoted content hash.
    pub(crate) etag: &'static str,
    pub(crate) body: &'static [u8],
    /// The same, gzipped, when the build wrote it.
    pub(crate) gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// What the page may load and where it may connect: its own files, the
/// wasm module (compiled from its own origin), the hub's API and WebSocket.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Shown at `/` by a binary built without the console.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<title>Herald console not built</title>\
<body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5\">\
<h1>The Herald console is not in this binary</h1>\
<p>It is built from <code>web-client/console/</code> and embedded when <code>herald</code> is compiled. \
Build it, then build and start the hub again:</p>\
<pre>cargo xtask console\ncargo run --release -p herald -- serve</pre>\
<p>The hub itself works without it: see <a href=\"/api/v1/status\">/api/v1/status</a> and \
<a href=\"/metrics\">/metrics</a>.</p></body></html>";

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// `GET /`: the console's page.
pub(super) async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

/// `GET /console/{file}`: one of the console's files.
pub(super) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match find(&name) {
        Some(asset) => serve(asset, &headers),
        None => {
            super::error::ApiError::not_found(format!("no console file {name:?}")).into_response()
        }
    }
}

/// `GET /dashboard`: the page the console replaced.
pub(super) async fn dashboard() -> Redirect {
    Redirect::permanent("/")
}

/// `GET /console/config`: which credentials the hub asks for.
#[utoipa::path(
    get,
    path = "/console/config",
    operation_id = "console_config",
    tag = "health",
    summary = "Which credentials the console must ask for (no key needed)",
    responses((status = 200, description = "What the hub asks for", body = ref("#/components/schemas/ConsoleConfig")))
)]
pub(super) async fn config(State(hub): State<Hub>) -> Json<ConsoleConfig> {
    let auth = &hub.config().auth;
    Json(ConsoleConfig {
        api_key_required: auth.requires_key(),
        token_required: auth.requires_token(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// The file, gzipped when the client takes it, revalidated by ETag (the
/// names carry no hash, so browsers ask again and get 304 while unchanged).
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let static_value = HeaderValue::from_static;
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == asset.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = asset.gzip.filter(|_| accepts_gzip(headers));
        let mut response = gzip.unwrap_or(asset.body).into_response();
        if gzip.is_some() {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, static_value("gzip"));
        }
        response
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, static_value(asset.content_type));
    out.insert(header::ETAG, static_value(asset.etag));
    out.insert(header::CACHE_CONTROL, static_value("no-cache"));
    out.insert(header::VARY, static_value("Accept-Encoding"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, static_value("nosniff"));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        static_value(CONTENT_SECURITY_POLICY),
    );
    out.insert(header::REFERRER_POLICY, static_value("no-referrer"));
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            parts.next().is_some_and(|name| name.trim() == "gzip")
                && parts.all(|p| p.trim().replace(' ', "") != "q=0")
        })
}
