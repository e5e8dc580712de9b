"""Approvals, the seeds' core interaction: a producer asks and waits; a
person answers over WebSocket; the decision comes back typed, across hub
restarts. And control requests reaching the producer."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import herald
from herald import _http

from .conftest import JWT_SECRET, Hub, answer_dropping_proxy, browser, make_hub, raised_gap

pytestmark = pytest.mark.anyio
LIMIT = 20.0

STEP_RESULT = {
    "step": "model_training",
    "result": None,
    "completed": False,
    "message": "Model training failed, retry?",
    "status": "failed",
    "error_code": "E003",
    "error_message": "GPU memory insufficient",
}


def is_request(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "event" and frame.get("event_type") == "approval.requested"


async def test_an_approval_answered_over_websocket_resolves_request_approval(any_hub: Hub) -> None:
    async with herald.AsyncHerald(any_hub.url) as hub, browser(any_hub, "user_id=user_123") as user:
        waiting = asyncio.create_task(
            hub.request_approval("user_123", "task_789", 2, STEP_RESULT, timeout=60, default_proceed=False)
        )
        request = await user.until(is_request)
        data = herald.ApprovalRequested.model_validate(request["data"])
        assert (data.user_id, data.task_id, data.step, data.step_result.error_code) == ("user_123", "task_789", 2, "E003")
        assert data.timeout_ms == 60_000 and data.default_proceed is False
        await user.send({"action": "confirm", "id": 7, "callback_id": data.callback_id, "proceed": True, "feedback": "retry"})
        assert (await user.until(lambda f: f.get("ref") == 7))["type"] == "ack"
        with anyio.fail_after(LIMIT):
            decision = await waiting
    assert decision.callback_id == data.callback_id
    assert (decision.status, decision.proceed, decision.feedback, decision.decided_by) == ("approved", True, "retry", "user_123")
    assert decision.decided_at is not None


async def test_the_blocking_client_waits_for_a_rejection(hub: Hub) -> None:
    with herald.Herald(hub.url) as client:
        async with browser(hub, "user_id=u1") as user:
            waiting = asyncio.create_task(
                asyncio.to_thread(client.request_approval, "u1", "t1", 1, herald.TaskStepResult(step="s", message="ok?", status="completed"))
            )
            request = await user.until(is_request)
            await user.send({"action": "confirm", "callback_id": request["data"]["callback_id"], "proceed": False, "feedback": "stop"})
            with anyio.fail_after(LIMIT):
                decision = await waiting
    assert (decision.status, decision.proceed, decision.feedback) == ("rejected", False, "stop")


async def test_a_timed_out_approval_resolves_with_its_default_and_no_decider(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with anyio.fail_after(LIMIT):
            decision = await client.request_approval("u1", "t1", 1, STEP_RESULT, timeout=0.2, default_proceed=False)
    assert (decision.status, decision.proceed, decision.decided_by) == ("timed_out", False, None)


async def test_a_second_decision_is_a_conflict(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client, browser(hub, "user_id=u1") as user:
        record = await client.create_approval("u1", "t1", 1, STEP_RESULT)
        await user.send({"action": "confirm", "id": 1, "callback_id": record.callback_id, "proceed": True})
        assert (await user.until(lambda f: f.get("ref") == 1))["type"] == "ack"
        await user.send({"action": "confirm", "id": 2, "callback_id": record.callback_id, "proceed": False})
        refused = await user.until(lambda f: f.get("ref") == 2)
        assert (refused["type"], refused["code"]) == ("error", "conflict")
        decision = await client.get_approval(record.callback_id)
    assert decision.status == "approved"


async def test_cancel_approval_cancels_the_tasks_pending_approvals(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        record = await client.create_approval("u1", "t9", 1, STEP_RESULT)
        waiting = asyncio.create_task(client.wait_approval(record))
        await client.cancel_approval("t9", reason="user closed the page")
        with anyio.fail_after(LIMIT):
            decision = await waiting
    assert (decision.status, decision.decided_by) == ("cancelled", None)


async def test_control_requests_reach_the_producer(any_hub: Hub) -> None:
    async with herald.AsyncHerald(any_hub.url) as hub, hub.control(task_id="task_456") as requests:
        async with browser(any_hub, "user_id=user_123") as user:
            for frame_id, action in enumerate(["pause", "resume", "cancel"], 1):
                await user.send({"action": action, "id": frame_id, "task_id": "task_456", "reason": f"{action} please"})
                assert (await user.until(lambda f, i=frame_id: f.get("ref") == i))["type"] == "ack"
        # Another task's requests are not this producer's.
        await hub.send_control("cancel", task_id="task_other")
        received = []
        with anyio.fail_after(LIMIT):
            async for request in requests:
                received.append(request)
                if request.action == "cancel":
                    break
    assert [r.action for r in received] == ["pause", "resume", "cancel"]
    assert all(r.request.task_id == "task_456" for r in received)
    assert [r.reason for r in received] == ["pause please", "resume please", "cancel please"]
    assert received[0].requested_by == "user_123"
    assert [r.event.seq for r in received] == [1, 2, 3]


async def test_control_for_a_run_and_from_the_blocking_client(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client, client.control(run_id="run-123") as requests:
        with herald.Herald(hub.url) as blocking:
            await asyncio.to_thread(blocking.send_control, "pause", run_id="run-123", reason="lunch")
        with anyio.fail_after(LIMIT):
            request = await requests.__anext__()
    assert (request.action, request.request.run_id, request.reason, request.event.topic) == ("pause", "run-123", "lunch", "run:run-123")


async def test_request_approval_survives_a_hub_restart(sqlite_hub: Hub) -> None:
    """A SQLite hub restarts (killed) while the producer long-polls: the
    approval is back, the user answers on a new connection, the producer
    gets the decision."""
    async with herald.AsyncHerald(sqlite_hub.url) as hub:
        async with browser(sqlite_hub, "user_id=u1") as user:
            # request_approval is create_approval then wait_approval; the
            # restart must come once the producer waits (creating is not
            # retried blindly: the hub takes no client-chosen approval id).
            record = await hub.create_approval("u1", "t1", 3, STEP_RESULT, timeout=120)
            waiting = asyncio.create_task(hub.wait_approval(record))
            request = await user.until(is_request)
        callback_id = request["data"]["callback_id"]
        assert callback_id == record.callback_id
        await asyncio.to_thread(sqlite_hub.restart, 9)  # SIGKILL: a crash, not a clean stop
        assert not waiting.done()
        async with browser(sqlite_hub, "user_id=u1&snapshot=true") as user:
            # The pending approval is in the user's state on connect.
            snapshot = await user.until(lambda f: f.get("type") == "snapshot" and f.get("topic") == "user:u1")
            assert [e["data"]["callback_id"] for e in snapshot["events"]] == [callback_id]
            await user.send({"action": "confirm", "id": 1, "callback_id": callback_id, "proceed": True, "feedback": "after restart"})
            assert (await user.until(lambda f: f.get("ref") == 1))["type"] == "ack"
        with anyio.fail_after(LIMIT):
            decision = await waiting
    assert (decision.status, decision.proceed, decision.feedback, decision.decided_by) == ("approved", True, "after restart", "u1")


async def test_a_memory_hub_that_lost_the_approval_says_so(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        record = await client.create_approval("u1", "t1", 1, STEP_RESULT)
        await asyncio.to_thread(hub.restart)
        with pytest.raises(herald.NotFoundError):
            with anyio.fail_after(LIMIT):
                await client.wait_approval(record)


async def test_control_requests_refused_by_the_hub_are_typed_auth_errors(tmp_path: Path) -> None:
    guarded = make_hub(tmp_path, "memory", "--jwt-secret", JWT_SECRET)
    guarded.start()
    try:
        async with herald.AsyncHerald(guarded.url) as client:
            with pytest.raises(herald.UnauthorizedError) as refused:
                await client.send_control("pause", task_id="t1")
            with pytest.raises(herald.UnauthorizedError):
                await client.cancel_approval("t1")
        with herald.Herald(guarded.url) as blocking:
            with pytest.raises(herald.UnauthorizedError) as blocking_refused:
                await asyncio.to_thread(blocking.cancel_approval, "t1")
    finally:
        guarded.stop()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert blocking_refused.value.status == 401


async def test_a_malformed_control_request_is_skipped_and_the_next_one_arrives(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="herald")
    async with herald.AsyncHerald(hub.url) as client, client.control(task_id="t1") as requests:
        # Any producer may publish on the task's topic; the hub does not check `data`.
        await client.publish("task:t1", "control.cancel", "stop")
        await client.publish("task:t1", "control.pause", {"reason": ["not", "a", "string"]})
        await client.publish("task:t1", "control.cancel", {"task_id": "t1", "reason": "well formed"})
        with anyio.fail_after(LIMIT):
            request = await requests.__anext__()
    assert (request.action, request.reason, request.event.seq) == ("cancel", "well formed", 3)
    skipped = [r for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    assert len(skipped) == 2, [r.getMessage() for r in caplog.records]


async def test_a_control_stream_yields_only_its_own_topics_requests_not_broadcasts_or_user_messages(hub: Hub) -> None:
    # A connection acting as user "op" gets `global` and `user:op` whatever it subscribed to.
    async with herald.AsyncHerald(hub.url, user_id="op") as client, client.control(task_id="t1") as requests:
        await client.broadcast("control.cancel", {"task_id": "some-other-task", "reason": "cancel another task"})
        await client.send_to_user("op", "control.pause", {"task_id": "x", "reason": "for another task"})
        await client.send_control("resume", task_id="t1", reason="mine")
        with anyio.fail_after(LIMIT):
            request = await requests.__anext__()
    assert (request.action, request.reason, request.event.topic) == ("resume", "mine", "task:t1")


async def test_a_control_stream_says_its_stream_was_replaced_and_goes_on_with_the_new_one(hub: Hub) -> None:
    config = herald.SessionConfig(initial_reconnect_delay_ms=100, max_reconnect_delay_ms=500)
    async with herald.AsyncHerald(hub.url) as client, client.control(run_id="r1", config=config) as requests:
        await client.send_control("pause", run_id="r1")
        with anyio.fail_after(LIMIT):
            paused = await requests.__anext__()
        await asyncio.to_thread(hub.restart)
        # The new stream of run:r1 has nothing yet: the hub says `gap`
        # epoch_changed 1..0 (a request may have been lost with the old one).
        replaced = await raised_gap(requests)
        assert (replaced.gap.reason, replaced.gap.to_seq) == ("epoch_changed", 0)
        await client.send_control("resume", run_id="r1")
        with anyio.fail_after(LIMIT):
            resumed = await requests.__anext__()
    assert (paused.action, resumed.action) == ("pause", "resume")
    assert resumed.event.seq == 1


async def test_a_lost_answer_to_create_approval_says_the_outcome_is_unknown(hub: Hub) -> None:
    async with answer_dropping_proxy(hub.url) as (proxy, dropped):
        async with herald.AsyncHerald(proxy) as client:
            with pytest.raises(herald.TransportError) as lost:
                await client.request_approval("u1", "t1", 1, STEP_RESULT)
    assert dropped == [1]
    assert lost.value.outcome_unknown and "unknown" in str(lost.value)
    # The hub created it (the user was asked) and only once.
    status = httpx.get(f"{hub.url}/api/v1/status", timeout=LIMIT).json()
    assert status["pending_approvals"] == 1


@pytest.mark.parametrize("outage", ["stopped", "killed"])
async def test_request_approval_gives_up_by_expiry_plus_grace_when_the_hub_is_away(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, outage: str
) -> None:
    """Every poll, its own retries and their timeouts included, ends by the
    approval's deadline: a hub that accepts connections but never answers
    (stopped) or refuses them (killed) is given up on in time."""
    grace = 1.0
    monkeypatch.setattr(_http, "EXPIRY_GRACE", grace)
    # Retries slow enough that one poll's own retries would outlast the deadline.
    retry = herald.RetryPolicy(max_attempts=8, initial_delay=1.0, max_delay=4.0)
    async with herald.AsyncHerald(hub.url, retry=retry) as client:
        record = await client.create_approval("u1", "t1", 1, STEP_RESULT, timeout=1.0)
        if outage == "stopped":
            hub.pause()
        else:
            hub.stop(signal.SIGKILL)
        try:
            deadline = record.expires_at / 1000 + grace
            # The last attempt may run DEADLINE_SLACK (1 s) past the deadline; 2 s more for scheduling.
            with pytest.raises(herald.TransportError):
                with anyio.fail_after(max(deadline - time.time(), 0.0) + 3.0):
                    await client.wait_approval(record)
        finally:
            if outage == "stopped":
                hub.resume()


async def test_answer_approval_decides_it_for_the_waiting_producer(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        record = await client.create_approval("u1", "t1", 1, STEP_RESULT)
        waiting = asyncio.create_task(client.wait_approval(record))
        await client.answer_approval(record.callback_id, False, feedback="not on a Friday")
        with anyio.fail_after(LIMIT):
            decision = await waiting
        assert (decision.status, decision.proceed, decision.feedback) == ("rejected", False, "not on a Friday")
        with pytest.raises(herald.ConflictError):
            await client.answer_approval(record.callback_id, True)
        with pytest.raises(herald.NotFoundError):
            await client.answer_approval("no-such-approval", True)
    with herald.Herald(hub.url) as blocking:
        second = blocking.create_approval("u1", "t1", 2, STEP_RESULT)
        await asyncio.to_thread(blocking.answer_approval, second.callback_id, True)
        assert blocking.get_approval(second.callback_id).status == "approved"


async def test_a_client_given_a_user_on_an_open_hub_answers_as_that_user_and_may_resend(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url, user_id="u7") as client:
        record = await client.create_approval("u7", "t7", 1, STEP_RESULT)
        await client.answer_approval(record.callback_id, True)
        # A resend after a lost link comes on a new connection: acknowledged,
        # because the user, not the connection, decided.
        await client.answer_approval(record.callback_id, True)
        decided = await client.get_approval(record.callback_id)
        assert (decided.status, decided.decided_by) == ("approved", "u7")
        with pytest.raises(herald.ConflictError):
            await client.answer_approval(record.callback_id, False)
        async with client.subscribe(["run:quiet"]) as events:
            await client.send_to_user("u7", "note.posted", {"n": 1})
            with anyio.fail_after(LIMIT):
                async for item in events:
                    if getattr(item, "topic", None) == "user:u7":
                        break
    with herald.Herald(hub.url, user_id="u8") as blocking:
        second = blocking.create_approval("u8", "t8", 1, STEP_RESULT)
        await asyncio.to_thread(blocking.answer_approval, second.callback_id, False)
        assert blocking.get_approval(second.callback_id).decided_by == "u8"


async def test_list_approvals_filters_by_task_and_status(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        first = await client.create_approval("u1", "t1", 1, STEP_RESULT)
        second = await client.create_approval("u1", "t1", 2, STEP_RESULT)
        other = await client.create_approval("u1", "t2", 1, STEP_RESULT)
        await client.answer_approval(first.callback_id, True)
        pending = await client.list_approvals(task_id="t1", status="pending")
        everything = await client.list_approvals()
    assert [record.callback_id for record in pending] == [second.callback_id]
    assert isinstance(pending[0], herald.ApprovalRecord) and pending[0].step == 2
    assert {record.callback_id for record in everything} == {first.callback_id, second.callback_id, other.callback_id}
    with herald.Herald(hub.url) as blocking:
        approved = blocking.list_approvals(status="approved")
    assert [record.callback_id for record in approved] == [first.callback_id]


async def test_history_reads_a_topics_retained_events_after_a_seq(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        for step in range(1, 5):
            await client.publish("run:r1", "step.completed", {"step": step})
        everything = await client.history("run:r1")
        later = await client.history("run:r1", since=2, limit=1)
        nothing = await client.history("run:r9")
        with pytest.raises(ValueError):
            await client.history("run:*")
    assert [event.seq for event in everything.events] == [1, 2, 3, 4] and everything.seq == 4
    assert [event.data for event in later.events] == [{"step": 3}] and later.epoch == everything.epoch
    assert (nothing.events, nothing.seq) == ([], 0)
    with herald.Herald(hub.url) as blocking:
        assert [event.seq for event in blocking.history("run:r1", since=3).events] == [4]


async def test_history_reads_a_topics_retained_events_after_a_time(hub: Hub) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        for step, timestamp in enumerate([1_000, 2_000, 3_000], start=1):
            await client.publish("run:r1", "step.completed", {"step": step}, timestamp=timestamp)
        after = await client.history("run:r1", time_ms=2_000)
        with pytest.raises(ValueError, match="not both"):
            await client.history("run:r1", since=1, time_ms=2_000)
    assert [event.data for event in after.events] == [{"step": 3}] and after.seq == 3
    with herald.Herald(hub.url) as blocking:
        assert [event.seq for event in blocking.history("run:r1", time_ms=1_000).events] == [2, 3]


@pytest.mark.parametrize("ids", [{"task_id": "t1", "run_id": "r1"}, {}])
async def test_a_control_request_must_name_exactly_one_of_task_and_run_before_connecting(
    tmp_path: Path, ids: dict[str, str]
) -> None:
    gone = make_hub(tmp_path)
    gone.start()
    url = gone.url
    gone.stop()  # nothing listens: a connection attempt would be a TransportError
    async with herald.AsyncHerald(url) as client:
        with pytest.raises(ValueError, match="exactly one of task_id and run_id"):
            await client.send_control("pause", **ids)
    with herald.Herald(url) as blocking:
        with pytest.raises(ValueError, match="exactly one of task_id and run_id"):
            blocking.send_control("resume", **ids)


@pytest.mark.parametrize("timeout", [-1.0, 0.0, 0.0001, 7 * 24 * 3600 + 1.0, float("nan"), float("inf")])
async def test_an_approval_timeout_the_hub_would_refuse_is_refused_in_seconds_before_sending(
    hub: Hub, timeout: float
) -> None:
    async with herald.AsyncHerald(hub.url) as client:
        with pytest.raises(ValueError, match="timeout is in seconds") as refused:
            await client.create_approval("u1", "t1", 1, STEP_RESULT, timeout=timeout)
        assert "timeout_ms" not in str(refused.value)
        with pytest.raises(ValueError, match="timeout is in seconds"):
            await client.request_approval("u1", "t1", 1, STEP_RESULT, timeout=timeout)
    with herald.Herald(hub.url) as blocking:
        with pytest.raises(ValueError, match="timeout is in seconds"):
            blocking.create_approval("u1", "t1", 1, STEP_RESULT, timeout=timeout)
    status = httpx.get(f"{hub.url}/api/v1/status", timeout=LIMIT).json()
    assert status["pending_approvals"] == 0
