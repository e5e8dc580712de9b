//! [`SessionError`]: what an application call on a session can refuse.

/// Why [`Session`](super::Session) refused an application call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is closed (by [`Session::disconnect`](super::Session::disconnect),
    /// a terminal close code, or exhausted reconnect attempts): nothing would
    /// ever send the frame. Call [`Session::reconnect`](super::Session::reconnect) first.
    #[error("the session is closed; call reconnect() before sending")]
    Closed,
    /// `subscribe` or `unsubscribe` without a topic.
    #[error("a subscription needs at least one topic or pattern")]
    NoTopics,
    /// A `subscribe` with a time cursor (`{"time_ms": T}`): the session
    /// resumes from seq checkpoints, which a time cannot become.
    #[error(
        "the session resumes from seq checkpoints: subscribe without a time cursor (send it on a raw connection)"
    )]
    TimeCursor,
    /// The frame is larger than the hub takes
    /// ([`SessionConfig::max_frame_bytes`](super::SessionConfig::max_frame_bytes),
    /// its `--max-frame-size`): sent, it would close the connection with
    /// 1009, and a subscription would do so again on every reconnect.
    #[error(
        "the frame would be {bytes} bytes, over the hub's frame limit of {limit} (max_frame_bytes): split it"
    )]
    FrameTooLarge { bytes: usize, limit: usize },
}
