"""The publishers: :class:`AsyncHerald` (asyncio) and :class:`Herald`
(blocking), with the same methods.

::

    hub = herald.AsyncHerald()   # HERALD_URL / HERALD_API_KEY, else http://127.0.0.1:8765
    receipt = await hub.publish("execution:exec_123", "execution.progress", {"progress": 75})
    decision = await hub.request_approval("u1", "t1", 3, step_result, timeout=60)
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx
import websockets
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

from . import _http
from ._http import Call, Data, Endpoint, Token, TopicHistory
from ._retry import RetryPolicy
from ._session import SessionConfig
from ._timeout import within
from .control import ControlStream
from .errors import HeraldError, InvalidRequestError, TransportError, hub_error, refused_before_sending
from .models import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalStatus,
    ClientFrameCancel,
    ClientFrameConfirm,
    ClientFramePause,
    ClientFrameResume,
    EventFilter,
    EventType,
    Priority,
    PublishReceipt,
    PublishRequest,
    TaskStepResult,
    Topic,
    WireModel,
)
from .subscription import Gaps, Subscription, SubscriptionItem, SubscriptionItemNoGap

ControlAction = Literal["cancel", "pause", "resume"]

T = TypeVar("T")

_CONTROL_FRAMES: dict[str, type[ClientFrameCancel | ClientFramePause | ClientFrameResume]] = {
    "cancel": ClientFrameCancel,
    "pause": ClientFramePause,
    "resume": ClientFrameResume,
}


class _Options:
    """What both clients are configured with; every argument states its default."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        token: Token | None,
        timeout: float,
        retry: RetryPolicy | None,
        user_id: str | None,
    ) -> None:
        self.endpoint = Endpoint.resolve(url, api_key, token, user_id)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._node = 0
        """The node HTTP calls go to: the next one after a node could not
        be reached (see :class:`herald._http.Attempts`)."""

    @property
    def url(self) -> str:
        """The hub's base URL."""
        return self.endpoint.url


