"""What the sync and async clients share: where the hub is, how each API
call is built, and how an answer becomes a value or a typed error. The two
clients only differ in how they send (``httpx.Client`` or
``httpx.AsyncClient``) and sleep."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import JsonValue, TypeAdapter

from .errors import HeraldError, HubError, ProtocolError, TransportError, hub_error
from .models import (
    ApprovalDecision,
    ApprovalRecord,
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

DEFAULT_URL = "http://127.0.0.1:8765"
"""The hub ``herald serve`` runs by default."""

LONG_POLL = 30.0
"""Seconds one approval long-poll asks the hub to wait."""

EXPIRY_GRACE = 60.0
"""Seconds after an approval's ``expires_at`` that ``request_approval`` keeps
polling an unreachable hub before giving up (the hub decides by itself at
expiry; this only covers the hub being away when it does)."""

RECEIPTS: TypeAdapter[list[PublishReceipt]] = TypeAdapter(list[PublishReceipt])


@dataclass(frozen=True)
class Endpoint:
    """Where the hub is and how to authenticate."""

    url: str
    """The base URL, e.g. ``http://127.0.0.1:8765`` (no trailing slash): the
    HTTP API is called here."""
    api_key: str | None
    """Sent as ``Authorization: Bearer KEY`` to the HTTP API."""
    token: str | None
    """A JWT for WebSockets (``Authorization: Bearer`` on the upgrade)."""
    failover: tuple[str, ...] = ()
    """Other nodes of the same hub (sharing one Redis): a subscription whose
    connection drops or fails moves on to the next URL, in turn."""

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, token: str | None) -> Endpoint:
        """Arguments first, then ``HERALD_URL`` / ``HERALD_API_KEY`` /
        ``HERALD_TOKEN``, then the default URL. Several nodes are given as
        comma-separated URLs (``http://a:8765,http://b:8765``), as the
        ``herald`` CLI takes them."""
        given = url or os.environ.get("HERALD_URL") or DEFAULT_URL
        urls = [part.strip().rstrip("/") for part in given.split(",") if part.strip()]
        if not urls:
            raise ValueError(f"invalid hub url {given!r}: use http://HOST:PORT or https://HOST")
        for each in urls:
            parts = urlsplit(each)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"invalid hub url {each!r}: use http://HOST:PORT or https://HOST")
        return cls(
            url=urls[0],
            api_key=api_key if api_key is not None else os.environ.get("HERALD_API_KEY") or None,
            token=token if token is not None else os.environ.get("HERALD_TOKEN") or None,
            failover=tuple(urls[1:]),
        )

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node's URL, the first one first."""
        return (self.url, *self.failover)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ws_url(self, path: str = "/ws", node: int = 0) -> str:
        """The WebSocket URL of ``path`` (``ws://`` or ``wss://``) on node
        ``node`` of :attr:`urls`."""
        urls = self.urls
        parts = urlsplit(urls[node % len(urls)])
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))

    def ws_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


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
    could not even be opened (the hub cannot have seen the request)."""


def encode(value: Any) -> bytes:
    """Compact JSON; NaN and infinities are refused (JSON has none)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
    """A validated publish request with its id set (retries reuse it)."""
    return PublishRequest(
        topic=topic,
        event_type=event_type,
        data=as_data(data),
        key=key,
        priority=priority or "normal",
        id=id or new_event_id(),
        source=source,
        timestamp=timestamp,
    )


def with_id(request: PublishRequest | Mapping[str, Any]) -> PublishRequest:
    """``request`` as a model, with an id set before the first attempt."""
    model = request if isinstance(request, PublishRequest) else PublishRequest.model_validate(request)
    if model.id is None:
        model = model.model_copy(update={"id": new_event_id()})
    return model


def publish_call(request: PublishRequest, timeout: float) -> Call:
    return Call("POST", "/api/v1/events", encode(request.to_wire()), timeout=timeout)


def batch_call(requests: Iterable[PublishRequest], timeout: float) -> Call:
    body = encode([request.to_wire() for request in requests])
    return Call("POST", "/api/v1/events", body, timeout=timeout)


def notice_body(event_type: EventType, data: Data, priority: Priority | None) -> bytes:
    # Validated as a publish request would be (the topic is the hub's).
    request = PublishRequest(topic="global", event_type=event_type, data=as_data(data))
    body: dict[str, Any] = {"event_type": request.event_type, "data": request.data}
    if priority is not None:
        body["priority"] = priority
    return encode(body)


def broadcast_call(event_type: EventType, data: Data, priority: Priority | None, timeout: float) -> Call:
    # The body has no event id the hub could de-duplicate: retried only
    # when the request cannot have reached the hub.
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
    result = step_result if isinstance(step_result, TaskStepResult) else TaskStepResult.model_validate(step_result)
    return NewApproval(
        user_id=user_id,
        task_id=task_id,
        step=step,
        step_result=result,
        timeout_ms=None if timeout is None else round(timeout * 1000),
        default_proceed=default_proceed,
    )


def create_approval_call(approval: NewApproval, timeout: float) -> Call:
    return Call("POST", "/api/v1/approvals", encode(approval.to_wire()), timeout=timeout, idempotent=False)


def approval_call(callback_id: str, wait: float, timeout: float) -> Call:
    params = {"wait_ms": str(round(wait * 1000))} if wait > 0 else None
    path = f"/api/v1/approvals/{quote(callback_id, safe='')}"
    return Call("GET", path, params=params, timeout=timeout + max(wait, 0.0))


def approval_deadline(record: ApprovalRecord) -> float:
    """Until when (``time.time()``) to keep polling an unreachable hub."""
    return record.expires_at / 1000 + EXPIRY_GRACE


def is_outage(error: HeraldError) -> bool:
    """A failure a hub restart explains: no connection, or a 5xx."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HubError) and error.status is not None and error.status >= 500


def still_waiting(decision: ApprovalDecision) -> bool:
    return decision.status == "pending"


def within(deadline: float) -> bool:
    return time.time() < deadline


# ---- answers ----


def retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def retryable_transport(error: httpx.TransportError, call: Call) -> bool:
    if call.idempotent:
        return True
    return isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))


def transport_error(error: httpx.TransportError, call: Call, attempts: int) -> TransportError:
    return TransportError(
        f"could not reach the hub ({call.method} {call.path}) after {attempts} attempt(s): "
        f"{type(error).__name__}: {error}",
        attempts=attempts,
    )


def answer(response: httpx.Response) -> Any:
    """The JSON of a success; the typed error of anything else."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if 200 <= status < 300:
        if body is None:
            raise ProtocolError(f"the hub answered HTTP {status} without JSON", status=status)
        return body
    if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str):
        index = body.get("index")
        raise hub_error(body["code"], body["message"], status=status, index=index if isinstance(index, int) else None)
    excerpt = response.text[:512].strip()
    raise ProtocolError(f"the hub answered HTTP {status}: {excerpt}", status=status)
