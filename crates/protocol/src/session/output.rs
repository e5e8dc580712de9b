//! What a session tells its driver and its application: [`Millis`],
//! [`ConnectionState`] (and [`StateReport`], its JSON form), [`SessionEvent`]
//! and [`Action`].

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::error::CloseReason;
use crate::event::Event;
use crate::frame::{
    Ack, ClientFrame, ErrorFrame, Gap, ReplayComplete, Snapshot, Subscribed, Welcome,
};

/// A point on the caller's monotonic clock, in milliseconds. Only differences
/// matter: the origin is the caller's (`performance.now()`, or
/// `Instant::duration_since(start)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The connection as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// A socket is being opened (or is open and waiting for `welcome`).
    Connecting,
    /// `welcome` received; subscriptions re-sent, offline queue flushed.
    Open,
    /// Waiting `delay_ms` before reconnect attempt `attempt` (1-based, since
    /// the last stable connection). `code` is the close code the last
    /// connection ended with (4001: the token expired; 1001: the hub shut
    /// down), `None` when the socket failed without one or never opened.
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
        code: Option<CloseReason>,
    },
    /// Nothing more will happen until [`Session::reconnect`](super::Session::reconnect).
    Closed { reason: ClosedReason },
}

/// Why a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedReason {
    /// The application called [`Session::disconnect`](super::Session::disconnect).
    Disconnected,
    /// The hub closed with a code that says not to reconnect
    /// ([`CloseReason::should_reconnect`] is false).
    Terminal(CloseReason),
    /// [`SessionConfig::max_reconnect_attempts`](super::SessionConfig::max_reconnect_attempts)
    /// attempts failed in a row.
    AttemptsExhausted { attempts: u32 },
}

/// The connection state as a client reports it to its application, in JSON
/// (the browser client's `onState`; made from [`ConnectionState`]): `{"state": "connecting" | "open"}`,
/// `{"state": "reconnecting", "attempt": 2, "delay": 1500, "code": 4001}`,
/// `{"state": "closed", "reason": "terminal", "code": 4500}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "state", rename_all = "snake_case")]
#[ts(rename = "ConnectionState", export_to = "client/")]
pub enum StateReport {
    /// A socket is being opened (or is open and waiting for `welcome`).
    Connecting,
    /// `welcome` received.
    Open,
    /// Waiting `delay` ms before reconnect attempt `attempt` (1-based);
    /// `code`: the close code the last connection ended with, absent when
    /// the socket failed without one (a browser reports a refused upgrade,
    /// a 401 for a bad token among them, that way).
    Reconnecting {
        attempt: u32,
        delay: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        code: Option<u16>,
    },
    /// Nothing more happens until the application reconnects.
    Closed(ClosedReport),
}

/// Why a session stopped, as a `closed` state reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[ts(rename = "ClosedState", export_to = "client/")]
pub enum ClosedReport {
    /// The application disconnected.
    Disconnected,
    /// The hub closed with a code that says not to reconnect (1002, 1007, 1008, 1009, 4500–4999).
    Terminal { code: u16 },
    /// This many attempts failed in a row.
    AttemptsExhausted { attempts: u32 },
}

impl From<&ConnectionState> for StateReport {
    fn from(state: &ConnectionState) -> StateReport {
        match state {
            ConnectionState::Connecting => StateReport::Connecting,
            ConnectionState::Open => StateReport::Open,
            ConnectionState::Reconnecting {
                attempt,
                delay_ms,
                code,
            } => StateReport::Reconnecting {
                attempt: *attempt,
                delay: *delay_ms,
                code: code.map(|code| code.0),
            },
            ConnectionState::Closed { reason } => StateReport::Closed(match reason {
                ClosedReason::Disconnected => ClosedReport::Disconnected,
                ClosedReason::Terminal(code) => ClosedReport::Terminal { code: code.0 },
                ClosedReason::AttemptsExhausted { attempts } => ClosedReport::AttemptsExhausted {
                    attempts: *attempts,
                },
            }),
        }
    }
}

/// What the application receives from [`Session::poll_event`](super::Session::poll_event).
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A new event, in `seq` order per topic, never twice. Behind a
    /// `snapshot` ahead of the checkpoint, a replayed keyed event the
    /// snapshot holds at the same or a later seq is not one (the snapshot
    /// shows its state).
    Event(Event),
    /// Events the application will not get: re-read state.
    Gap(Gap),
    /// The latest event per key; events it covers are not delivered again.
    Snapshot(Snapshot),
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// The hub refused something.
    Error(ErrorFrame),
    /// A new connection's `welcome`.
    Welcome(Welcome),
    /// The hub confirmed a subscription (one per topic or pattern).
    Subscribed(Subscribed),
    /// A replay finished.
    ReplayComplete(ReplayComplete),
    /// The hub acknowledged a frame sent with an `id`.
    Ack(Ack),
    /// The offline queue was full: this frame was dropped, never sent.
    FrameDropped(ClientFrame),
}

/// What the driver must do with the socket, from
/// [`Session::poll_action`](super::Session::poll_action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a socket now; report [`Session::handle_connected`](super::Session::handle_connected)
    /// on success, [`Session::handle_closed`](super::Session::handle_closed) on failure.
    Connect,
    /// Close the current socket (or abandon the attempt) with `code`. The
    /// session already treats it as gone: do not report its close.
    Close { code: CloseReason },
}
