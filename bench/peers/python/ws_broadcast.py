"""Peer hub: Python `websockets` with its `broadcast()`.

`/ws` subscribes; every message received on `/pub` goes to every subscriber
through `websockets.broadcast`, which writes to each connection without
awaiting it (slow connections are skipped by the library). Prints
`listening on http://HOST:PORT` first.
"""

import asyncio

from websockets.asyncio.server import broadcast, serve

SUBSCRIBERS = set()


async def handler(ws):
    if ws.request.path.startswith("/pub"):
        async for message in ws:
            broadcast(SUBSCRIBERS, message)
        return
    SUBSCRIBERS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        SUBSCRIBERS.discard(ws)


async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None, backlog=1024) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on http://{host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
