"""The sans-IO client session: a port of ``herald_protocol::session``.

A :class:`Session` never touches a socket or a clock. Its driver feeds it
what happened (``handle_*``, each with the current time in milliseconds on
the driver's monotonic clock) and carries out what it asks (``poll_*``).
The Rust core and this one run the same scenarios
(``crates/protocol/tests/session_vectors.json``), so both clients reconnect,
resubscribe, de-duplicate and report gaps identically.

Guarantees (as in Rust):

- Per topic, events come in ``seq`` order, never twice: an event with
  ``seq <=`` the topic's checkpoint is dropped.
- After every ``welcome``, each subscription is re-sent with ``since``
  ``{seq, epoch}`` for the checkpointed topics it covers, those it names
  first, then the most recently advanced, as many as fit in
  ``max_since_bytes``; the offline queue then flushes in order. Checkpoints
  are kept for at most ``max_checkpoints`` topics: the named ones, and the
  most recently advanced of the others.
- A ``subscribed`` or ``snapshot`` naming another epoch forgets the
  checkpoint; an ``epoch_changed`` gap up to seq 0 behind the checkpoint (a
  stream that changed under a live subscription) or of a topic reached
  through a pattern restarts it at the gap's ``to_seq``, epoch unknown; an
  ``epoch_changed`` gap that names its ``epoch`` puts the checkpoint at
  ``to_seq`` of that stream, whatever it was; gaps are surfaced and move the
  checkpoint past them.
- A ``snapshot`` ahead of the checkpoint (it comes before the replay of what
  was missed) leaves the checkpoint where it is: the replayed events up to
  the snapshot's seq are delivered, except a keyed event the snapshot holds a
  newer or the same event of. Unkeyed events are never in a snapshot, so
  none is lost.
- Reconnect attempt ``n`` waits uniform ``[0, min(max, initial * 2^(n-1))]``
  ms (xorshift64* seeded by the caller), the cap itself without jitter.
- A hub draining for a deploy sends ``system.shutdown`` on ``global`` with
  ``data.retry_after_ms`` before it closes the connection: when that
  connection then closes with a code that reconnects, the first reconnect
  waits exactly that long (at most ``max_reconnect_delay_ms``), counted as
  attempt 1. The hint lasts for that one connection only.
- A command with a request id (``confirm``, ``cancel``, ``pause``,
  ``resume``) is kept once transmitted until the hub answers it (``ack`` or
  ``error`` with its id as ``ref``): if the link is lost first, it goes back
  in front of the offline queue and is sent again after the next
  ``welcome``. A command the hub carried out just before the link went may
  so be carried out twice (the hub acknowledges the same user's same answer
  again; a control request is published again). At most
  ``offline_queue_capacity`` are kept: past it, the one sent longest ago is
  no longer sent again.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError

from .errors import HeraldError
from .models import (
    Ack,
    ClientFrame,
    ClientFrameCancel,
    ClientFrameConfirm,
    ClientFramePause,
    ClientFramePing,
    ClientFramePong,
    ClientFrameResume,
    ClientFrameSubscribe,
    ClientFrameUnsubscribe,
    ErrorCode,
    ErrorFrame,
    Event,
    EventFilter,
    Gap,
    Heartbeat,
    ReplayComplete,
    RequestId,
    Since,
    SinceCheckpoint,
    Snapshot,
    Subscribed,
    Topic,
    TopicPattern,
    Welcome,
    WireModel,
)

U64 = (1 << 64) - 1

RETRY_AFTER_MS = "retry_after_ms"
"""The field of a ``system.shutdown`` event's ``data``: how long to wait, once
the hub has closed the connection, before reconnecting."""

# Close codes the protocol names (``CloseReason`` in Rust).
NORMAL = 1000
HEARTBEAT_TIMEOUT = 4000


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect (with backoff) after this close code."""
    if code in (1000, 1002, 1007, 1008, 1009):
        return False
    if 4000 <= code <= 4499:
        return True
    if 4500 <= code <= 4999:
        return False
    # 1001, 1006 (abnormal), 1011, 1012, 1013 and anything unknown.
    return True


# ---- configuration and backoff ----


@dataclass(frozen=True)
class SessionConfig:
    """How a session reconnects, keeps the connection alive and buffers frames
    while offline. Every field states its default (the Rust core's)."""

    initial_reconnect_delay_ms: int = 1_000
    """The delay cap of the first reconnect attempt."""
    max_reconnect_delay_ms: int = 30_000
    """The largest delay between reconnect attempts."""
    max_reconnect_attempts: int | None = None
    """Attempts in a row before giving up; ``None``: reconnect forever."""
    stable_after_ms: int = 10_000
    """A connection open at least this long restarts the attempt count."""
    heartbeat_interval_ms: int = 30_000
    """App-level ping interval while open; 0 turns the client heartbeat off."""
    missed_pongs_allowed: int = 2
    """At the tick after this many + 1 pings without any frame: dead (4000)."""
    offline_queue_capacity: int = 256
    """Frames buffered while offline; when full the oldest is dropped."""
    jitter: bool = True
    """Full jitter on reconnect delays (uniform in ``[0, cap]``)."""
    endpoints: int = 1
    """How many hub URLs the driver can connect to: each reconnect moves to
    the next one, in turn, and resumes with ``since`` there."""
    max_checkpoints: int = 4096
    """Topics with a checkpoint; past it the least recently advanced is
    forgotten, never one a subscription names."""
    max_since_bytes: int = 32 * 1024
    """Bytes of ``since`` one ``subscribe`` frame carries (:func:`since_bytes`):
    the topics the subscription names, then the most recently advanced
    others, resume from their checkpoint, the rest live (what they missed
    is a ``trimmed`` gap at their first event or ``subscribed``), so a
    resubscription stays below the hub's frame limit (1009)."""
    max_frame_bytes: int = 64 * 1024
    """The largest frame the hub takes (its ``--max-frame-size``; over it the
    hub closes with 1009): a subscription, unsubscription or request whose
    frame would be larger is refused with :class:`FrameTooLargeError`
    instead of being sent, and a resubscription's ``since`` is cut to fit."""

    def reconnect_delay_cap(self, attempt: int) -> int:
        """``min(max, initial * 2^(attempt - 1))`` in ms, saturating at 2^64-1."""
        exponent = max(attempt - 1, 0)
        scaled = U64 if exponent >= 64 else min(self.initial_reconnect_delay_ms << exponent, U64)
        return min(scaled, self.max_reconnect_delay_ms)


