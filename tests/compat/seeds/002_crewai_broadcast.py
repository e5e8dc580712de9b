# Seed 002 (CrewAI backend), "Server-side Event Broadcasting", verbatim.
from app.websocket.connection_manager import connection_manager
from app.websocket.events import WebSocketEvent, EventType

# Create and broadcast execution event
event = WebSocketEvent.create_execution_event(
    execution_id="exec_123",
    status="completed",
    result={"success": True}
)
await connection_manager.broadcast_event(event)
