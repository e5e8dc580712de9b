//! The browser `WebSocket` and the closures it calls, owned together: dropping
//! a [`Socket`] unregisters its handlers, closes it and frees the closures.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// What a socket reports to its owner.
pub(crate) enum SocketEvent {
    Open,
    Text(String),
    /// The socket closed (or the attempt failed); `code` as the browser gives it.
    Closed {
        code: u16,
    },
}

/// An open or opening `WebSocket` with its handlers.
pub(crate) struct Socket {
    ws: WebSocket,
    open: bool,
    close_code: u16,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Opens a socket to `url` offering `subprotocols`; `on_event` gets
    /// everything that happens to it until it is dropped.
    pub(crate) fn open(
        url: &str,
        subprotocols: &[String],
        on_event: impl Fn(SocketEvent) + Clone + 'static,
    ) -> Result<Socket, JsValue> {
        let protocols: js_sys::Array = subprotocols.iter().map(|p| JsValue::from_str(p)).collect();
        let ws = WebSocket::new_with_str_sequence(url, &protocols)?;
        let on_open = {
            let on_event = on_event.clone();
            Closure::<dyn FnMut()>::new(move || on_event(SocketEvent::Open))
        };
        let on_message = {
            let on_event = on_event.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
                // Herald sends text frames only; anything else is ignored.
                if let Some(text) = message.data().as_string() {
                    on_event(SocketEvent::Text(text));
                }
            })
        };
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            on_event(SocketEvent::Closed { code: event.code() });
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            ws,
            open: false,
            close_code: 1000,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Whether `open` was reported.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    pub(crate) fn mark_open(&mut self) {
        self.open = true;
    }

    /// Sends a text frame; false if the browser refused (socket not open).
    pub(crate) fn send(&self, text: &str) -> bool {
        self.ws.send_with_str(text).is_ok()
    }

    /// Closes with `code` (a code the browser accepts: 1000 or 3000–4999) and
    /// drops the socket.
    pub(crate) fn close(mut self, code: u16) {
        self.close_code = code;
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let state = self.ws.ready_state();
        let live = state == WebSocket::CONNECTING || state == WebSocket::OPEN;
        if live
            && self
                .ws
                .close_with_code_and_reason(self.close_code, "")
                .is_err()
        {
            // A code the browser does not allow an application to send.
            let _ = self.ws.close();
        }
    }
}
