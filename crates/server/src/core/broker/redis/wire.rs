//! What crosses Redis: an event's frame split around its seq (the publish
//! script puts the seq in), the announcement on a topic's channel, and the
//! fingerprint that tells a retry from another event reusing an id.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::{Epoch, Event};
use serde_json::Value;

use crate::core::broker::{Audience, Draft, EncodedEvent};

/// An event's frame with the seq left out: `head + SEQ + tail`.
#[derive(Debug, Clone)]
pub(super) struct SplitFrame {
    pub(super) head: Vec<u8>,
    pub(super) tail: Vec<u8>,
}

/// Where the seq goes: the frame's fields come as `type`, `topic` (a topic
/// holds no quote), then `seq`, so the first `,"seq":` is the seq's.
const SEQ_FIELD: &[u8] = b",\"seq\":";

impl SplitFrame {
    /// The frame of `draft`'s event, split where its seq goes.
    pub(super) fn of(draft: &Draft) -> Option<SplitFrame> {
        let mut frame = Vec::with_capacity(256);
        draft.clone().into_event(0).encode_frame_into(&mut frame);
        let at = frame
            .windows(SEQ_FIELD.len())
            .position(|window| window == SEQ_FIELD)?;
        let seq_start = at + SEQ_FIELD.len();
        // The encoded seq is `0`, one byte.
        let tail = frame.split_off(seq_start + 1);
        frame.truncate(seq_start);
        Some(SplitFrame { head: frame, tail })
    }
}

/// A stable fingerprint of what a retry must repeat: the type, priority,
/// key, source and data (map keys in sorted order, whatever order the
/// producer wrote them in).
pub(super) fn fingerprint(draft: &Draft) -> String {
    let mut text = String::with_capacity(128);
    let _ = write!(
        text,
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}",
        draft.event_type,
        draft.priority.as_str(),
        draft.key.as_ref().map_or("", |k| k.as_str()),
        draft.source.as_ref().map_or("", |s| s.as_str()),
    );
    canonical(&draft.data, &mut text);
    sha1_smol::Sha1::from(text.as_bytes()).digest().to_string()
}

/// `value` as JSON with every object's keys sorted.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// How an audience is written in the stream and in announcements, by node
/// `node`. [`Audience::Nobody`] names the node that published: that node's
/// connections get their copies from the caller, and every other node
/// delivers the event to all its connections, as [`Audience::Everyone`]
/// (see [`audience_of`]), so that no node's clients see a seq of `global`
/// go by without its event.
pub(super) fn audience_code(audience: Audience, node: &str) -> Cow<'static, str> {
    match audience {
        Audience::Subscribers => Cow::Borrowed("s"),
        Audience::Everyone => Cow::Borrowed("e"),
        Audience::User => Cow::Borrowed("u"),
        Audience::Nobody => Cow::Owned(format!("n:{node}")),
    }
}

/// What an audience written by [`audience_code`] means on node `node`;
/// `None` for a code no node writes.
pub(super) fn audience_of(code: &[u8], node: &str) -> Option<Audience> {
    Some(match code {
        b"s" => Audience::Subscribers,
        b"e" => Audience::Everyone,
        b"u" => Audience::User,
        b"n" => Audience::Nobody,
        [b'n', b':', origin @ ..] if origin == node.as_bytes() => Audience::Nobody,
        [b'n', b':', ..] => Audience::Everyone,
        _ => return None,
    })
}

/// An event announced on a topic's channel: `EPOCH AUDIENCE FRAME`.
#[derive(Debug)]
pub(super) struct Announcement {
    pub(super) epoch: Epoch,
    pub(super) audience: Audience,
    pub(super) event: EncodedEvent,
}

impl Announcement {
    /// The announcement as node `node` delivers it ([`audience_of`]).
    pub(super) fn parse(payload: &[u8], node: &str) -> Option<Announcement> {
        let mut parts = payload.splitn(3, |b| *b == b' ');
        let epoch = Epoch::new(std::str::from_utf8(parts.next()?).ok()?).ok()?;
        let audience = audience_of(parts.next()?, node)?;
        let event = decode_frame(Bytes::copy_from_slice(parts.next()?))?;
        Some(Announcement {
            epoch,
            audience,
            event,
        })
    }
}

