//! The page's `online` and `visibilitychange` events: when the network comes
//! back or the tab becomes visible while the session waits to reconnect, the
//! driver reconnects at once instead of sleeping out the backoff.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

/// The listeners, removed when dropped.
pub(crate) struct PageListeners {
    registrations: Vec<(EventTarget, &'static str)>,
    callback: Closure<dyn FnMut()>,
}

impl PageListeners {
    /// Listens to `online` on the window and `visibilitychange` on the
    /// document (whichever exist: none in a worker). `on_wake` is called
    /// when the network is back or the page became visible.
    pub(crate) fn install(on_wake: impl FnMut() + 'static) -> PageListeners {
        let callback = Closure::<dyn FnMut()>::new(on_wake);
        let mut registrations = Vec::new();
        if let Some(window) = web_sys::window() {
            let document = window.document();
            let window: EventTarget = window.into();
            registrations.push((window, "online"));
            if let Some(document) = document {
                registrations.push((document.into(), "visibilitychange"));
            }
        }
        for (target, name) in &registrations {
            let _ =
                target.add_event_listener_with_callback(name, callback.as_ref().unchecked_ref());
        }
        PageListeners {
            registrations,
            callback,
        }
    }
}

impl Drop for PageListeners {
    fn drop(&mut self) {
        for (target, name) in &self.registrations {
            let _ = target
                .remove_event_listener_with_callback(name, self.callback.as_ref().unchecked_ref());
        }
    }
}

/// Whether the page can use the network now: online, and visible (a hidden
/// tab has no reason to hurry).
pub(crate) fn awake() -> bool {
    let Some(window) = web_sys::window() else {
        return true;
    };
    let online = window.navigator().on_line();
    let visible = window
        .document()
        .is_none_or(|document| document.visibility_state() == web_sys::VisibilityState::Visible);
    online && visible
}
