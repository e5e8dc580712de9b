"""The shared session vectors (crates/protocol/tests/session_vectors.json),
run against the Python session core exactly as the Rust test runs them
against ``herald_protocol::session``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from herald._session import (
    CLIENT_FRAME,
    AttemptsExhausted,
    Close,
    Closed,
    Connect,
    Connecting,
    ConnectionState,
    Disconnected,
    FrameDecodeError,
    FrameDropped,
    FrameTooLargeError,
    NoTopicsError,
    Open,
    Reconnecting,
    Session,
    SessionClosedError,
    SessionConfig,
    SessionEvent,
    StateChanged,
    Terminal,
    TimeCursorError,
    checkpoints_from_json,
    checkpoints_to_json,
)
from herald.models import (
    Ack,
    ErrorFrame,
    Event,
    EventFilter,
    Gap,
    ReplayComplete,
    Snapshot,
    Subscribed,
    Welcome,
)

from .conftest import repo_file

VECTORS: dict[str, Any] = json.loads(repo_file("crates/protocol/tests/session_vectors.json").read_text())

CONFIG_KEYS = {
    "initial_reconnect_delay_ms",
    "max_reconnect_delay_ms",
    "max_reconnect_attempts",
    "stable_after_ms",
    "heartbeat_interval_ms",
    "missed_pongs_allowed",
    "offline_queue_capacity",
    "jitter",
    "endpoints",
    "max_checkpoints",
    "max_since_bytes",
    "max_frame_bytes",
}


def config(spec: dict[str, Any] | None) -> SessionConfig:
    spec = spec or {}
    unknown = set(spec) - CONFIG_KEYS
    assert not unknown, f"unknown config keys {unknown}"
    return SessionConfig(**spec)


def event_frame(spec: dict[str, Any], seq: int) -> dict[str, Any]:
    """The canonical event frame of the ``receive_events`` shorthand (its
    ``event_type`` and ``priority`` when the step gives them)."""
    topic = spec["topic"]
    return {
        "type": "event", "topic": topic, "seq": seq, "id": f"{topic}-{seq}",
        "event_type": spec.get("event_type", "execution.progress"), "priority": spec.get("priority", "normal"),
        "timestamp": 1729845678123, "data": {"seq": seq},
    }  # fmt: skip


def state_json(state: ConnectionState) -> Any:
    if isinstance(state, Connecting):
        return "connecting"
    if isinstance(state, Open):
        return "open"
    if isinstance(state, Reconnecting):
        reconnecting: dict[str, int] = {"attempt": state.attempt, "delay_ms": state.delay_ms}
        if state.code is not None:
            reconnecting["code"] = state.code
        return {"reconnecting": reconnecting}
    assert isinstance(state, Closed)
    reason = state.reason
    if isinstance(reason, Disconnected):
        return {"closed": "disconnected"}
    if isinstance(reason, Terminal):
        return {"closed": {"terminal": reason.code}}
    assert isinstance(reason, AttemptsExhausted)
    return {"closed": {"attempts_exhausted": reason.attempts}}


def event_json(event: SessionEvent) -> Any:
    if isinstance(event, Event):
        return {"event": [event.topic, event.seq]}
    if isinstance(event, Gap):
        return {"gap": event.to_wire()}
    if isinstance(event, Snapshot):
        return {"snapshot": {"topic": event.topic, "epoch": event.epoch, "seq": event.seq, "events": len(event.events)}}
    if isinstance(event, StateChanged):
        return {"state": state_json(event.state)}
    if isinstance(event, ErrorFrame):
        return {"error": event.to_wire()}
    if isinstance(event, Welcome):
        return {"welcome": event.session_id}
    if isinstance(event, Subscribed):
        return {"subscribed": event.to_wire()}
    if isinstance(event, ReplayComplete):
        return {"replay_complete": event.to_wire()}
    if isinstance(event, Ack):
        return {"ack": event.ref}
    assert isinstance(event, FrameDropped)
    return {"frame_dropped": event.frame.to_wire()}


def drain(poll: Any) -> list[Any]:
    out = []
    while (item := poll()) is not None:
        out.append(item)
    return out


def check(session: Session, expect: dict[str, Any], context: str) -> None:
    for key, expected in expect.items():
        if key == "actions":
            actual: Any = [
                "connect" if isinstance(a, Connect) else {"close": a.code}
                for a in drain(session.poll_action)
                if isinstance(a, (Connect, Close))
            ]
        elif key == "transmit":
            actual = [json.loads(frame.to_json()) for frame in drain(session.poll_transmit)]
        elif key == "events":
            actual = [event_json(e) for e in drain(session.poll_event)]
        elif key == "delivered":
            actual = [[e.topic, e.seq] for e in drain(session.poll_event) if isinstance(e, Event)]
        elif key == "state":
            actual = state_json(session.state)
        elif key == "timeout":
            actual = session.poll_timeout()
        elif key == "checkpoints":
            actual = checkpoints_to_json(session.checkpoints)
        elif key == "queued_frames":
            actual = session.queued_frames
        elif key == "dropped_frames":
            actual = session.dropped_frames
        elif key == "session_id":
            actual = session.session_id
        elif key == "endpoint":
            actual = session.endpoint
        else:
            raise AssertionError(f"{context}: unknown expectation {key}")
        assert actual == expected, f"{context}: {key}"


def run(scenario: dict[str, Any]) -> None:
    name = scenario["name"]
    session = Session(config(scenario.get("config")), scenario.get("seed", 0))
    now = 0
    for index, step in enumerate(scenario["steps"]):
        context = f"{name}, step {index}: {json.dumps(step)}"
        if "at" in step:
            now = max(now, step["at"])
        outcome: str | None = None
        try:
            if "subscribe" in step:
                spec = step["subscribe"]
                flt = EventFilter.model_validate(spec["filter"]) if "filter" in spec else None
                session.subscribe(spec["topics"], flt, spec.get("snapshot", False))
            elif "unsubscribe" in step:
                session.unsubscribe(step["unsubscribe"])
            elif "end_subscription" in step:
                session.end_subscription(step["end_subscription"])
            elif "send" in step:
                session.send_frame(CLIENT_FRAME.validate_json(json.dumps(step["send"])))
            elif "unsent" in step:
                session.handle_unsent(CLIENT_FRAME.validate_json(json.dumps(step["unsent"])))
            elif "connected" in step:
                now = max(now, step["connected"])
                session.handle_connected(now)
            elif "receive" in step:
                session.handle_text(json.dumps(step["receive"]), now)
            elif "receive_text" in step:
                session.handle_text(step["receive_text"], now)
            elif "receive_events" in step:
                spec = step["receive_events"]
                for seq in spec["seqs"]:
                    session.handle_text(json.dumps(event_frame(spec, seq)), now)
            elif "closed" in step:
                session.handle_closed(step["closed"], now)
            elif "timeout" in step:
                now = max(now, step["timeout"])
                session.handle_timeout(now)
            elif "advance_to" in step:
                target = step["advance_to"]
                while (deadline := session.poll_timeout()) is not None and deadline <= target:
                    now = max(now, deadline)
                    session.handle_timeout(now)
                now = max(now, target)
            elif "fire_deadline" in step:
                deadline = session.poll_timeout()
                assert deadline == step["fire_deadline"], f"{context}: deadline"
                assert deadline is not None
                now = max(now, deadline)
                session.handle_timeout(now)
            elif "disconnect" in step:
                session.disconnect()
            elif "reconnect" in step:
                session.reconnect()
            elif "restore_checkpoints" in step:
                session.restore_checkpoints(checkpoints_from_json(step["restore_checkpoints"]))
            elif "expect" in step:
                check(session, step["expect"], context)
            else:
                raise AssertionError(f"{context}: unknown step")
        except SessionClosedError:
            outcome = "closed"
        except NoTopicsError:
            outcome = "no_topics"
        except TimeCursorError:
            outcome = "time_cursor"
        except FrameTooLargeError:
            outcome = "frame_too_large"
        except FrameDecodeError:
            outcome = "decode_error"
        assert outcome == step.get("error"), f"{context}: result"


def test_the_vectors_are_there_and_versioned() -> None:
    assert VECTORS["version"] == 1
    names = [s["name"] for s in VECTORS["scenarios"]]
    assert len(names) >= 20
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"])
def test_the_python_session_core_passes_the_shared_vector(scenario: dict[str, Any]) -> None:
    run(scenario)


def test_a_wrong_expectation_fails_the_runner() -> None:
    with pytest.raises(AssertionError):
        run({"name": "wrong", "steps": [{"expect": {"actions": [{"close": 1000}]}}]})
