"""The AIECS ``WebSocketManager`` (seed 000, section 5) as its producers
call it, a faithful minimal stand-in over Herald: the same class, models and
methods, each call made to the hub's AIECS dialect (``/compat/aiecs/...``).
The hub runs the WebSocket server the manager used to run, so
``start_server`` checks that it answers and ``stop_server`` lets it go;
``notify_user`` waits as long as the hub's approval timeout, and a timeout
answers the hub's default (``--approval-default-proceed``)."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import httpx
from pydantic import BaseModel


class UserConfirmation(BaseModel):
    """User confirmation model"""

    proceed: bool
    feedback: Optional[str] = None


class TaskStepResult(BaseModel):
    """Task step result model"""

    step: str
    result: Any = None
    completed: bool = False
    message: str
    status: str
    error_code: Optional[str] = None
    error_message: Optional[str] = None


class WebSocketManager:
    """WebSocket server and client communication manager, served by Herald."""

    def __init__(self, host: str = "python-middleware-api", port: int = 8765) -> None:
        self.host = host
        self.port = port
        self.base = f"http://{host}:{port}/compat/aiecs"
        self._running = False

    async def start_server(self) -> dict[str, Any]:
        """Checks that the hub answers; returns its status."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.base}/status")
            response.raise_for_status()
        self._running = True
        status: dict[str, Any] = response.json()
        return status

    async def stop_server(self) -> None:
        """Stops the heartbeats; the hub and its connections stay up."""
        self._running = False

    async def notify_user(self, step_result: TaskStepResult, user_id: str, task_id: str, step: int) -> UserConfirmation:
        """Notify user of task step result and wait for confirmation"""
        body = {"step_result": step_result.model_dump(), "user_id": user_id, "task_id": task_id, "step": step}
        async with httpx.AsyncClient(timeout=None) as client:
            response = await client.post(f"{self.base}/notify_user", json=body)
            response.raise_for_status()
        answer = response.json()
        return UserConfirmation(proceed=answer["proceed"], feedback=answer["feedback"])

    async def broadcast_message(self, message: dict[str, Any]) -> None:
        """Broadcast message to all connected clients"""
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.base}/broadcast_message", json=message)
            response.raise_for_status()

    async def send_to_user(self, user_id: str, message: dict[str, Any]) -> None:
        """Send message to specific user"""
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.base}/send_to_user/{user_id}", json=message)
            response.raise_for_status()

    async def send_heartbeat(self, user_id: str, task_id: str, interval: int = 30) -> None:
        """Send heartbeat message every ``interval`` seconds while running"""
        async with httpx.AsyncClient() as client:
            while self._running:
                response = await client.post(
                    f"{self.base}/send_heartbeat", json={"user_id": user_id, "task_id": task_id}
                )
                response.raise_for_status()
                await asyncio.sleep(interval)

    def get_connection_count(self) -> int:
        """Get current active connection count"""
        count: int = httpx.get(f"{self.base}/connection_count").raise_for_status().json()
        return count

    def get_status(self) -> dict[str, Any]:
        """Get WebSocket manager status"""
        status: dict[str, Any] = httpx.get(f"{self.base}/status").raise_for_status().json()
        return status
