"""``app.websocket``: events and the connection manager."""
