"""``app.websocket.connection_manager`` (seed 002): the singleton whose
``broadcast_event`` sends an event to the clients subscribed to it, here
through the dialect's ``POST /broadcast/{subscription}`` (an execution's
event to ``execution_{id}``, a crew's to ``crew_{id}``, anything else to
everyone with ``POST /broadcast``)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from .events import WebSocketEvent


class ConnectionManager:
    def __init__(self) -> None:
        self.base = os.environ.get("CREWAI_WEBSOCKET_URL", "http://localhost:8000/api/v1/websocket")

    async def broadcast_event(self, event: WebSocketEvent) -> dict[str, Any]:
        if event.execution_id:
            path = f"/broadcast/execution_{event.execution_id}"
        elif event.crew_id:
            path = f"/broadcast/crew_{event.crew_id}"
        else:
            path = "/broadcast"
        body = {"event_type": event.event_type.value, "data": event.data, "priority": event.priority.value}
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.base}{path}", json=body)
            response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


connection_manager = ConnectionManager()
