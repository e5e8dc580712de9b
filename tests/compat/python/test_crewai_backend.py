"""Seed 002 (CrewAI): the backend's "Server-side Event Broadcasting", as
printed, with ``app.websocket`` standing in over the hub's CrewAI dialect
(only the router's base URL changes), and the admin calls an operator
script makes, in the seed's response shapes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from conftest import SEEDS, Hub, run

pytestmark = pytest.mark.anyio

LIMIT = 10.0
sys.path.insert(0, str(Path(__file__).parent / "crewai_app"))


async def next_event(socket: Any, event_type: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), LIMIT))
        if message.get("event_type") == event_type:
            return message


async def test_broadcast_event_reaches_the_executions_clients(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"{hub.url}/compat/crewai/api/v1/websocket"
    monkeypatch.setenv("CREWAI_WEBSOCKET_URL", base)
    import app.websocket.connection_manager as manager

    manager.connection_manager = manager.ConnectionManager()
    url = f"{hub.ws}/compat/crewai/api/v1/websocket/ws/executions/exec_123"
    async with websockets.connect(url, open_timeout=LIMIT) as client:
        hello = await next_event(client, "connection.established")
        assert hello["data"]["subscriptions"] == ["execution_exec_123"]
        confirmed = json.loads(await asyncio.wait_for(client.recv(), LIMIT))
        assert confirmed == {"type": "subscription_confirmed", "subscription": "execution_exec_123"}
        await run((SEEDS / "002_crewai_broadcast.py").read_text(), {})
        event = await next_event(client, "execution.completed")
    assert event["execution_id"] == "exec_123"
    assert event["data"] == {"execution_id": "exec_123", "status": "completed", "result": {"success": True}}
    assert event["priority"] == "NORMAL"


async def test_the_admin_calls_answer_in_the_seeds_shapes(hub: Hub) -> None:
    base = f"{hub.url}/compat/crewai/api/v1/websocket"
    url = f"{hub.ws}/compat/crewai/api/v1/websocket/ws/crews/crew_456"
    async with websockets.connect(url, open_timeout=LIMIT) as client:
        hello = await next_event(client, "connection.established")
        client_id = hello["data"]["client_id"]
        async with httpx.AsyncClient(base_url=base, timeout=LIMIT) as admin:
            stats = (await admin.get("/connections")).json()
            assert stats["status"] == "success"
            assert stats["data"]["active_connections"] == 1
            assert stats["data"]["subscription_counts"] == {"crew_crew_456": 1}
            assert set(stats["data"]["uptime_statistics"]) == {"connections", "average_duration_seconds"}
            one = (await admin.get(f"/connections/{client_id}")).json()
            assert one["data"]["subscriptions"] == ["crew_crew_456"]
            sent = (await admin.post("/broadcast/crew_crew_456", json={"event_type": "crew.updated",
                                                                       "data": {"agents": 3}})).json()
            assert sent["status"] == "success" and sent["data"]["recipients"] == 1
            assert (await next_event(client, "crew.updated"))["crew_id"] == "crew_456"
            health = (await admin.get("/health")).json()
            assert health["status"] == "healthy" and health["active_connections"] == 1
            assert isinstance(health["uptime_seconds"], int) and health["last_cleanup"] is None
            cleaned = (await admin.delete("/connections")).json()
            assert cleaned == {"status": "success", "message": "Cleaned up 0 stale connections",
                               "data": {"cleaned_up": 0}}
            dropped = (await admin.post(f"/disconnect/{client_id}")).json()
            assert dropped == {"status": "success", "message": f"Client {client_id} disconnected"}
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(client.recv(), LIMIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
