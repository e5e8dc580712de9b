"""A state machine on the hub's machine: fire-and-forget datagrams that never block it."""

import herald

events = herald.UnixPublisher("/tmp/statemachine-events.sock")  # herald serve --unix-socket ...


def transition(machine_id: str, previous: str, state: str) -> None:
    change = herald.StateChange(machine_id=machine_id, state=state, previous_state=previous)
    events.publish(f"machine:{machine_id}", "state.changed", change.to_wire(), key=machine_id)


transition("worker-123", "idle", "processing")
print(f"sent {events.sent}, dropped {events.dropped} (the hub may be down: the machine goes on)")
