"""The subscriber against a real hub: replay with since, checkpoints to
resume, filters and patterns, hub restarts while iterating (nothing lost,
nothing twice, or a gap saying what), heartbeat death detection."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import herald
from herald import Event, Gap, SessionConfig
from herald._session import FrameDecodeError, Open, Reconnecting, Session

from .conftest import JWT_SECRET, Hub, connections_settle_at, make_hub, make_jwt, raised_gap

pytestmark = pytest.mark.anyio
LIMIT = 20.0
FAST = SessionConfig(initial_reconnect_delay_ms=100, max_reconnect_delay_ms=500)


async def take(events: herald.Subscription[Any], count: int) -> list[Any]:
    items: list[Any] = []
    with anyio.fail_after(LIMIT):
        async for item in events:
            items.append(item)
            if len(items) == count:
                break
    return items


async def take_of(events: herald.Subscription[Any], topic: str, count: int) -> list[Any]:
    """The next ``count`` items of ``topic``: a graceful restart also brings
    ``system.shutdown`` on ``global``, which every connection gets."""
    items: list[Any] = []
    with anyio.fail_after(LIMIT):
        async for item in events:
            if getattr(item, "topic", None) == topic:
                items.append(item)
            if len(items) == count:
                break
    return items


def seqs(items: list[Any]) -> list[int]:
    return [item.seq for item in items if isinstance(item, Event)]


async def test_since_replays_what_was_retained_then_goes_live(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        for n in range(1, 6):
            await client.publish("run:r1", "step.completed", {"n": n})
        async with client.subscribe(["run:r1"], since=2) as events:
            replayed = await take(events, 3)
            await client.publish("run:r1", "step.completed", {"n": 6})
            live = await take(events, 1)
    assert seqs(replayed) == [3, 4, 5] and seqs(live) == [6]
    assert [e.data["n"] for e in replayed + live] == [3, 4, 5, 6]


async def test_checkpoints_resume_a_later_subscription_without_duplicates(any_hub: Hub) -> None:
    async with herald.AsyncHerald(any_hub.url) as client:
        async with client.subscribe(["run:r1", "run:r2"]) as events:
            for n in range(1, 4):
                await client.publish("run:r1", "step.completed", {"n": n})
            first = await take(events, 3)
            saved = events.checkpoints
        assert saved["run:r1"]["seq"] == 3 and "epoch" in saved["run:r1"]
        assert saved["run:r2"]["seq"] == 0
        for n in range(4, 7):
            await client.publish("run:r1", "step.completed", {"n": n})
        await client.publish("run:r2", "step.completed", {"n": 1})
        async with client.subscribe(["run:r1", "run:r2"], since=saved) as events:
            resumed = await take(events, 4)
    assert seqs(first) == [1, 2, 3]
    assert sorted((e.topic, e.seq) for e in resumed) == [("run:r1", 4), ("run:r1", 5), ("run:r1", 6), ("run:r2", 1)]


async def test_patterns_and_filters(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(
            ["execution:*"], filter={"types": ["execution.*"], "min_priority": "high"}
        ) as events:
            await client.publish("execution:a", "execution.progress", {"p": 1})  # below min_priority
            await client.publish("execution:b", "agent.message", {"m": 1}, priority="critical")  # wrong event type
            await client.publish("run:r1", "execution.failed", priority="high")  # not under the pattern
            await client.publish("execution:c", "execution.failed", {"e": 1}, priority="high")
            [item] = await take(events, 1)
    assert isinstance(item, Event) and (item.topic, item.event_type) == ("execution:c", "execution.failed")


async def test_a_refused_topic_is_a_typed_error(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(herald.InvalidTopicError) as invalid:
            client.subscribe(["run:r1", "Not A Topic"])
        with pytest.raises(herald.InvalidTopicError):
            client.control(task_id="not a task id")
        status = (await client._http.get("/api/v1/status")).json()
    assert invalid.value.code == "invalid_topic" and "pattern" in str(invalid.value)
    assert status["active_connections"] == 0


async def test_a_refusal_with_a_code_from_a_newer_hub_is_raised_at_once_with_that_code() -> None:
    import json

    from websockets.asyncio.server import ServerConnection, serve

    async def newer_hub(socket: ServerConnection) -> None:
        welcome = {"type": "welcome", "session_id": "s1", "protocol": 1, "heartbeat_ms": 30000, "server_version": "9"}
        await socket.send(json.dumps(welcome))
        async for text in socket:
            frame = json.loads(text)
            if frame.get("action") == "subscribe":
                refusal = {"type": "error", "code": "brand_new_code", "message": "not today", "ref": frame.get("id")}
                await socket.send(json.dumps(refusal))

    async with serve(newer_hub, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with herald.AsyncHerald(f"http://127.0.0.1:{port}") as client:
            started = time.monotonic()
            with pytest.raises(herald.HubError) as refused:
                async with client.subscribe(["run:x"], open_timeout=10):
                    pass
    assert time.monotonic() - started < 5, "the refusal waited for the open timeout"
    assert refused.value.hub_code == "brand_new_code" and refused.value.code == "internal"
    assert "not today" in str(refused.value)


async def test_a_subscription_over_the_hubs_frame_limit_is_refused_before_connecting(hub: Hub) -> None:
    # Sent, the frame would make the hub close the connection with 1009, and
    # the subscription would send it again on every reconnect.
    topics = [f"execution:{i:0>100}" for i in range(1000)]
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(herald.TooLargeError, match="frame limit of 65536") as refused:
            client.subscribe(topics)
        async with client.subscribe(topics[:100]) as events:
            await client.publish(topics[0], "execution.progress", {"p": 1})
            [item] = await take(events, 1)
        status = (await client._http.get("/api/v1/status")).json()
    assert refused.value.code == "too_large"
    assert isinstance(item, Event) and item.topic == topics[0]
    assert status["active_connections"] == 0


async def test_a_subscription_over_the_frame_limit_the_hubs_welcome_gives_raises_and_ends(tmp_path: Path) -> None:
    # The client keeps its default limit (64 KiB); the hub reads frames of at
    # most 1 KiB and says so in its welcome: the subscription is not sent.
    hub = make_hub(tmp_path, "memory", "--max-frame-size", "1KiB")
    hub.start()
    try:
        topics = [f"execution:{i:0>20}" for i in range(100)]
        async with herald.AsyncHerald(hub.url) as client:
            events = client.subscribe(topics)
            with anyio.fail_after(LIMIT):
                with pytest.raises(herald.TooLargeError, match="frame limit of 1024"):
                    await events.__anext__()
                # Nothing more can come: the iteration ends instead of waiting.
                with pytest.raises(StopAsyncIteration):
                    await events.__anext__()
            await events.aclose()
    finally:
        hub.stop()


async def test_a_time_cursor_is_refused_with_time_cursor_error_before_connecting(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(herald.TimeCursorError, match="is a time"):
            client.subscribe(["run:r1"], since={"run:r1": {"time_ms": 1_000}})


async def test_an_int_since_without_an_exact_topic_is_refused(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(ValueError, match="exact topics"):
            client.subscribe(["execution:*"], since=0)
        await client.publish("execution:a", "execution.progress", {"n": 1})
        await client.publish("run:r1", "step.completed", {"n": 1})
        # With an exact topic beside the pattern, the seq applies to that topic.
        async with client.subscribe(["execution:*", "run:r1"], since=0) as events:
            [replayed] = await take(events, 1)
    assert isinstance(replayed, Event) and (replayed.topic, replayed.seq) == ("run:r1", 1)


async def test_a_frame_over_the_size_limit_ends_the_subscription_with_a_typed_error(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(herald.subscription, "MAX_FRAME_BYTES", 4096)
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=FAST) as events:
            await client.publish("run:r1", "step.completed", {"blob": "x" * 8192})
            with pytest.raises(herald.SubscriptionClosedError) as closed:
                await take(events, 1)
    assert closed.value.code == 1009 and "4096-byte limit" in str(closed.value)


def test_json_nested_deeper_than_the_parser_goes_is_a_frame_decode_error() -> None:
    session = Session()
    for deep in ("[" * 100_000 + "]" * 100_000, '{"type":"event","data":' + "[" * 100_000 + "]" * 100_000 + "}"):
        with pytest.raises(FrameDecodeError):
            session.handle_text(deep, 0)


async def test_a_snapshot_comes_first_when_asked(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        await client.publish("machine:m1", "state.changed", {"state": "idle"}, key="m1")
        await client.publish("machine:m1", "state.changed", {"state": "busy"}, key="m1")
        async with client.subscribe(["machine:m1"], snapshot=True) as events:
            [snapshot] = await take(events, 1)
    assert isinstance(snapshot, herald.Snapshot) and snapshot.seq == 2
    assert [herald.StateChange.model_validate(e.data).state for e in snapshot.events] == ["busy"]


async def test_a_sqlite_hub_restart_while_iterating_loses_nothing_and_repeats_nothing(sqlite_hub: Hub) -> None:
    async with herald.AsyncHerald(sqlite_hub.url) as client:
        async with client.subscribe(["run:r1"], config=FAST) as events:
            for n in range(1, 6):
                await client.publish("run:r1", "step.completed", {"n": n})
            before = await take(events, 5)
            session = events.session_id
            await asyncio.to_thread(sqlite_hub.restart, signal.SIGKILL)
            # Published while the subscriber is away (it reconnects with backoff).
            for n in range(6, 11):
                await client.publish("run:r1", "step.completed", {"n": n})
            after = await take(events, 5)
            assert events.session_id != session
    assert seqs(before) == [1, 2, 3, 4, 5]
    assert all(isinstance(item, Event) for item in after), after
    assert seqs(after) == [6, 7, 8, 9, 10]
    assert [e.data["n"] for e in after] == [6, 7, 8, 9, 10]


async def test_a_memory_hub_restart_is_a_gap_with_the_epoch_change(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=FAST) as events:
            for n in range(1, 4):
                await client.publish("run:r1", "step.completed", {"n": n})
            await take(events, 3)
            old_epoch = events.checkpoints["run:r1"]["epoch"]
            await asyncio.to_thread(hub.restart)
            # The new stream is empty when the subscriber is back: 1..0.
            [gap] = await take_of(events, "run:r1", 1)
            await client.publish("run:r1", "step.completed", {"n": 1})
            [event] = await take_of(events, "run:r1", 1)
    assert isinstance(gap, Gap) and (gap.topic, gap.reason, gap.from_seq, gap.to_seq) == ("run:r1", "epoch_changed", 1, 0)
    assert isinstance(event, Event) and (event.seq, event.data) == (1, {"n": 1})
    assert events.checkpoints["run:r1"]["epoch"] != old_epoch


async def test_gaps_can_be_raised_instead(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=FAST, gaps="raise") as events:
            await client.publish("run:r1", "step.completed")
            await take(events, 1)
            await asyncio.to_thread(hub.restart)
            # Published on the new stream before the subscriber (which reads
            # only while iterated) is back: those two are missed.
            for n in (1, 2):
                await client.publish("run:r1", "step.completed", {"n": n})
            with pytest.raises(herald.GapError) as raised:
                await take_of(events, "run:r1", 1)
            gap = raised.value.gap
            assert (gap.reason, gap.from_seq, gap.to_seq) == ("epoch_changed", 1, 2)
            # The subscription goes on after the gap.
            await client.publish("run:r1", "step.completed", {"n": 3})
            [event] = await take_of(events, "run:r1", 1)
    assert isinstance(event, Event) and event.seq == 3


async def test_a_replaced_stream_is_raised_even_when_empty_and_iterating_again_follows_the_new_one(
    hub: Hub,
) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=FAST, gaps="raise") as events:
            await client.publish("run:r1", "step.completed")
            await take(events, 1)
            old_epoch = events.checkpoints["run:r1"]["epoch"]
            await asyncio.to_thread(hub.restart)
            # Back with nothing published meanwhile: the hub says `gap`
            # epoch_changed 1..0: the old stream is gone, whatever it held.
            replaced = await raised_gap(events)
            assert (replaced.gap.from_seq, replaced.gap.to_seq) == (1, 0)
            assert "was replaced" in str(replaced)
            await client.publish("run:r1", "step.completed", {"n": 1})
            [event] = await take_of(events, "run:r1", 1)
            checkpoint = events.checkpoints["run:r1"]
    assert isinstance(event, Event) and (event.seq, event.data) == (1, {"n": 1})
    assert checkpoint["seq"] == 1 and checkpoint["epoch"] not in (None, old_epoch)


async def test_a_hub_that_stops_answering_is_detected_by_the_heartbeat(hub: Hub) -> None:
    config = SessionConfig(heartbeat_interval_ms=200, missed_pongs_allowed=1, initial_reconnect_delay_ms=100)
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=config, open_timeout=2.0) as events:
            session = events.session_id
            hub.pause()  # SIGSTOP: the TCP connection stays, nothing answers
            try:
                deadline = time.monotonic() + LIMIT
                while not isinstance(events.state, Reconnecting):
                    assert time.monotonic() < deadline, "the dead link was not detected"
                    with pytest.raises(asyncio.TimeoutError):  # the built-in TimeoutError from 3.11 on
                        await asyncio.wait_for(events.__anext__(), 0.1)
            finally:
                hub.resume()
            await client.publish("run:r1", "step.completed", {"n": 1})
            [event] = await take(events, 1)
            assert isinstance(events.state, Open) and events.session_id != session
    assert isinstance(event, Event) and event.seq == 1


async def test_a_frame_send_that_never_completes_is_a_dead_link_and_the_subscription_reconnects(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SessionConfig(heartbeat_interval_ms=200, initial_reconnect_delay_ms=100)
    async with herald.AsyncHerald(hub.url) as client:
        async with client.subscribe(["run:r1"], config=config) as events:
            session = events.session_id
            stuck = events._socket
            assert stuck is not None

            async def never(*args: Any, **kwargs: Any) -> None:
                await asyncio.Event().wait()

            async def publish_once_reconnected() -> None:
                while events.session_id in (session, None):
                    await asyncio.sleep(0.05)
                await client.publish("run:r1", "step.completed", {"n": 1})

            # As a send buffer that stays full: the next ping's send never
            # completes. The consumer just waits for the next item: only a
            # bounded send gets it out of there.
            monkeypatch.setattr(stuck, "send", never)
            with anyio.fail_after(LIMIT):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(publish_once_reconnected)
                    [event] = await take(events, 1)
    assert isinstance(event, Event) and event.seq == 1


async def test_a_draining_hubs_retry_after_ms_is_the_first_reconnect_delay(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from .conftest import make_hub

    # Every state a subscription enters is logged: the first reconnect can
    # be over (the hint may be a few ms) before the state is looked at.
    caplog.set_level(logging.DEBUG, logger="herald")
    draining = make_hub(tmp_path, "memory", "--drain-window", "1s")
    draining.start()
    config = SessionConfig(initial_reconnect_delay_ms=50, max_reconnect_delay_ms=30_000)
    try:
        async with herald.AsyncHerald(draining.url) as client:
            async with client.subscribe(["run:r1"], config=config) as events:
                await client.publish("run:r1", "step.completed", {"n": 1})
                await take(events, 1)
                assert draining.process is not None
                draining.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(LIMIT):
                    async for item in events:
                        if isinstance(item, Event) and item.event_type == "system.shutdown":
                            notice = item
                            break
                assert isinstance(notice.data, dict)
                hint = notice.data["retry_after_ms"]
                assert isinstance(hint, int) and 0 <= hint <= 1000, notice
                deadline = time.monotonic() + LIMIT
                while not isinstance(events.state, Reconnecting):
                    assert time.monotonic() < deadline, "the drained connection never closed"
                    with pytest.raises(asyncio.TimeoutError):  # the built-in TimeoutError from 3.11 on
                        await asyncio.wait_for(events.__anext__(), 0.1)
                # Not the backoff's first delay (uniform in [0, 50] ms): the hub's hint.
                reconnects = [
                    r.args[0]
                    for r in caplog.records
                    if isinstance(r.args, tuple) and r.args and isinstance(r.args[0], Reconnecting)
                ]
                assert reconnects[0] == Reconnecting(attempt=1, delay_ms=hint, code=1001), reconnects
    finally:
        draining.stop()


async def test_with_several_node_urls_a_subscription_moves_to_the_next_node_and_resumes_there(
    tmp_path: Any, redis: Any
) -> None:
    from .conftest import Hub

    first = Hub(store=redis.url, args=[], log=tmp_path / "first.log")
    second = Hub(store=redis.url, args=[], log=tmp_path / "second.log")
    first.start()
    second.start()
    try:
        async with herald.AsyncHerald(f"{first.url},{second.url}") as client:
            async with client.subscribe(["run:r1"], config=FAST) as events:
                await client.publish("run:r1", "step.completed", {"n": 1})
                before = await take_of(events, "run:r1", 1)
                first.stop(signal.SIGKILL)
                # Published on the node that stays, while the subscription
                # has no connection: it comes with `since` on that node.
                async with herald.AsyncHerald(second.url) as other:
                    for n in (2, 3):
                        await other.publish("run:r1", "step.completed", {"n": n})
                after = await take_of(events, "run:r1", 2)
        assert seqs(before + after) == [1, 2, 3]
        assert [item.data["n"] for item in before + after] == [1, 2, 3]
    finally:
        first.stop()
        second.stop()


async def test_with_several_node_urls_the_first_connection_tries_each_node(tmp_path: Any, hub: Hub) -> None:
    from .conftest import make_hub

    gone = make_hub(tmp_path)
    gone.start()
    down = gone.url
    gone.stop()
    async with herald.AsyncHerald(f"{down},{hub.url}").subscribe(["run:r1"], config=FAST) as events:
        async with herald.AsyncHerald(hub.url) as publisher:
            await publisher.publish("run:r1", "step.completed", {"n": 1})
        [event] = await take_of(events, "run:r1", 1)
    assert event.data == {"n": 1}


async def test_the_first_connection_failing_is_an_error_not_a_hang(tmp_path: Any) -> None:
    from .conftest import make_hub

    gone = make_hub(tmp_path)
    gone.start()
    url = gone.url
    gone.stop()
    with pytest.raises(herald.TransportError):
        async with herald.AsyncHerald(url).subscribe(["run:r1"]):
            pass


async def test_a_subscription_or_control_stream_the_hub_refuses_at_open_closes_its_connection(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, "memory", "--jwt-secret", JWT_SECRET)
    hub.start()
    try:
        token = make_jwt("u1", ["task:*"], int(time.time()) + 3600)
        async with herald.AsyncHerald(hub.url, token=token) as client:
            for _ in range(3):  # as a service retrying the subscription
                with pytest.raises(herald.ForbiddenError):
                    async with client.subscribe(["execution:x"]):
                        pass
            events = client.subscribe(["run:r1"])
            with pytest.raises(herald.ForbiddenError):
                await events.open()
            with pytest.raises(herald.ForbiddenError):
                async with client.control(run_id="r1"):
                    pass
            left = await connections_settle_at(hub.url, 0)
            assert left == 0, f"{left} connection(s) of refused subscriptions left open"
            # The failed open closed the subscription: nothing more comes.
            with anyio.fail_after(LIMIT), pytest.raises(StopAsyncIteration):
                await events.__anext__()
    finally:
        hub.stop()


async def test_a_subscription_whose_open_times_out_closes_its_connection() -> None:
    import json

    from websockets.asyncio.server import ServerConnection, serve

    open_connections = [0]

    async def silent_hub(socket: ServerConnection) -> None:
        """Welcomes, then never confirms a subscription."""
        open_connections[0] += 1
        try:
            welcome = {"type": "welcome", "session_id": "s1", "protocol": 1, "heartbeat_ms": 30000, "server_version": "9"}
            await socket.send(json.dumps(welcome))
            async for _ in socket:
                pass
        finally:
            open_connections[0] -= 1

    async with serve(silent_hub, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with herald.AsyncHerald(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(herald.TransportError, match="did not confirm"):
                async with client.subscribe(["task:x"], open_timeout=0.5):
                    pass
            with pytest.raises(herald.TransportError, match="did not confirm"):
                async with client.control(task_id="x", open_timeout=0.5):
                    pass
            deadline = time.monotonic() + LIMIT
            while open_connections[0] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the server task sees the close a moment later
            # Counted before the server stops, which would close what is left.
            left = open_connections[0]
    assert left == 0, f"{left} connection(s) of subscriptions that timed out left open"


async def test_closing_the_client_closes_the_subscriptions_and_control_streams_made_from_it(hub: Hub) -> None:
    import gc
    import weakref

    async with herald.AsyncHerald(hub.url) as client:
        events = client.subscribe(["run:r1"])
        await events.open()
        requests = client.control(task_id="t1")
        await requests.open()
        opened = await connections_settle_at(hub.url, 2)
        # One the application closed and dropped is not kept alive for it.
        dropped = client.subscribe(["run:r2"])
        await dropped.aclose()
        gone = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert gone() is None
    assert opened == 2
    assert await connections_settle_at(hub.url, 0) == 0
    with anyio.fail_after(LIMIT):
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
        with pytest.raises(StopAsyncIteration):
            await requests.__anext__()


async def test_closing_a_subscription_that_never_opened_opens_nothing(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        events = client.subscribe(["run:r1"])
        await events.aclose()
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
        status = (await client._http.get("/api/v1/status")).json()
    assert status["active_connections"] == 0


async def test_a_task_cancelled_while_its_subscription_opens_always_ends(hub: Hub) -> None:
    """A cancel that lands as an awaited send or receive of the opening
    handshake completes is not swallowed: every cancelled task ends, with
    no socket left behind (``asyncio.wait_for`` on 3.10/3.11 can swallow
    such a cancel, a few times in a hundred here)."""
    hung: list[int] = []
    async with herald.AsyncHerald(hub.url) as client:

        async def consume() -> None:
            async with client.subscribe(["execution:a"]) as events:
                async for _ in events:
                    pass

        for attempt in range(200):
            task = asyncio.create_task(consume())
            # Not a wait for a condition: it spreads the cancels over the
            # connect, the subscribe frame and the hub's confirmation.
            await asyncio.sleep(0.001 * (attempt % 20))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                hung.append(attempt)
                task.cancel()  # a second cancel ends it, so the test leaves nothing running
                await asyncio.wait({task}, timeout=5.0)
    assert hung == [], f"cancelled tasks that went on: attempts {hung}"
