"""Publishing against a real hub: receipts, what a WebSocket subscriber sees,
batches, idempotent retries, broadcasts, user messages, typed errors."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydantic
import pytest

import herald
from herald import Event

from .conftest import Hub, answer_dropping_proxy, make_hub

pytestmark = pytest.mark.anyio
LIMIT = 15.0


async def next_event(events: herald.Subscription[herald.SubscriptionItem]) -> Event:
    with anyio.fail_after(LIMIT):
        while True:
            item = await events.__anext__()
            if isinstance(item, Event):
                return item


def history(hub: Hub, topic: str) -> dict[str, object]:
    answer = httpx.get(f"{hub.url}/api/v1/topics/{topic}/events", params={"since": 0}, timeout=LIMIT)
    answer.raise_for_status()
    body: dict[str, object] = answer.json()
    return body


async def test_publish_returns_a_receipt_and_a_websocket_subscriber_sees_the_event(any_hub: Hub) -> None:
    async with herald.AsyncHerald(any_hub.url) as hub, hub.subscribe(["execution:exec_123"]) as events:
        receipt = await hub.publish(
            "execution:exec_123",
            "execution.progress",
            {"progress": 75, "message": "Task execution progress 75%"},
            key="exec_123",
            source="worker-7",
        )
        assert receipt.topic == "execution:exec_123" and receipt.seq == 1
        event = await next_event(events)
    assert event.seq == receipt.seq and event.id == receipt.id
    assert event.event_type == "execution.progress" and event.priority == "normal"
    assert event.key == "exec_123" and event.source == "worker-7"
    assert herald.Progress.model_validate(event.data).progress == 75
    assert events.checkpoints["execution:exec_123"]["seq"] == 1


async def test_the_blocking_client_publishes_too(hub: Hub) -> None:
    with herald.Herald(hub.url) as client:
        first = await asyncio.to_thread(client.publish, "run:r1", "step.started", {"step": 1})
        second = await asyncio.to_thread(client.publish, "run:r1", "step.completed", {"step": 1}, priority="high")
    assert (first.seq, second.seq) == (1, 2)
    events = history(hub, "run:r1")["events"]
    assert isinstance(events, list) and [e["priority"] for e in events] == ["normal", "high"]


async def test_url_and_api_key_come_from_the_environment(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_URL", hub.url)
    monkeypatch.setenv("HERALD_API_KEY", "k1")
    async with herald.AsyncHerald() as client:
        assert client.url == hub.url
        assert client.endpoint.api_key == "k1"
        assert (await client.publish("run:env", "step.started")).seq == 1


async def test_a_batch_is_one_request_answered_in_order(any_hub: Hub) -> None:
    async with herald.AsyncHerald(any_hub.url) as hub, hub.subscribe(["run:*"]) as events:
        receipts = await hub.publish_batch(
            [
                herald.PublishRequest(topic="run:a", event_type="step.started", data={"n": 1}),
                {"topic": "run:b", "event_type": "step.started", "data": {"n": 2}},
                herald.PublishRequest(topic="run:a", event_type="step.completed", data={"n": 3}),
            ]
        )
        assert [(r.topic, r.seq) for r in receipts] == [("run:a", 1), ("run:b", 1), ("run:a", 2)]
        seen = [await next_event(events) for _ in range(3)]
    assert sorted((e.topic, e.seq, e.data) for e in seen) == [
        ("run:a", 1, {"n": 1}), ("run:a", 2, {"n": 3}), ("run:b", 1, {"n": 2}),
    ]  # fmt: skip


async def test_a_bad_event_refuses_the_whole_batch_with_its_index(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        # Valid for the client's models, refused by the hub: over its id limit of 128 bytes.
        too_long = "é" * 100
        with pytest.raises(herald.InvalidRequestError) as refused:
            await client.publish_batch(
                [
                    {"topic": "run:r1", "event_type": "step.started"},
                    {"topic": "run:r1", "event_type": "step.started", "id": too_long},
                ]
            )
    assert refused.value.code == "invalid_request" and refused.value.status == 400
    assert refused.value.index == 1
    assert history(hub, "run:r1")["seq"] == 0


async def test_a_retry_after_a_lost_receipt_reuses_the_id_and_is_not_published_twice(any_hub: Hub) -> None:
    async with answer_dropping_proxy(any_hub.url) as (proxy, dropped):
        async with herald.AsyncHerald(proxy) as client:
            receipt = await client.publish("run:r1", "step.completed", {"step": 3})
    assert dropped == [1], "the first answer was not dropped: the retry was not exercised"
    body = history(any_hub, "run:r1")
    assert body["seq"] == 1 and receipt.seq == 1
    events = body["events"]
    assert isinstance(events, list) and len(events) == 1 and events[0]["id"] == receipt.id


async def test_publishing_again_with_the_same_id_answers_the_original_seq(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        first = await client.publish("run:r1", "step.started", id="evt-1")
        await client.publish("run:r1", "step.started")
        again = await client.publish("run:r1", "step.started", id="evt-1")
    assert (first.seq, again.seq, again.id) == (1, 1, "evt-1")
    assert history(hub, "run:r1")["seq"] == 2


async def test_broadcasts_reach_every_connection_and_user_messages_the_users(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client, client.subscribe(["user:u1"]) as events:
        broadcast = await client.broadcast("system.notification", {"message": "maintenance in 5 minutes"})
        assert broadcast.topic == "global"
        seen = await next_event(events)
        assert (seen.topic, seen.event_type) == ("global", "system.notification")
        message = await client.send_to_user("u1", "system.notification", {"message": "done"}, priority="high")
        assert message.topic == "user:u1"
        seen = await next_event(events)
        assert (seen.topic, seen.priority, seen.data) == ("user:u1", "high", {"message": "done"})


async def test_floats_in_data_arrive_as_they_were_sent(hub: Hub) -> None:
    data = {"ratio": 0.1, "pi": 3.141592653589793, "tiny": 5e-324, "big": 1.7976931348623157e308, "third": 1 / 3}
    async with herald.AsyncHerald(hub.url) as client, client.subscribe(["run:floats"]) as events:
        await client.publish("run:floats", "metrics.updated", data)
        event = await next_event(events)
    assert event.data == data


async def test_hub_refusals_are_typed_errors_with_the_contracts_code(tmp_path: Path) -> None:
    small = make_hub(tmp_path, "memory", "--max-body-size", "1KiB")
    small.start()
    try:
        async with herald.AsyncHerald(small.url) as client:
            with pytest.raises(herald.TooLargeError) as too_large:
                await client.publish("run:r1", "step.started", {"blob": "x" * 4096})
            assert (too_large.value.code, too_large.value.status) == ("too_large", 413)
            with pytest.raises(herald.NotFoundError) as missing:
                await client.get_approval("no-such-approval")
            assert missing.value.code == "not_found" and isinstance(missing.value, herald.HubError)
    finally:
        small.stop()


async def test_an_unreachable_hub_is_a_transport_error_after_the_retries(tmp_path: Path) -> None:
    gone = make_hub(tmp_path)
    gone.start()
    url = gone.url
    gone.stop()
    retry = herald.RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
    async with herald.AsyncHerald(url, retry=retry) as client:
        with pytest.raises(herald.TransportError) as unreachable:
            await client.publish("run:r1", "step.started", id="never-sent")
    assert unreachable.value.attempts == 3
    assert not unreachable.value.outcome_unknown and unreachable.value.event_ids == ("never-sent",)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinities_in_data_are_refused_before_sending(hub: Hub, bad: float) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(herald.InvalidDataError) as refused:
            await client.publish("run:r1", "metrics.updated", {"ok": 1.5, "series": [1.0, {"x": bad}]})
        assert refused.value.path == "data.series[1].x" and isinstance(refused.value, ValueError)
        with pytest.raises(herald.InvalidDataError):
            await client.publish("run:r1", "metrics.updated", herald.Metrics(metrics={"cpu": bad}))
        with pytest.raises(herald.InvalidDataError):
            await client.broadcast("system.notification", {"load": bad})
        with pytest.raises(herald.InvalidDataError):
            await client.send_to_user("u1", "system.notification", [bad])
        with pytest.raises(herald.InvalidDataError):
            await client.create_approval("u1", "t1", 1, {"step": "s", "message": "m", "status": "failed", "result": {"loss": bad}})
    with herald.Herald(hub.url) as blocking, pytest.raises(herald.InvalidDataError):
        await asyncio.to_thread(blocking.publish, "run:r1", "metrics.updated", bad)
    assert history(hub, "run:r1")["seq"] == 0
    assert history(hub, "global")["seq"] == 0


async def test_integers_outside_64_bits_in_data_are_refused_before_sending_not_turned_into_floats(hub: Hub) -> None:
    step_result = {"step": "s", "message": "m", "status": "failed"}
    async with herald.AsyncHerald(hub.url) as client:
        for big in (2**64, -(2**63) - 1, 2**70):
            with pytest.raises(herald.InvalidDataError) as refused:
                await client.publish("run:r1", "metrics.updated", {"ok": 1, "series": [1, {"n": big}]})
            assert refused.value.path == "data.series[1].n" and isinstance(refused.value, ValueError)
            assert str(big) in str(refused.value)
        with pytest.raises(herald.InvalidRequestError) as batch:
            await client.publish_batch([{"topic": "run:r1", "event_type": "step.started", "data": [2**64]}])
        assert batch.value.index == 0 and isinstance(batch.value.__cause__, herald.InvalidDataError)
        with pytest.raises(herald.InvalidDataError):
            await client.broadcast("system.notification", {"n": 2**64})
        with pytest.raises(herald.InvalidDataError):
            await client.send_to_user("u1", "system.notification", {"n": -(2**63) - 1})
        with pytest.raises(herald.InvalidDataError) as approval:
            await client.create_approval("u1", "t1", 1, {**step_result, "result": {"n": 2**64}})
        assert approval.value.path == "step_result.result.n"
        # The 64-bit edges are integers the hub keeps as they are.
        edges = {"largest": 2**64 - 1, "smallest": -(2**63)}
        await client.publish("run:edges", "metrics.updated", edges)
    with herald.Herald(hub.url) as blocking, pytest.raises(herald.InvalidDataError):
        await asyncio.to_thread(blocking.publish, "run:r1", "metrics.updated", 2**64)
    assert history(hub, "run:r1")["seq"] == 0
    assert history(hub, "global")["seq"] == 0
    kept = history(hub, "run:edges")["events"]
    assert isinstance(kept, list) and kept[0]["data"] == edges


async def test_a_batch_refused_as_a_conflict_names_its_event_ids_so_the_rest_is_stored_once(any_hub: Hub) -> None:
    batch: list[dict[str, Any]] = [
        {"topic": "task:before", "event_type": "task.progress", "data": {"n": 0}},
        {"topic": "task:x", "event_type": "task.progress", "data": {"v": 2}, "id": "evt-x"},
        {"topic": "task:after", "event_type": "task.progress", "data": {"n": 2}},
    ]
    async with herald.AsyncHerald(any_hub.url) as client:
        await client.publish("task:x", "task.progress", {"v": 1}, id="evt-x")
        with pytest.raises(herald.ConflictError) as refused:
            await client.publish_batch(batch)
        ids = refused.value.event_ids
        assert (refused.value.status, refused.value.index) == (409, 1)
        assert len(ids) == 3 and ids[1] == "evt-x" and len(set(ids)) == 3
        # Event 0 was stored before the conflict: finishing the batch sends
        # the others again with their ids, and nothing is stored twice.
        receipts = await client.publish_batch([{**event, "id": ids[i]} for i, event in enumerate(batch) if i != 1])
        with pytest.raises(herald.ConflictError) as single:
            await client.publish("task:x", "task.progress", {"v": 3}, id="evt-x")
    with herald.Herald(any_hub.url) as blocking, pytest.raises(herald.ConflictError) as blocking_refused:
        await asyncio.to_thread(blocking.publish_batch, [{**batch[1], "id": "evt-x"}])
    assert [(r.topic, r.seq, r.id) for r in receipts] == [("task:before", 1, ids[0]), ("task:after", 1, ids[2])]
    assert single.value.event_ids == ("evt-x",) and blocking_refused.value.event_ids == ("evt-x",)
    before, after = history(any_hub, "task:before")["events"], history(any_hub, "task:after")["events"]
    assert isinstance(before, list) and [e["id"] for e in before] == [ids[0]]
    assert isinstance(after, list) and [e["id"] for e in after] == [ids[2]]


async def test_every_argument_refused_before_sending_is_a_herald_error_and_a_value_error(
    hub: Hub, tmp_path: Path
) -> None:
    step_result = {"step": "s", "message": "m", "status": "failed"}
    unix = herald.UnixPublisher(tmp_path / "no-hub.sock")
    async with herald.AsyncHerald(hub.url) as client:
        blocking = herald.Herald(hub.url)
        bad_topics: dict[str, Callable[[], object]] = {
            "publish": lambda: client.publish("Bad Topic", "step.started"),
            "publish a pattern": lambda: client.publish("task:*", "step.started"),
            "blocking publish": lambda: blocking.publish("Bad Topic", "step.started"),
            "history": lambda: client.history("BAD"),
            "blocking history": lambda: blocking.history("run:*"),
            "subscribe": lambda: client.subscribe(["Bad"]),
            "control": lambda: client.control(task_id="not a task id"),
            "unix publish": lambda: unix.publish("Bad", "state.changed"),
        }
        other_arguments: dict[str, Callable[[], object]] = {
            "publish a bad event type": lambda: client.publish("run:r1", "Not A Type"),
            "publish an empty id": lambda: client.publish("run:r1", "step.started", id=""),
            "publish NaN": lambda: client.publish("run:r1", "step.started", {"x": math.nan}),
            "broadcast a bad event type": lambda: client.broadcast("Not A Type"),
            "send_to_user a bad priority": lambda: client.send_to_user("u1", "system.notification", priority="urgent"),  # type: ignore[arg-type]
            "history since < 0": lambda: client.history("run:r1", since=-1),
            "send_control without an id": lambda: client.send_control("pause"),
            "blocking send_control with both ids": lambda: blocking.send_control("pause", task_id="t", run_id="r"),
            "control with both ids": lambda: client.control(task_id="t", run_id="r"),
            "an approval timeout": lambda: client.create_approval("u1", "t1", 1, step_result, timeout=0),
            "a step result": lambda: client.create_approval("u1", "t1", 1, {"step": 5}),
            "subscribe since=int on a pattern": lambda: client.subscribe(["execution:*"], since=1),
            "subscribe no topics": lambda: client.subscribe([]),
            "subscribe a bad filter": lambda: client.subscribe(["run:r1"], filter={"min_priority": "urgent"}),
            "subscribe a time cursor": lambda: client.subscribe(["run:r1"], since={"run:r1": {"time_ms": 1}}),
            "a hub url": lambda: herald.AsyncHerald("ftp://hub"),
        }
        refusals: dict[str, BaseException] = {}
        for name, call in {**bad_topics, **other_arguments}.items():
            with pytest.raises(herald.HeraldError) as refused:
                result = call()
                if inspect.isawaitable(result):
                    await result
            refusals[name] = refused.value
        blocking.close()
    unix.close()
    for name, refusal in refusals.items():
        assert isinstance(refusal, ValueError), f"{name}: {refusal!r} is not a ValueError"
    for name in bad_topics:
        assert isinstance(refusals[name], herald.InvalidTopicError), f"{name}: {refusals[name]!r}"
        assert isinstance(refusals[name].__cause__, pydantic.ValidationError), name
    assert isinstance(refusals["subscribe no topics"], herald.NoTopicsError)
    assert isinstance(refusals["publish a bad event type"], herald.InvalidRequestError)
    assert isinstance(refusals["publish a bad event type"].__cause__, pydantic.ValidationError)
    assert unix.sent == 0
    assert history(hub, "run:r1")["seq"] == 0 and history(hub, "global")["seq"] == 0


async def test_an_event_the_client_refuses_refuses_the_batch_with_its_index(hub: Hub) -> None:
    good: dict[str, Any] = {"topic": "run:r1", "event_type": "step.started"}
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(herald.InvalidRequestError) as bad_topic:
            await client.publish_batch([good, good, {"topic": "Not A Topic", "event_type": "step.started"}])
        with pytest.raises(herald.InvalidRequestError) as bad_data:
            await client.publish_batch([good, {**good, "data": {"x": math.nan}}, {"topic": "Bad"}])
    with herald.Herald(hub.url) as blocking, pytest.raises(herald.InvalidRequestError) as blocking_refused:
        await asyncio.to_thread(blocking.publish_batch, [{"topic": "run:r1"}])
    assert bad_topic.value.index == 2 and bad_topic.value.status is None
    assert isinstance(bad_topic.value.__cause__, pydantic.ValidationError)
    assert bad_data.value.index == 1 and isinstance(bad_data.value.__cause__, herald.InvalidDataError)
    assert blocking_refused.value.index == 0
    assert "(event 2 of the batch)" in str(bad_topic.value)
    assert history(hub, "run:r1")["seq"] == 0


async def test_broadcasts_and_user_messages_refused_with_429_are_retried(tmp_path: Path) -> None:
    limited = make_hub(tmp_path, "memory", "--publish-rate-limit", "2")
    limited.start()
    retry = herald.RetryPolicy(max_attempts=10, initial_delay=0.2, max_delay=1.0)
    try:
        async with herald.AsyncHerald(limited.url, retry=retry) as client:
            with anyio.fail_after(LIMIT * 2):
                broadcasts = [await client.broadcast("system.notification", {"n": n}) for n in range(5)]
                messages = [await client.send_to_user("u1", "system.notification", {"n": n}) for n in range(5)]
    finally:
        limited.stop()
    # Each 429 published nothing: every call is stored once, in order.
    assert [r.seq for r in broadcasts] == [1, 2, 3, 4, 5]
    assert [r.seq for r in messages] == [1, 2, 3, 4, 5]


async def test_a_429_is_retried_no_sooner_than_its_retry_after(tmp_path: Path) -> None:
    limited = make_hub(tmp_path, "memory", "--publish-rate-limit", "5")
    limited.start()
    # Two attempts, the second a few milliseconds later by the policy alone:
    # only the hub's Retry-After (1 s) lets it pass.
    retry = herald.RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=2.0)
    burst = [{"topic": "run:r1", "event_type": "step.started"} for _ in range(10)]
    try:
        async with herald.AsyncHerald(limited.url, retry=retry) as client:
            with anyio.fail_after(LIMIT):
                await client.publish_batch(burst)
                receipts = await client.publish_batch(burst[:5])
    finally:
        limited.stop()
    assert [r.seq for r in receipts] == [11, 12, 13, 14, 15]


async def test_a_lost_answer_to_a_broadcast_says_the_outcome_is_unknown(hub: Hub) -> None:
    async with answer_dropping_proxy(hub.url) as (proxy, dropped):
        async with herald.AsyncHerald(proxy) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.broadcast("system.notification", {"message": "once"})
    assert dropped == [1]
    assert lost.value.outcome_unknown and lost.value.attempts == 1
    assert "unknown" in str(lost.value) and "could not reach" not in str(lost.value)
    # The hub did publish it, and only once: the call was not sent again.
    assert history(hub, "global")["seq"] == 1


async def test_an_unreachable_hub_is_not_an_unknown_outcome(tmp_path: Path) -> None:
    gone = make_hub(tmp_path)
    gone.start()
    url = gone.url
    gone.stop()
    async with herald.AsyncHerald(url, retry=herald.RetryPolicy.none()) as client:
        with pytest.raises(herald.TransportError) as unreachable:
            await client.broadcast("system.notification")
    assert not unreachable.value.outcome_unknown and "could not reach" in str(unreachable.value)


@asynccontextmanager
async def hub_answering(
    body: bytes, status: bytes = b"200 OK", then: tuple[bytes, bytes] | None = None
) -> AsyncIterator[str]:
    """A server that answers every request with ``status`` (a 200 unless
    told) and ``body``, or only the first, and the others with ``then``
    (status, body): a hub that breaks the contract, or fails. Yields its
    URL."""
    answered = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.readuntil(b"\r\n\r\n")
        now, content = (status, body) if then is None or answered == 0 else then
        answered += 1
        head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (now, len(content))
        writer.write(head + content)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_a_success_whose_body_is_not_the_expected_answer_is_a_protocol_error() -> None:
    async with hub_answering(b'{"unexpected": true}') as url:
        async with herald.AsyncHerald(url) as client:
            with pytest.raises(herald.ProtocolError) as nonsense:
                await client.publish("run:r1", "step.started")
            with pytest.raises(herald.ProtocolError):
                await client.get_approval("a1")
        with herald.Herald(url) as blocking, pytest.raises(herald.ProtocolError):
            await asyncio.to_thread(blocking.publish_batch, [{"topic": "run:r1", "event_type": "step.started"}])
    assert nonsense.value.status == 200 and "POST /api/v1/events" in str(nonsense.value)


async def test_a_receipt_for_another_event_is_a_protocol_error() -> None:
    receipt = b'{"id": "00000000-0000-4000-8000-000000000000", "topic": "run:other", "seq": 1}'
    async with hub_answering(receipt) as url:
        async with herald.AsyncHerald(url) as client:
            with pytest.raises(herald.ProtocolError, match="receipt for"):
                await client.publish("run:r1", "step.started")
        with herald.Herald(url) as blocking, pytest.raises(herald.ProtocolError, match="receipt for"):
            await asyncio.to_thread(blocking.publish, "run:r1", "step.started")


@asynccontextmanager
async def unanswering_hub() -> AsyncIterator[str]:
    """A server that takes every request and never answers: each attempt
    goes out, and its answer never comes (as a hub that stalls, or a
    network that drops the answers)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in held:
            writer.close()


