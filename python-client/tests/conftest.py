"""Fixtures: a real ``herald`` hub per test (``HERALD_BIN``), started on
``127.0.0.1:0`` and found through its first stdout line, stopped by its PID;
and the Herald repository's files (fixtures, session vectors)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

if TYPE_CHECKING:
    from herald import ControlStream, GapError, Subscription

REPO = Path(__file__).resolve().parents[2]
START_LIMIT = 30.0
STOP_LIMIT = 10.0
FRAME_LIMIT = 10.0


def repo_file(relative: str) -> Path:
    """A file of the Herald repository these tests belong to."""
    path = REPO / relative
    assert path.exists(), f"{path} is missing: run the tests from a Herald checkout"
    return path


def herald_bin() -> str:
    path = os.environ.get("HERALD_BIN")
    if not path:
        pytest.fail(
            "HERALD_BIN is not set: build the hub with `cargo build --bin herald` and set "
            "HERALD_BIN to the binary (`cargo xtask ci` does both)",
            pytrace=False,
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"HERALD_BIN={path} is not an executable file: build it with `cargo build --bin herald`", pytrace=False)
    return path


@dataclass
class Hub:
    """A running ``herald serve`` process."""

    store: str
    args: list[str]
    log: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    unix_socket: Path | None = None
    starts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bind(self) -> str:
        return self.url.removeprefix("http://")

    def start(self, bind: str = "127.0.0.1:0") -> None:
        """Starts the hub and waits for ``listening on http://HOST:PORT``."""
        command = [herald_bin(), "serve", "--bind", bind, "--store", self.store, *self.args]
        if self.unix_socket is not None:
            command += ["--unix-socket", str(self.unix_socket)]
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n---- start {self.starts}: {' '.join(command)}\n".encode())
        stderr = self.log.open("ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        stderr.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_LIMIT
        ready, _, _ = select.select([self.process.stdout], [], [], START_LIMIT)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening on http://"):
            self.stop()
            raise AssertionError(
                f"herald did not start within {START_LIMIT} s (first line {line!r}):\n{self.log.read_text()[-3000:]}"
            )
        assert time.monotonic() < deadline
        self.url = line.removeprefix("listening on ")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stops the hub by its PID (SIGTERM: graceful; SIGKILL: a crash)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_LIMIT)
        if process.stdout is not None:
            process.stdout.close()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stops the hub and starts it again on the same address (clients reconnect to it)."""
        bind = self.bind
        self.stop(sig)
        self.start(bind)

    def pause(self) -> None:
        """Freezes the process (SIGSTOP): its sockets stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


JWT_SECRET = "s3cret-for-tests-only-0123456789"
"""The ``--jwt-secret`` of the hubs that check tokens."""


