//! The publishing side of an adapter: `POST /api/v1/events` into Herald, or
//! a `/pub` WebSocket into a peer hub; one event at a time or in batches.

use anyhow::{Result, bail};
use futures::stream::SplitSink;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::board::{Ws, connect};
use crate::http::HttpConn;
use crate::spec::Adapter;
use crate::wire;

/// Publishes bench events to one hub.
#[derive(Debug)]
pub enum Publisher {
    Herald { http: HttpConn, body: String },
    Relay { sink: SplitSink<Ws, Message> },
}

impl Publisher {
    /// Opens the adapter's publishing connection.
    pub async fn connect(adapter: Adapter, addr: &str) -> Result<Self> {
        Ok(match adapter {
            Adapter::Herald => Publisher::Herald {
                http: HttpConn::connect(addr).await?,
                body: String::new(),
            },
            Adapter::Relay => {
                let ws = connect(&format!("ws://{addr}/pub"), None).await?;
                let (sink, mut stream) = ws.split();
                // Drain whatever the peer sends (pings), so it never blocks on us.
                tokio::task::spawn_local(async move { while stream.next().await.is_some() {} });
                Publisher::Relay { sink }
            }
        })
    }

    /// Publishes events `(seq, intended send time)`, in order, as one
    /// batch: a JSON array in one request (Herald), or messages written
    /// together (a peer).
    pub async fn publish(&mut self, events: &[(u64, u64)], pad: &str) -> Result<()> {
        match self {
            Publisher::Herald { http, body } => {
                body.clear();
                body.push('[');
                for (i, &(seq, t)) in events.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    wire::herald_event(body, seq, t, pad);
                }
                body.push(']');
                post(http, body).await?;
            }
            Publisher::Relay { sink } => {
                for &(seq, t) in events {
                    sink.feed(Message::text(wire::envelope(seq, t, pad)))
                        .await?;
                }
                sink.flush().await?;
            }
        }
        Ok(())
    }

    /// Publishes one event on its own: one request with the event as a
    /// JSON object, answered before this returns (Herald), or one message
    /// written alone (a peer).
    pub async fn publish_one(&mut self, seq: u64, t_ns: u64, pad: &str) -> Result<()> {
        match self {
            Publisher::Herald { http, body } => {
                body.clear();
                wire::herald_event(body, seq, t_ns, pad);
                post(http, body).await?;
            }
            Publisher::Relay { sink } => {
                sink.send(Message::text(wire::envelope(seq, t_ns, pad)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// `POST /api/v1/events` with `body`; an error unless answered 2xx.
async fn post(http: &mut HttpConn, body: &str) -> Result<()> {
    let (status, reply) = http.post_json("/api/v1/events", body.as_bytes()).await?;
    if !(200..300).contains(&status) {
        bail!(
            "publish answered {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}
