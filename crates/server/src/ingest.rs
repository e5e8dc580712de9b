//! Unix datagram ingest: producers that cannot (or should not) wait on HTTP
//! send one JSON event per datagram, in the `POST /api/v1/events` shape.
//!
//! Fire-and-forget on both sides: a malformed datagram is counted and logged,
//! never fatal; a stale socket file from a crashed run is replaced; a live one
//! (another hub listening) is refused rather than stolen.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use herald_protocol::{EventType, Label, PublishRequest, Topic};
use serde_json::{Map, Value};
use tokio::net::UnixDatagram;

use crate::hub::Hub;

/// The largest datagram read, whatever `--max-body-size` says.
const MAX_DATAGRAM: usize = 16 * 1024 * 1024;

/// Why the ingest socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("another process is listening on {path}")]
    InUse { path: PathBuf },
    #[error("could not bind {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket (replacing a stale file) and applies `mode` (e.g. 0o660).
pub fn bind(path: &Path, mode: u32) -> Result<UnixDatagram, IngestError> {
    let bind_error = |source| IngestError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(IngestError::NotASocket {
                path: path.to_owned(),
            });
        }
        let probe = std::os::unix::net::UnixDatagram::unbound().map_err(bind_error)?;
        if probe.send_to(b"", path).is_ok() {
            return Err(IngestError::InUse {
                path: path.to_owned(),
            });
        }
        tracing::info!(path = %path.display(), "replacing a stale socket file");
        std::fs::remove_file(path).map_err(bind_error)?;
    }
    let socket = UnixDatagram::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(socket)
}

