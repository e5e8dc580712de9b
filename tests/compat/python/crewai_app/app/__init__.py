"""The CrewAI backend's ``app`` package as its producers import it (seed 002):
a faithful minimal stand-in whose connection manager is Herald's CrewAI
dialect, reached at ``CREWAI_WEBSOCKET_URL`` (the router's base URL, e.g.
``http://127.0.0.1:8765/compat/crewai/api/v1/websocket``)."""
