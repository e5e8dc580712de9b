//! `ClientFrame::decode` on arbitrary text: it returns a frame or an error
//! (with the request id when one could be read), and never panics.

#![no_main]

use herald_protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::decode(text) {
        // What decoded must encode again.
        let _ = serde_json::to_string(&frame.message);
    }
});