class _Rng:
    """xorshift64*, as in the Rust core: tiny, deterministic, not for secrets."""

    def __init__(self, seed: int) -> None:
        seed &= U64
        self._state = seed if seed != 0 else 0x9E37_79B9_7F4A_7C15

    def next_u64(self) -> int:
        x = self._state
        x ^= x >> 12
        x ^= (x << 25) & U64
        x ^= x >> 27
        self._state = x
        return (x * 0x2545_F491_4F6C_DD1D) & U64

    def up_to(self, maximum: int) -> int:
        """A value in ``[0, maximum]``."""
        if maximum >= U64:
            return self.next_u64()
        return self.next_u64() % (maximum + 1)


class _Backoff:
    def __init__(self, seed: int) -> None:
        self.attempts = 0
        self._rng = _Rng(seed)

    def reset(self) -> None:
        self.attempts = 0

    def restart_at_one(self) -> int:
        """Counts the attempt about to be made as attempt 1 (the hub said when)."""
        self.attempts = 1
        return self.attempts

    def next_delay(self, config: SessionConfig) -> tuple[int, int]:
        self.attempts += 1
        cap = config.reconnect_delay_cap(self.attempts)
        delay = self._rng.up_to(cap) if config.jitter else cap
        return self.attempts, delay


# ---- outputs ----


@dataclass(frozen=True)
class Connect:
    """Open a socket now; report ``handle_connected`` or ``handle_closed``."""


@dataclass(frozen=True)
class Close:
    """Close the current socket with ``code``; the session already treats it as gone."""

    code: int


Action = Union[Connect, Close]


@dataclass(frozen=True)
class Connecting:
    """A socket is being opened (or is open and waiting for ``welcome``)."""


@dataclass(frozen=True)
class Open:
    """``welcome`` received; subscriptions re-sent, offline queue flushed."""


@dataclass(frozen=True)
class Reconnecting:
    """Waiting ``delay_ms`` before reconnect attempt ``attempt`` (1-based).
    ``code`` is the close code the last connection ended with (4001: the
    token expired), ``None`` when the socket failed without one."""

    attempt: int
    delay_ms: int
    code: int | None = None


@dataclass(frozen=True)
class Disconnected:
    """The application called ``disconnect``."""


@dataclass(frozen=True)
class Terminal:
    """The hub closed with a code that says not to reconnect."""

    code: int


@dataclass(frozen=True)
class AttemptsExhausted:
    """``max_reconnect_attempts`` attempts failed in a row."""

    attempts: int


ClosedReason = Union[Disconnected, Terminal, AttemptsExhausted]


@dataclass(frozen=True)
class Closed:
    """Nothing more happens until ``reconnect``."""

    reason: ClosedReason


ConnectionState = Union[Connecting, Open, Reconnecting, Closed]


@dataclass(frozen=True)
class StateChanged:
    """The connection state changed."""

    state: ConnectionState


@dataclass(frozen=True)
class FrameDropped:
    """The offline queue was full: this frame was dropped, never sent."""

    frame: WireModel


SessionEvent = Union[
    Event, Gap, Snapshot, StateChanged, ErrorFrame, Welcome, Subscribed, ReplayComplete, Ack, FrameDropped
]
"""What the application receives from :meth:`Session.poll_event`."""


class SessionError(HeraldError):
    """An application call the session refused."""


class SessionClosedError(SessionError):
    """The session is closed; call ``reconnect()`` before sending."""


class NoTopicsError(SessionError, ValueError):
    """A subscription needs at least one topic or pattern (also a ``ValueError``)."""


class TimeCursorError(SessionError, ValueError):
    """A ``since`` with ``time_ms``: the session resumes from seq checkpoints,
    which a time cannot become (send a time cursor on a raw connection, or
    read the history by time with ``history(topic, time_ms=…)``)."""


class FrameTooLargeError(SessionError):
    """The frame is larger than the hub takes (``max_frame_bytes``): sent, it
    would close the connection with 1009, and a subscription would do so
    again on every reconnect."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the frame would be {size} bytes, over the hub's frame limit of {limit} (max_frame_bytes): split it"
        )
        self.size = size
        self.limit = limit


def frame_bytes(frame: WireModel) -> int:
    """How many bytes the frame takes on the wire (its compact JSON, UTF-8)."""
    return len(frame.to_json().encode())


class FrameDecodeError(ValueError):
    """A text frame from the hub that does not decode."""


# ---- checkpoints and subscriptions ----


@dataclass
class Checkpoint:
    """Where a topic's stream was left: every event with ``seq <= self.seq``
    of this epoch was delivered (or reported missing by a gap)."""

    seq: int
    epoch: str | None = None

    def since(self) -> Since:
        """The ``since`` value a ``subscribe`` frame carries."""
        if self.epoch is None:
            return self.seq
        return SinceCheckpoint(seq=self.seq, epoch=self.epoch)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq}
        if self.epoch is not None:
            data["epoch"] = self.epoch
        return data


def checkpoints_from_json(data: dict[str, Any]) -> dict[str, Checkpoint]:
    """Reads persisted checkpoints: ``{topic: seq}`` or ``{topic: {seq, epoch?}}``."""
    parsed = _SINCE_MAP.validate_python(data)
    out: dict[str, Checkpoint] = {}
    for topic, since in parsed.items():
        if isinstance(since, SinceCheckpoint):
            out[topic] = Checkpoint(since.seq, since.epoch)
        elif isinstance(since, int):
            out[topic] = Checkpoint(since)
        else:
            raise TimeCursorError(f"the checkpoint of {topic} is a time, not a seq: the session resumes from seqs")
    return out


def checkpoints_to_json(checkpoints: dict[str, Checkpoint]) -> dict[str, Any]:
    """Checkpoints as JSON, topics sorted: ``{topic: {seq, epoch?}}``."""
    return {topic: checkpoints[topic].to_json() for topic in sorted(checkpoints)}


def since_bytes(topic: str, checkpoint: Checkpoint) -> int:
    """What a checkpoint adds to a ``subscribe`` frame's ``since``, counted as
    every client counts it: topic, epoch, the seq's digits, and 24 bytes for
    the JSON around them."""
    return len(topic) + len(checkpoint.epoch or "") + len(str(checkpoint.seq)) + 24


def is_pattern(pattern: str) -> bool:
    """Whether ``pattern`` is ``kind:*`` or ``*`` rather than one topic."""
    return pattern == "*" or pattern.endswith(":*")


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` falls under ``pattern`` (a topic, ``kind:*`` or ``*``)."""
    if pattern == "*":
        return True
    if pattern.endswith(":*"):
        kind, sep, ident = topic.partition(":")
        return bool(sep) and bool(ident) and kind == pattern[:-2]
    return pattern == topic


