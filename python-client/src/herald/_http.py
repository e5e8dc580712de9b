"""What the sync and async clients share: where the hub is, how each API
call is built, and how an answer becomes a value or a typed error. The two
clients only differ in how they send (``httpx.Client`` or
``httpx.AsyncClient``) and sleep."""

from __future__ import annotations

import inspect
import json
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from ._retry import RetryPolicy
from .errors import (
    HeraldError,
    HubError,
    InvalidDataError,
    InvalidRequestError,
    ProtocolError,
    TransportError,
    hub_error,
    refused_before_sending,
)
from .models import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalStatus,
    Epoch,
    Event,
    EventType,
    NewApproval,
    Priority,
    PublishReceipt,
    PublishRequest,
    TaskStepResult,
    Topic,
    WireModel,
)

Data = Union[Mapping[str, Any], Sequence[Any], str, int, float, bool, None, WireModel]
"""An event's ``data``: any JSON value, or a typed payload model (e.g.
``herald.Progress(progress=75)``), written in its wire form."""

TokenProvider = Callable[[], Union[str, Awaitable[str]]]
"""Gives the JWT for the next WebSocket connection: called (and awaited when
it returns an awaitable) before every connection and reconnection, so it can
hand out a fresh token when the last one expired."""

Token = Union[str, TokenProvider]
"""A JWT for WebSockets: fixed, or a :data:`TokenProvider`."""

DEFAULT_URL = "http://127.0.0.1:8765"
"""The hub ``herald serve`` runs by default."""

LONG_POLL = 30.0
"""Seconds one approval long-poll asks the hub to wait."""

EXPIRY_GRACE = 60.0
"""Seconds after an approval's ``expires_at`` that ``request_approval`` keeps
polling an unreachable hub before giving up (the hub decides by itself at
expiry; this only covers the hub being away when it does)."""

DEADLINE_SLACK = 1.0
"""Seconds an attempt may run past its call's deadline: a long-poll asked to
wait until the deadline still has time to be answered."""

T = TypeVar("T")


class TopicHistory(BaseModel):
    """A topic's retained events (``GET /api/v1/topics/{topic}/events``), as
    ``herald_protocol::api::TopicHistory``. (The HTTP API's answer types are
    not in the protocol's JSON Schema, so not in :mod:`herald.models`.)"""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: Topic
    epoch: Epoch
    """The topic's stream: a seq means something only with its epoch."""
    seq: int
    """The topic's latest seq (0 if none), whatever ``limit`` returned."""
    events: list[Event]
    """The retained events after ``since``, in seq order."""


class ApprovalList(BaseModel):
    """The answer of ``GET /api/v1/approvals``."""

    model_config = ConfigDict(extra="ignore")

    approvals: list[ApprovalRecord]


RECEIPT: TypeAdapter[PublishReceipt] = TypeAdapter(PublishReceipt)
RECEIPTS: TypeAdapter[list[PublishReceipt]] = TypeAdapter(list[PublishReceipt])
RECORD: TypeAdapter[ApprovalRecord] = TypeAdapter(ApprovalRecord)
DECISION: TypeAdapter[ApprovalDecision] = TypeAdapter(ApprovalDecision)
APPROVALS: TypeAdapter[ApprovalList] = TypeAdapter(ApprovalList)
HISTORY: TypeAdapter[TopicHistory] = TypeAdapter(TopicHistory)
_TOPIC: TypeAdapter[str] = TypeAdapter(Topic)