class AsyncHerald(_Options):
    """An asyncio client of one hub: publish, broadcast, message users, ask
    for approvals and wait for them, send control requests, subscribe.

    Args:
        url: the hub, e.g. ``http://127.0.0.1:8765``. Default: ``HERALD_URL``,
            else ``http://127.0.0.1:8765``.
        api_key: sent as ``Authorization: Bearer KEY`` (``--api-keys``).
            Default: ``HERALD_API_KEY``, else none.
        token: a JWT for WebSockets (``--jwt-secret``), or a callable
            returning one (a str, or an awaitable of a str), called before
            every WebSocket connection and reconnection so that it can give
            a fresh token. Default: ``HERALD_TOKEN``, else none.
        timeout: seconds per HTTP attempt (a long-poll adds its wait). Default: 30.
        retry: how failed calls are retried. Default: ``RetryPolicy()``.
        user_id: on a hub without tokens, the user its WebSocket connections
            act as (``?user_id=``): subscriptions also get that user's
            messages and approvals, and :meth:`answer_approval` is decided by
            that user, so a resent answer is acknowledged. A hub with
            ``--jwt-secret`` ignores it: the token names the user. Default: none.

    Use it as ``async with AsyncHerald() as hub:`` or call :meth:`aclose`,
    which also closes the subscriptions and control streams made from it
    that are still open.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        token: Token | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(url, api_key, token, timeout, retry, user_id)
        self._http = httpx.AsyncClient(base_url=self.endpoint.url, headers=self.endpoint.headers())
        self._streams: weakref.WeakSet[Subscription[Any] | ControlStream] = weakref.WeakSet()
        """The subscriptions and control streams made from this client, for
        :meth:`aclose` to close; weak, so one the application dropped is
        not kept alive by it."""

    async def __aenter__(self) -> AsyncHerald:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the subscriptions and control streams made from this client
        that are still open (their iterations end: ``StopAsyncIteration``),
        then the connection pool. Each socket's close is bounded (1 s), and
        they are closed together."""
        streams = list(self._streams)
        self._streams.clear()
        try:
            outcomes = await asyncio.gather(*(stream.aclose() for stream in streams), return_exceptions=True)
        finally:
            await self._http.aclose()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _send(self, call: Call, shape: TypeAdapter[T], deadline: float | None = None) -> T:
        attempts = _http.Attempts(call, self.retry, len(self.endpoint.urls), self._node, deadline)
        while True:
            timeout = attempts.start()
            try:
                response = await self._http.request(
                    call.method,
                    self.endpoint.http_url(call.path, attempts.node),
                    content=call.body,
                    params=call.params,
                    timeout=timeout,
                    headers={"Content-Type": "application/json"} if call.body is not None else None,
                )
            except httpx.TransportError as error:
                delay = attempts.transport_failed(error)
                self._node = attempts.node
            else:
                answered = attempts.answered(response)
                if answered is None:
                    return _http.answer(response, call, shape, attempts.attempt, attempts.reached)
                delay = answered
            await asyncio.sleep(delay)

    # ---- publishing ----

    async def publish(
        self,
        topic: Topic,
        event_type: EventType,
        data: Data = None,
        *,
        key: str | None = None,
        priority: Priority | None = None,
        id: str | None = None,
        source: str | None = None,
        timestamp: int | None = None,
    ) -> PublishReceipt:
        """Publishes one event and returns its receipt (``id``, ``topic``, ``seq``).

        The event gets a UUID ``id`` unless given one; retries (connection
        errors, timeouts, 5xx, 429) resend that id, so the hub stores and
        delivers it once. ``key`` makes it the topic's latest state for that
        entity (snapshots). A bad argument is refused before sending
        (:class:`~herald.InvalidTopicError`, :class:`~herald.InvalidRequestError`,
        :class:`~herald.InvalidDataError`: NaN, an infinity or an integer
        outside 64 bits in ``data``; each also a ``ValueError``). The hub's
        refusals carry the event's id in ``event_ids``.
        """
        request = _http.publish_request(
            topic, event_type, data, key=key, priority=priority, id=id, source=source, timestamp=timestamp
        )
        receipt = await self._send(_http.publish_call(request, self.timeout), _http.RECEIPT)
        return _http.receipts_of([request], [receipt])[0]

    async def publish_batch(self, events: Iterable[PublishRequest | Mapping[str, Any]]) -> list[PublishReceipt]:
        """Publishes events in one request (one durable wait on a SQLite hub).

        The batch is validated whole, by the client and then by the hub: one
        bad event and nothing is published (:class:`~herald.InvalidRequestError`
        whose ``index`` is the first bad event's). Receipts come in the same
        order. Every event has its id set before the first attempt, so a
        retried batch is not published twice.

        An event reusing an id already stored on its topic with other content
        is refused with :class:`~herald.ConflictError` at its ``index``, after
        the hub stored the events before it: the error's ``event_ids`` (every
        event's id, generated ones included) let the caller send the rest
        again without storing any twice (see :class:`~herald.ConflictError`).
        """
        requests = _http.batch_requests(events)
        if not requests:
            return []
        receipts = await self._send(_http.batch_call(requests, self.timeout), _http.RECEIPTS)
        return _http.receipts_of(requests, receipts)

    async def broadcast(
        self, event_type: EventType, data: Data = None, *, priority: Priority | None = None
    ) -> PublishReceipt:
        """Publishes on ``global``, delivered to every connection, subscribed or not.

        Retried after a 429 or when the hub could not be reached; an answer
        lost after sending raises :class:`~herald.TransportError` with
        ``outcome_unknown`` (it may have been published)."""
        call = _http.broadcast_call(event_type, data, priority, self.timeout)
        return await self._send(call, _http.RECEIPT)

    async def send_to_user(
        self, user_id: str, event_type: EventType, data: Data = None, *, priority: Priority | None = None
    ) -> PublishReceipt:
        """Publishes on ``user:{user_id}``, delivered to every connection of
        that user. Retried as :meth:`broadcast` is."""
        call = _http.user_message_call(user_id, event_type, data, priority, self.timeout)
        return await self._send(call, _http.RECEIPT)

    # ---- approvals ----

    async def create_approval(
        self,
        user_id: str,
        task_id: str,
        step: int,
        step_result: TaskStepResult | Mapping[str, Any],
        *,
        timeout: float | None = None,
        default_proceed: bool | None = None,
    ) -> ApprovalRecord:
        """Asks ``user_id`` to decide on a task's step and returns at once:
        the hub publishes ``approval.requested`` on ``user:{user_id}`` and
        ``task:{task_id}``. ``timeout`` (seconds; the hub's
        ``--approval-timeout`` when None) and ``default_proceed`` (what a
        timeout resolves to; the hub's default, *proceed*, when None).

        Retried only when the hub could not be reached (or answered 429): an
        answer lost after sending raises :class:`~herald.TransportError` with
        ``outcome_unknown``; the approval may exist (list the pending ones
        before asking again)."""
        approval = _http.new_approval(user_id, task_id, step, step_result, timeout, default_proceed)
        return await self._send(_http.create_approval_call(approval, self.timeout), _http.RECORD)

    async def get_approval(self, callback_id: str, *, wait: float = 0.0) -> ApprovalDecision:
        """An approval's decision; with ``wait`` (seconds) long-polls while it
        is pending (it may still be pending when ``wait`` runs out).
        Raises :class:`~herald.NotFoundError` for an unknown approval."""
        return await self._send(_http.approval_call(callback_id, wait, self.timeout), _http.DECISION)

    async def list_approvals(
        self, *, task_id: str | None = None, status: ApprovalStatus | None = None
    ) -> list[ApprovalRecord]:
        """The approvals the hub keeps, newest first (``GET /api/v1/approvals``):
        every pending one and the most recent decided ones, of task
        ``task_id`` and with ``status`` when given. What to look at after
        :meth:`create_approval` raised ``outcome_unknown``. Needs the
        ``admin`` scope on a hub with ``--api-keys``."""
        return (await self._send(_http.approvals_call(task_id, status, self.timeout), _http.APPROVALS)).approvals

    async def history(
        self, topic: Topic, *, since: int = 0, limit: int | None = None, time_ms: int | None = None
    ) -> TopicHistory:
        """The retained events of ``topic`` with a seq above ``since`` (0:
        all), or instead those whose ``timestamp`` is after ``time_ms`` (ms
        since the Unix epoch), at most ``limit`` (the hub's
        ``--history-size`` when None), in seq order, with the topic's
        ``epoch`` and latest ``seq`` (``GET /api/v1/topics/{topic}/events``).
        One exact topic, no pattern. Needs the ``admin`` scope on a hub with
        ``--api-keys``."""
        return await self._send(_http.history_call(topic, since, limit, self.timeout, time_ms=time_ms), _http.HISTORY)

    async def request_approval(
        self,
        user_id: str,
        task_id: str,
        step: int,
        step_result: TaskStepResult | Mapping[str, Any],
        *,
        timeout: float | None = None,
        default_proceed: bool | None = None,
    ) -> ApprovalDecision:
        """Asks for an approval and waits for the decision: the seeds'
        ``notify_user``, without a callback.

        Returns the typed decision: ``status`` (``approved``, ``rejected``,
        ``timed_out``, ``cancelled``), ``proceed``, ``feedback``,
        ``decided_by`` (None when the hub decided). Long-polls across
        reconnects and hub restarts (a SQLite hub keeps pending approvals),
        and across nodes when several are given; gives up
        :data:`~herald._http.EXPIRY_GRACE` seconds after the approval expired
        at the latest (``TransportError`` when the hub stayed unreachable,
        ``ProtocolError`` if it still says pending). A hub that lost
        the approval (memory store restarted) raises
        :class:`~herald.NotFoundError`. Cancelling the awaiting task stops
        waiting (the approval stays pending at the hub).
        """
        record = await self.create_approval(
            user_id, task_id, step, step_result, timeout=timeout, default_proceed=default_proceed
        )
        return await self.wait_approval(record)

    async def wait_approval(self, record: ApprovalRecord) -> ApprovalDecision:
        """Waits for the decision of an approval made with :meth:`create_approval`
        (see :meth:`request_approval`): every poll, its retries included,
        ends by the approval's deadline."""
        deadline = _http.approval_deadline(record)
        failures = 0
        while True:
            call = _http.approval_call(record.callback_id, _http.poll_wait(deadline), self.timeout)
            try:
                decision = await self._send(call, _http.DECISION, deadline)
            except HeraldError as error:
                failures += 1
                await asyncio.sleep(_http.poll_failed(error, failures, self.retry, deadline))
                continue
            failures = 0
            if _http.is_final(decision, deadline):
                return decision

    async def cancel_approval(self, task_id: str, *, reason: str | None = None) -> None:
        """Cancels task ``task_id``: its pending approvals resolve as
        ``cancelled`` (a producer waiting in :meth:`request_approval` gets that
        decision) and ``control.cancel`` is published on ``task:{task_id}``.

        The hub has no per-approval cancel: this is the contract's ``cancel``
        frame, sent over a WebSocket as a user's browser would.
        """
        await self.send_control("cancel", task_id=task_id, reason=reason)

    async def send_control(
        self,
        action: ControlAction,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Sends a ``cancel``/``pause``/``resume`` request for a task or a run
        (published as ``control.*`` on ``task:{id}`` or ``run:{id}``) and waits
        for the hub's ``ack``. A refused upgrade raises
        :class:`~herald.UnauthorizedError` / :class:`~herald.ForbiddenError`;
        a node that cannot be reached is skipped for the next one, if any
        (the frame is only sent once a connection is open). Naming both
        ``task_id`` and ``run_id``, or neither, is refused before
        connecting, with :class:`~herald.InvalidRequestError` (a ``ValueError``)
        like any other bad argument."""
        await self._send_frame(_control_frame(action, task_id, run_id, reason), action)

    async def answer_approval(self, callback_id: str, proceed: bool, *, feedback: str | None = None) -> None:
        """Answers an approval as a user would (the contract's ``confirm``
        frame, over a WebSocket), e.g. from a chat or e-mail bot: the waiting
        producer gets ``approved`` (``proceed``) or ``rejected``, with
        ``feedback``. ``decided_by`` is the token's user; on a hub without
        tokens, the client's ``user_id``, else ``session:{id}``. Raises :class:`~herald.NotFoundError` for
        an unknown approval, :class:`~herald.ConflictError` for one already
        decided, and :class:`~herald.ForbiddenError` when the token's user
        may not answer it."""
        await self._send_frame(_confirm_frame(callback_id, proceed, feedback), "confirm")

    async def _send_frame(self, frame: WireModel, action: str) -> None:
        """Opens a WebSocket, sends ``frame`` (request id 1) and waits for
        the hub's ``ack``; its ``error`` is raised typed."""
        nodes = len(self.endpoint.urls)
        for tried in range(1, nodes + 1):
            ws_url = self.endpoint.ws_url(node=self._node)
            headers = _http.ws_headers(await self.endpoint.ws_token())
            try:
                socket = await websockets.connect(ws_url, additional_headers=headers, open_timeout=self.timeout)
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError) as error:
                refusal = _http.ws_refusal(error)
                if refusal is not None:
                    raise refusal from error
                if tried < nodes:  # nothing was sent: the next node may take it
                    self._node = (self._node + 1) % nodes
                    continue
                raise TransportError(f"could not send {action} to {ws_url}: {error!r}", attempts=tried) from error
            try:
                async with within(self.timeout):
                    answered = await _exchange(socket, frame.to_json())
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError) as error:
                raise TransportError(
                    f"the outcome of {action} sent to {ws_url} is unknown: {error!r}", attempts=tried, outcome_unknown=True
                ) from error
            finally:
                await _close_quietly(socket)
            if not answered:
                raise TransportError(
                    f"the hub closed {ws_url} before answering {action}", attempts=tried, outcome_unknown=True
                )
            return

    # ---- subscribing ----

    @overload
    def subscribe(
        self,
        topics: Iterable[str],
        *,
        since: int | Mapping[str, Any] | None = ...,
        filter: EventFilter | Mapping[str, Any] | None = ...,
        snapshot: bool = ...,
        gaps: Literal["yield"] = ...,
        config: SessionConfig | None = ...,
        open_timeout: float = ...,
    ) -> Subscription[SubscriptionItem]: ...

    @overload
    def subscribe(
        self,
        topics: Iterable[str],
        *,
        since: int | Mapping[str, Any] | None = ...,
        filter: EventFilter | Mapping[str, Any] | None = ...,
        snapshot: bool = ...,
        gaps: Literal["raise"],
        config: SessionConfig | None = ...,
        open_timeout: float = ...,
    ) -> Subscription[SubscriptionItemNoGap]: ...

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        since: int | Mapping[str, Any] | None = None,
        filter: EventFilter | Mapping[str, Any] | None = None,
        snapshot: bool = False,
        gaps: Gaps = "yield",
        config: SessionConfig | None = None,
        open_timeout: float = 10.0,
    ) -> Subscription[Any]:
        """A reconnecting subscription to ``topics`` (topics or patterns such
        as ``execution:*``): ``async with hub.subscribe([...]) as events:``
        then ``async for event in events``. See :class:`~herald.Subscription`.

        ``since``: checkpoints to resume from (what :attr:`Subscription.checkpoints`
        gave), or one seq for every exact topic (``0``: everything retained);
        an int with no exact topic raises :class:`~herald.InvalidRequestError`
        (a pattern resumes only the topics its checkpoints name). A topic or
        pattern that breaks the grammar raises :class:`~herald.InvalidTopicError`
        (each also a ``ValueError``).
        Every subscription also yields ``global`` events (broadcasts,
        ``system.shutdown``), whatever its topics and ``filter``.
        ``filter``: ``{"types": ["execution.*"], "min_priority": "high"}``.
        ``gaps``: ``"yield"`` (default) yields :class:`~herald.models.Gap`
        items; ``"raise"`` raises :class:`~herald.GapError` instead, except
        for an empty gap (``to_seq < from_seq``: the stream restarted and
        nothing was missed), which is not raised.
        Closing this client (:meth:`aclose`) closes the subscription too, if
        it is still open.
        """
        subscription: Subscription[Any] = Subscription(
            self.endpoint,
            list(topics),
            since=since,
            filter=filter,
            snapshot=snapshot,
            gaps=gaps,
            config=config,
            open_timeout=open_timeout,
        )
        self._streams.add(subscription)
        return subscription

    def control(
        self,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        since: int | None = None,
        config: SessionConfig | None = None,
        open_timeout: float = 10.0,
    ) -> ControlStream:
        """The ``control.cancel/pause/resume`` requests for a task (or a run),
        for the producer to act on: ``async with hub.control(task_id="t1") as
        requests:`` then ``async for request in requests``. Only those
        published on the task's own topic (``task:{task_id}`` or
        ``run:{run_id}``) are yielded: broadcasts on ``global`` and user
        messages reach every connection, but are not requests for this task,
        whatever their ``data`` names. Live from the moment the ``async
        with`` returns; ``since=0`` also yields the ones still retained. A
        gap in the stream raises :class:`~herald.GapError` (a request may
        have been missed); an empty one (the stream restarted, nothing was
        missed) does not. Closing this client (:meth:`aclose`) closes the
        stream too, if it is still open."""
        stream = ControlStream(
            self.endpoint, task_id=task_id, run_id=run_id, since=since, config=config, open_timeout=open_timeout
        )
        self._streams.add(stream)
        return stream