@dataclass
class Subscription:
    """One ``subscribe`` as the application made it, replayed on every connection."""

    topics: list[str]
    filter: EventFilter | None = None
    snapshot: bool = False
    id: RequestId | None = None
    """The request id the application gave it: every ``subscribe`` frame for
    it carries it, so the hub's ``ack`` or ``error`` names it on every
    connection."""

    def is_filtered(self) -> bool:
        """Whether a filter holds back some of its topics' events (an empty
        filter holds back none)."""
        return self.filter is not None and (bool(self.filter.types) or self.filter.min_priority is not None)

    def names(self, topic: str) -> bool:
        """Whether the subscription names ``topic`` itself (not by a pattern)."""
        return topic in self.topics

    def covers(self, topic: str) -> bool:
        return any(pattern_matches(p, topic) for p in self.topics)

    def frame(
        self,
        checkpoints: dict[str, Checkpoint],
        max_since_bytes: int,
        max_frame_bytes: int,
        resumes: Callable[[str], bool] = lambda _topic: True,
    ) -> tuple[ClientFrameSubscribe, list[str]]:
        """The frame, with ``since`` for the covered topics ``resumes`` lets
        through (on a new connection each topic is resumed by one
        subscription: see :func:`resumer`): those the subscription names
        first (in topic order), then the others, the most recently advanced
        first (``checkpoints`` is in the order they were written), while they
        fit in ``max_since_bytes`` and keep the frame within
        ``max_frame_bytes``."""
        named = sorted(topic for topic in checkpoints if self.names(topic) and resumes(topic))
        others = [t for t in reversed(checkpoints) if not self.names(t) and self.covers(t) and resumes(t)]
        room = max_frame_bytes - frame_bytes(self.frame_without_since()) - _SINCE_FIELD_BYTES
        left = min(max_since_bytes, max(room, 0))
        chosen: dict[str, Since] = {}
        left_out: list[str] = []
        for topic in named + others:
            left -= since_bytes(topic, checkpoints[topic])
            if left < 0 or left_out:
                left_out.append(topic)
                continue
            chosen[topic] = checkpoints[topic].since()
        since = {topic: chosen[topic] for topic in sorted(chosen)}
        frame = ClientFrameSubscribe(
            id=self.id, topics=list(self.topics), filter=self.filter, since=since, snapshot=self.snapshot
        )
        return frame, left_out

    def frame_without_since(self) -> ClientFrameSubscribe:
        """The frame with no ``since``: the smallest it can be."""
        return ClientFrameSubscribe(id=self.id, topics=list(self.topics), filter=self.filter, snapshot=self.snapshot)


_PRIORITY_ORDER = ("low", "normal", "high", "critical")


def filter_matches(event_filter: EventFilter, event: Event) -> bool:
    """Whether ``event`` passes ``event_filter``: its priority at least the
    minimum, its type under one of the patterns (exact, ``domain.*`` or
    ``*``; none: every type)."""
    minimum = event_filter.min_priority
    if minimum is not None and _PRIORITY_ORDER.index(event.priority) < _PRIORITY_ORDER.index(minimum):
        return False
    if not event_filter.types:
        return True
    event_type = str(event.event_type)
    return any(
        pattern == "*" or pattern == event_type or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in (str(p) for p in event_filter.types)
    )


def widest_filter(filters: list[EventFilter | None]) -> EventFilter | None:
    """A filter that lets through at least everything each of ``filters``
    does: the union of their types, the lowest of their priorities. None (no
    filter) when one of them lets everything through, or there are none."""
    types: list[str] = []
    every_type = False
    lowest: str | None = None
    every_priority = False
    if not filters:
        return None
    for each in filters:
        if each is None or (not each.types and each.min_priority is None):
            return None
        if not each.types:
            every_type = True
        for pattern in each.types:
            if pattern not in types:
                types.append(pattern)
        if each.min_priority is None:
            every_priority = True
        elif lowest is None or _PRIORITY_ORDER.index(each.min_priority) < _PRIORITY_ORDER.index(lowest):
            lowest = each.min_priority
    wide_types = [] if every_type else types
    wide_priority = None if every_priority else lowest
    if not wide_types and wide_priority is None:
        return None
    return EventFilter.model_validate({"types": wide_types, "min_priority": wide_priority})


def sent_filter(others: list[Subscription], subscription: Subscription) -> EventFilter | None:
    """The filter ``subscription``'s frame carries beside ``others`` (which
    may hold it): what every subscription sharing one of its topics (or
    patterns, by name) lets through. The hub keeps one filter per topic and
    connection, the last one sent."""
    sharing = [o.filter for o in others if any(pattern in subscription.topics for pattern in o.topics)]
    # In the order they were made, then ``subscription`` itself when
    # ``others`` does not hold it yet.
    return widest_filter([*sharing, subscription.filter])


def as_sent(subscriptions: list[Subscription], max_frame_bytes: int) -> list[Subscription]:
    """The subscriptions as their frames go to the hub (see :func:`sent_filter`).
    A frame carries one filter for all its topics, so a topic it alone names
    may be widened too: the session delivers only what some covering
    subscription's own filter lets through (:meth:`Session._wanted`)."""
    return [sent(subscriptions, s, max_frame_bytes) for s in subscriptions]


def sent(others: list[Subscription], subscription: Subscription, max_frame_bytes: int) -> Subscription:
    """``subscription`` as its frame goes beside ``others`` (which may hold
    it). A widened frame over ``max_frame_bytes`` goes with no filter at all:
    the widest, and smaller than the subscription's own frame, which was
    checked against the limit."""
    wide = replace(subscription, filter=sent_filter(others, subscription))
    if frame_bytes(wide.frame_without_since()) > max_frame_bytes:
        return replace(subscription, filter=None)
    return wide


_SINCE_FIELD_BYTES = len(',"since":{}')
"""What a non-empty ``since`` adds around its entries."""