def make_jwt(sub: str, topics: list[str], expires_at: int, secret: str = JWT_SECRET) -> str:
    """An HS256 token for ``sub`` allowed ``topics``, expiring at ``expires_at`` (s since the epoch)."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = part(json.dumps({"sub": sub, "topics": topics, "exp": expires_at}).encode())
    signature = part(hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


def make_hub(tmp_path: Path, store: str = "memory", *args: str, unix: bool = False) -> Hub:
    hub = Hub(store=store, args=list(args), log=tmp_path / "herald.log")
    if unix:
        hub.unix_socket = tmp_path / "herald.sock"
    return hub


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A memory-store hub."""
    running = make_hub(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[Hub]:
    """A SQLite-store hub (durable across restarts)."""
    running = make_hub(tmp_path, f"sqlite:{tmp_path / 'herald.db'}")
    running.start()
    yield running
    running.stop()


@pytest.fixture(params=["memory", "sqlite"])
def any_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    """A hub with each store in turn."""
    store = "memory" if request.param == "memory" else f"sqlite:{tmp_path / 'herald.db'}"
    running = make_hub(tmp_path, store)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def jwt_hub(tmp_path: Path) -> Iterator[Hub]:
    """A memory-store hub whose WebSockets need a token signed with :data:`JWT_SECRET`."""
    running = make_hub(tmp_path, "memory", "--jwt-secret", JWT_SECRET)
    running.start()
    yield running
    running.stop()


@dataclass
class Redis:
    """A ``redis-server`` on a free loopback port, without persistence."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_LIMIT)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """``redis-server`` (installed by ``cargo xtask ci``), stopped by its PID."""
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: `cargo xtask ci` installs it", pytrace=False)
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    running = Redis(url=f"redis://127.0.0.1:{port}", process=process)
    assert process.stdout is not None
    deadline = time.monotonic() + START_LIMIT
    seen = b""
    # Read from the pipe itself, never through a buffer: a buffered
    # readline can take the "Ready" line into memory, where `select` no
    # longer sees it, and then wait out the whole limit.
    output = process.stdout.fileno()
    while b"Ready to accept connections" not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([output], [], [], max(remaining, 0))
        chunk = os.read(output, 4096) if ready else b""
        if not chunk:
            running.stop()
            raise AssertionError(f"redis-server did not start: {seen.decode(errors='replace')}")
        seen += chunk
    yield running
    running.stop()


class Browser:
    """A raw WebSocket client, as a user's browser speaks the protocol: what
    the Python client is tested against from the other side."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def next_frame(self, limit: float = FRAME_LIMIT) -> dict[str, Any]:
        text = await asyncio.wait_for(self.socket.recv(), limit)
        frame: dict[str, Any] = json.loads(text)
        return frame

    async def until(self, predicate: Any, limit: float = FRAME_LIMIT) -> dict[str, Any]:
        """The first frame for which ``predicate(frame)`` holds (bounded)."""
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the expected frame did not arrive in time")
            frame = await self.next_frame(remaining)
            if predicate(frame):
                return frame


async def connections_settle_at(url: str, expected: int, limit: float = FRAME_LIMIT) -> int:
    """The hub's ``active_connections`` (``GET /api/v1/status``), polled until
    it is ``expected`` or ``limit`` seconds passed: the hub counts a
    connection off once its socket task sees the close, a moment after the
    client closed it, and no frame tells the client when."""
    import httpx

    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(base_url=url, timeout=FRAME_LIMIT) as http:
        while True:
            count: int = (await http.get("/api/v1/status")).json()["active_connections"]
            if count == expected or time.monotonic() >= deadline:
                return count
            await asyncio.sleep(0.05)


async def raised_gap(stream: Subscription[Any] | ControlStream, limit: float = 20.0) -> GapError:
    """Waits on ``stream`` (bounded) until it raises a ``GapError``, which
    it returns; nothing but ``global`` events may come first (it is reading
    only while waited on, so this is what reconnects it)."""
    from herald import GapError

    deadline = time.monotonic() + limit
    while True:
        assert time.monotonic() < deadline, "no gap was raised"
        try:
            item = await asyncio.wait_for(stream.__anext__(), 0.1)
        except asyncio.TimeoutError:
            continue
        except GapError as gap:
            return gap
        assert getattr(item, "topic", None) == "global", f"unexpected before the gap: {item!r}"


@asynccontextmanager
async def browser(hub: Hub, query: str = "") -> AsyncIterator[Browser]:
    """A browser connection to ``/ws?{query}``, after its ``welcome``."""
    url = hub.url.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")
    async with websockets.connect(url, open_timeout=FRAME_LIMIT) as socket:
        client = Browser(socket)
        welcome = await client.next_frame()
        assert welcome["type"] == "welcome", welcome
        yield client


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under `cargo xtask ci` the tests must exercise the installed wheel."""
    if os.environ.get("HERALD_TEST_INSTALLED"):
        import herald

        assert "site-packages" in herald.__file__, f"testing {herald.__file__}, not the installed wheel"


@asynccontextmanager
async def answer_dropping_proxy(
    upstream: str, *, then_refuse: bool = False
) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP proxy to the hub that forwards the first request, waits for the
    hub's whole answer and drops it (closing the client's connection): a
    request the hub acted on whose answer was lost. Later connections pass,
    or, with ``then_refuse``, are refused (the proxy stops listening), as a
    node that went down right after answering."""
    host, port = upstream.removeprefix("http://").split(":")
    dropped: list[int] = []
    server: asyncio.Server | None = None

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        hub_reader, hub_writer = await asyncio.open_connection(host, int(port))
        if not dropped:
            dropped.append(1)
            head = await client_reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            hub_writer.write(head + await client_reader.readexactly(length))
            answer = await hub_reader.readuntil(b"\r\n\r\n")
            assert answer.split(b" ")[1].startswith(b"2"), answer
            hub_writer.close()
            if then_refuse and server is not None:
                server.close()
            client_writer.close()  # the answer never reaches the client
            return
        await asyncio.gather(pipe(client_reader, hub_writer), pipe(hub_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    try:
        yield f"http://127.0.0.1:{address[1]}", dropped
    finally:
        server.close()
