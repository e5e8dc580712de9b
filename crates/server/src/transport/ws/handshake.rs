//! The WebSocket opening handshake (RFC 6455 §4.2). The hub answers it
//! itself, rather than through axum's `WebSocketUpgrade`, so that it owns
//! the layers of the socket: with `permessage-deflate` agreed, the
//! [`Inflating`](super::deflate::Inflating) reader goes under tungstenite.
//! Otherwise the socket is tungstenite over the upgraded connection, as
//! axum builds it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_protocol::ErrorCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::coalesce::{Coalescing, Outgoing};
use crate::transport::deflate::{self, Inflating};
use crate::transport::http::error::ApiError;

/// The upgraded connection, as hyper hands it over.
pub(crate) type Raw = TokioIo<hyper::upgrade::Upgraded>;

/// The upgraded connection, its writes coalesced.
pub(crate) type Upgraded = Coalescing<Raw>;

/// A WebSocket upgrade request, checked; answered by [`Handshake::accept`].
#[derive(Debug)]
pub(crate) struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// The subprotocols the client offered.
    protocols: Vec<String>,
    /// Whether the client offered a `permessage-deflate` the hub can accept.
    deflate_offered: bool,
}

/// What was agreed: how the socket is to be built once upgraded.
#[derive(Debug)]
pub(crate) struct Agreed {
    on_upgrade: OnUpgrade,
    /// `permessage-deflate` is on for this connection.
    pub(crate) deflate: bool,
}

/// The socket, compressed or not.
#[derive(Debug)]
pub(crate) enum Socket {
    Plain(WebSocketStream<Upgraded>),
    Deflate(WebSocketStream<Inflating<Upgraded>>),
}

fn refused(message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("not a WebSocket upgrade: {message}"),
    )
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        if !header_has(headers, header::CONNECTION, "upgrade") {
            return Err(refused("`Connection: upgrade` is missing"));
        }
        if !header_is(headers, header::UPGRADE, "websocket") {
            return Err(refused("`Upgrade: websocket` is missing"));
        }
        if !header_is(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(refused("`Sec-WebSocket-Version: 13` is missing"));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| refused("`Sec-WebSocket-Key` is missing"))?;
        let protocols = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .collect();
        let deflate_offered = deflate::offered(headers);
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| refused("this connection cannot be upgraded"))?;
        Ok(Handshake {
            key,
            on_upgrade,
            protocols,
            deflate_offered,
        })
    }
}

impl Handshake {
    /// The `101 Switching Protocols` answer: `protocol` when the client
    /// offered it, and `permessage-deflate` when `compression` is on and
    /// the client offered it.
    pub(crate) fn accept(self, protocol: &'static str, compression: bool) -> (Response, Agreed) {
        let deflate = compression && self.deflate_offered;
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, "upgrade"),
                (header::UPGRADE, "websocket"),
            ],
        )
            .into_response();
        let headers = response.headers_mut();
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if self.protocols.iter().any(|p| p == protocol) {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        if deflate {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(deflate::AGREED),
            );
        }
        let agreed = Agreed {
            on_upgrade: self.on_upgrade,
            deflate,
        };
        (response, agreed)
    }
}

impl Agreed {
    /// Waits for the upgrade and builds the socket, and the writer's way to
    /// it; `None` when the client went away first. `write_limit` bounds the
    /// bytes gathered between flushes.
    pub(crate) async fn socket(
        self,
        config: WebSocketConfig,
        write_limit: usize,
    ) -> Option<(Socket, Outgoing<Raw>)> {
        let upgraded = match self.on_upgrade.await {
            Ok(upgraded) => Coalescing::new(TokioIo::new(upgraded), write_limit),
            Err(error) => {
                tracing::debug!(%error, "the WebSocket upgrade did not complete");
                return None;
            }
        };
        let outgoing = upgraded.outgoing();
        let socket = if self.deflate {
            let limit = config.max_message_size.unwrap_or(usize::MAX);
            let reader = Inflating::for_server(upgraded, limit);
            Socket::Deflate(
                WebSocketStream::from_raw_socket(reader, Role::Server, Some(config)).await,
            )
        } else {
            Socket::Plain(
                WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await,
            )
        };
        Some((socket, outgoing))
    }
}
