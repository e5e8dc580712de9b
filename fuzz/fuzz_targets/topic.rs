//! The topic grammar on arbitrary text: `Topic::parse`, `TopicPattern::parse`
//! and `TypePattern::parse` accept or refuse, and never panic. What parses
//! prints back to the text it came from.

#![no_main]

use herald_protocol::{Topic, TopicPattern, TypePattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = Topic::parse(text) {
        assert_eq!(topic.to_string(), text);
        let pattern = TopicPattern::parse(text).expect("a topic is a pattern");
        assert!(pattern.covers(&TopicPattern::Exact(topic)));
    }
    if let Ok(pattern) = TopicPattern::parse(text) {
        assert_eq!(pattern.to_string(), text);
    }
    let _ = TypePattern::parse(text);
});