@dataclass(frozen=True)
class Endpoint:
    """Where the hub is and how to authenticate."""

    url: str
    """The base URL, e.g. ``http://127.0.0.1:8765`` (no trailing slash): the
    HTTP API is called here."""
    api_key: str | None
    """Sent as ``Authorization: Bearer KEY`` to the HTTP API."""
    token: Token | None
    """A JWT for WebSockets (``Authorization: Bearer`` on the upgrade), or a
    callable giving one for each connection (:data:`TokenProvider`)."""
    failover: tuple[str, ...] = ()
    """Other nodes of the same hub (sharing one Redis): an HTTP call that
    cannot reach a node (see :class:`Attempts`), and a subscription whose
    connection drops or fails, move on to the next URL, in turn."""
    user_id: str | None = None
    """The user WebSocket connections act as on a hub without tokens, sent
    as ``?user_id=``: they get that user's messages and approvals, and their
    answers are decided by it. A hub with ``--jwt-secret`` ignores it (the
    token's ``sub`` names the user)."""

    @classmethod
    def resolve(
        cls, url: str | None, api_key: str | None, token: Token | None, user_id: str | None = None
    ) -> Endpoint:
        """Arguments first, then ``HERALD_URL`` / ``HERALD_API_KEY`` /
        ``HERALD_TOKEN``, then the default URL. Several nodes are given as
        comma-separated URLs (``http://a:8765,http://b:8765``), as the
        ``herald`` CLI takes them."""
        given = url or os.environ.get("HERALD_URL") or DEFAULT_URL
        urls = [part.strip().rstrip("/") for part in given.split(",") if part.strip()]
        if not urls:
            raise InvalidRequestError(f"invalid hub url {given!r}: use http://HOST:PORT or https://HOST")
        for each in urls:
            parts = urlsplit(each)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidRequestError(f"invalid hub url {each!r}: use http://HOST:PORT or https://HOST")
        return cls(
            url=urls[0],
            api_key=api_key if api_key is not None else os.environ.get("HERALD_API_KEY") or None,
            token=token if token is not None else os.environ.get("HERALD_TOKEN") or None,
            failover=tuple(urls[1:]),
            user_id=user_id,
        )

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node's URL, the first one first."""
        return (self.url, *self.failover)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def http_url(self, path: str, node: int = 0) -> str:
        """The URL of ``path`` on node ``node`` of :attr:`urls`."""
        urls = self.urls
        return urls[node % len(urls)] + path

    def ws_url(self, path: str = "/ws", node: int = 0) -> str:
        """The WebSocket URL of ``path`` (``ws://`` or ``wss://``) on node
        ``node`` of :attr:`urls`."""
        urls = self.urls
        parts = urlsplit(urls[node % len(urls)])
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = f"user_id={quote(self.user_id, safe='')}" if self.user_id is not None else ""
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))

    async def ws_token(self) -> str | None:
        """The token for the next WebSocket connection (see :func:`current_token`)."""
        return await current_token(self.token)

    def ws_token_blocking(self) -> str | None:
        """The token for the next WebSocket connection, for the blocking
        client: a provider returning an awaitable raises ``TypeError``."""
        if self.token is None or isinstance(self.token, str):
            return self.token
        value = self.token()
        if isinstance(value, str):
            return value
        if inspect.iscoroutine(value):
            value.close()  # never awaited: close it instead of leaking a warning
        raise TypeError("the blocking Herald needs a token callable that returns a str, not an awaitable")


async def current_token(token: Token | None) -> str | None:
    """``token`` itself, or what its provider gives now (awaited when it
    returns an awaitable). Anything else than a str raises ``TypeError``."""
    if token is None or isinstance(token, str):
        return token
    value = token()
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str):
        raise TypeError(f"the token callable gave {type(value).__name__}, not a str")
    return value


def ws_headers(token: str | None) -> dict[str, str]:
    """The upgrade's headers for ``token``: never in the URL, which errors and
    logs print."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class Call:
    """One API call: retried as a whole, its body serialized once."""

    method: str
    path: str
    body: bytes | None = None
    params: Mapping[str, str] | None = None
    timeout: float = 30.0
    idempotent: bool = True
    """Retry after any retryable failure; otherwise only when the connection
    could not even be opened (the hub cannot have seen the request) or the
    hub answered 429 (it did nothing)."""
    event_ids: tuple[str, ...] = ()
    """The ids of the events a publish carries: a failure whose outcome is
    unknown names them, so that a retry by the application reuses them."""


def encode(value: Any) -> bytes:
    """Compact JSON. NaN and infinities must be refused before this
    (:func:`require_exact_json`): a model's wire form has already turned them
    into ``null``; ``allow_nan=False`` catches only what skipped the check."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