QUICK = herald.RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02)


async def test_a_publish_sent_but_never_answered_is_an_unknown_outcome_naming_its_event_ids() -> None:
    async with unanswering_hub() as url, herald.AsyncHerald(url, timeout=0.3, retry=QUICK) as client:
        with pytest.raises(herald.TransportError) as single:
            await client.publish("run:r1", "step.started", id="step-1-started")
        with pytest.raises(herald.TransportError) as generated:
            await client.publish("run:r1", "step.started")
        batch: list[herald.PublishRequest | dict[str, Any]] = [
            herald.PublishRequest(topic="run:r1", event_type="step.started", id="b1"),
            {"topic": "run:r1", "event_type": "step.completed"},
        ]
        with pytest.raises(herald.TransportError) as batched:
            await client.publish_batch(batch)
    for lost in (single, generated, batched):
        assert lost.value.outcome_unknown and lost.value.attempts == 2
        assert "may have stored" in str(lost.value)
    assert single.value.event_ids == ("step-1-started",)
    assert len(generated.value.event_ids) == 1 and generated.value.event_ids[0] in str(generated.value)
    assert len(batched.value.event_ids) == 2 and batched.value.event_ids[0] == "b1"


async def test_a_publish_whose_last_attempt_is_answered_5xx_is_an_unknown_outcome_naming_its_event_ids() -> None:
    unavailable = b'{"code": "internal", "message": "the store is unavailable"}'
    async with hub_answering(unavailable, b"503 Service Unavailable") as url:
        async with herald.AsyncHerald(url, retry=QUICK) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.publish("run:r1", "step.started", id="s1")
            # Not a publish: the hub's own error, as it answered.
            with pytest.raises(herald.InternalError):
                await client.broadcast("system.notification")
        with herald.Herald(url, retry=QUICK) as blocking, pytest.raises(herald.TransportError) as blocked:
            await asyncio.to_thread(blocking.publish_batch, [{"topic": "run:r1", "event_type": "step.started"}])
    async with hub_answering(b"<html>bad gateway</html>", b"502 Bad Gateway") as url:
        async with herald.AsyncHerald(url, retry=herald.RetryPolicy.none()) as client:
            with pytest.raises(herald.TransportError) as proxied:
                await client.publish("run:r1", "step.started")
    assert lost.value.outcome_unknown and lost.value.attempts == 2 and lost.value.event_ids == ("s1",)
    assert isinstance(lost.value.__cause__, herald.InternalError) and "may have stored" in str(lost.value)
    assert blocked.value.outcome_unknown and len(blocked.value.event_ids) == 1
    assert proxied.value.outcome_unknown and proxied.value.attempts == 1
    assert isinstance(proxied.value.__cause__, herald.ProtocolError) and len(proxied.value.event_ids) == 1


