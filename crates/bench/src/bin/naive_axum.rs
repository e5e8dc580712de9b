//! A naive hub, the way a first axum fan-out is usually written: one
//! `tokio::sync::broadcast` channel, a task per subscriber that awaits
//! `send` for every message. `/ws` subscribes; every text message received
//! on `/pub` is broadcast verbatim. Lagged subscribers skip silently.
//!
//! `bench-naive-axum [--bind ADDR] [--nodelay on|off]`; prints
//! `listening on http://ADDR` first.

#![allow(clippy::print_stdout, reason = "the listening line is the contract")]

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use futures::StreamExt as _;
use tokio::sync::broadcast;

type Tx = broadcast::Sender<axum::extract::ws::Utf8Bytes>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut bind = "127.0.0.1:0".to_owned();
    let mut nodelay = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().unwrap_or(bind),
            "--nodelay" => nodelay = args.next().as_deref() != Some("off"),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (tx, _) = broadcast::channel(4096);
    let app = Router::new()
        .route("/ws", get(subscribe))
        .route("/pub", get(publish))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(nodelay);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn subscribe(ws: WebSocketUpgrade, State(tx): State<Tx>) -> Response {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let mut rx = tx.subscribe();
        loop {
            match rx.recv().await {
                Ok(text) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

async fn publish(ws: WebSocketUpgrade, State(tx): State<Tx>) -> Response {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let _ = tx.send(text);
            }
        }
    })
}
