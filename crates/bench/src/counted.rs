//! Clients that count the bytes they read off the socket (the bytes on the
//! wire, frame headers included) and, when asked, offer `permessage-deflate`
//! and read a compressing hub through Herald's own inflating reader.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use herald_server::transport::deflate::Inflating;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Largest message a bench client accepts once inflated.
const MAX_MESSAGE: usize = 16 << 20;

/// A stream whose reads add to a shared count.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    read: Rc<Cell<u64>>,
}

/// A client's socket: counted, and inflating when compression was agreed.
#[derive(Debug)]
pub enum Wire {
    Plain(Counted<TcpStream>),
    Deflate(Inflating<Counted<TcpStream>>),
}

/// Connects to `url` counting into `read`; with `deflate`, offers
/// `permessage-deflate` and fails unless the hub agrees. The handshake is
/// done here, on the plain stream, so that the inflating reader only ever
/// sees frames.
pub async fn connect(
    url: &str,
    deflate: bool,
    read: Rc<Cell<u64>>,
    config: WebSocketConfig,
) -> Result<WebSocketStream<Wire>> {
    let uri: Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    let host = uri
        .authority()
        .map(ToString::to_string)
        .context("a URL without a host")?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut tcp = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connecting {host}"))?;
    tcp.set_nodelay(true)?;
    let extension = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    // The response head, a byte at a time so that no frame is read with it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            tcp.read(&mut byte).await? == 1,
            "EOF in the upgrade response"
        );
        head.push(byte[0]);
    }
    read.set(read.get() + head.len() as u64);
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    let agreed = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                && value.trim().starts_with("permessage-deflate")
        })
    });
    anyhow::ensure!(
        agreed == deflate,
        "permessage-deflate agreed: {agreed}, asked: {deflate}"
    );
    let counted = Counted { inner: tcp, read };
    let wire = if deflate {
        Wire::Deflate(Inflating::for_client(counted, MAX_MESSAGE))
    } else {
        Wire::Plain(counted)
    };
    Ok(WebSocketStream::from_raw_socket(wire, Role::Client, Some(config)).await)
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read
            .set(this.read.get() + (buf.filled().len() - before) as u64);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Deflate(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Deflate(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Deflate(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Deflate(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
