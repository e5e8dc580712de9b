//! The datagrams of the state machines of seed 003, which Herald takes
//! unchanged: `{"type": "state_change", "machine_id": "worker-123",
//! "state": "processing", "timestamp": 1729845678.123, ...}`.

use herald_protocol::{EventType, Label, PublishRequest, Topic};
use serde_json::{Map, Value};

/// A datagram holding one JSON object: an event in the `POST /api/v1/events`
/// shape, or a state machine's own (see [`from_state_machine`]).
pub(super) fn decode(datagram: &[u8]) -> Result<PublishRequest, String> {
    let error = match serde_json::from_slice::<PublishRequest>(datagram) {
        Ok(request) => return Ok(request),
        Err(error) => error.to_string(),
    };
    // Only an object without `topic` but with a state machine's fields is read
    // its way; anything else keeps the error of the contract's shape.
    match serde_json::from_slice::<Map<String, Value>>(datagram) {
        Ok(fields) if is_state_machine(&fields) => from_state_machine(fields),
        _ => Err(error),
    }
}

fn is_state_machine(fields: &Map<String, Value>) -> bool {
    !fields.contains_key("topic")
        && fields.get("type").is_some_and(Value::is_string)
        && fields
            .get("machine_id")
            .is_some_and(|id| id.is_string() || id.is_u64())
}

/// The latest timestamp a state machine event may carry, in seconds (year 5138): a
/// larger number is not seconds (milliseconds, most likely) and is refused
/// rather than multiplied into nonsense.
const MAX_SECONDS: f64 = 1e11;

/// Seed 003's state machines send `{"type": "state_change", "machine_id":
/// "worker-123", "state": "processing", "timestamp": 1729845678.123, ...}`.
/// Such an event goes to topic `machine:{machine_id}` as `state.changed` (any
/// other `type` as `machine.{type}`), keyed by the machine for a
/// `state_change`, so the snapshot of `machine:*` is every machine's current
/// state (the seed's `initial` message). The timestamp in seconds becomes
/// milliseconds; every other field, `machine_id` included, is the `data`.
fn from_state_machine(mut fields: Map<String, Value>) -> Result<PublishRequest, String> {
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err("a state machine event needs a \"type\"".to_owned()),
    };
    let machine = match fields.get("machine_id") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => return Err("a state machine event needs a \"machine_id\"".to_owned()),
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
            Some(s) if (0.0..MAX_SECONDS).contains(&s) => Some((s * 1000.0).round() as u64),
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
    fn a_state_machine_state_change_becomes_a_keyed_state_changed_on_its_machine_topic() {
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
    fn other_state_machine_types_are_machine_events_without_a_key() {
        let datagram = json!({"type": "job_done", "machine_id": 17, "job": 7});
        let request = decode(datagram.to_string().as_bytes()).unwrap();
        assert_eq!(request.topic.as_str(), "machine:17");
        assert_eq!(request.event_type.as_str(), "machine.job_done");
        assert_eq!(request.key, None);
        assert_eq!(request.timestamp, None);
    }

    #[test]
    fn the_contracts_shape_wins_and_keeps_its_errors() {
        // A `topic` means the contract's shape, even with state-machine-like fields.
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
