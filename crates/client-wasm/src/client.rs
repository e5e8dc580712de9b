//! `WasmClient`: the class the TypeScript wrapper builds on. Structured
//! values cross the boundary as JSON text (parsed and checked by the
//! protocol types here, by `JSON.parse` on the JS side), which keeps the
//! module small and the wire types in one place.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use herald_protocol::frame::{
    Auth, ClientFrame, Confirm, Control, RequestId, Subscribe, Unsubscribe,
};
use herald_protocol::session::{Checkpoints, ConnectionState, Session};
use herald_protocol::{CallbackId, ClientMessage};
use wasm_bindgen::prelude::*;

use crate::driver::{self, Driver, Shared};
use crate::options::Options;
use crate::output;

/// One logical Herald connection, across reconnects.
#[wasm_bindgen]
pub struct WasmClient {
    shared: Shared,
}

impl fmt::Debug for WasmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmClient").finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl WasmClient {
    /// A client for the WebSocket `url` (`ws://` or `wss://`; other nodes of
    /// the hub in `options.failover`). `options` is a
    /// JSON object (see `Options`); `emit(kind, json)` receives every session
    /// event. Nothing happens until [`connect`](WasmClient::connect).
    #[wasm_bindgen(constructor)]
    pub fn new(url: String, options: &str, emit: js_sys::Function) -> Result<WasmClient, JsError> {
        let options =
            Options::parse(options).map_err(|e| JsError::new(&format!("invalid options: {e}")))?;
        // 53 random bits: `Math.random()` is what the page has without a crypto dependency.
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
        let session = Session::new(options.session_config(), seed);
        let urls = std::iter::once(url)
            .chain(options.failover().iter().cloned())
            .collect();
        let driver = Driver::new(
            session,
            urls,
            options.subprotocols(),
            options.connect_timeout_ms(),
            emit,
        );
        Ok(WasmClient {
            shared: Rc::new(RefCell::new(driver)),
        })
    }

    /// Starts connecting (the first call), or connects again after
    /// `disconnect()` or a terminal close.
    pub fn connect(&self) {
        self.apply(|driver, shared| {
            if driver.started() {
                if matches!(driver.session.state(), ConnectionState::Closed { .. }) {
                    driver.session.reconnect();
                }
            } else {
                driver.start(shared);
            }
            Ok(())
        })
        .unwrap_or(());
    }

    /// Subscribes: `subscribe` is a `subscribe` frame's fields as JSON
    /// (`{topics, filter?, since?, snapshot?}`). Kept across reconnects.
    /// With `id`, every `subscribe` frame for it carries the id, so the
    /// hub's answer (`ack`, or a refusal) names it as `ref` on every
    /// connection.
    pub fn subscribe(&self, subscribe: &str, id: Option<String>) -> Result<(), JsError> {
        let subscribe: Subscribe = parse(subscribe, "subscribe")?;
        self.send_frame(ClientFrame {
            id: id.map(RequestId::String),
            message: ClientMessage::Subscribe(subscribe),
        })
    }

    /// Unsubscribes `topics` (a JSON array of topics or patterns).
    pub fn unsubscribe(&self, topics: &str) -> Result<(), JsError> {
        let topics = parse(topics, "topics")?;
        self.send(ClientMessage::Unsubscribe(Unsubscribe { topics }))
    }

    /// Ends the subscription made with request id `id` (`subscribe`'s):
    /// the topics no other subscription lists are unsubscribed on the hub,
    /// and only the others' filters let events through from now on.
    #[wasm_bindgen(js_name = endSubscription)]
    pub fn end_subscription(&self, id: String) -> Result<(), JsError> {
        self.apply(|driver, _| {
            driver
                .session
                .end_subscription(&RequestId::String(id))
                .map_err(|e| JsError::new(&e.to_string()))
        })
    }

    /// Answers an approval; with `id`, the hub answers `ack` or `error`
    /// with it as `ref`.
    pub fn confirm(
        &self,
        callback_id: &str,
        proceed: bool,
        feedback: Option<String>,
        id: Option<String>,
    ) -> Result<(), JsError> {
        let callback_id: CallbackId = callback_id
            .parse()
            .map_err(|e| JsError::new(&format!("invalid callback_id: {e}")))?;
        let message = ClientMessage::Confirm(Confirm {
            callback_id,
            proceed,
            feedback,
        });
        self.send_frame(ClientFrame {
            id: id.map(RequestId::String),
            message,
        })
    }

    /// A control request: `kind` is `cancel`, `pause` or `resume`; `control`
    /// is `{task_id?, run_id?, reason?}` as JSON; `id` as for `confirm`.
    pub fn control(&self, kind: &str, control: &str, id: Option<String>) -> Result<(), JsError> {
        let control: Control = parse(control, "control")?;
        let message = match kind {
            "cancel" => ClientMessage::Cancel(control),
            "pause" => ClientMessage::Pause(control),
            "resume" => ClientMessage::Resume(control),
            other => return Err(JsError::new(&format!("unknown control request {other:?}"))),
        };
        self.send_frame(ClientFrame {
            id: id.map(RequestId::String),
            message,
        })
    }

    /// A fresh token: offered by every socket from now on, and sent to the
    /// hub at once in an `auth` frame when a connection is open (it then
    /// checks the connection's subscriptions against it and keeps the
    /// connection past the old token's expiry).
    pub fn set_token(&self, token: String) -> Result<(), JsError> {
        self.apply(|driver, _| {
            driver.set_subprotocols(crate::options::subprotocols(Some(&token)));
            if matches!(driver.session.state(), ConnectionState::Open) {
                driver
                    .session
                    .send(ClientMessage::Auth(Auth { token }))
                    .map_err(|e| JsError::new(&e.to_string()))?;
            }
            Ok(())
        })
    }

    /// Closes the connection for good (until `connect()` or `reconnect()`).
    pub fn disconnect(&self) {
        self.apply(|driver, _| {
            driver.session.disconnect();
            Ok(())
        })
        .unwrap_or(());
    }

    /// Reconnects now, skipping any backoff.
    pub fn reconnect(&self) {
        self.apply(|driver, shared| {
            driver.start(shared);
            driver.session.reconnect();
            Ok(())
        })
        .unwrap_or(());
    }

    /// Stops everything (socket, timers, listeners); the client is unusable
    /// afterwards except for `free()`.
    pub fn dispose(&self) {
        if let Ok(mut driver) = self.shared.try_borrow_mut() {
            driver.dispose();
        }
    }

    /// The per-topic checkpoints, as JSON `{topic: {seq, epoch?}}`, to persist.
    pub fn checkpoints(&self) -> String {
        self.shared
            .try_borrow()
            .ok()
            .and_then(|driver| serde_json::to_string(driver.session.checkpoints()).ok())
            .unwrap_or_else(|| "{}".to_owned())
    }

    /// Restores persisted checkpoints (call before subscribing).
    #[wasm_bindgen(js_name = restoreCheckpoints)]
    pub fn restore_checkpoints(&self, checkpoints: &str) -> Result<(), JsError> {
        let checkpoints: Checkpoints = parse(checkpoints, "checkpoints")?;
        self.apply(|driver, _| {
            driver.session.restore_checkpoints(checkpoints);
            Ok(())
        })
    }

    /// The connection state, as the `state` events report it.
    pub fn state(&self) -> String {
        self.shared
            .try_borrow()
            .map(|driver| output::state_json(driver.session.state()))
            .unwrap_or_else(|_| r#"{"state":"connecting"}"#.to_owned())
    }

    /// The current connection's `session_id`, once welcomed.
    #[wasm_bindgen(js_name = sessionId)]
    pub fn session_id(&self) -> Option<String> {
        let driver = self.shared.try_borrow().ok()?;
        driver.session.session_id().map(str::to_owned)
    }
}

impl WasmClient {
    fn send(&self, message: ClientMessage) -> Result<(), JsError> {
        self.send_frame(ClientFrame::new(message))
    }

    fn send_frame(&self, frame: ClientFrame) -> Result<(), JsError> {
        self.apply(|driver, _| {
            driver
                .session
                .send_frame(frame)
                .map_err(|e| JsError::new(&e.to_string()))
        })
    }

    /// Runs `f` on the driver, then turns the loop.
    fn apply(
        &self,
        f: impl FnOnce(&mut Driver, &Shared) -> Result<(), JsError>,
    ) -> Result<(), JsError> {
        let result = {
            let mut driver = self
                .shared
                .try_borrow_mut()
                .map_err(|_| JsError::new("herald client is busy"))?;
            f(&mut driver, &self.shared)
        };
        driver::turn(&self.shared);
        result
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, JsError> {
    serde_json::from_str(json).map_err(|e| JsError::new(&format!("invalid {what}: {e}")))
}
