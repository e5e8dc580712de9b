//! The list of every public wire type, written once: the JSON Schema
//! ([`schema`](crate::schema)) and the TypeScript bindings
//! ([`bindings`](crate::bindings)) both start from it, so a type added to
//! the protocol reaches every generated language or none.

/// Calls `$callback!` with every public wire type (by path), grouped as the
/// contract reads: the envelope and publishing, client frames, server
/// frames, payloads.
macro_rules! with_wire_types {
    ($callback:ident) => {
        $callback!(
            // The envelope and publishing.
            $crate::event::Event,
            $crate::event::PublishRequest,
            $crate::event::PublishBody,
            $crate::event::PublishReceipt,
            $crate::event_type::EventType,
            $crate::priority::Priority,
            $crate::filter::EventFilter,
            $crate::error::ErrorCode,
            // Client → server.
            $crate::frame::ClientFrame,
            $crate::frame::ClientMessage,
            $crate::frame::Subscribe,
            $crate::frame::Unsubscribe,
            $crate::frame::Replay,
            $crate::frame::RequestState,
            $crate::frame::Auth,
            $crate::frame::Heartbeat,
            $crate::frame::Confirm,
            $crate::frame::Control,
            $crate::frame::AckRequest,
            $crate::frame::Since,
            $crate::frame::RequestId,
            // Server → client.
            $crate::frame::ServerMessage,
            $crate::frame::Welcome,
            $crate::frame::Subscribed,
            $crate::frame::Snapshot,
            $crate::frame::ReplayComplete,
            $crate::frame::Gap,
            $crate::frame::GapReason,
            $crate::frame::Ack,
            $crate::frame::ErrorFrame,
            // Payloads.
            $crate::payload::Progress,
            $crate::payload::StateChange,
            $crate::payload::TaskStepResult,
            $crate::payload::ApprovalRequested,
            $crate::payload::ApprovalStatus,
            $crate::payload::ApprovalDecision,
            $crate::payload::ApprovalResolved,
            $crate::payload::ApprovalRecord,
            $crate::payload::NewApproval,
            $crate::payload::ControlRequest,
            $crate::payload::ErrorPayload,
            $crate::payload::Metrics,
        )
    };
}
