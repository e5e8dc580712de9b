"""The Unix datagram publisher: delivered through the hub when it is there;
never blocks, never raises, and counts what it dropped when it is not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import herald

from .conftest import Hub, make_hub

LIMIT = 20.0


@pytest.fixture
def unix_hub(tmp_path: Path) -> Iterator[Hub]:
    running = make_hub(tmp_path, "memory", unix=True)
    running.start()
    yield running
    running.stop()


@pytest.mark.anyio
async def test_datagrams_reach_subscribers(unix_hub: Hub) -> None:
    assert unix_hub.unix_socket is not None
    async with herald.AsyncHerald(unix_hub.url) as client, client.subscribe(["machine:worker-123"]) as events:
        with herald.UnixPublisher(unix_hub.unix_socket) as publisher:
            for state in ["idle", "processing"]:
                assert publisher.publish("machine:worker-123", "state.changed", {"state": state}, key="worker-123")
            assert (publisher.sent, publisher.dropped) == (2, 0)
        seen = []
        with anyio.fail_after(LIMIT):
            async for item in events:
                assert isinstance(item, herald.Event)
                seen.append(herald.StateChange.model_validate(item.data).state)
                if len(seen) == 2:
                    break
    assert seen == ["idle", "processing"]


def test_a_missing_socket_drops_and_counts(tmp_path: Path) -> None:
    with herald.UnixPublisher(tmp_path / "nobody-here.sock") as publisher:
        assert publisher.publish("machine:m1", "state.changed", {"state": "idle"}) is False
        assert publisher.publish("machine:m1", "state.changed", {"state": "busy"}) is False
    assert (publisher.sent, publisher.dropped) == (0, 2)


def test_a_full_socket_drops_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "never-read.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))  # bound, never read: its queue fills up
    try:
        with herald.UnixPublisher(path) as publisher:
            started = time.monotonic()
            for _ in range(100_000):
                if not publisher.publish("machine:m1", "state.changed", {"state": "x" * 512}):
                    break
            elapsed = time.monotonic() - started
        assert publisher.dropped == 1 and publisher.sent > 0
        assert elapsed < 10, f"publishing to a full socket took {elapsed:.1f} s"
    finally:
        reader.close()


def test_an_oversized_event_is_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "big.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    try:
        with herald.UnixPublisher(path) as publisher:
            assert not publisher.publish("machine:m1", "state.changed", {"blob": "x" * (70 * 1024)})
            assert publisher.publish("machine:m1", "state.changed", {"state": "small"})
        assert (publisher.sent, publisher.dropped) == (1, 1)
        assert b'"small"' in reader.recv(65536)
    finally:
        reader.close()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_data_json_cannot_carry_is_dropped_and_counted_not_sent_as_null(tmp_path: Path, value: float) -> None:
    path = tmp_path / "finite.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    reader.settimeout(LIMIT)
    try:
        with herald.UnixPublisher(path) as publisher:
            assert publisher.publish("machine:m1", "state.changed", {"x": value}) is False
            assert publisher.publish("machine:m1", "metrics.updated", herald.Metrics(metrics={"cpu": value})) is False
            prepared = herald.PublishRequest(topic="machine:m1", event_type="state.changed", data={"x": [1, value]})
            assert publisher.send(prepared) is False
            assert publisher.publish("machine:m1", "state.changed", {"state": "finite"})
        assert (publisher.sent, publisher.dropped) == (1, 3)
        # The only datagram that went out is the finite one.
        assert b'"finite"' in reader.recv(65536)
    finally:
        reader.close()


def test_integers_outside_64_bits_are_dropped_and_counted_not_sent_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "integers.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    reader.settimeout(LIMIT)
    try:
        with herald.UnixPublisher(path) as publisher:
            # The hub would store and deliver these as floats, changing them.
            assert publisher.publish("machine:m1", "state.changed", {"n": 2**64}) is False
            prepared = herald.PublishRequest(topic="machine:m1", event_type="state.changed", data={"n": [-(2**63) - 1]})
            assert publisher.send(prepared) is False
            assert publisher.publish("machine:m1", "state.changed", {"n": 2**64 - 1})
        assert (publisher.sent, publisher.dropped) == (1, 2)
        # The only datagram that went out is the one the hub keeps exactly.
        assert b'{"n":18446744073709551615}' in reader.recv(65536)
    finally:
        reader.close()
