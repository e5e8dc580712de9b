"""Herald's Python client: publish typed events, wait for a person's
decision, react to control requests, and subscribe, against a Herald hub.

::

    import herald

    hub = herald.Herald()       # HERALD_URL / HERALD_API_KEY, else http://127.0.0.1:8765
    hub.publish("execution:exec_123", "execution.progress", {"progress": 75}, key="exec_123")
    decision = hub.request_approval("u1", "t1", 3, {"step": "train", "message": "Retry?", "status": "failed"})
    if decision.proceed: ...

Layout:

- :mod:`herald.models`: the wire types, generated from the protocol's JSON Schema.
- :class:`Herald` / :class:`AsyncHerald`: the HTTP publisher, approvals, control requests.
- :class:`Subscription`: the reconnecting subscriber (``AsyncHerald.subscribe``).
- :class:`ControlStream`: ``control.*`` requests for a producer (``AsyncHerald.control``).
- :class:`UnixPublisher`: fire-and-forget datagrams to ``--unix-socket``.
- :class:`TopicHistory`: a topic's retained events (``AsyncHerald.history``).
- :mod:`herald.errors`: typed errors carrying the contract's error ``code``.
  Every error the client reports is a :class:`HeraldError`; a bad argument
  refused before anything is sent is also a ``ValueError``.
"""

from ._http import TopicHistory
from ._retry import RetryPolicy
from ._session import NoTopicsError, SessionConfig, TimeCursorError
from .client import AsyncHerald, Herald
from .control import ControlCommand, ControlStream
from .errors import (
    ConflictError,
    ForbiddenError,
    GapError,
    HeraldError,
    HubError,
    InternalError,
    InvalidDataError,
    InvalidJsonError,
    InvalidRequestError,
    InvalidTopicError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    SubscriptionClosedError,
    TooLargeError,
    TransportError,
    UnauthorizedError,
    UnknownActionError,
)
from .models import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    ControlRequest,
    ErrorCode,
    ErrorPayload,
    Event,
    EventFilter,
    EventType,
    Gap,
    KnownEventType,
    Metrics,
    Priority,
    Progress,
    PublishReceipt,
    PublishRequest,
    Snapshot,
    StateChange,
    TaskStepResult,
)
from .subscription import Subscription, SubscriptionItem
from .unix import UnixPublisher

__version__ = "0.1.0"

__all__ = [
    "ApprovalDecision",
    "ApprovalRecord",
    "ApprovalRequested",
    "ApprovalResolved",
    "ApprovalStatus",
    "AsyncHerald",
    "ConflictError",
    "ControlCommand",
    "ControlRequest",
    "ControlStream",
    "ErrorCode",
    "ErrorPayload",
    "Event",
    "EventFilter",
    "EventType",
    "ForbiddenError",
    "Gap",
    "GapError",
    "Herald",
    "HeraldError",
    "HubError",
    "InternalError",
    "InvalidDataError",
    "InvalidJsonError",
    "InvalidRequestError",
    "InvalidTopicError",
    "KnownEventType",
    "Metrics",
    "NoTopicsError",
    "NotFoundError",
    "Priority",
    "Progress",
    "ProtocolError",
    "PublishReceipt",
    "PublishRequest",
    "RateLimitedError",
    "RetryPolicy",
    "SessionConfig",
    "Snapshot",
    "StateChange",
    "Subscription",
    "SubscriptionClosedError",
    "SubscriptionItem",
    "TaskStepResult",
    "TimeCursorError",
    "TooLargeError",
    "TopicHistory",
    "TransportError",
    "UnauthorizedError",
    "UnixPublisher",
    "UnknownActionError",
]
