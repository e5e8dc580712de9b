"""Several nodes of one hub (sharing a real Redis), given to the client as
comma-separated URLs: HTTP calls move on to the next node when one cannot be
reached, without publishing anything twice; an approval's long-poll follows."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import herald

from .conftest import Hub, Redis, answer_dropping_proxy, browser

pytestmark = pytest.mark.anyio
LIMIT = 20.0
FAST = herald.RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2)


@pytest.fixture
def nodes(tmp_path: Path, redis: Redis) -> Iterator[tuple[Hub, Hub]]:
    """Two hub processes on one Redis, stopped by their PIDs."""
    first = Hub(store=redis.url, args=[], log=tmp_path / "first.log")
    second = Hub(store=redis.url, args=[], log=tmp_path / "second.log")
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def history(hub: Hub, topic: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{hub.url}/api/v1/topics/{topic}/events", params={"since": 0}, timeout=LIMIT)
    answer.raise_for_status()
    events: list[dict[str, object]] = answer.json()["events"]
    return events


async def test_publishing_moves_on_to_the_next_node_when_the_first_is_down(nodes: tuple[Hub, Hub]) -> None:
    first, second = nodes
    async with herald.AsyncHerald(f"{first.url},{second.url}", retry=FAST) as client:
        before = await client.publish("run:r1", "step.completed", {"n": 1})
        first.stop(signal.SIGKILL)
        after = await client.publish("run:r1", "step.completed", {"n": 2})
        batch = await client.publish_batch([{"topic": "run:r1", "event_type": "step.completed", "data": {"n": 3}}])
    with herald.Herald(f"{first.url},{second.url}", retry=FAST) as blocking:
        last = await asyncio.to_thread(blocking.publish, "run:r1", "step.completed", {"n": 4})
    assert [before.seq, after.seq, batch[0].seq, last.seq] == [1, 2, 3, 4]
    assert [e["data"] for e in history(second, "run:r1")] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_a_publish_retried_on_another_node_is_stored_once(nodes: tuple[Hub, Hub]) -> None:
    first, second = nodes
    # The first node stores the event, its answer is lost, then it is gone:
    # the retry goes to the second node with the same event id.
    async with answer_dropping_proxy(first.url, then_refuse=True) as (gone, dropped):
        async with herald.AsyncHerald(f"{gone},{second.url}", retry=FAST) as client:
            receipt = await client.publish("run:r1", "step.completed", {"n": 1})
            again = await client.publish("run:r1", "step.completed", {"n": 2})
    assert dropped == [1], "the first answer was not dropped: the retry was not exercised"
    events = history(second, "run:r1")
    assert [e["id"] for e in events] == [receipt.id, again.id]
    assert (receipt.seq, again.seq) == (1, 2)


async def test_a_call_that_is_not_retried_is_not_sent_to_another_node_after_a_lost_answer(
    nodes: tuple[Hub, Hub],
) -> None:
    first, second = nodes
    async with answer_dropping_proxy(first.url, then_refuse=True) as (gone, dropped):
        async with herald.AsyncHerald(f"{gone},{second.url}", retry=FAST) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.broadcast("system.notification", {"message": "once"})
    assert dropped == [1] and lost.value.outcome_unknown
    assert len(history(second, "global")) == 1


async def test_request_approval_follows_to_the_next_node(nodes: tuple[Hub, Hub]) -> None:
    first, second = nodes
    step = herald.TaskStepResult(step="deploy", message="Go?", status="completed")
    async with herald.AsyncHerald(f"{first.url},{second.url}", retry=FAST) as client:
        record = await client.create_approval("u1", "t1", 1, step, timeout=60)
        waiting = asyncio.create_task(client.wait_approval(record))
        # Whether the long-poll is already on the first node (reset) or not
        # yet sent (refused), it has to reach the second to get the decision.
        first.stop(signal.SIGKILL)
        async with browser(second, "user_id=u1") as user:
            await user.send({"action": "confirm", "id": 1, "callback_id": record.callback_id, "proceed": True})
            assert (await user.until(lambda f: f.get("ref") == 1))["type"] == "ack"
        with anyio.fail_after(LIMIT):
            decision = await waiting
    assert (decision.status, decision.proceed, decision.decided_by) == ("approved", True, "u1")


async def test_control_requests_go_to_the_next_node_when_the_first_is_down(nodes: tuple[Hub, Hub]) -> None:
    first, second = nodes
    async with herald.AsyncHerald(second.url) as watcher, watcher.control(task_id="t1") as requests:
        first.stop(signal.SIGKILL)
        async with herald.AsyncHerald(f"{first.url},{second.url}") as client:
            await client.send_control("pause", task_id="t1", reason="lunch")
        with herald.Herald(f"{first.url},{second.url}") as blocking:
            await asyncio.to_thread(blocking.send_control, "resume", task_id="t1")
        with anyio.fail_after(LIMIT):
            received = [await requests.__anext__(), await requests.__anext__()]
    assert [r.action for r in received] == ["pause", "resume"]
