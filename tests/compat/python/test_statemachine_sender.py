"""Seed 003 (state machine engine): the machines' "Client-Side Sender", as
printed, against a real hub's Unix socket (only ``SOCKET_PATH`` changes),
read by a dashboard on ``/compat/statemachine/ws/events`` (the dashboard's
own JavaScript runs in Node)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from conftest import SEEDS, Hub

pytestmark = pytest.mark.anyio

LIMIT = 10.0


def sender(socket_path: Path) -> Any:
    """The seed's ``send_event``, defined as printed, with its module's names."""
    scope: dict[str, Any] = {
        "socket": socket,
        "json": json,
        "time": time,
        "logger": logging.getLogger("state_machine"),
        "SOCKET_PATH": str(socket_path),
    }
    exec((SEEDS / "003_send_event.py").read_text(), scope)  # noqa: S102 - the seed's own code
    return scope["send_event"]


async def test_a_machines_state_changes_reach_the_dashboard_in_seconds_exactly(unix_hub: Hub) -> None:
    assert unix_hub.unix_socket is not None
    send_event = sender(unix_hub.unix_socket)
    send_event("state_change", "worker-123", state="idle", previous_state="starting")
    async with websockets.connect(f"{unix_hub.ws}/compat/statemachine/ws/events", open_timeout=LIMIT) as dashboard:
        # The datagram may still be on its way: the dashboard sees it in its
        # initial state or right after, never not at all.
        first = json.loads(await asyncio.wait_for(dashboard.recv(), LIMIT))
        assert first["type"] == "initial"
        if not first["machines"]:
            change = json.loads(await asyncio.wait_for(dashboard.recv(), LIMIT))
            assert change["type"] == "state_change" and change["state"] == "idle"
        else:
            assert first["machines"][0]["id"] == "worker-123"
            assert first["machines"][0]["current_state"] == "idle"
        before = time.time()
        send_event("state_change", "worker-123", state="processing", previous_state="idle",
                   data={"job_id": "task-456", "progress": 50})
        change = json.loads(await asyncio.wait_for(dashboard.recv(), LIMIT))
    assert change["type"] == "state_change"
    assert change["machine_id"] == "worker-123"
    assert (change["state"], change["previous_state"]) == ("processing", "idle")
    assert change["data"] == {"job_id": "task-456", "progress": 50}
    # Seconds, as the machine sent them (to the millisecond the hub keeps).
    assert abs(change["timestamp"] - before) < 5


def test_a_machine_keeps_running_when_no_hub_listens(tmp_path: Path) -> None:
    send_event = sender(tmp_path / "nobody.sock")
    send_event("state_change", "worker-1", state="idle")