def resumer(subscriptions: list[Subscription], topic: str) -> int | None:
    """Which of ``subscriptions`` resumes ``topic`` on a new connection: the
    one whose ``since`` carries its checkpoint. Only one does: each replay
    ends with a ``replay_complete`` that moves the topic's checkpoint to
    where the replay read, and the first to end would make the events of
    another, still coming, look already seen (a filtered subscription's
    replay ends at the topic's head having sent none of them). The first
    covering it with no filter that names it, else with no filter, else that
    names it, else the first covering it. Subscriptions naming the same topic
    are sent with one filter (:func:`as_sent`), so the resumer replays what
    all of them let through; a topic covered under different names replays
    only the resumer's filter: the other's events of the time offline do not
    come back."""
    best: tuple[bool, bool] | None = None
    chosen: int | None = None
    for index, subscription in enumerate(subscriptions):
        if not subscription.covers(topic):
            continue
        rank = (not subscription.is_filtered(), subscription.names(topic))
        if best is None or rank > best:
            best, chosen = rank, index
    return chosen


def resubscription_order(subscriptions: list[Subscription]) -> list[int]:
    """The order subscriptions are sent in on a new connection: those with no
    filter first, and among each, those naming only topics before those with
    patterns; otherwise as they were made. The hub answers each ``subscribe``
    whole (replay included) before the next, and a subscription is live from
    its own answer on: sent first, a topic's resumer replays it before another
    subscription covering it goes live and moves its checkpoint with a live
    event."""
    return sorted(
        range(len(subscriptions)),
        key=lambda index: (
            subscriptions[index].is_filtered(),
            any(is_pattern(topic) for topic in subscriptions[index].topics),
        ),
    )


# ---- the session ----


@dataclass
class _Link:
    connected_at: int
    welcomed: bool = False
    unanswered: int = 0
    next_ping: int | None = None
    retry_after: int | None = None
    """The hub's ``retry_after_ms`` from its ``system.shutdown`` notice."""
    gaps: dict[str, Gap] = field(default_factory=dict)
    """The last gap surfaced per topic on this link, until an event of the
    topic: the same gap again (two subscriptions covering the topic each
    resumed with ``since``) tells nothing new."""
    unresumed: set[str] = field(default_factory=set)
    """Checkpointed topics this link's subscriptions cover but could not
    resume (their ``since`` did not fit in the frames): what they missed is
    reported as a ``trimmed`` gap at their first event or ``subscribed``."""
    snapshots: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    """Per topic, a ``snapshot`` received ahead of the checkpoint while the
    replay up to its seq comes: its seq, and the latest seq of each key."""


@dataclass
class _Waiting:
    until: int


class _ConnectingPhase:
    pass


class _ClosedPhase:
    pass


_Phase = Union[_ConnectingPhase, _Link, _Waiting, _ClosedPhase]

_SERVER_FRAMES: dict[str, type[WireModel]] = {
    "welcome": Welcome,
    "event": Event,
    "subscribed": Subscribed,
    "snapshot": Snapshot,
    "replay_complete": ReplayComplete,
    "gap": Gap,
    "ping": Heartbeat,
    "pong": Heartbeat,
    "ack": Ack,
    "error": ErrorFrame,
}
"""Each server frame type and the model of its body (``ServerMessage``'s variants)."""

_ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))
"""The error codes this version knows."""


class ForeignErrorFrame(ErrorFrame):
    """An ``error`` frame whose code this version does not know (a newer
    hub's): it reads as ``internal``, as in the Rust session, so it still
    answers its request, and keeps the hub's code (left out of the wire
    form)."""

    hub_code: str = Field(exclude=True)
_SINCE_MAP: TypeAdapter[dict[Topic, Since]] = TypeAdapter(dict[Topic, Since])
_PATTERNS: TypeAdapter[list[TopicPattern]] = TypeAdapter(list[TopicPattern])
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


