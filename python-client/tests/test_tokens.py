"""Subscriptions on a hub that checks tokens: an expired token is renewed
without losing events (``set_token``, a token callable), and a fixed token
the hub refuses on reconnection ends the iteration instead of retrying it
forever."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

import herald
from herald import Event, SessionConfig
from herald._session import Closed, Open, Reconnecting

from .conftest import Hub, make_jwt

pytestmark = pytest.mark.anyio
LIMIT = 20.0
FAST = SessionConfig(initial_reconnect_delay_ms=100, max_reconnect_delay_ms=300)
TOPICS = ["execution:*"]


def short_lived() -> tuple[str, int]:
    """A token that expires in 2 to 3 s (``exp`` is in whole seconds), and its expiry."""
    expires_at = int(time.time()) + 3
    return make_jwt("u1", TOPICS, expires_at), expires_at


def long_lived() -> str:
    return make_jwt("u1", TOPICS, int(time.time()) + 3600)


async def next_event(events: herald.Subscription[Any], topic: str) -> Event:
    """The next event of ``topic`` (``global`` events are skipped)."""
    with anyio.fail_after(LIMIT):
        async for item in events:
            if isinstance(item, Event) and item.topic == topic:
                return item
    raise AssertionError("the subscription ended")


async def until_past(expires_at: int) -> None:
    """Waits until the hub has closed connections still on a token that
    expired at ``expires_at``: the condition is the clock itself."""
    await asyncio.sleep(max(expires_at - time.time(), 0.0) + 0.5)


async def test_set_token_on_an_open_subscription_keeps_it_open_past_the_old_expiry(jwt_hub: Hub) -> None:
    token, expires_at = short_lived()
    async with herald.AsyncHerald(jwt_hub.url, token=token) as client:
        async with client.subscribe(["execution:e1"], config=FAST) as events:
            first = events.session_id
            await events.set_token(long_lived())  # the `auth` frame: the hub extends the connection
            await until_past(expires_at)
            await client.publish("execution:e1", "execution.progress", {"progress": 1})
            event = await next_event(events, "execution:e1")
            assert (event.seq, events.session_id, events.state) == (1, first, Open())


async def test_a_reconnection_refused_for_a_fixed_token_ends_the_iteration_and_set_token_resumes_it(
    jwt_hub: Hub,
) -> None:
    token, expires_at = short_lived()
    async with herald.AsyncHerald(jwt_hub.url, token=token) as client:
        async with client.subscribe(["execution:e1"], config=FAST) as events:
            await client.publish("execution:e1", "execution.progress", {"progress": 1})
            assert (await next_event(events, "execution:e1")).seq == 1
            await until_past(expires_at)  # closed 4001; the same token is then refused (401)
            await client.publish("execution:e1", "execution.progress", {"progress": 2})
            with pytest.raises(herald.UnauthorizedError) as refused:
                await next_event(events, "execution:e1")
            assert refused.value.status == 401 and "set_token" in str(refused.value)
            # A fresh token resumes it from its checkpoint: nothing is lost.
            await events.set_token(long_lived())
            assert (await next_event(events, "execution:e1")).seq == 2


async def test_a_subscription_closed_after_a_refusal_stays_closed_when_given_a_token(jwt_hub: Hub) -> None:
    token, expires_at = short_lived()
    async with herald.AsyncHerald(jwt_hub.url, token=token) as client:
        async with client.subscribe(["execution:e1"], config=FAST) as events:
            await client.publish("execution:e1", "execution.progress", {"progress": 1})
            assert (await next_event(events, "execution:e1")).seq == 1
            await until_past(expires_at)
            with pytest.raises(herald.UnauthorizedError):
                await next_event(events, "execution:e1")
            await events.aclose()
            await events.set_token(long_lived())
            assert isinstance(events.state, Closed)


async def test_a_token_callable_is_asked_again_on_refusal_while_reconnecting_keeps_close_code_4001(
    jwt_hub: Hub,
) -> None:
    token, expires_at = short_lived()
    calls: list[str] = []
    fresh = asyncio.Event()

    async def provide() -> str:
        calls.append("called")
        return long_lived() if fresh.is_set() else token

    async with herald.AsyncHerald(jwt_hub.url, token=provide) as client:
        async with client.subscribe(["execution:e1"], config=FAST) as events:
            consumer = asyncio.create_task(next_event(events, "execution:e1"))
            await until_past(expires_at)
            await client.publish("execution:e1", "execution.progress", {"progress": 1})
            # Refused reconnections are retried (the callable may give a fresh
            # token), and the state goes on saying why the connection ended.
            seen: list[Any] = []
            with anyio.fail_after(LIMIT):
                while not (len(calls) >= 4 and isinstance(events.state, Reconnecting)):
                    if isinstance(events.state, Reconnecting):
                        seen.append(events.state)
                    await asyncio.sleep(0.01)
            seen.append(events.state)
            assert not consumer.done()
            assert {state.code for state in seen} == {4001}, seen
            fresh.set()
            with anyio.fail_after(LIMIT):
                event = await consumer
            assert event.seq == 1


def test_the_blocking_client_refuses_a_token_callable_that_returns_an_awaitable(jwt_hub: Hub) -> None:
    async def provide() -> str:
        return long_lived()

    with herald.Herald(jwt_hub.url, token=provide) as client:  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            client.send_control("pause", task_id="t1")


def test_the_blocking_client_calls_a_token_callable_for_its_websocket(jwt_hub: Hub) -> None:
    calls: list[str] = []

    def provide() -> str:
        calls.append("called")
        return make_jwt("u1", ["task:*"], int(time.time()) + 3600)

    with herald.Herald(jwt_hub.url, token=provide) as client:
        client.send_control("pause", task_id="t1")
    assert calls == ["called"]