class Herald(_Options):
    """The blocking client: :class:`AsyncHerald`'s publishing, approval and
    control methods, for code without an event loop (subscribing needs
    :class:`AsyncHerald`). Same arguments and defaults, except that a
    ``token`` callable must return a str (there is no loop to await it on).

    Use it as ``with Herald() as hub:`` or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | Callable[[], str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(url, api_key, token, timeout, retry, user_id)
        self._http = httpx.Client(base_url=self.endpoint.url, headers=self.endpoint.headers())

    def __enter__(self) -> Herald:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def _send(self, call: Call, shape: TypeAdapter[T], deadline: float | None = None) -> T:
        attempts = _http.Attempts(call, self.retry, len(self.endpoint.urls), self._node, deadline)
        while True:
            timeout = attempts.start()
            try:
                response = self._http.request(
                    call.method,
                    self.endpoint.http_url(call.path, attempts.node),
                    content=call.body,
                    params=call.params,
                    timeout=timeout,
                    headers={"Content-Type": "application/json"} if call.body is not None else None,
                )
            except httpx.TransportError as error:
                delay = attempts.transport_failed(error)
                self._node = attempts.node
            else:
                answered = attempts.answered(response)
                if answered is None:
                    return _http.answer(response, call, shape, attempts.attempt, attempts.reached)
                delay = answered
            time.sleep(delay)

    def publish(
        self,
        topic: Topic,
        event_type: EventType,
        data: Data = None,
        *,
        key: str | None = None,
        priority: Priority | None = None,
        id: str | None = None,
        source: str | None = None,
        timestamp: int | None = None,
    ) -> PublishReceipt:
        """See :meth:`AsyncHerald.publish`."""
        request = _http.publish_request(
            topic, event_type, data, key=key, priority=priority, id=id, source=source, timestamp=timestamp
        )
        receipt = self._send(_http.publish_call(request, self.timeout), _http.RECEIPT)
        return _http.receipts_of([request], [receipt])[0]

    def publish_batch(self, events: Iterable[PublishRequest | Mapping[str, Any]]) -> list[PublishReceipt]:
        """See :meth:`AsyncHerald.publish_batch`."""
        requests = _http.batch_requests(events)
        if not requests:
            return []
        receipts = self._send(_http.batch_call(requests, self.timeout), _http.RECEIPTS)
        return _http.receipts_of(requests, receipts)

    def broadcast(self, event_type: EventType, data: Data = None, *, priority: Priority | None = None) -> PublishReceipt:
        """See :meth:`AsyncHerald.broadcast`."""
        return self._send(_http.broadcast_call(event_type, data, priority, self.timeout), _http.RECEIPT)

    def send_to_user(
        self, user_id: str, event_type: EventType, data: Data = None, *, priority: Priority | None = None
    ) -> PublishReceipt:
        """See :meth:`AsyncHerald.send_to_user`."""
        call = _http.user_message_call(user_id, event_type, data, priority, self.timeout)
        return self._send(call, _http.RECEIPT)

    def create_approval(
        self,
        user_id: str,
        task_id: str,
        step: int,
        step_result: TaskStepResult | Mapping[str, Any],
        *,
        timeout: float | None = None,
        default_proceed: bool | None = None,
    ) -> ApprovalRecord:
        """See :meth:`AsyncHerald.create_approval`."""
        approval = _http.new_approval(user_id, task_id, step, step_result, timeout, default_proceed)
        return self._send(_http.create_approval_call(approval, self.timeout), _http.RECORD)

    def get_approval(self, callback_id: str, *, wait: float = 0.0) -> ApprovalDecision:
        """See :meth:`AsyncHerald.get_approval`."""
        return self._send(_http.approval_call(callback_id, wait, self.timeout), _http.DECISION)

    def request_approval(
        self,
        user_id: str,
        task_id: str,
        step: int,
        step_result: TaskStepResult | Mapping[str, Any],
        *,
        timeout: float | None = None,
        default_proceed: bool | None = None,
    ) -> ApprovalDecision:
        """See :meth:`AsyncHerald.request_approval`."""
        record = self.create_approval(
            user_id, task_id, step, step_result, timeout=timeout, default_proceed=default_proceed
        )
        return self.wait_approval(record)

    def wait_approval(self, record: ApprovalRecord) -> ApprovalDecision:
        """See :meth:`AsyncHerald.wait_approval`."""
        deadline = _http.approval_deadline(record)
        failures = 0
        while True:
            call = _http.approval_call(record.callback_id, _http.poll_wait(deadline), self.timeout)
            try:
                decision = self._send(call, _http.DECISION, deadline)
            except HeraldError as error:
                failures += 1
                time.sleep(_http.poll_failed(error, failures, self.retry, deadline))
                continue
            failures = 0
            if _http.is_final(decision, deadline):
                return decision

    def cancel_approval(self, task_id: str, *, reason: str | None = None) -> None:
        """See :meth:`AsyncHerald.cancel_approval`."""
        self.send_control("cancel", task_id=task_id, reason=reason)

    def send_control(
        self,
        action: ControlAction,
        *,
        task_id: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        """See :meth:`AsyncHerald.send_control`."""
        self._send_frame(_control_frame(action, task_id, run_id, reason), action)

    def answer_approval(self, callback_id: str, proceed: bool, *, feedback: str | None = None) -> None:
        """See :meth:`AsyncHerald.answer_approval`."""
        self._send_frame(_confirm_frame(callback_id, proceed, feedback), "confirm")

    def list_approvals(
        self, *, task_id: str | None = None, status: ApprovalStatus | None = None
    ) -> list[ApprovalRecord]:
        """See :meth:`AsyncHerald.list_approvals`."""
        return self._send(_http.approvals_call(task_id, status, self.timeout), _http.APPROVALS).approvals

    def history(
        self, topic: Topic, *, since: int = 0, limit: int | None = None, time_ms: int | None = None
    ) -> TopicHistory:
        """See :meth:`AsyncHerald.history`."""
        return self._send(_http.history_call(topic, since, limit, self.timeout, time_ms=time_ms), _http.HISTORY)

    def _send_frame(self, frame: WireModel, action: str) -> None:
        """See :meth:`AsyncHerald._send_frame`."""
        from websockets.sync.client import connect

        nodes = len(self.endpoint.urls)
        for tried in range(1, nodes + 1):
            ws_url = self.endpoint.ws_url(node=self._node)
            headers = _http.ws_headers(self.endpoint.ws_token_blocking())
            try:
                socket = connect(ws_url, additional_headers=headers, open_timeout=self.timeout)
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as error:
                refusal = _http.ws_refusal(error)
                if refusal is not None:
                    raise refusal from error
                if tried < nodes:  # nothing was sent: the next node may take it
                    self._node = (self._node + 1) % nodes
                    continue
                raise TransportError(f"could not send {action} to {ws_url}: {error!r}", attempts=tried) from error
            deadline = time.monotonic() + self.timeout
            with socket:
                try:
                    socket.send(frame.to_json())
                    while True:
                        message = socket.recv(timeout=max(deadline - time.monotonic(), 0.0))
                        _control_reply(message)
                        if _is_reply(message):
                            return
                except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as error:
                    raise TransportError(
                        f"the outcome of {action} sent to {ws_url} is unknown: {error!r}",
                        attempts=tried,
                        outcome_unknown=True,
                    ) from error


def _control_frame(
    action: ControlAction, task_id: str | None, run_id: str | None, reason: str | None
) -> ClientFrameCancel | ClientFramePause | ClientFrameResume:
    """The control frame (request id 1), refused before any socket is opened
    (:class:`~herald.InvalidRequestError`, a ``ValueError``) unless exactly
    one of ``task_id`` and ``run_id`` is given, or when a field is bad."""
    if (task_id is None) == (run_id is None):
        raise InvalidRequestError(f"{action}: name exactly one of task_id and run_id")
    if action not in _CONTROL_FRAMES:
        raise InvalidRequestError(f"{action!r} is not a control action: cancel, pause or resume")
    try:
        return _CONTROL_FRAMES[action](id=1, task_id=task_id, run_id=run_id, reason=reason)
    except ValidationError as error:
        raise refused_before_sending(error) from error


def _confirm_frame(callback_id: str, proceed: bool, feedback: str | None) -> ClientFrameConfirm:
    try:
        return ClientFrameConfirm(id=1, callback_id=callback_id, proceed=proceed, feedback=feedback)
    except ValidationError as error:
        raise refused_before_sending(error) from error


async def _exchange(socket: ClientConnection, text: str) -> bool:
    """Sends one frame and waits for its answer; False if the hub closed first."""
    await socket.send(text)
    async for message in socket:
        _control_reply(message)
        if _is_reply(message):
            return True
    return False


async def _close_quietly(socket: ClientConnection) -> None:
    """Closes ``socket`` (bounded: a hub that does not answer the close is left)."""
    try:
        async with within(1.0):
            await socket.close()
    except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
        pass


def _is_reply(message: str | bytes) -> bool:
    """Whether ``message`` answers the frame sent (``ref`` 1)."""
    if isinstance(message, bytes):
        return False
    frame = json.loads(message)
    return isinstance(frame, dict) and frame.get("type") in ("ack", "error") and frame.get("ref") == 1


def _control_reply(message: str | bytes) -> None:
    """Raises the hub's refusal of the frame sent, if that is what it is."""
    if isinstance(message, bytes) or not _is_reply(message):
        return
    frame = json.loads(message)
    if frame["type"] == "error":
        raise hub_error(str(frame.get("code")), str(frame.get("message")), ref=frame.get("ref"))