MIN_INTEGER = -(2**63)
"""The smallest integer the hub keeps as one (an ``i64``)."""

MAX_INTEGER = 2**64 - 1
"""The largest integer the hub keeps as one (a ``u64``)."""


def require_exact_json(value: Any, path: str) -> None:
    """Raises :class:`~herald.InvalidDataError` for the first value in
    ``value`` that would not reach subscribers as it is: NaN or an infinity
    (JSON has none, and pydantic's JSON form would silently send ``null``),
    or an integer outside :data:`MIN_INTEGER`..:data:`MAX_INTEGER` (the hub
    reads JSON numbers as 64-bit integers or floats, so it would store and
    deliver a float). Walks with an explicit stack, so any nesting depth is
    checked without recursion."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidDataError(f"{where} is {item!r}, which JSON cannot carry", path=where)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not MIN_INTEGER <= item <= MAX_INTEGER:
                raise InvalidDataError(
                    f"{where} is {item}, outside the 64-bit integers the hub keeps exactly "
                    f"({MIN_INTEGER}..{MAX_INTEGER}): it would become a float; send it as a string",
                    path=where,
                )
        elif isinstance(item, WireModel):
            stack.append((item.model_dump(mode="python", by_alias=True), where))
        elif isinstance(item, Mapping):
            stack.extend(reversed([(inner, f"{where}.{key}") for key, inner in item.items()]))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed([(inner, f"{where}[{index}]") for index, inner in enumerate(item)]))


def new_event_id() -> str:
    """A fresh event id (UUID v4), set before the first attempt."""
    return str(uuid.uuid4())


def as_data(data: Data) -> JsonValue:
    """``data`` as JSON (a payload model in its wire form)."""
    if isinstance(data, WireModel):
        return data.to_wire()
    value: JsonValue = data  # type: ignore[assignment]  # validated as JSON by the request model
    return value


def publish_request(
    topic: Topic,
    event_type: EventType,
    data: Data = None,
    *,
    key: str | None = None,
    priority: Priority | None = None,
    id: str | None = None,
    source: str | None = None,
    timestamp: int | None = None,
) -> PublishRequest:
    """A validated publish request with its id set (retries reuse it).
    Raises :class:`~herald.InvalidTopicError` for a bad topic,
    :class:`~herald.InvalidRequestError` for another bad field, and
    :class:`~herald.InvalidDataError` for a value in ``data`` the hub could
    not pass on as it is (see :func:`require_exact_json`)."""
    require_exact_json(data, "data")
    try:
        return PublishRequest(
            topic=topic,
            event_type=event_type,
            data=as_data(data),
            key=key,
            priority=priority or "normal",
            # Only an absent id is generated: an empty one is refused like any
            # other invalid id (a retry with a blank id must not become a new event).
            id=new_event_id() if id is None else id,
            source=source,
            timestamp=timestamp,
        )
    except ValidationError as error:
        raise refused_before_sending(error) from error


def with_id(request: PublishRequest | Mapping[str, Any]) -> PublishRequest:
    """``request`` as a model, with an id set before the first attempt.
    Raises ``pydantic.ValidationError`` or :class:`~herald.InvalidDataError`
    (:func:`batch_requests` names the event)."""
    model = request if isinstance(request, PublishRequest) else PublishRequest.model_validate(request)
    require_exact_json(model.data, "data")
    if model.id is None:
        model = model.model_copy(update={"id": new_event_id()})
    return model


def batch_requests(events: Iterable[PublishRequest | Mapping[str, Any]]) -> list[PublishRequest]:
    """The events of a batch as models with their ids set. The first one the
    client refuses raises :class:`~herald.InvalidRequestError` with its
    ``index`` (the cause is the ``ValidationError`` or ``InvalidDataError``):
    as the hub refuses a batch, whole, naming the event."""
    requests: list[PublishRequest] = []
    for index, event in enumerate(events):
        try:
            requests.append(with_id(event))
        except (ValidationError, InvalidDataError) as error:
            raise InvalidRequestError(f"refused before sending: {error}", index=index) from error
    return requests


def receipts_of(requests: Sequence[PublishRequest], receipts: list[PublishReceipt]) -> list[PublishReceipt]:
    """The hub's receipts for ``requests``, checked: one per event, in order,
    each naming its event's topic and id (a receipt for another event would
    report a publish that did not happen)."""
    if len(receipts) != len(requests):
        raise ProtocolError(f"the hub answered {len(receipts)} receipts for {len(requests)} events")
    for request, receipt in zip(requests, receipts):
        if receipt.topic != request.topic or (request.id is not None and receipt.id != request.id):
            raise ProtocolError(
                f"the hub answered a receipt for {receipt.id} on {receipt.topic} to event {request.id} on {request.topic}"
            )
    return receipts


def publish_call(request: PublishRequest, timeout: float) -> Call:
    ids = (request.id,) if request.id is not None else ()
    return Call("POST", "/api/v1/events", encode(request.to_wire()), timeout=timeout, event_ids=ids)


def batch_call(requests: Sequence[PublishRequest], timeout: float) -> Call:
    body = encode([request.to_wire() for request in requests])
    ids = tuple(request.id for request in requests if request.id is not None)
    return Call("POST", "/api/v1/events", body, timeout=timeout, event_ids=ids)


def notice_body(event_type: EventType, data: Data, priority: Priority | None) -> bytes:
    # Validated as a publish request would be (the topic is the hub's).
    require_exact_json(data, "data")
    try:
        request = PublishRequest(
            topic="global", event_type=event_type, data=as_data(data), priority=priority or "normal"
        )
    except ValidationError as error:
        raise refused_before_sending(error) from error
    body: dict[str, Any] = {"event_type": request.event_type, "data": request.data}
    if priority is not None:
        body["priority"] = priority
    return encode(body)


def broadcast_call(event_type: EventType, data: Data, priority: Priority | None, timeout: float) -> Call:
    # The body has no event id the hub could de-duplicate: retried only
    # when the request cannot have reached the hub (or was refused with 429).
    return Call("POST", "/api/v1/broadcast", notice_body(event_type, data, priority), timeout=timeout, idempotent=False)


def user_message_call(
    user_id: str, event_type: EventType, data: Data, priority: Priority | None, timeout: float
) -> Call:
    path = f"/api/v1/users/{quote(user_id, safe='')}/messages"
    return Call("POST", path, notice_body(event_type, data, priority), timeout=timeout, idempotent=False)


def new_approval(
    user_id: str,
    task_id: str,
    step: int,
    step_result: TaskStepResult | Mapping[str, Any],
    timeout: float | None,
    default_proceed: bool | None,
) -> NewApproval:
    """The approval request, validated (:class:`~herald.InvalidRequestError`
    or :class:`~herald.InvalidDataError` before anything is sent)."""
    try:
        result = step_result if isinstance(step_result, TaskStepResult) else TaskStepResult.model_validate(step_result)
        require_exact_json(result, "step_result")
        if timeout is not None:
            require_approval_timeout(timeout)
        return NewApproval(
            user_id=user_id,
            task_id=task_id,
            step=step,
            step_result=result,
            timeout_ms=None if timeout is None else round(timeout * 1000),
            default_proceed=default_proceed,
        )
    except ValidationError as error:
        raise refused_before_sending(error) from error


MAX_APPROVAL_TIMEOUT = 7 * 24 * 3600.0
"""The longest approval ``timeout`` the hub takes, in seconds (7 days)."""


def require_approval_timeout(timeout: float) -> None:
    """Refuses (:class:`~herald.InvalidRequestError`, a ``ValueError``) an
    approval timeout the hub would refuse: it takes 1 ms to 7 days, in whole
    milliseconds."""
    if not (math.isfinite(timeout) and 1 <= round(timeout * 1000) <= MAX_APPROVAL_TIMEOUT * 1000):
        raise InvalidRequestError(
            f"timeout is in seconds and must be between 0.001 and {MAX_APPROVAL_TIMEOUT:g} (7 days), got {timeout!r}"
        )


def create_approval_call(approval: NewApproval, timeout: float) -> Call:
    return Call("POST", "/api/v1/approvals", encode(approval.to_wire()), timeout=timeout, idempotent=False)


def approval_call(callback_id: str, wait: float, timeout: float) -> Call:
    params = {"wait_ms": str(round(wait * 1000))} if wait > 0 else None
    path = f"/api/v1/approvals/{quote(callback_id, safe='')}"
    return Call("GET", path, params=params, timeout=timeout + max(wait, 0.0))


def approvals_call(task_id: str | None, status: ApprovalStatus | None, timeout: float) -> Call:
    params = {name: value for name, value in (("task_id", task_id), ("status", status)) if value is not None}
    return Call("GET", "/api/v1/approvals", params=params or None, timeout=timeout)


def history_call(topic: Topic, since: int, limit: int | None, timeout: float, *, time_ms: int | None = None) -> Call:
    """``GET /api/v1/topics/{topic}/events``; ``topic`` is checked against
    the grammar first (:class:`~herald.InvalidTopicError`; a pattern is
    refused: history is per topic), the other arguments too
    (:class:`~herald.InvalidRequestError`)."""
    try:
        checked = _TOPIC.validate_python(topic)
    except ValidationError as error:
        raise refused_before_sending(error, topic=True) from error
    if since < 0:
        raise InvalidRequestError(f"since is a seq (0: everything retained), got {since}")
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"limit must be at least 1, got {limit}")
    if time_ms is not None and time_ms < 0:
        raise InvalidRequestError(f"time_ms is ms since the Unix epoch, got {time_ms}")
    if time_ms is not None and since != 0:
        raise InvalidRequestError(
            f"give since (a seq) or time_ms, not both; got since {since} and time_ms {time_ms}"
        )
    params = {"since": str(since)} if time_ms is None else {"time_ms": str(time_ms)}
    if limit is not None:
        params["limit"] = str(limit)
    path = f"/api/v1/topics/{quote(checked, safe='')}/events"
    return Call("GET", path, params=params, timeout=timeout)


def approval_deadline(record: ApprovalRecord) -> float:
    """When (``time.time()``) waiting for ``record`` ends at the latest: the
    hub decides by itself at ``expires_at``, so only a hub that stayed away
    that long gets this far."""
    return record.expires_at / 1000 + EXPIRY_GRACE


def poll_wait(deadline: float) -> float:
    """How long the next long-poll asks the hub to wait: never past ``deadline``."""
    return min(LONG_POLL, max(deadline - time.time(), 0.0))


def is_outage(error: HeraldError) -> bool:
    """A failure a hub restart explains: no connection, or a 5xx."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HubError) and error.status is not None and error.status >= 500


