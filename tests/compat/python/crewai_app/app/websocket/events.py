"""``app.websocket.events`` (seed 002): the event types, priorities and the
``WebSocketEvent`` model with its factory methods, as the document describes
them; the names are Herald's, as the seed's were."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from pydantic import BaseModel, Field


class EventType(str, Enum):
    EXECUTION_STARTED = "execution.started"
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_PROGRESS = "execution.progress"
    TASK_ASSIGNED = "task.assigned"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_PROGRESS = "task.progress"
    SYSTEM_HEALTH_CHECK = "system.health_check"


class EventPriority(str, Enum):
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class WebSocketEvent(BaseModel):
    event_type: EventType
    data: dict[str, Any] = Field(default_factory=dict)
    priority: EventPriority = EventPriority.NORMAL
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    execution_id: Optional[str] = None
    crew_id: Optional[str] = None

    @classmethod
    def create_execution_event(
        cls, execution_id: str, status: str, result: Optional[dict[str, Any]] = None
    ) -> "WebSocketEvent":
        event_type = {
            "started": EventType.EXECUTION_STARTED,
            "completed": EventType.EXECUTION_COMPLETED,
            "failed": EventType.EXECUTION_FAILED,
        }.get(status, EventType.EXECUTION_PROGRESS)
        priority = EventPriority.HIGH if status == "failed" else EventPriority.NORMAL
        return cls(
            event_type=event_type,
            data={"execution_id": execution_id, "status": status, "result": result},
            priority=priority,
            execution_id=execution_id,
        )
