//! A one-shot `setTimeout` owned by Rust: dropping it clears the timeout and
//! frees the closure.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    // The global functions, so this works in windows and workers alike.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
    /// `performance.now()`: the monotonic clock the session runs on.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Now on the driver's monotonic clock, in whole milliseconds.
pub(crate) fn now_ms() -> u64 {
    // `performance.now()` is non-negative and far below 2^53.
    let now = performance_now().max(0.0).floor();
    now as u64
}

/// A pending `setTimeout`; cancelled when dropped.
pub(crate) struct Timer {
    handle: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `callback` once after `ms` milliseconds, unless dropped first.
    pub(crate) fn once(ms: u64, callback: impl FnMut() + 'static) -> Timer {
        let callback = Closure::<dyn FnMut()>::new(callback);
        // Browsers clamp larger delays (2^31 - 1 ms) to 0: cap them.
        let ms = ms.min(i32::MAX as u64) as f64;
        let handle = set_timeout(callback.as_ref().unchecked_ref(), ms);
        Timer {
            handle,
            _callback: callback,
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        clear_timeout(&self.handle);
    }
}