def poll_failed(error: HeraldError, failures: int, retry: RetryPolicy, deadline: float) -> float:
    """The delay before polling again after ``failures`` failed polls in a
    row; raises ``error`` when it is not an outage or the next poll would
    start past ``deadline``."""
    delay = retry.delay(failures)
    if not (is_outage(error) and time.time() + delay < deadline):
        raise error
    return delay


def is_final(decision: ApprovalDecision, deadline: float) -> bool:
    """Whether ``decision`` ends the wait. A hub still answering ``pending``
    past ``deadline`` contradicts its own ``expires_at``: a
    :class:`~herald.ProtocolError` (this machine's clock is the judge)."""
    if decision.status != "pending":
        return True
    if time.time() >= deadline:
        raise ProtocolError(
            f"approval {decision.callback_id} is still pending {EXPIRY_GRACE:g} s after it expired"
        )
    return False


# ---- answers ----


def retryable_status(status: int, call: Call) -> bool:
    """A 429 was refused before anything was done, so every call may be
    retried; a 5xx may come after the hub acted, so only idempotent ones."""
    return status == 429 or (status >= 500 and call.idempotent)


def unreached(error: httpx.TransportError) -> bool:
    """Whether the request cannot have reached the hub: the connection was
    never opened (or none was free in the pool)."""
    return isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def retryable_transport(error: httpx.TransportError, call: Call) -> bool:
    return call.idempotent or unreached(error)