/// An event frame read back from Redis: the same bytes, and the event.
/// The bytes are checked to be UTF-8 here, once: they are sent on as a
/// text frame as they are.
pub(super) fn decode_frame(frame: Bytes) -> Option<EncodedEvent> {
    let text = std::str::from_utf8(&frame).ok()?;
    let event: Event = serde_json::from_str(text).ok()?;
    Some(EncodedEvent {
        event: Arc::new(event),
        frame,
    })
}

#[cfg(test)]
mod tests {
    use herald_protocol::{EventId, EventType, PublishRequest, Topic};
    use serde_json::json;

    use super::*;

    fn draft(data: Value) -> Draft {
        let request = PublishRequest::new(
            Topic::parse("run:r1").unwrap(),
            EventType::StepProgress,
            data,
        )
        .id(EventId::new("e1").unwrap());
        Draft::new(
            request,
            || unreachable!("the id is given"),
            1_700_000_000_000,
        )
    }

    #[test]
    fn a_split_frame_with_its_seq_put_back_is_the_events_frame() {
        // A data field named `seq` must not be taken for the event's.
        let draft = draft(json!({"seq": 0, "note": ",\"seq\":0"}));
        let split = SplitFrame::of(&draft).unwrap();
        let mut frame = split.head.clone();
        frame.extend_from_slice(b"42");
        frame.extend_from_slice(&split.tail);
        assert_eq!(frame, draft.into_event(42).encode_frame().into_bytes());
    }

    #[test]
    fn fingerprints_ignore_key_order_and_see_every_other_difference() {
        let a = fingerprint(&draft(json!({"a": 1, "b": [1.5, {"x": null}]})));
        let b = fingerprint(&draft(
            serde_json::from_str(r#"{"b":[1.5,{"x":null}],"a":1}"#).unwrap(),
        ));
        assert_eq!(a, b);
        assert_ne!(
            a,
            fingerprint(&draft(json!({"a": 2, "b": [1.5, {"x": null}]})))
        );
    }

    #[test]
    fn an_announcement_reads_back_the_epoch_the_audience_and_the_event() {
        let event = draft(json!({"n": 1})).into_event(7);
        let payload = format!("e1f2 u {}", event.encode_frame());
        let announcement = Announcement::parse(payload.as_bytes(), "n1").unwrap();
        assert_eq!(announcement.epoch.as_str(), "e1f2");
        assert_eq!(announcement.audience, Audience::User);
        assert_eq!(*announcement.event.event, event);
        assert!(Announcement::parse(b"e1f2 x {}", "n1").is_none());
    }

    #[test]
    fn an_event_for_nobody_is_for_no_one_on_its_node_and_for_everyone_on_the_others() {
        let code = audience_code(Audience::Nobody, "n1");
        assert_eq!(audience_of(code.as_bytes(), "n1"), Some(Audience::Nobody));
        assert_eq!(audience_of(code.as_bytes(), "n2"), Some(Audience::Everyone));
        for audience in [Audience::Subscribers, Audience::Everyone, Audience::User] {
            let code = audience_code(audience, "n1");
            assert_eq!(audience_of(code.as_bytes(), "n2"), Some(audience));
        }
    }

    #[test]
    fn a_frame_read_back_is_sent_on_only_if_it_is_utf8() {
        let frame = draft(json!({"note": "é"})).into_event(3).encode_frame();
        let decoded = decode_frame(Bytes::from(frame.clone())).unwrap();
        assert_eq!(decoded.frame, frame.as_bytes());
        let mut broken = frame.into_bytes();
        let at = broken.iter().position(|&b| b >= 0x80).unwrap();
        broken[at] = 0xff;
        assert!(decode_frame(Bytes::from(broken)).is_none());
    }
}
