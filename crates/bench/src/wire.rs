//! What the bench puts on the wire and how it reads it back cheaply.
//!
//! Every benchmark event carries `"bs":SEQ,"bt":NANOS` in its `data`: the
//! bench's own sequence number (1, 2, …; 0 marks a warm-up probe) and the
//! intended send time in nanoseconds since [`epoch`]. Receivers find both
//! with a byte search instead of parsing JSON, so the load generator spends
//! its time on sockets, not on serde.
//!
//! With several producers, the seqs interleave their streams: producer `p`
//! (of `P`) numbers its `k`-th event `(k − 1)·P + p + 1` ([`bench_seq`]).
//! Each producer's events must arrive in its order; the streams of
//! different producers may interleave in any order ([`stream_of`]).

use std::sync::OnceLock;
use std::time::Instant;

use memchr::memmem;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The load generator's shared clock: publisher and receivers live in one
/// process, so a monotonic instant is a shared epoch.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The bench seq of producer `producer`'s `k`-th event (`k` from 1) when
/// `producers` publish.
pub fn bench_seq(producer: usize, k: u64, producers: usize) -> u64 {
    (k - 1) * producers as u64 + producer as u64 + 1
}

/// Which producer's stream a bench seq (≥ 1) belongs to, and its place `k` in it.
pub fn stream_of(seq: u64, producers: usize) -> (usize, u64) {
    let producers = producers as u64;
    (((seq - 1) % producers) as usize, (seq - 1) / producers + 1)
}

/// Padding that brings an event's `data` to about `payload` bytes.
pub fn padding(payload: usize) -> String {
    // `{"bs":123456,"bt":123456789012,"pad":""}` is about 45 bytes.
    "x".repeat(payload.saturating_sub(45).max(1))
}

/// Prose of about `payload` bytes, as a language model streams it: words
/// drawn (from a fixed seed) out of a small vocabulary, the kind of text
/// `permessage-deflate` is for. JSON-safe: no quotes or escapes.
pub fn prose(payload: usize) -> String {
    const WORDS: [&str; 32] = [
        "the",
        "model",
        "considers",
        "request",
        "then",
        "retries",
        "training",
        "with",
        "a",
        "smaller",
        "batch",
        "because",
        "GPU",
        "memory",
        "ran",
        "out",
        "at",
        "24",
        "GiB;",
        "step",
        "3",
        "loss",
        "improves",
        "after",
        "each",
        "epoch,",
        "tool",
        "call",
        "returned",
        "result",
        "and",
        "**answer**",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut text = String::with_capacity(payload + 16);
    while text.len() + 45 < payload {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        text.push(' ');
    }
    text
}

/// The event's `data` object.
pub fn data(seq: u64, t_ns: u64, pad: &str) -> String {
    format!(r#"{{"bs":{seq},"bt":{t_ns},"pad":"{pad}"}}"#)
}

/// One event as `POST /api/v1/events` takes it.
pub fn herald_event(out: &mut String, seq: u64, t_ns: u64, pad: &str) {
    out.push_str(r#"{"topic":"bench","event_type":"bench.tick","data":"#);
    out.push_str(&data(seq, t_ns, pad));
    out.push('}');
}

/// The frame a peer hub relays verbatim: shaped and sized like the event
/// frame Herald delivers, so every hub moves the same bytes per delivery.
pub fn envelope(seq: u64, t_ns: u64, pad: &str) -> String {
    format!(
        concat!(
            r#"{{"type":"event","topic":"bench","seq":{seq},"id":"0193c7a2-7c1e-7000-8000-{seq:012}","#,
            r#""event_type":"bench.tick","priority":"normal","timestamp":1729845678123,"data":{data}}}"#
        ),
        seq = seq,
        data = data(seq, t_ns, pad)
    )
}

/// What a received frame is, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A benchmark event: its bench seq, intended send time, and the
    /// frame's own `seq` when it has one (Herald's per-topic seq; a peer's
    /// envelope repeats the bench seq).
    Event {
        seq: u64,
        t_ns: u64,
        hub_seq: Option<u64>,
    },
    /// Herald's `gap`: the hub seqs `from_seq..=to_seq` this client will
    /// not get (`None` when the frame does not name both).
    Gap { range: Option<(u64, u64)> },
    /// Herald's `replay_complete`.
    ReplayComplete,
    /// Anything else (welcome, subscribed, ping, …).
    Other,
}

fn digits_after(bytes: &[u8], at: usize) -> Option<u64> {
    let mut value: u64 = 0;
    let mut seen = false;
    for &b in bytes.get(at..)? {
        if b.is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            seen = true;
        } else {
            break;
        }
    }
    seen.then_some(value)
}

/// The number after the first `key` (which includes its quotes and colon).
fn number_of(bytes: &[u8], key: &[u8]) -> Option<u64> {
    memmem::find(bytes, key).and_then(|at| digits_after(bytes, at + key.len()))
}

/// Classifies a frame with byte searches only.
pub fn classify(bytes: &[u8]) -> Frame {
    if let Some(at) = memmem::find(bytes, br#""bs":"#) {
        let seq = digits_after(bytes, at + 5);
        let t = memmem::find(bytes, br#""bt":"#).and_then(|off| digits_after(bytes, off + 5));
        if let (Some(seq), Some(t_ns)) = (seq, t) {
            let hub_seq = number_of(bytes, br#""seq":"#);
            return Frame::Event { seq, t_ns, hub_seq };
        }
    }
    if memmem::find(bytes, br#""type":"gap""#).is_some() {
        let from = number_of(bytes, br#""from_seq":"#);
        let to = number_of(bytes, br#""to_seq":"#);
        Frame::Gap {
            range: from.zip(to),
        }
    } else if memmem::find(bytes, br#""type":"replay_complete""#).is_some() {
        Frame::ReplayComplete
    } else {
        Frame::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_streams_cover_every_seq_once() {
        let producers = 4;
        let mut seen = Vec::new();
        for producer in 0..producers {
            for k in 1..=5 {
                let seq = bench_seq(producer, k, producers);
                assert_eq!(stream_of(seq, producers), (producer, k));
                seen.push(seq);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
        assert_eq!(stream_of(7, 1), (0, 7));
    }

    #[test]
    fn event_fields_are_found_in_either_shape() {
        let pad = padding(100);
        let frame = envelope(42, 123_456, &pad);
        assert_eq!(
            classify(frame.as_bytes()),
            Frame::Event {
                seq: 42,
                t_ns: 123_456,
                hub_seq: Some(42)
            }
        );
        let herald = r#"{"type":"event","topic":"bench","seq":3,"data":{"bt":5,"bs":9,"pad":"x"}}"#;
        assert_eq!(
            classify(herald.as_bytes()),
            Frame::Event {
                seq: 9,
                t_ns: 5,
                hub_seq: Some(3)
            }
        );
        let gap = br#"{"type":"gap","topic":"bench","from_seq":7,"to_seq":9,"reason":"shed"}"#;
        assert_eq!(
            classify(gap),
            Frame::Gap {
                range: Some((7, 9))
            }
        );
        assert_eq!(
            classify(br#"{"type":"gap","topic":"bench"}"#),
            Frame::Gap { range: None }
        );
        assert_eq!(classify(br#"{"type":"welcome"}"#), Frame::Other);
    }
}