def retry_after(response: httpx.Response, most: float) -> float:
    """The answer's ``Retry-After`` in seconds (at most ``most``); 0 without
    one, or with one that is not a number of seconds."""
    try:
        seconds = float(response.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), most) if math.isfinite(seconds) else 0.0


def transport_error(error: httpx.TransportError, call: Call, attempts: int, reached: bool) -> TransportError:
    """The error of a call that failed for good. ``reached``: an earlier
    attempt went out (or was answered with a 5xx), so the hub may have acted
    even when the last attempt could not connect. A read (``GET``) changes
    nothing at the hub: its outcome is never unknown."""
    cause = f"{type(error).__name__}: {error}"
    went_out = reached or not unreached(error)
    if call.method != "GET" and went_out:
        if call.event_ids:
            ids = ", ".join(call.event_ids)
            message = (
                f"the outcome of {call.method} {call.path} is unknown after {attempts} attempt(s): a request went "
                f"out but no answer came back ({cause}), so the hub may have stored the event(s); to retry, "
                f"publish them again with the same id (error.event_ids: {ids}) and they are stored once"
            )
        elif call.idempotent:
            message = (
                f"the outcome of {call.method} {call.path} is unknown after {attempts} attempt(s): a request went "
                f"out but no answer came back ({cause}), so the hub may have acted on it"
            )
        else:
            message = (
                f"the outcome of {call.method} {call.path} is unknown: the request went out but its answer "
                f"was lost ({cause}), so the hub may have acted on it; it is not sent again"
            )
        return TransportError(message, attempts=attempts, outcome_unknown=True, event_ids=call.event_ids)
    return TransportError(
        f"could not reach the hub ({call.method} {call.path}) after {attempts} attempt(s): {cause}",
        attempts=attempts,
        event_ids=call.event_ids,
    )