async def test_a_publish_refused_429_after_an_attempt_answered_5xx_is_an_unknown_outcome() -> None:
    unavailable = b'{"code": "internal", "message": "the store is unavailable"}'
    limited = (b"429 Too Many Requests", b'{"code": "rate_limited", "message": "publish rate limit"}')
    async with hub_answering(unavailable, b"503 Service Unavailable", then=limited) as url:
        async with herald.AsyncHerald(url, retry=QUICK) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.publish("run:r1", "step.started", id="s1")
    assert lost.value.outcome_unknown and lost.value.event_ids == ("s1",) and lost.value.attempts == 2
    assert isinstance(lost.value.__cause__, herald.RateLimitedError)
    # A 429 alone did nothing: that is the hub's own answer.
    async with hub_answering(limited[1], limited[0]) as url:
        async with herald.AsyncHerald(url, retry=QUICK) as client:
            with pytest.raises(herald.RateLimitedError):
                await client.publish("run:r1", "step.started")


async def test_the_blocking_publish_sent_but_never_answered_is_an_unknown_outcome_too() -> None:
    async with unanswering_hub() as url:
        with herald.Herald(url, timeout=0.3, retry=QUICK) as client:
            with pytest.raises(herald.TransportError) as lost:
                await asyncio.to_thread(client.publish, "run:r1", "step.started", id="blocking-1")
    assert lost.value.outcome_unknown and lost.value.event_ids == ("blocking-1",)


async def test_retrying_with_the_event_ids_of_an_unknown_outcome_stores_each_event_once(hub: Hub) -> None:
    async with answer_dropping_proxy(hub.url, then_refuse=True) as (proxy, dropped):
        async with herald.AsyncHerald(proxy, retry=QUICK) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.publish("run:r1", "step.started", {"n": 1})
    assert dropped == [1] and lost.value.outcome_unknown
    async with herald.AsyncHerald(hub.url) as client:
        receipt = await client.publish("run:r1", "step.started", {"n": 1}, id=lost.value.event_ids[0])
    assert receipt.seq == 1
    assert len(history(hub, "run:r1")["events"]) == 1  # type: ignore[arg-type]


async def test_an_empty_event_id_is_refused_not_replaced(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(ValueError):
            await client.publish("run:r1", "step.started", id="")
        with pytest.raises(herald.InvalidRequestError) as batch:
            await client.publish_batch([{"topic": "run:r1", "event_type": "step.started", "id": ""}])
    with herald.Herald(hub.url) as blocking:
        with pytest.raises(ValueError):
            blocking.publish("run:r1", "step.started", id="")
    assert batch.value.index == 0 and batch.value.status is None
    assert history(hub, "run:r1")["events"] == []
