"""Herald's errors: :class:`HubError` carries the contract's error ``code``
(one subclass per code), the others say what went wrong on the way.

An argument the client refuses before sending anything (a topic that breaks
the grammar, a bad field, NaN in ``data``, ...) raises a :class:`HeraldError`
that is also a ``ValueError``: :class:`InvalidTopicError`,
:class:`InvalidRequestError`, :class:`InvalidDataError`, and the session's
``TimeCursorError`` and ``NoTopicsError``. When pydantic found the fault, its
``ValidationError`` is the ``__cause__``.

::

    try:
        hub.publish("run:r1", "step.completed", {"step": 3})
    except herald.RateLimitedError as error:
        print(error.code, error.status, error.message)   # rate_limited 429 ...
    except herald.HeraldError:
        ...
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import ValidationError

from .models import ErrorCode, Gap


class HeraldError(Exception):
    """Anything the client reports."""


class HubError(HeraldError):
    """The hub refused a request with the contract's ``{code, message}``
    (HTTP error body, or an ``error`` frame)."""

    code: ErrorCode = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        status: int | None = None,
        index: int | None = None,
        ref: Any = None,
        hub_code: str | None = None,
        event_ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.hub_code: str = hub_code if hub_code is not None else self.code
        """The code as the hub sent it: ``code``, or one this client does not
        know (a newer hub's), for which ``code`` is ``internal``."""
        self.message = message
        self.status = status
        """The HTTP status (None for a WebSocket ``error`` frame)."""
        self.index = index
        """The offending event of a batch, when the hub named one."""
        self.ref = ref
        """The request id an ``error`` frame answers."""
        self.event_ids = event_ids
        """For a refused publish: the ids of the events the client sent (in
        the batch's order, those it generated included; empty for other
        calls). What a batch refused with ``conflict`` at :attr:`index`
        needs to be finished: see :class:`ConflictError`."""

    def __str__(self) -> str:
        where = f" (event {self.index} of the batch)" if self.index is not None else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"


class InvalidJsonError(HubError):
    """The frame or body is not valid JSON."""

    code: ErrorCode = "invalid_json"


class UnknownActionError(HubError):
    """The frame's ``action`` is not one the hub knows."""

    code: ErrorCode = "unknown_action"


class InvalidRequestError(HubError, ValueError):
    """A well-formed request with a bad or missing field: refused by the hub
    (HTTP 400, an ``error`` frame), or by the client before sending
    (``status`` None; a pydantic ``ValidationError`` as the ``__cause__``
    when the fault was found by a model). Also a ``ValueError``."""

    code: ErrorCode = "invalid_request"


class InvalidTopicError(HubError, ValueError):
    """A topic or pattern that breaks the grammar (or a pattern where one
    topic is needed): refused by the hub, or by the client before sending
    (``status`` None, the pydantic ``ValidationError`` as the ``__cause__``).
    Also a ``ValueError``."""

    code: ErrorCode = "invalid_topic"


class UnauthorizedError(HubError):
    """No credentials, or bad ones (HTTP 401)."""

    code: ErrorCode = "unauthorized"


class ForbiddenError(HubError):
    """Credentials that do not allow this (HTTP 403)."""

    code: ErrorCode = "forbidden"


class RateLimitedError(HubError):
    """Too many frames or publishes (HTTP 429; retried first: nothing was done)."""

    code: ErrorCode = "rate_limited"


class TooLargeError(HubError):
    """Over a size limit (HTTP 413)."""

    code: ErrorCode = "too_large"


class NotFoundError(HubError):
    """No such approval, connection, … (HTTP 404). For an approval: never
    created, or lost when a hub without a durable store restarted."""

    code: ErrorCode = "not_found"


class ConflictError(HubError):
    """The request conflicts with the current state, e.g. an approval
    already decided, or an event id already stored on its topic with other
    content (HTTP 409).

    A batch refused so at :attr:`index` ``i`` is not all-or-nothing: the hub
    stored its events before ``i`` (and on a Redis hub, those after ``i`` on
    other topics may be stored too). :attr:`event_ids` names the id of every
    event of the batch, those the client generated included: to finish it,
    send the events again with those ids (``PublishRequest(id=...)``), event
    ``i`` fixed or left out; those already stored are answered with their
    first receipts, not stored twice."""

    code: ErrorCode = "conflict"


class InternalError(HubError):
    """The hub failed; not the client's fault (HTTP 5xx; retried first when
    the call is idempotent: a publish, a poll)."""

    code: ErrorCode = "internal"


ERRORS_BY_CODE: dict[str, type[HubError]] = {
    cls.code: cls
    for cls in (
        InvalidJsonError,
        UnknownActionError,
        InvalidRequestError,
        InvalidTopicError,
        UnauthorizedError,
        ForbiddenError,
        RateLimitedError,
        TooLargeError,
        NotFoundError,
        ConflictError,
        InternalError,
    )
}
"""One class per code of the contract's closed ``ErrorCode`` set."""

assert set(ERRORS_BY_CODE) == set(get_args(ErrorCode)), "an ErrorCode has no exception class"


def hub_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    index: int | None = None,
    ref: Any = None,
    event_ids: tuple[str, ...] = (),
) -> HubError:
    """The exception for the hub's ``{code, message}``. A code this client
    does not know (a newer hub's) gives a plain :class:`HubError` whose
    ``code`` is ``internal`` and whose message and ``hub_code`` name the
    hub's code."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        unknown = f"{message} (the hub's error code {code!r} is unknown to this client)"
        return HubError(unknown, status=status, index=index, ref=ref, hub_code=code, event_ids=event_ids)
    return cls(message, status=status, index=index, ref=ref, event_ids=event_ids)


def refused_before_sending(
    error: ValidationError, *, topic: bool = False, index: int | None = None
) -> InvalidRequestError | InvalidTopicError:
    """The client's refusal of an argument a model found bad, as the hub
    would name it: :class:`InvalidTopicError` when the fault is a topic (the
    value checked is one, ``topic``, or it is a model's ``topic`` field),
    else :class:`InvalidRequestError`. Raise it ``from error``: pydantic's
    details stay the cause."""
    where = [tuple(detail["loc"]) for detail in error.errors()]
    message = f"refused before sending: {error}"
    if topic or (where and all(loc[:1] == ("topic",) for loc in where)):
        return InvalidTopicError(message, index=index)
    return InvalidRequestError(message, index=index)


class TransportError(HeraldError):
    """No answer from the hub: it could not be reached (connection refused,
    timeout before connecting) on every attempt allowed, or a request went
    out and its answer was lost (``outcome_unknown``): after the retries a
    publish is allowed, or at once for a call that is not retried once sent
    (``create_approval``, ``broadcast``, ``send_to_user``)."""

    def __init__(
        self, message: str, *, attempts: int, outcome_unknown: bool = False, event_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.outcome_unknown = outcome_unknown
        """True when a request may have reached the hub, which may have
        acted on it (stored the events, created the approval, published the
        message): look before asking again, or retry a publish with the
        same :attr:`event_ids`."""
        self.event_ids = event_ids
        """The ids the client gave the events of a failed publish (in the
        batch's order; empty for other calls). Publishing them again with
        these ids (``id=``, or ``PublishRequest(id=...)``) stores each once,
        whether or not the lost attempt had stored it."""


class InvalidDataError(HeraldError, ValueError):
    """A value the hub could not pass on as it is, in what was to be sent:
    one JSON cannot carry (NaN, +Infinity, -Infinity), or an integer outside
    the 64-bit range (below -2**63 or above 2**64 - 1), which the hub would
    turn into a float. Refused before anything is sent. ``path`` says where,
    e.g. ``data.metrics[2]``."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ProtocolError(HeraldError):
    """The hub answered something the contract does not allow (a success
    that does not decode, or an error status without ``{code, message}``)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GapError(HeraldError):
    """Events the subscriber will not get (raised instead of yielding a
    :class:`~herald.models.Gap` when the subscription was opened with
    ``gaps="raise"``). Re-read state, then keep iterating: the subscription
    goes on after the gap."""

    def __init__(self, gap: Gap) -> None:
        if gap.to_seq < gap.from_seq:
            message = (
                f"the stream of {gap.topic} was replaced ({gap.reason}): what it held after this "
                "subscriber's checkpoint is gone; the new one is followed from its start"
            )
        else:
            message = f"events {gap.from_seq}..={gap.to_seq} of {gap.topic} will not arrive ({gap.reason})"
        super().__init__(message)
        self.gap = gap


class SubscriptionClosedError(HeraldError):
    """The subscription stopped for good: the hub closed with a terminal code
    (e.g. 4500 disconnected by an admin, 4503 forbidden, 1008), or the
    reconnect attempts ran out."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


__all__ = [
    "ERRORS_BY_CODE",
    "ConflictError",
    "ForbiddenError",
    "GapError",
    "HeraldError",
    "HubError",
    "InternalError",
    "InvalidDataError",
    "InvalidJsonError",
    "InvalidRequestError",
    "InvalidTopicError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitedError",
    "SubscriptionClosedError",
    "TooLargeError",
    "TransportError",
    "UnauthorizedError",
    "UnknownActionError",
    "ValidationError",
    "hub_error",
    "refused_before_sending",
]