class Attempts:
    """How one call is attempted: on which node, for how long, and whether
    a failure is retried (after which delay) or raised. The sync and async
    clients only send and sleep.

    A transport failure that is retried moves on to the next node when there
    are several (the client keeps using that one): for a call that is not
    idempotent that is only a connection that never opened, so the first
    node cannot have seen it; a publish reuses its event ids, which the
    nodes share. ``deadline`` (``time.time()``) stops retries that would
    start after it and shortens attempts to end by it (plus
    :data:`DEADLINE_SLACK`)."""

    def __init__(self, call: Call, retry: RetryPolicy, nodes: int, node: int, deadline: float | None = None) -> None:
        self.call = call
        self.retry = retry
        self.nodes = max(nodes, 1)
        self.node = node % self.nodes
        self.deadline = deadline
        self.attempt = 0
        self.reached = False
        """Whether an attempt may have reached the hub (see :func:`transport_error`)."""

    def start(self) -> float:
        """Begins an attempt; returns its timeout in seconds."""
        self.attempt += 1
        if self.deadline is None:
            return self.call.timeout
        return min(self.call.timeout, max(self.deadline - time.time(), 0.0) + DEADLINE_SLACK)

    def _delay(self, at_least: float = 0.0) -> float | None:
        if self.attempt >= max(self.retry.max_attempts, 1):
            return None
        delay = max(self.retry.delay(self.attempt), at_least)
        if self.deadline is not None and time.time() + delay >= self.deadline:
            return None
        return delay

    def transport_failed(self, error: httpx.TransportError) -> float:
        """The delay before the next attempt; raises the
        :class:`~herald.TransportError` when none follows."""
        if not unreached(error):
            self.reached = True
        delay = self._delay() if retryable_transport(error, self.call) else None
        if delay is None:
            raise transport_error(error, self.call, self.attempt, self.reached) from error
        self.node = (self.node + 1) % self.nodes
        return delay

    def answered(self, response: httpx.Response) -> float | None:
        """The delay before retrying this answer; None when it is final. A
        ``Retry-After`` in seconds (a 429 over the publish rate, a 503 while
        the hub's store is away) is waited at least, up to the policy's
        largest delay: retrying sooner would only be refused again."""
        if not retryable_status(response.status_code, self.call):
            return None
        if response.status_code != 429:  # a 429 did nothing; a 5xx may come after the hub acted
            self.reached = True
        return self._delay(at_least=retry_after(response, self.retry.max_delay))


