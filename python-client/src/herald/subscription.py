"""A reconnecting WebSocket subscription, driven by the sans-IO session core.

The policy (reconnect with backoff and jitter, heartbeat, resubscribe with
``since`` per topic, no duplicate at the seam, gaps) is
:class:`herald._session.Session`'s, the same as the Rust and browser
clients'; this module only carries it out over a ``websockets`` socket.
It runs no background task: the socket is read, and the session's timers
fire, while the consumer waits for the next item.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, Union

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode
from websockets.protocol import State

from ._http import Endpoint, Token, current_token, ws_headers, ws_refusal
from ._session import (
    AttemptsExhausted,
    Close,
    Closed,
    Connect,
    ConnectionState,
    ForeignErrorFrame,
    FrameDecodeError,
    FrameTooLargeError,
    Open,
    Reconnecting,
    Session,
    SessionConfig,
    StateChanged,
    Terminal,
    checkpoints_from_json,
    checkpoints_to_json,
)
from ._timeout import within
from .errors import (
    GapError,
    HubError,
    InvalidRequestError,
    InvalidTopicError,
    SubscriptionClosedError,
    TooLargeError,
    TransportError,
    hub_error,
    refused_before_sending,
)
from .models import ClientFrameAuth, ErrorFrame, Event, EventFilter, Gap, Snapshot, Subscribed

log = logging.getLogger("herald")

SubscriptionItem = Union[Event, Gap, Snapshot]
"""What a subscription yields: events, gaps, and snapshots when asked for."""

SubscriptionItemNoGap = Union[Event, Snapshot]
"""What a subscription opened with ``gaps="raise"`` yields."""

Gaps = Literal["yield", "raise"]

T = TypeVar("T")

# Close codes the driver uses.
_NORMAL = 1000

MAX_FRAME_BYTES = 64 * 1024 * 1024
"""The largest frame a subscription accepts from the hub: 64 MiB, what the
Rust client's tungstenite allows by default. The hub's own frames are far
smaller (an event is at most ``--max-body-size``, 1 MiB by default); the
limit keeps a broken or hostile peer from making the client buffer without
bound. A larger frame closes the connection with 1009, which ends the
subscription (:class:`~herald.SubscriptionClosedError`, ``code`` 1009):
reconnecting would only replay the same frame."""


class Subscription(Generic[T]):
    """Events of some topics, in ``seq`` order per topic, each once, across
    reconnects and hub restarts; what cannot be recovered is a
    :class:`~herald.models.Gap` (or a :class:`~herald.GapError`).

    ::

        async with hub.subscribe(["execution:*"], since=saved) as events:
            async for item in events:
                if isinstance(item, herald.Event):
                    ...
                saved = events.checkpoints      # persist to resume later

    ``async with`` returns once the hub confirmed every topic (events after
    that are not missed); leaving it closes the socket. Iterating without
    ``async with`` connects on the first item (call :meth:`aclose` after).
    An ``error`` frame from the hub (e.g. ``forbidden``) is raised as a
    :class:`~herald.HubError`; a terminal close or exhausted reconnect
    attempts end the iteration with :class:`~herald.SubscriptionClosedError`.
    After an error raised by the iteration the subscription still works:
    iterate again. An error raised by :meth:`open` (and so by ``async
    with``) closes the subscription and its socket first: nothing is left
    open for a caller that never got the subscription to close.

    With ``gaps="raise"``, a gap is raised as :class:`~herald.GapError`,
    an empty ``epoch_changed`` one too (``to_seq < from_seq``: the topic's
    stream was replaced, and what the old one held after the checkpoint is
    gone, whatever it was); the checkpoint moves to the new stream, as the
    session core says, and iterating again goes on with it.

    A reconnection the hub refuses (HTTP 401 or 403: the token expired or
    was revoked) while the client's token is a fixed string ends the
    iteration with :class:`~herald.UnauthorizedError` /
    :class:`~herald.ForbiddenError`: retrying the same token would be
    refused forever. :meth:`set_token` then resumes it (iterate again). With
    a token callable, refused reconnections are retried with backoff, each
    with what the callable gives.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        topics: list[str],
        *,
        since: int | Mapping[str, Any] | None = None,
        filter: EventFilter | Mapping[str, Any] | None = None,
        snapshot: bool = False,
        gaps: Gaps = "yield",
        config: SessionConfig | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        if gaps not in ("yield", "raise"):
            raise InvalidRequestError(f'gaps must be "yield" or "raise", got {gaps!r}')
        self._endpoint = endpoint
        self._topics = list(topics)
        self._gaps = gaps
        self._open_timeout = open_timeout
        # One session endpoint per node URL: the session moves to the next
        # one on each reconnect.
        config = dataclasses.replace(config or SessionConfig(), endpoints=len(endpoint.urls))
        self._session = Session(config, random.getrandbits(64))
        if isinstance(since, int):
            # A pattern's topics are not known before their events arrive,
            # so one seq can only mean something for exact topics.
            exact = [t for t in self._topics if "*" not in t]
            if not exact:
                raise InvalidRequestError(
                    "since=N resumes exact topics only and none is given: a pattern resumes from "
                    "checkpoints (since=events.checkpoints of an earlier subscription)"
                )
            since = {t: since for t in exact}
        try:
            if since:
                self._session.restore_checkpoints(checkpoints_from_json(dict(since)))
            flt = filter if isinstance(filter, EventFilter) or filter is None else EventFilter.model_validate(filter)
        except ValidationError as error:
            raise refused_before_sending(error) from error
        try:
            self._session.subscribe(self._topics, flt, snapshot)
        except ValidationError as error:
            raise InvalidTopicError(f"refused before connecting: {error}") from error
        except FrameTooLargeError as error:
            raise TooLargeError(f"refused before connecting: {error}") from error
        self._socket: ClientConnection | None = None
        self._clock = time.monotonic()
        self._ready: deque[Any] = deque()
        self._confirmed: set[str] = set()
        self._ever_open = False
        self._first_failures = 0
        self._closed = False
        self._oversized = False
        self._token: Token | None = endpoint.token
        self._ended_with: int | None = None
        """The close code the last connection ended with: what the session's
        ``Reconnecting`` state keeps saying while reconnection attempts fail
        (they end without one)."""
        self._refused = False
        """Closed because a reconnection was refused for its fixed token."""

    # ---- the consumer's side ----

    async def __aenter__(self) -> Subscription[T]:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            await self._turn()
            if self._ready:
                item = self._ready.popleft()
                if isinstance(item, BaseException):
                    raise item
                result: T = item
                return result
            if self._closed:
                raise StopAsyncIteration
            await self._wait()

    async def open(self) -> None:
        """Connects and waits until the hub confirmed every topic (bounded by
        ``open_timeout``). Raises :class:`~herald.TransportError` when the hub
        cannot be reached or does not confirm in time,
        :class:`~herald.HubError` when it refuses a topic. Whatever it raises
        (a cancellation too), the subscription is closed first, socket
        included: make a new one to try again."""
        try:
            await self._open()
        except BaseException:
            # `async with` does not exit a failed enter, so the caller never
            # gets the subscription to close: close it here, or its socket
            # stays open (the hub counts it against its connection limits).
            await self.aclose()
            raise

    async def _open(self) -> None:
        deadline = time.monotonic() + self._open_timeout
        while True:
            await self._turn()
            for item in list(self._ready):
                if isinstance(item, (HubError, SubscriptionClosedError)):
                    self._ready.remove(item)
                    raise item
            if set(self._topics) <= self._confirmed:
                return
            if self._closed:
                raise SubscriptionClosedError("the subscription closed before the hub confirmed it")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(self._topics) - self._confirmed)
                raise TransportError(
                    f"{self._endpoint.ws_url(node=self._session.endpoint)} did not confirm {missing} within {self._open_timeout} s",
                    attempts=1,
                )
            await self._wait(limit=remaining)

    async def aclose(self) -> None:
        """Closes the socket (1000); nothing more is yielded."""
        self._closed = True  # from here on, no Connect is carried out
        self._refused = False  # and set_token does not reopen it
        self._session.disconnect()
        await self._turn()
        self._ready.clear()

    async def set_token(self, token: Token) -> None:
        """A fresh token (a str, or a callable as ``AsyncHerald(token=...)``
        takes): every connection from now on uses it, and an open one sends
        it to the hub at once (the ``auth`` frame), which keeps the
        connection past the old token's expiry (the hub closes it with 4001
        otherwise). A hub that refuses the new token answers with an
        ``error`` frame, raised by the iteration. A subscription that ended
        because a reconnection was refused resumes: iterate again."""
        self._token = token
        if self._refused:
            self._refused = False
            self._closed = False
            self._session.reconnect()
            return
        if isinstance(self._session.state, Open) and self._socket is not None:
            fresh = await current_token(token)
            if fresh:
                self._session.send_frame(ClientFrameAuth(token=fresh))
                await self._flush()

    @property
    def checkpoints(self) -> dict[str, Any]:
        """Per topic, the last ``seq`` delivered and its stream's ``epoch``:
        ``{topic: {"seq": N, "epoch": "..."}}``. Persist it and pass it as
        ``since=`` to resume where this left off."""
        return checkpoints_to_json(self._session.checkpoints)

    @property
    def state(self) -> ConnectionState:
        """The connection state (connecting, open, reconnecting, closed)."""
        return self._session.state

    @property
    def session_id(self) -> str | None:
        """The current connection's id (also its id in the admin API)."""
        return self._session.session_id

    # ---- the driver ----

    def _now(self) -> int:
        return int((time.monotonic() - self._clock) * 1000)

    async def _turn(self) -> None:
        """Carries out everything the session asks until it asks nothing more."""
        session = self._session
        while True:
            busy = False
            while (action := session.poll_action()) is not None:
                busy = True
                if isinstance(action, Connect):
                    if not self._closed:
                        await self._connect()
                elif isinstance(action, Close):
                    await self._close_socket(action.code)
            if await self._flush():
                busy = True
            while (event := session.poll_event()) is not None:
                busy = True
                self._deliver(event)
            if not busy:
                return

    async def _flush(self) -> bool:
        """Sends the frames the session has for the socket; whether there were any."""
        busy = False
        while (frame := self._session.poll_transmit()) is not None:
            socket = self._socket
            if socket is None:
                # Kept for the next connection, once the session hears this
                # one is gone.
                self._session.handle_unsent(frame)
                break
            busy = True
            try:
                async with within(self._send_limit()):
                    await socket.send(frame.to_json())
            except websockets.exceptions.ConnectionClosed as closed:
                # The frame goes again on the next connection (a command)
                # or is made anew (a subscription, a ping).
                self._session.handle_unsent(frame)
                if socket is self._socket:
                    self._lost(closed)
            except asyncio.TimeoutError:
                # A link that cannot take one frame in a heartbeat interval
                # is dead (its send buffer stays full): drop it and let the
                # session reconnect.
                self._session.handle_unsent(frame)
                if socket is self._socket:
                    self._abandon()
        return busy

    def _deliver(self, event: object) -> None:
        if isinstance(event, Event):
            self._ready.append(event)
        elif isinstance(event, Gap):
            self._ready.append(GapError(event) if self._gaps == "raise" else event)
        elif isinstance(event, Snapshot):
            self._ready.append(event)
        elif isinstance(event, Subscribed):
            self._confirmed.add(event.topic)
        elif isinstance(event, ErrorFrame):
            code = event.hub_code if isinstance(event, ForeignErrorFrame) else event.code
            self._ready.append(hub_error(code, event.message, ref=event.ref))
            if not self._session.subscriptions:
                # Its subscription was refused for the hub's frame limit
                # (the session dropped it): nothing more can come.
                self._closed = True
                self._session.disconnect()
        elif isinstance(event, StateChanged):
            log.debug("herald subscription: %s", event.state)
            if isinstance(event.state, Reconnecting) and event.state.code is not None:
                self._ended_with = event.state.code
            if isinstance(event.state, Closed):
                reason = event.state.reason
                if isinstance(reason, Terminal):
                    if reason.code == CloseCode.MESSAGE_TOO_BIG and self._oversized:
                        message = f"the hub sent a frame over the {MAX_FRAME_BYTES}-byte limit (closed 1009)"
                    else:
                        message = f"the hub closed the connection ({reason.code})"
                    self._ready.append(SubscriptionClosedError(message, code=reason.code))
                elif isinstance(reason, AttemptsExhausted):
                    self._ready.append(
                        SubscriptionClosedError(f"gave up after {reason.attempts} reconnect attempts")
                    )
                self._closed = True

    async def _connect(self) -> None:
        url = self._endpoint.ws_url(node=self._session.endpoint)
        try:
            token = await current_token(self._token)
            self._socket = await websockets.connect(
                url,
                additional_headers=ws_headers(token),
                open_timeout=self._open_timeout,
                # The session's own heartbeat decides when a link is dead.
                ping_interval=None,
                max_size=MAX_FRAME_BYTES,
            )
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError) as error:
            if not self._ever_open:
                self._first_failures += 1
            if not self._ever_open and self._first_failures >= len(self._endpoint.urls):
                # The first connection fails at once when no node answers (a
                # wrong URL should not retry forever); later ones are the
                # session's to retry, on the next node.
                self._closed = True
                self._session.disconnect()
                await self._turn()
                self._ready.clear()
                refusal = ws_refusal(error)
                if refusal is not None:
                    raise refusal from error
                nodes = len(self._endpoint.urls)
                tried = url if nodes == 1 else "any of " + ", ".join(self._endpoint.ws_url(node=i) for i in range(nodes))
                raise TransportError(f"could not connect to {tried}: {error!r}", attempts=nodes) from error
            refusal = ws_refusal(error)
            if refusal is not None and self._ever_open and not callable(self._token):
                # A fixed token (or none) stays refused: end the iteration
                # with the refusal, after what was already received.
                self._refused = True
                self._closed = True
                self._session.disconnect()
                self._ready.append(
                    hub_error(
                        refusal.code,
                        f"the hub refused to reconnect the subscription (HTTP {refusal.status}): its token expired or "
                        "was revoked; pass a fresh one to set_token() and iterate again, or give a token callable",
                        status=refusal.status,
                    )
                )
                return
            log.debug("herald subscription: connecting to %s failed: %r", url, error)
            self._attempt_failed()
            return
        except BaseException:
            # The consumer stopped waiting mid-attempt (cancelled), or the
            # token callable failed: a failed attempt, so the next wait
            # retries after the backoff.
            self._attempt_failed()
            raise
        self._ever_open = True
        self._ended_with = None
        self._session.handle_connected(self._now())

    def _attempt_failed(self) -> None:
        """A connection attempt failed: it has no close code of its own, so
        the session's ``Reconnecting`` state goes on carrying the one the
        last connection ended with (4001 for an expired token)."""
        self._session.handle_closed(self._ended_with, self._now())

    async def _close_socket(self, code: int) -> None:
        socket, self._socket = self._socket, None
        if socket is None:
            return
        try:
            async with within(1.0):
                await socket.close(code)
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            pass
        finally:
            if socket.protocol.state is not State.CLOSED:
                # The closing handshake was cut short (the hub did not answer
                # within the bound, or the caller was cancelled): drop the
                # connection rather than leave it open with nobody reading it.
                socket.transport.abort()

    def _send_limit(self) -> float:
        """Seconds one frame may take to send: a heartbeat interval (the
        open timeout when the heartbeat is off)."""
        interval = self._session.config.heartbeat_interval_ms
        return interval / 1000 if interval > 0 else self._open_timeout

    def _abandon(self) -> None:
        """Drops a socket that stopped taking frames, without a closing
        handshake (that would wait on the same full buffer)."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.transport.abort()
        self._session.handle_closed(None, self._now())

    def _lost(self, closed: websockets.exceptions.ConnectionClosed) -> None:
        self._socket = None
        code = closed.rcvd.code if closed.rcvd is not None else None
        if code is None and closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG:
            # The client closed it: a frame over MAX_FRAME_BYTES.
            code = CloseCode.MESSAGE_TOO_BIG
            self._oversized = True
        self._ended_with = code
        self._session.handle_closed(code, self._now())

    async def _wait(self, limit: float | None = None) -> None:
        """Waits for one input (a frame, the socket closing, or the session's
        deadline) and hands it to the session."""
        deadline = self._session.poll_timeout()
        timeout = None if deadline is None else max(deadline - self._now(), 0) / 1000
        if limit is not None:
            timeout = limit if timeout is None else min(timeout, limit)
        if self._socket is None:
            if timeout is None:
                # Nothing can happen any more: the session is closed.
                self._closed = True
                return
            await asyncio.sleep(timeout)
            self._session.handle_timeout(self._now())
            return
        try:
            # A frame already buffered is read before an overdue timer fires.
            async with within(None if timeout is None else max(timeout, 0.005)):
                message = await self._socket.recv()
        except asyncio.TimeoutError:
            self._session.handle_timeout(self._now())
            return
        except websockets.exceptions.ConnectionClosed as closed:
            self._lost(closed)
            return
        if isinstance(message, bytes):
            return  # binary frames are not part of the protocol
        try:
            self._session.handle_text(message, self._now())
        except FrameDecodeError as error:
            log.warning("herald subscription: skipped a frame that does not decode: %s", error)