/// Reads datagrams and publishes them until the hub shuts down, then removes
/// the socket file.
pub async fn run(hub: Hub, socket: UnixDatagram, path: PathBuf) {
    let token = hub.shutdown_token().clone();
    // Registered once, not once per datagram.
    let mut stopped = std::pin::pin!(token.cancelled());
    // The same limit as an HTTP publish body (capped: the kernel lets a
    // datagram through only up to the sender's socket buffer, ~208 KiB by
    // default); one byte more tells a datagram at the limit from a longer
    // one the kernel cut to fit.
    let limit = hub.config().max_body_size.min(MAX_DATAGRAM);
    let mut buffer = vec![0u8; limit.saturating_add(1)];
    loop {
        let received = tokio::select! {
            biased;
            () = &mut stopped => break,
            received = socket.recv(&mut buffer) => received,
        };
        let len = match received {
            Ok(len) => len,
            Err(error) => {
                tracing::warn!(%error, "unix socket receive failed");
                continue;
            }
        };
        if len == 0 {
            // Zero-length datagrams are liveness probes (see `bind`).
            continue;
        }
        let metrics = hub.metrics();
        metrics.unix_datagrams.fetch_add(1, Relaxed);
        if len > limit {
            metrics.unix_datagrams_rejected.fetch_add(1, Relaxed);
            tracing::warn!(limit, "rejected a datagram larger than --max-body-size");
            continue;
        }
        // An object, as over HTTP (serde alone would also take the fields
        // as an array, in order).
        let datagram = &buffer[..len];
        let request = match datagram.trim_ascii_start().first() {
            Some(b'{') => decode(datagram),
            _ => Err("expected a JSON object with named fields".to_owned()),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                metrics.unix_datagrams_rejected.fetch_add(1, Relaxed);
                let preview = String::from_utf8_lossy(&datagram[..len.min(120)]).into_owned();
                tracing::warn!(error, datagram = %preview, "rejected a malformed datagram");
                continue;
            }
        };
        if let Err(error) = hub.publish_detached(request).await {
            tracing::warn!(%error, "could not publish a datagram");
            if token.is_cancelled() {
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A datagram holding one JSON object: an event in the `POST /api/v1/events`
/// shape, or, from a state machine written for seed 003, its own shape (see
/// [`from_seed_003`]).
fn decode(datagram: &[u8]) -> Result<PublishRequest, String> {
    let error = match serde_json::from_slice::<PublishRequest>(datagram) {
        Ok(request) => return Ok(request),
        Err(error) => error.to_string(),
    };
    // Only an object without `topic` but with the seed's fields is read the
    // seed's way; anything else keeps the error of the contract's shape.
    match serde_json::from_slice::<Map<String, Value>>(datagram) {
        Ok(fields) if is_seed_003(&fields) => from_seed_003(fields),
        _ => Err(error),
    }
}

fn is_seed_003(fields: &Map<String, Value>) -> bool {
    !fields.contains_key("topic")
        && fields.get("type").is_some_and(Value::is_string)
        && fields
            .get("machine_id")
            .is_some_and(|id| id.is_string() || id.is_u64())
}

/// The latest timestamp a seed event may carry, in seconds (year 5138): a
/// larger number is not seconds (milliseconds, most likely) and is refused
/// rather than multiplied into nonsense.
const MAX_SEED_SECONDS: f64 = 1e11;

/// Seed 003's state machines send `{"type": "state_change", "machine_id":
/// "worker-123", "state": "processing", "timestamp": 1729845678.123, ...}`.
/// Such an event goes to topic `machine:{machine_id}` as `state.changed` (any
/// other `type` as `machine.{type}`), keyed by the machine for a
/// `state_change`, so the snapshot of `machine:*` is every machine's current
/// state (the seed's `initial` message). The timestamp in seconds becomes
/// milliseconds; every other field, `machine_id` included, is the `data`.
fn from_seed_003(mut fields: Map<String, Value>) -> Result<PublishRequest, String> {
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err("a seed event needs a \"type\"".to_owned()),
    };
    let machine = match fields.get("machine_id") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err("a seed event needs a \"machine_id\"".to_owned()),
    };
    let topic = Topic::with_id("machine", &machine).map_err(|e| e.to_string())?;
    let state_change = kind == "state_change";
    let event_type = if state_change {
        EventType::StateChanged
    } else {
        format!("machine.{kind}")
            .parse()
            .map_err(|e: herald_protocol::EventTypeError| e.to_string())?
    };
    let timestamp = match fields.remove("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(seconds)) => match seconds.as_f64() {
            Some(s) if (0.0..MAX_SEED_SECONDS).contains(&s) => Some((s * 1000.0).round() as u64),
            _ => {
                return Err(format!(
                    "timestamp {seconds} is not seconds since the epoch"
                ));
            }
        },
        Some(other) => return Err(format!("timestamp {other} is not seconds since the epoch")),
    };
    let mut request = PublishRequest::new(topic, event_type, Value::Object(fields));
    request.timestamp = timestamp;
    if state_change {
        request.key = Label::new(machine).ok();
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use herald_protocol::{EventType, Topic};
    use serde_json::json;

    use super::decode;

    #[test]
    fn a_seed_003_state_change_becomes_a_keyed_state_changed_on_its_machine_topic() {
        let datagram = json!({"type": "state_change", "machine_id": "worker-123",
            "state": "processing", "previous_state": "idle", "timestamp": 1729845678.123,
            "data": {"job_id": "task-456", "progress": 50}});
        let request = decode(datagram.to_string().as_bytes()).unwrap();
        assert_eq!(request.topic, Topic::parse("machine:worker-123").unwrap());
        assert_eq!(request.event_type, EventType::StateChanged);
        assert_eq!(request.key.as_ref().map(|k| k.as_str()), Some("worker-123"));
        assert_eq!(request.timestamp, Some(1_729_845_678_123));
        assert_eq!(
            request.data,
            json!({"machine_id": "worker-123", "state": "processing", "previous_state": "idle",
                "data": {"job_id": "task-456", "progress": 50}})
        );
    }

    #[test]
    fn other_seed_types_are_machine_events_without_a_key() {
        let datagram = json!({"type": "job_done", "machine_id": 17, "job": 7});
        let request = decode(datagram.to_string().as_bytes()).unwrap();
        assert_eq!(request.topic.as_str(), "machine:17");
        assert_eq!(request.event_type.as_str(), "machine.job_done");
        assert_eq!(request.key, None);
        assert_eq!(request.timestamp, None);
    }

    #[test]
    fn the_contracts_shape_wins_and_keeps_its_errors() {
        // A `topic` means the contract's shape, even with seed-like fields.
        let contract = json!({"topic": "run:1", "event_type": "step.started",
            "type": "state_change", "machine_id": "w1"});
        assert_eq!(
            decode(contract.to_string().as_bytes())
                .unwrap()
                .topic
                .as_str(),
            "run:1"
        );
        let broken = json!({"topic": "Bad Topic!", "event_type": "step.started"});
        assert!(
            decode(broken.to_string().as_bytes())
                .unwrap_err()
                .contains("topic")
        );
        for bad in [
            json!({"type": "state_change", "machine_id": "not a valid id!"}),
            json!({"type": "Not-Dotted!", "machine_id": "w1"}),
            json!({"type": "state_change", "machine_id": "w1", "timestamp": "yesterday"}),
            json!({"type": "state_change", "machine_id": "w1", "timestamp": -1}),
            // Milliseconds, not seconds.
            json!({"type": "state_change", "machine_id": "w1", "timestamp": 1729845678123u64}),
        ] {
            assert!(decode(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }
}