def decode_server_frame(text: str) -> tuple[str, WireModel] | None:
    """Decodes a server frame: ``(type, body)``; ``None`` for a frame type
    this version does not know (clients ignore them). Raises
    :class:`FrameDecodeError` for text that is not a frame."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise FrameDecodeError(f"invalid JSON: {error}") from None
    except RecursionError:
        raise FrameDecodeError("JSON nested deeper than the parser goes") from None
    kind = value.get("type") if isinstance(value, dict) else None
    model = _SERVER_FRAMES.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        return None
    if kind == "error" and isinstance(value.get("code"), str) and value["code"] not in _ERROR_CODES:
        model = ForeignErrorFrame
        value = {**value, "code": "internal", "hub_code": value["code"]}
    try:
        return kind, model.model_validate(value)
    except ValidationError as error:
        raise FrameDecodeError(str(error)) from None
    except RecursionError:
        raise FrameDecodeError("a frame nested deeper than the validator goes") from None


class Session:
    """The client side of one logical Herald connection, across reconnects.

    Starts connecting at once: its first :meth:`poll_action` is
    :class:`Connect`. ``seed`` drives the reconnect jitter (pass something
    random so clients do not reconnect in lockstep).
    """

    def __init__(self, config: SessionConfig | None = None, seed: int = 0) -> None:
        self.config = config or SessionConfig()
        self._phase: _Phase = _ConnectingPhase()
        self._state: ConnectionState = Connecting()
        self._backoff = _Backoff(seed)
        self._subscriptions: list[Subscription] = []
        self._checkpoints: dict[str, Checkpoint] = {}
        self._outbox: deque[WireModel] = deque()
        self._dropped = 0
        self._transmit: deque[WireModel] = deque()
        # Commands transmitted and not yet answered, oldest first.
        self._unanswered: deque[WireModel] = deque()
        self._events: deque[SessionEvent] = deque([StateChanged(Connecting())])
        self._actions: deque[Action] = deque([Connect()])
        self._session_id: str | None = None
        # The frame limit the hub's last ``welcome`` gave, if it gave one.
        self._hub_frame_limit: int | None = None
        self._endpoint = 0

    # ---- inputs from the driver ----

    def handle_connected(self, now: int) -> None:
        """The socket asked for by :class:`Connect` is open."""
        if not isinstance(self._phase, _ConnectingPhase):
            return
        interval = self.config.heartbeat_interval_ms
        self._phase = _Link(connected_at=now, next_ping=now + interval if interval > 0 else None)

    def handle_text(self, text: str, now: int) -> None:
        """A text frame arrived. Unknown frame types are ignored; a frame that
        does not decode raises :class:`FrameDecodeError`. Either way it counts
        as liveness."""
        self._heard(now)
        decoded = decode_server_frame(text)
        if decoded is not None:
            self.handle_frame(decoded[0], decoded[1], now)

    def handle_frame(self, kind: str, body: WireModel, now: int) -> None:
        """A decoded frame arrived on the open socket. Ignored unless open."""
        if not self._heard(now):
            return
        if kind == "welcome" and isinstance(body, Welcome):
            refused: list[ErrorFrame] = []
            if self._mark_welcomed():
                self._session_id = body.session_id
                self._set_state(Open())
                self._hub_frame_limit = body.max_frame_bytes
                refused = self._refuse_oversized_subscriptions()
                resumed: set[str] = set()
                left_out: set[str] = set()
                subscriptions = as_sent(self._subscriptions, self._frame_limit())
                for index in resubscription_order(subscriptions):
                    subscription = subscriptions[index]

                    def resumes(topic: str, index: int = index) -> bool:
                        return resumer(subscriptions, topic) == index

                    frame, missed = subscription.frame(
                        self._checkpoints, self.config.max_since_bytes, self._frame_limit(), resumes
                    )
                    resumed.update(frame.since)
                    left_out.update(missed)
                    self._transmit.append(frame)
                if isinstance(self._phase, _Link):
                    self._phase.unresumed = left_out - resumed
                for queued in self._outbox:
                    try:
                        self._check_size(queued)
                    except FrameTooLargeError as error:
                        refused.append(_too_large(error, getattr(queued, "id", None)))
                        continue
                    self._transmit.append(queued)
                self._outbox.clear()
            self._events.append(body)
            self._events.extend(refused)
        elif kind == "event" and isinstance(body, Event):
            hint = _shutdown_hint(body)
            if hint is not None and isinstance(self._phase, _Link):
                self._phase.retry_after = hint
            known = self._checkpoints.get(body.topic)
            if self._take_unresumed(body.topic) and known is not None and body.seq > known.seq + 1:
                self._events.append(
                    Gap(topic=body.topic, from_seq=known.seq + 1, to_seq=body.seq - 1, reason="trimmed")
                )
            covered = self._covered_by_snapshot(body)
            if self._accept_event(body.topic, body.seq):
                if isinstance(self._phase, _Link):
                    self._phase.gaps.pop(body.topic, None)
                if not covered and self._wanted(body):
                    self._events.append(body)
        elif kind == "subscribed" and isinstance(body, Subscribed):
            if "*" not in body.topic and body.epoch is not None and body.seq is not None:
                unresumed = self._take_unresumed(body.topic)
                known = self._checkpoints.get(body.topic)
                before = Checkpoint(known.seq, known.epoch) if known is not None else None
                self._adopt_stream(body.topic, body.epoch, body.seq)
                if unresumed and before is not None:
                    self._report_unresumed(body.topic, before, body.epoch, body.seq)
            self._events.append(body)
        elif kind == "snapshot" and isinstance(body, Snapshot):
            checkpoint = self._adopt_stream(body.topic, body.epoch, body.seq)
            if checkpoint.seq < body.seq and isinstance(self._phase, _Link):
                keys: dict[str, int] = {}
                for event in body.events:
                    if event.key is not None:
                        keys[event.key] = max(keys.get(event.key, event.seq), event.seq)
                self._phase.snapshots[body.topic] = (body.seq, keys)
            self._events.append(body)
        elif kind == "replay_complete" and isinstance(body, ReplayComplete):
            if isinstance(self._phase, _Link):
                self._phase.snapshots.pop(body.topic, None)
            if body.to_seq >= body.from_seq:
                self._advance(body.topic, body.to_seq)
            self._events.append(body)
        elif kind == "gap" and isinstance(body, Gap):
            self._take_unresumed(body.topic)
            if isinstance(self._phase, _Link):
                if self._phase.gaps.get(body.topic) == body:
                    return
                self._phase.gaps[body.topic] = body
            subscribed_exactly = any(body.topic in s.topics for s in self._subscriptions)
            # An exact topic's resume learns a new stream from its `subscribed`
            # and this gap follows it. A gap up to 0 behind the checkpoint is
            # the hub telling a live subscription that the stream changed under
            # it (a Redis that lost its data), and a topic reached through a
            # pattern gets no `subscribed`: then this gap is the only sign of
            # the new stream, so the old checkpoint (and epoch) goes.
            known = self._checkpoints.get(body.topic)
            behind = body.to_seq == 0 and known is not None and known.seq > 0
            if body.reason == "epoch_changed" and body.epoch is not None:
                # The hub names the stream the topic has now.
                self._write(body.topic, Checkpoint(body.to_seq, body.epoch))
            elif body.reason == "epoch_changed" and (behind or not subscribed_exactly):
                self._write(body.topic, Checkpoint(body.to_seq))
            else:
                self._advance(body.topic, body.to_seq)
            self._events.append(body)
        elif kind == "ping" and isinstance(body, Heartbeat):
            self._transmit.append(ClientFramePong(timestamp=body.timestamp))
        elif kind == "pong":
            pass
        elif kind == "ack" and isinstance(body, Ack):
            self._answered(body.ref)
            self._events.append(body)
        elif kind == "error" and isinstance(body, ErrorFrame):
            if body.ref is not None:
                self._answered(body.ref)
            self._events.append(body)
        self._keep_most_recent()

    def handle_closed(self, code: int | None, now: int) -> None:
        """The socket closed, or the connect attempt failed (``None``: no close
        frame). Reconnects with backoff unless the code is terminal."""
        hint = self._phase.retry_after if isinstance(self._phase, _Link) else None
        self._lose_link(now)
        if not isinstance(self._phase, _ConnectingPhase):
            return
        if code is not None and not should_reconnect(code):
            self._close(Terminal(code))
        else:
            self._schedule_reconnect(now, hint, code)

    def handle_timeout(self, now: int) -> None:
        """The deadline from :meth:`poll_timeout` passed (early or late is harmless)."""
        phase = self._phase
        if isinstance(phase, _Waiting):
            if now >= phase.until:
                self._phase = _ConnectingPhase()
                self._actions.append(Connect())
                self._set_state(Connecting())
        elif isinstance(phase, _Link):
            due = phase.next_ping
            if due is None or now < due:
                return
            if phase.unanswered <= self.config.missed_pongs_allowed:
                phase.unanswered += 1
                phase.next_ping = now + self.config.heartbeat_interval_ms
                self._transmit.append(ClientFramePing(timestamp=now))
                return
            self._actions.append(Close(HEARTBEAT_TIMEOUT))
            self.handle_closed(HEARTBEAT_TIMEOUT, now)

    # ---- outputs to the driver ----

    def poll_transmit(self) -> WireModel | None:
        """The next frame to send on the open socket. A command with a request
        id is kept until the hub answers it (see the guarantees above)."""
        if not self._transmit:
            return None
        frame = self._transmit.popleft()
        if isinstance(frame, _COMMANDS) and frame.id is not None:
            if len(self._unanswered) >= self.config.offline_queue_capacity:
                # The oldest has waited longest for its answer: past the
                # bound it is taken as answered.
                self._unanswered.popleft()
            if self.config.offline_queue_capacity > 0:
                self._unanswered.append(frame)
        return frame

    def handle_unsent(self, frame: WireModel) -> None:
        """A frame taken from :meth:`poll_transmit` could not be sent (the
        write failed, or there was no socket to write it to): it goes back in
        front, to be transmitted next, or, once the link is lost
        (:meth:`handle_closed`, before or after this call), to be queued for
        the next connection like every unsent frame."""
        id = getattr(frame, "id", None)
        if id is not None:
            for at in range(len(self._unanswered) - 1, -1, -1):
                if _same_id(getattr(self._unanswered[at], "id", None), id):
                    del self._unanswered[at]
                    break
        welcomed = self._is_welcomed()
        # A command kept for its answer was queued when the link went.
        if not welcomed and frame in self._outbox:
            return
        self._transmit.appendleft(frame)
        if not welcomed:
            # The link it was taken for is gone: nothing is sent before the
            # next ``welcome``.
            self._requeue_unsent()

    def poll_timeout(self) -> int | None:
        """When to call :meth:`handle_timeout` next, if ever."""
        if isinstance(self._phase, _Waiting):
            return self._phase.until
        if isinstance(self._phase, _Link):
            return self._phase.next_ping
        return None

    def poll_event(self) -> SessionEvent | None:
        """The next thing for the application."""
        return self._events.popleft() if self._events else None

    def poll_action(self) -> Action | None:
        """The next thing to do with the socket."""
        return self._actions.popleft() if self._actions else None

    # ---- application calls ----

    def subscribe(self, topics: list[str], filter: EventFilter | None = None, snapshot: bool = False) -> None:
        """Subscribes and keeps the subscription across reconnects. Raises
        ``pydantic.ValidationError`` for a topic or pattern that breaks the grammar."""
        patterns = _PATTERNS.validate_python(list(topics))
        self._add_subscription(Subscription(patterns, filter, snapshot))

    def unsubscribe(self, topics: list[str]) -> None:
        """Removes topics from every subscription; forgets uncovered checkpoints."""
        self._remove_topics(list(topics), None)

    def end_subscription(self, id: RequestId) -> None:
        """Ends the subscription made with request id ``id`` (the first, if
        several share it); an unknown id does nothing. The topics and
        patterns it lists that no other subscription lists are unsubscribed
        on the hub; the checkpoints of topics no subscription covers any
        more are forgotten. From now on only the others' filters let events
        through (the hub, which keeps one filter per topic and connection,
        goes on sending what the ended one asked for until the next
        connection, and the session holds it back)."""
        index = next((i for i, s in enumerate(self._subscriptions) if _same_id(s.id, id)), None)
        if index is None:
            return
        others = [s for i, s in enumerate(self._subscriptions) if i != index]
        gone = [p for p in self._subscriptions[index].topics if not any(p in s.topics for s in others)]
        frame = ClientFrameUnsubscribe(topics=gone) if gone else None
        if frame is not None:
            self._check_size(frame)
        ended = self._subscriptions.pop(index)
        self._forget_uncovered(ended.topics)
        if frame is not None and self._is_welcomed():
            self._transmit.append(frame)

    def send_frame(self, frame: WireModel) -> None:
        """Sends a client frame now when open, or queues it (bounded) until the
        next ``welcome``. Subscribe/unsubscribe frames become subscription
        state (a ``since`` they carry becomes the checkpoint)."""
        if isinstance(frame, ClientFrameSubscribe):
            given: dict[Topic, Checkpoint] = {}
            for topic, since in frame.since.items():
                if isinstance(since, SinceCheckpoint):
                    given[topic] = Checkpoint(since.seq, since.epoch)
                elif isinstance(since, int):
                    given[topic] = Checkpoint(since)
                else:
                    raise TimeCursorError(
                        f"the checkpoint of {topic} is a time, not a seq: the session resumes from seqs"
                    )
            subscription = Subscription(list(frame.topics), frame.filter, frame.snapshot, frame.id)
            _require_topics(subscription.topics)
            self._check_size(subscription.frame_without_since())
            for topic in sorted(given):
                self._write(topic, given[topic])
            try:
                self._add_subscription(subscription)
            finally:
                self._keep_most_recent()
            return
        if isinstance(frame, ClientFrameUnsubscribe):
            self._remove_topics(list(frame.topics), frame.id)
            return
        if isinstance(self._phase, _ClosedPhase):
            raise SessionClosedError("the session is closed; call reconnect() before sending")
        self._check_size(frame)
        if self._is_welcomed():
            self._transmit.append(frame)
        else:
            self._outbox.append(frame)
            self._trim_outbox()

    def disconnect(self) -> None:
        """Closes for good (1000): no reconnect until :meth:`reconnect`."""
        if isinstance(self._phase, _ClosedPhase):
            return
        if isinstance(self._phase, (_Link, _ConnectingPhase)):
            self._actions.append(Close(NORMAL))
        self._requeue_unsent()
        self._close(Disconnected())

    def reconnect(self) -> None:
        """Connects again now, whatever the state; the attempt count restarts."""
        if isinstance(self._phase, (_Link, _ConnectingPhase)):
            self._actions.append(Close(NORMAL))
        self._requeue_unsent()
        self._backoff.reset()
        self._phase = _ConnectingPhase()
        self._actions.append(Connect())
        self._set_state(Connecting())

    # ---- state ----

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def subscriptions(self) -> list[Subscription]:
        return self._subscriptions

    @property
    def checkpoints(self) -> dict[str, Checkpoint]:
        """Per-topic checkpoints (persist them with :func:`checkpoints_to_json`)."""
        return self._checkpoints

    def restore_checkpoints(self, checkpoints: dict[str, Checkpoint]) -> None:
        """Restores persisted checkpoints (they win); call before subscribing."""
        for topic in sorted(checkpoints):
            self._write(topic, Checkpoint(checkpoints[topic].seq, checkpoints[topic].epoch))
        self._keep_most_recent()

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def endpoint(self) -> int:
        """Which of the driver's URLs (``0..endpoints``) a :class:`Connect` is for."""
        return self._endpoint

    @property
    def queued_frames(self) -> int:
        return len(self._outbox)

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    # ---- internals ----

    def _heard(self, now: int) -> bool:
        if isinstance(self._phase, _Link):
            self._phase.unanswered = 0
            return True
        return False

    def _mark_welcomed(self) -> bool:
        if isinstance(self._phase, _Link) and not self._phase.welcomed:
            self._phase.welcomed = True
            return True
        return False

    def _is_welcomed(self) -> bool:
        return isinstance(self._phase, _Link) and self._phase.welcomed

    def _lose_link(self, now: int) -> None:
        phase = self._phase
        if isinstance(phase, _Link):
            if now - phase.connected_at >= self.config.stable_after_ms:
                self._backoff.reset()
            self._session_id = None
            self._requeue_unsent()
            self._phase = _ConnectingPhase()
        elif isinstance(phase, _ConnectingPhase):
            self._requeue_unsent()

    def _schedule_reconnect(self, now: int, hint: int | None, code: int | None) -> None:
        if hint is not None:
            # The close was planned: the hub's hint, counted as attempt 1.
            delay = min(hint, self.config.max_reconnect_delay_ms)
            attempt = self._backoff.restart_at_one()
        else:
            attempts = self._backoff.attempts
            limit = self.config.max_reconnect_attempts
            if limit is not None and attempts >= limit:
                self._close(AttemptsExhausted(attempts))
                return
            attempt, delay = self._backoff.next_delay(self.config)
        # The next attempt goes to the next URL: a node that went away (is
        # draining, or cannot be reached) is not waited for.
        self._endpoint = (self._endpoint + 1) % max(self.config.endpoints, 1)
        self._phase = _Waiting(until=min(now + delay, U64))
        self._set_state(Reconnecting(attempt, delay, code))

    def _close(self, reason: ClosedReason) -> None:
        self._phase = _ClosedPhase()
        self._session_id = None
        self._set_state(Closed(reason))

    def _requeue_unsent(self) -> None:
        """Commands the hub has not answered, then frames the driver never
        took, go back in front of the offline queue in the order they were
        sent; heartbeats and (un)subscribes are dropped (subscriptions are
        re-sent from state on the next ``welcome``)."""
        unsent = [
            frame
            for frame in (*self._unanswered, *self._transmit)
            if not isinstance(
                frame, (ClientFramePing, ClientFramePong, ClientFrameSubscribe, ClientFrameUnsubscribe)
            )
        ]
        self._unanswered.clear()
        self._transmit.clear()
        self._outbox.extendleft(reversed(unsent))
        self._trim_outbox()

    def _answered(self, ref: RequestId) -> None:
        """The hub answered the request ``ref``: the command is not sent again."""
        for at, frame in enumerate(self._unanswered):
            if _same_id(getattr(frame, "id", None), ref):
                del self._unanswered[at]
                return

    def _trim_outbox(self) -> None:
        while len(self._outbox) > self.config.offline_queue_capacity:
            self._dropped += 1
            self._events.append(FrameDropped(self._outbox.popleft()))

    def _wanted(self, event: Event) -> bool:
        """Whether a subscription covering ``event``'s topic lets it through
        with its own filter: the hub filters by what all the subscriptions
        sharing a topic let through, which is wider than each. Broadcasts
        (``global``) and users' messages (``user:…``) come to a connection by
        their audience, whatever it subscribed to, so events on those topics
        are all delivered (one a filter would hold back included); an event
        no subscription covers (a ``replay`` of another topic) was asked
        for."""
        if event.topic == "global" or event.topic.startswith("user:"):
            return True
        covering = [s for s in self._subscriptions if s.covers(event.topic)]
        return not covering or any(s.filter is None or filter_matches(s.filter, event) for s in covering)

    def _add_subscription(self, subscription: Subscription) -> None:
        _require_topics(subscription.topics)
        self._check_size(subscription.frame_without_since())
        wide = sent(self._subscriptions, subscription, self._frame_limit())
        if self._is_welcomed():
            frame, missed = wide.frame(self._checkpoints, self.config.max_since_bytes, self._frame_limit())
            # A topic another subscription covers is live already.
            if isinstance(self._phase, _Link):
                self._phase.unresumed.update(
                    t for t in missed if not any(s.covers(t) for s in self._subscriptions)
                )
            self._transmit.append(frame)
        self._subscriptions.append(subscription)

    def _covered_by_snapshot(self, event: Event) -> bool:
        """Whether ``event`` is replayed behind a ``snapshot`` that holds a
        newer or the same event of its key (then it is not delivered).
        Forgets the snapshot once the replay has passed it."""
        if not isinstance(self._phase, _Link):
            return False
        covered = self._phase.snapshots.get(event.topic)
        if covered is None:
            return False
        seq, keys = covered
        if event.seq > seq:
            del self._phase.snapshots[event.topic]
            return False
        return event.key is not None and keys.get(event.key, 0) >= event.seq

    def _take_unresumed(self, topic: str) -> bool:
        """Whether ``topic`` was left out of this link's resubscriptions and
        has not been heard of since (then it no longer is)."""
        if isinstance(self._phase, _Link) and topic in self._phase.unresumed:
            self._phase.unresumed.discard(topic)
            return True
        return False

    def _report_unresumed(self, topic: str, before: Checkpoint, epoch: str, seq: int) -> None:
        """An exact topic resubscribed without ``since`` is at ``seq`` of
        ``epoch`` while its checkpoint was ``before``: what lies between will
        not come."""
        # A checkpoint past the stream's seq is from another stream too
        # (``_adopt_stream`` restarts it there).
        same_stream = (before.epoch is None or before.epoch == epoch) and before.seq <= seq
        from_seq, reason = (before.seq + 1, "trimmed") if same_stream else (1, "epoch_changed")
        if seq >= from_seq:
            self._advance(topic, seq)
            self._events.append(Gap(topic=topic, from_seq=from_seq, to_seq=seq, reason=reason))

    def _check_size(self, frame: WireModel) -> None:
        """Refuses a frame the hub would close the connection for (1009)."""
        size = frame_bytes(frame)
        limit = self._frame_limit()
        if size > limit:
            raise FrameTooLargeError(size, limit)

    def _frame_limit(self) -> int:
        """The largest frame to send: ``config.max_frame_bytes``, or the hub's
        own limit from its ``welcome`` if that is lower."""
        if self._hub_frame_limit is None:
            return self.config.max_frame_bytes
        return min(self._hub_frame_limit, self.config.max_frame_bytes)

    def _refuse_oversized_subscriptions(self) -> list[ErrorFrame]:
        """Removes the subscriptions whose smallest frame is over the frame
        limit (the hub's ``welcome`` gave a lower one than they were checked
        against): sent, each would close the connection with 1009 on every
        reconnect. Returns a ``too_large`` refusal for each, naming its id."""
        refused: list[ErrorFrame] = []
        removed: list[str] = []
        kept: list[Subscription] = []
        for subscription in self._subscriptions:
            try:
                self._check_size(subscription.frame_without_since())
            except FrameTooLargeError as error:
                refused.append(_too_large(error, subscription.id))
                removed.extend(subscription.topics)
                continue
            kept.append(subscription)
        self._subscriptions = kept
        # The refused subscriptions' topics stay in the others that name them
        # too: only what no subscription covers any more is forgotten.
        self._forget_uncovered(removed)
        return refused

    def _remove_topics(self, topics: list[str], id: RequestId | None) -> None:
        _require_topics(topics)
        frame = ClientFrameUnsubscribe(id=id, topics=topics)
        self._check_size(frame)
        self._forget_topics(topics)
        if self._is_welcomed():
            self._transmit.append(frame)

    def _forget_topics(self, topics: list[str]) -> None:
        """Removes ``topics`` from every subscription and forgets the
        checkpoints of topics no subscription covers any more."""
        for subscription in self._subscriptions:
            subscription.topics = [p for p in subscription.topics if p not in topics]
        self._subscriptions = [s for s in self._subscriptions if s.topics]
        self._forget_uncovered(topics)

    def _forget_uncovered(self, topics: list[str]) -> None:
        """Forgets the checkpoints of the topics under ``topics`` (patterns no
        longer subscribed to) that no subscription covers any more."""

        def kept(topic: str) -> bool:
            return not any(pattern_matches(removed, topic) for removed in topics) or any(
                s.covers(topic) for s in self._subscriptions
            )

        self._checkpoints = {topic: checkpoint for topic, checkpoint in self._checkpoints.items() if kept(topic)}
        if isinstance(self._phase, _Link):
            self._phase.unresumed = {topic for topic in self._phase.unresumed if kept(topic)}

    def _write(self, topic: str, checkpoint: Checkpoint) -> Checkpoint:
        """Sets the checkpoint of ``topic`` as the most recently written: the
        dict keeps checkpoints in the order they were last written."""
        self._checkpoints.pop(topic, None)
        self._checkpoints[topic] = checkpoint
        return checkpoint

    def _keep_most_recent(self) -> None:
        """Once past the limit, forgets the least recently written
        checkpoints until an eighth of it is free again (as the Rust core,
        which sorts to find them), never one of a topic a subscription names."""
        limit = self.config.max_checkpoints
        if len(self._checkpoints) <= limit:
            return
        excess = len(self._checkpoints) - (limit - limit // 8)
        unnamed = [t for t in self._checkpoints if not any(s.names(t) for s in self._subscriptions)]
        for topic in unnamed[:excess]:
            del self._checkpoints[topic]

    def _accept_event(self, topic: str, seq: int) -> bool:
        checkpoint = self._checkpoints.get(topic)
        if checkpoint is None:
            self._write(topic, Checkpoint(seq))
            return True
        if seq <= checkpoint.seq:
            return False
        self._write(topic, checkpoint).seq = seq
        return True

    def _adopt_stream(self, topic: str, epoch: str, latest: int) -> Checkpoint:
        checkpoint = self._checkpoints.get(topic)
        if checkpoint is None:
            return self._write(topic, Checkpoint(latest, epoch))
        self._write(topic, checkpoint)
        other_stream = (checkpoint.epoch is not None and checkpoint.epoch != epoch) or checkpoint.seq > latest
        if other_stream:
            checkpoint.seq = latest
        checkpoint.epoch = epoch
        return checkpoint

    def _advance(self, topic: str, seq: int) -> None:
        checkpoint = self._write(topic, self._checkpoints.get(topic) or Checkpoint(seq))
        checkpoint.seq = max(checkpoint.seq, seq)

    def _set_state(self, state: ConnectionState) -> None:
        if self._state != state:
            self._state = state
            self._events.append(StateChanged(state))


_COMMANDS = (ClientFrameConfirm, ClientFrameCancel, ClientFramePause, ClientFrameResume)
"""Frames the application waits on (answered by ``ack`` or ``error``), sent
again if the link is lost before the answer."""


def _same_id(a: object, b: object) -> bool:
    """Request ids as the wire compares them: ``1`` and ``"1"`` differ, and
    so do ``True`` and ``1``."""
    return a is not None and type(a) is type(b) and a == b


def _require_topics(topics: list[str]) -> None:
    if not topics:
        raise NoTopicsError("a subscription needs at least one topic or pattern")


def _too_large(error: FrameTooLargeError, reference: RequestId | None) -> ErrorFrame:
    """The refusal of a frame the session did not send because it is over the
    hub's frame limit, as the hub would have named it."""
    return ErrorFrame(code="too_large", message=f"not sent: {error}", ref=reference)


def _shutdown_hint(event: Event) -> int | None:
    """The ``retry_after_ms`` of a hub's ``system.shutdown`` notice on ``global``."""
    if event.event_type != "system.shutdown" or event.topic != "global":
        return None
    data = event.data
    hint = data.get(RETRY_AFTER_MS) if isinstance(data, dict) else None
    if isinstance(hint, bool) or not isinstance(hint, int) or not 0 <= hint <= U64:
        return None
    return hint
