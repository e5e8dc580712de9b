"""Fixtures for running the seeds' own Python against a real ``herald``
(``HERALD_BIN``): a hub per test on ``127.0.0.1:0`` (found through its first
stdout line, stopped by its PID), and the seed snippets in
``tests/compat/seeds/``, run as printed with only their address changed."""

from __future__ import annotations

import ast
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SEEDS = Path(__file__).resolve().parents[1] / "seeds"
START_LIMIT = 30.0
STOP_LIMIT = 10.0


@dataclass
class Hub:
    """A running ``herald serve`` process."""

    process: subprocess.Popen[bytes]
    url: str
    unix_socket: Path | None

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_LIMIT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_hub(log: Path, *args: str, unix_socket: Path | None = None) -> Hub:
    binary = os.environ.get("HERALD_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("HERALD_BIN must name the herald binary (`cargo xtask compat` sets it)", pytrace=False)
    command = [binary, "serve", "--bind", "127.0.0.1:0", *args]
    if unix_socket is not None:
        command += ["--unix-socket", str(unix_socket)]
    with log.open("ab") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_LIMIT)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("listening on http://"):
        process.kill()
        process.wait(STOP_LIMIT)
        raise AssertionError(f"herald did not start (first line {line!r}):\n{log.read_text()[-3000:]}")
    hub = Hub(process, line.removeprefix("listening on "), unix_socket)
    if unix_socket is not None:
        wait_for_datagrams(unix_socket)
    return hub


def wait_for_datagrams(path: Path) -> None:
    """Until the hub reads its Unix socket: a zero-length datagram (the hub's
    own liveness probe, never published) is taken."""
    deadline = time.monotonic() + START_LIMIT
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                probe.sendto(b"", str(path))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    started = start_hub(tmp_path / "herald.log")
    yield started
    started.stop()


@pytest.fixture
def unix_hub(tmp_path: Path) -> Iterator[Hub]:
    started = start_hub(tmp_path / "herald.log", unix_socket=tmp_path / "statemachine-events.sock")
    yield started
    started.stop()


def snippets(name: str) -> dict[str, str]:
    """The sections of a seed file, by their ``# ---- title`` lines."""
    text = (SEEDS / name).read_text()
    parts = re.split(r"^# ---- (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


async def run(source: str, namespace: dict[str, Any]) -> None:
    """Runs seed code as printed (top-level ``await`` included) in ``namespace``."""
    code = compile(source, "<seed>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - the seed's own code, read from the repository
    if result is not None:
        await result