def answer(
    response: httpx.Response, call: Call, shape: TypeAdapter[T], attempts: int = 1, reached: bool = False
) -> T:
    """The decoded body of a success; the typed error of anything else. A
    publish whose outcome is unknown raises :class:`~herald.TransportError`
    with ``outcome_unknown`` and the event ids, from the hub's error: its
    last attempt was answered with a 5xx (the hub may answer so after
    storing the events), or with a 429 (which did nothing) after an earlier
    attempt that may have stored them (``reached``: a 5xx, or a request
    whose answer was lost)."""
    status = response.status_code
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        body = None
    if 200 <= status < 300:
        if body is None:
            raise ProtocolError(f"the hub answered HTTP {status} without JSON", status=status)
        try:
            return shape.validate_python(body)
        except (ValidationError, RecursionError) as error:
            raise ProtocolError(
                f"the hub's HTTP {status} answer to {call.method} {call.path} does not decode: {error}", status=status
            ) from error
    refusal: HeraldError
    if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str):
        index = body.get("index")
        # A publish's refusal names the ids sent: a batch refused with
        # `conflict` had the events before `index` stored, and only these
        # ids let the caller send the rest without storing any twice.
        refusal = hub_error(
            body["code"],
            body["message"],
            status=status,
            index=index if isinstance(index, int) else None,
            event_ids=call.event_ids,
        )
    else:
        excerpt = response.text[:512].strip()
        refusal = ProtocolError(f"the hub answered HTTP {status}: {excerpt}", status=status)
    if call.event_ids and (status >= 500 or (status == 429 and reached)):
        ids = ", ".join(call.event_ids)
        raise TransportError(
            f"the outcome of {call.method} {call.path} is unknown after {attempts} attempt(s): the hub may have "
            f"stored the event(s) before the last answer ({refusal}); to retry, publish them again with "
            f"the same id (error.event_ids: {ids}) and they are stored once",
            attempts=attempts,
            outcome_unknown=True,
            event_ids=call.event_ids,
        ) from refusal
    raise refusal


def ws_refusal(error: BaseException) -> HubError | None:
    """The typed error of a WebSocket upgrade the hub refused with 401 or 403
    (as the HTTP API's would be); None for any other failure."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return hub_error("unauthorized", "the hub refused the WebSocket (401)", status=401)
    if status == 403:
        return hub_error("forbidden", "the hub refused the WebSocket (403)", status=403)
    return None
