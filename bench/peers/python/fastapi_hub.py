"""Peer hub: FastAPI (Starlette) on uvicorn, the connection-manager pattern
from FastAPI's WebSocket guide with a pre-serializing broadcaster: a message
is kept as the text it arrived as and sent as-is to every subscriber, never
re-encoded per client.

`/ws` subscribes; every message received on `/pub` is broadcast. Prints
`listening on http://HOST:PORT` first.
"""

import asyncio
import socket

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


class Broadcaster:
    def __init__(self):
        self.connections: set[WebSocket] = set()

    async def broadcast(self, text: str):
        # Serialized once (it is already text); one send per subscriber.
        dead = []
        for ws in list(self.connections):
            try:
                await ws.send_text(text)
            except Exception:
                dead.append(ws)
        for ws in dead:
            self.connections.discard(ws)


hub = Broadcaster()


@app.websocket("/ws")
async def subscribe(ws: WebSocket):
    await ws.accept()
    hub.connections.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        hub.connections.discard(ws)


@app.websocket("/pub")
async def publish(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            await hub.broadcast(await ws.receive_text())
    except WebSocketDisconnect:
        pass


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listening before the line is printed, so the bench can connect at once.
    sock.listen(1024)
    host, port = sock.getsockname()
    print(f"listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning", ws_per_message_deflate=False, ws_max_size=1 << 24, backlog=1024)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
