"""Seed 000 (AIECS): the producers' Python, as printed in sections 4, 7.4 and
8.1, run against a real hub through the manager's calls
(``aiecs_manager.WebSocketManager``), with only the manager's host and port
changed. The user is a page on ``/compat/aiecs`` answering as Appendix C's
script does (that script itself runs in Node and Chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Dict

import pytest
import websockets

from aiecs_manager import TaskStepResult, UserConfirmation, WebSocketManager
from conftest import Hub, run, snippets

pytestmark = pytest.mark.anyio

SNIPPETS = snippets("000_aiecs_producer.py")
LIMIT = 10.0


class Page:
    """A page as Appendix C's script behaves: logs every message and
    answers each ``task_step_result`` with ``confirm``."""

    def __init__(self, hub: Hub, proceed: bool) -> None:
        self.url = f"{hub.ws}/compat/aiecs"
        self.proceed = proceed
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def serve(self, ready: asyncio.Event) -> None:
        async with websockets.connect(self.url) as socket:
            async for text in socket:
                data = json.loads(text)
                self.messages.append(data)
                self.arrived.set()
                if data["type"] == "connection_established":
                    ready.set()
                if data["type"] == "task_step_result":
                    await socket.send(json.dumps({
                        "action": "confirm",
                        "callback_id": data["callback_id"],
                        "proceed": self.proceed,
                        "feedback": "Agree to continue" if self.proceed else "Cancel execution",
                    }))

    async def wait_for(self, kind: str) -> dict[str, Any]:
        async def seen() -> dict[str, Any]:
            while True:
                for message in self.messages:
                    if message["type"] == kind:
                        return message
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(seen(), LIMIT)


@contextlib.asynccontextmanager
async def page(hub: Hub, proceed: bool = True) -> AsyncIterator[Page]:
    opened = Page(hub, proceed)
    ready = asyncio.Event()
    task = asyncio.create_task(opened.serve(ready))
    try:
        await asyncio.wait_for(ready.wait(), LIMIT)
        yield opened
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def namespace(hub: Hub) -> dict[str, Any]:
    """What the snippets expect around them: the manager class and models,
    the modules they use, and the task helpers of section 4.2."""
    calls: list[tuple[str, str]] = []

    async def retry_task(task_id: str) -> None:
        calls.append(("retry", task_id))

    async def cancel_task(task_id: str) -> None:
        calls.append(("cancel", task_id))

    return {
        "WebSocketManager": WebSocketManager,
        "TaskStepResult": TaskStepResult,
        "UserConfirmation": UserConfirmation,
        "asyncio": asyncio,
        "time": time,
        "Dict": Dict,
        "Any": Any,
        "retry_task": retry_task,
        "cancel_task": cancel_task,
        "task_id": "task_789",
        "calls": calls,
    }


async def run_section(title: str, scope: dict[str, Any], hub: Hub) -> str:
    """Runs a section with the manager's address changed; returns what it printed."""
    source = SNIPPETS[title].replace('host="0.0.0.0", port=8765', f'host="{hub.host}", port={hub.port}')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        await asyncio.wait_for(run(source, scope), LIMIT)
    return printed.getvalue()


async def started(hub: Hub) -> dict[str, Any]:
    """The manager of section 4.1, started (and not yet stopped)."""
    scope = namespace(hub)
    source = SNIPPETS["§4.1 Starting and Stopping Server"]
    start = source[: source.index("# Stop server")]
    await run(start.replace('host="0.0.0.0", port=8765', f'host="{hub.host}", port={hub.port}'), scope)
    return scope


async def test_the_server_lifecycle_and_status_read_as_the_seed_prints_them(hub: Hub) -> None:
    scope = namespace(hub)
    printed = await run_section("§4.1 Starting and Stopping Server", scope, hub)
    assert printed == "WebSocket server started\nWebSocket server stopped\n"
    async with page(hub):
        printed = await run_section("§4.1 Server Status Monitoring", scope, hub)
    assert printed == "Server running status: True\nActive connections: 1\nPending callbacks: 0\n"


async def test_notify_user_returns_the_users_confirmation_and_feedback(hub: Hub) -> None:
    scope = await started(hub)
    async with page(hub, proceed=True) as user:
        printed = await run_section("§4.2 Task Step Result Notification", scope, hub)
        question = await user.wait_for("task_step_result")
    assert printed == "User confirmed to continue execution\nUser feedback: Agree to continue\n"
    assert question["message"] == "Data validation completed, found 5 errors"
    assert question["result"] == {"validated_rows": 1000, "errors": 5}
    assert question["status"] == "completed" and question["step"] == 1


async def test_a_failed_step_is_retried_or_cancelled_as_the_user_chooses(hub: Hub) -> None:
    for proceed, expected in [(True, "retry"), (False, "cancel")]:
        scope = await started(hub)
        async with page(hub, proceed=proceed):
            await run_section("§4.2 Error Handling and User Choice", scope, hub)
        assert scope["calls"] == [(expected, "task_789")]


async def test_broadcasts_and_user_messages_reach_the_page_exactly_as_sent(hub: Hub) -> None:
    scope = await started(hub)
    async with page(hub) as user:
        await run_section("§4.3 Broadcast Messages", scope, hub)
        assert await user.wait_for("system_notification") == scope["system_message"]
        # `time.time()` floats arrive bit for bit.
        assert await user.wait_for("task_progress") == scope["task_update"]
        await run_section("§4.3 User-Specific Messages", scope, hub)
        personal = await user.wait_for("personal_notification")
    assert personal["message"] == "Your task has been completed"
    assert personal["task_id"] == "task_456"
    assert personal["target_user_id"] == "user_123"


async def test_heartbeats_reach_the_page_while_the_manager_runs(hub: Hub) -> None:
    scope = await started(hub)
    async with page(hub) as user:
        await run_section("§4.4 Heartbeat Detection", scope, hub)
        beat = await user.wait_for("heartbeat")
        await scope["ws_manager"].stop_server()
    assert beat["status"] == "heartbeat"
    assert beat["message"] == "Task is still executing..."
    assert (beat["user_id"], beat["task_id"]) == ("user_123", "task_456")
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.startswith("start_heartbeat"):  # type: ignore[union-attr]
            task.cancel()


async def test_monitoring_reads_connections_and_pending_callbacks(hub: Hub) -> None:
    scope = await started(hub)
    await run_section("§4.4 Connection Status Monitoring", scope, hub)
    await run_section("§7.4 Monitoring Metrics", scope, hub)
    await run_section("§8.1 Monitoring Implementation", scope, hub)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        scope["monitor_connections"]()
    assert printed.getvalue() == "Current active connections: 0\nWarning: No active WebSocket connections\n"
    async with page(hub):
        metrics = scope["collect_metrics"]()
        health = scope["WebSocketMonitor"](scope["ws_manager"]).get_health_status()
    assert (metrics["websocket_connections"], metrics["websocket_running"], metrics["pending_callbacks"]) == (1, True, 0)
    assert health["status"] == "healthy" and health["active_connections"] == 1
    assert health["pending_callbacks"] == 0
