//! The Lua scripts (in `lua/`) and what their answers mean. Each runs
//! atomically in Redis, so seq assignment, idempotency, trimming and the
//! announcement of a publish happen as one step, whichever node sent it.

use std::sync::LazyLock;

use redis::{Script, Value};

/// Stores events of one topic and announces them.
pub(super) static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/publish.lua")));
/// Reads a topic at one position.
pub(super) static READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/read.lua")));
/// Replaces the epoch of a stream Redis restored from an older copy.
pub(super) static REBASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/rebase.lua")));
/// Finds where a stream's restored older copy ends.
pub(super) static RESTORED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/restored.lua")));
/// Prunes the topic indexes of expired topics; counts the rest.
pub(super) static PRUNE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/prune.lua")));
/// Registers a pending approval.
pub(super) static APPROVAL_CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_create.lua")));
/// Decides an approval, once.
pub(super) static APPROVAL_DECIDE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_decide.lua")));
/// Adds one node's deliveries of an approval's request to its count.
pub(super) static APPROVAL_DELIVERED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_delivered.lua")));
/// Marks an approval's published change as no longer owed.
pub(super) static APPROVAL_ANNOUNCED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_announced.lua")));
/// Hands one node the approvals whose last change is owed to their topics.
pub(super) static APPROVAL_UNANNOUNCED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_unannounced.lua")));
/// Claims expired approvals for one node.
pub(super) static APPROVAL_CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/approval_claim.lua")));

/// A script's answer that is not what the script returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected answer from a Redis script: {0}")]
pub(super) struct Unexpected(pub(super) String);

/// The items of an array answer.
pub(super) fn items(value: Value) -> Result<Vec<Value>, Unexpected> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(Unexpected(format!("{other:?}"))),
    }
}

/// A bulk string (or simple string) as bytes.
pub(super) fn bytes(value: &Value) -> Result<&[u8], Unexpected> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.as_bytes()),
        other => Err(Unexpected(format!("{other:?}"))),
    }
}

/// A string answer.
pub(super) fn text(value: &Value) -> Result<&str, Unexpected> {
    std::str::from_utf8(bytes(value)?).map_err(|e| Unexpected(e.to_string()))
}

/// An integer answer (or a string holding one).
pub(super) fn number(value: &Value) -> Result<u64, Unexpected> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|e| Unexpected(e.to_string())),
        other => text(other)?
            .parse()
            .map_err(|e: std::num::ParseIntError| Unexpected(e.to_string())),
    }
}
