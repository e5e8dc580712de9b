//! One measurement cell: what the load generator is asked to do, and what it
//! answers. The suite hands a [`LoadSpec`] as JSON to a `herald-bench load`
//! child process (so it can be pinned to its own core) and reads back a
//! [`LoadResult`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How events reach a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "regime", rename_all = "snake_case")]
pub enum Regime {
    /// One event per `POST /api/v1/events` (Herald) or per `/pub` message
    /// written on its own (peers), from `producers` connections, each with
    /// one publish at a time: how producers in the seeds publish.
    Single { producers: usize },
    /// Up to [`MAX_BATCH`] events per request (Herald: a JSON array) or per
    /// write of `/pub` messages (peers), from one connection.
    Batched,
}

/// Most events one batched publish carries.
pub const MAX_BATCH: usize = 64;

impl Regime {
    /// Publishing connections.
    pub fn producers(self) -> usize {
        match self {
            Regime::Single { producers } => producers.max(1),
            Regime::Batched => 1,
        }
    }

    /// Most events one publish carries.
    pub fn batch(self) -> usize {
        match self {
            Regime::Single { .. } => 1,
            Regime::Batched => MAX_BATCH,
        }
    }
}

/// How the load generator talks to a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Adapter {
    /// Herald: subscribe on `/ws?topics=bench`, publish by `POST /api/v1/events`.
    Herald,
    /// A peer hub: subscribe on `/ws`, publish on a `/pub` WebSocket whose
    /// every message is broadcast verbatim to every subscriber.
    Relay,
}

/// What to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// 1→N fan-out as fast as the slowest subscriber keeps up (a window of
    /// events in flight): delivered/s, CPU per delivery, latency at the plateau.
    Fanout {
        clients: usize,
        payload: usize,
        #[serde(flatten)]
        regime: Regime,
    },
    /// Open-loop publishing at a fixed rate, single events from `producers`
    /// connections in turn: latency from the intended send time.
    Rate {
        clients: usize,
        payload: usize,
        rate: u64,
        producers: usize,
    },
    /// Idle subscribed connections: RSS per connection and idle CPU.
    Idle { clients: usize },
    /// Connections/s to `clients`, then latency while `churn` connections/s come and go.
    Ramp {
        clients: usize,
        churn: u64,
        rate: u64,
    },
    /// Herald ingest over HTTP, one event per request or `batch` per request.
    IngestHttp { batch: usize },
    /// Herald ingest over its Unix datagram socket with `producers` senders.
    IngestUnix { producers: usize, path: String },
    /// `clients` reconnect at once, each asking for the last `last` events.
    Replay { clients: usize, last: u64 },
    /// Fan-out of prose events of about `payload` bytes (a language model's
    /// output) to clients that offer `permessage-deflate` (`deflate`) or
    /// not: CPU per delivery and bytes on the wire per delivery.
    Compression {
        clients: usize,
        payload: usize,
        deflate: bool,
    },
}

/// One cell handed to `herald-bench load`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    pub adapter: Adapter,
    /// `host:port` of the hub (of the node the subscribers are on).
    pub addr: String,
    /// `host:port` of the node the publisher is on, when it is another one
    /// (several nodes on Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_addr: Option<String>,
    /// The hub's process id, for CPU and memory readings.
    pub server_pid: Option<u32>,
    pub scenario: Scenario,
    /// Seconds measured.
    pub duration_s: f64,
    /// Seconds of load before measuring.
    pub warmup_s: f64,
}

/// What one cell measured: named figures (see `bench/README.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LoadResult {
    /// Sets a figure.
    pub fn set(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_owned(), value);
    }

    /// A figure, if measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}
