"""Fire-and-forget events over the hub's Unix datagram socket
(``herald serve --unix-socket PATH``), for processes on the hub's machine
that must never wait for it: seed 003's state machines.

::

    events = herald.UnixPublisher("/tmp/statemachine-events.sock")
    events.publish("machine:worker-123", "state.changed", {"state": "processing"}, key="worker-123")
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading

from . import _http
from ._http import Data
from pydantic import ValidationError

from .errors import InvalidDataError, refused_before_sending
from .models import EventType, Priority, PublishRequest, Topic

log = logging.getLogger("herald")

MAX_DATAGRAM = 64 * 1024
"""The largest datagram sent, in bytes; a larger event is dropped (and counted)."""


class UnixPublisher:
    """Sends one JSON event per datagram (the ``POST /api/v1/events`` shape).

    :meth:`publish` never blocks and never raises for the hub's sake: when
    the hub is down (no socket, or nobody reading it), its buffer is full,
    or the event is over :data:`MAX_DATAGRAM`, the event is dropped and
    counted in :attr:`dropped`. There is no receipt and no retry: use
    :class:`herald.Herald` when delivery matters. Safe to share between
    threads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._lock = threading.Lock()
        self.sent = 0
        """Events the kernel took (the hub may still refuse one)."""
        self.dropped = 0
        """Events dropped: hub down, buffer full, too large, or a value in
        ``data`` the hub could not pass on as it is (NaN, ±Infinity, an
        integer outside 64 bits)."""

    def publish(
        self,
        topic: Topic,
        event_type: EventType,
        data: Data = None,
        *,
        key: str | None = None,
        priority: Priority | None = None,
        source: str | None = None,
        timestamp: int | None = None,
    ) -> bool:
        """Sends the event as one datagram, or drops it; True when the kernel
        took it. An invalid topic or other field still raises
        (:class:`~herald.InvalidTopicError` / :class:`~herald.InvalidRequestError`,
        each also a ``ValueError``: that is the caller's bug, not the hub's
        state). NaN or ±Infinity anywhere in ``data`` drops the event and
        counts it (JSON has no such numbers, and sending ``null`` instead
        would change the data), and so does an integer outside the 64-bit
        range (the hub would turn it into a float)."""
        try:
            # A payload model's wire form turns NaN into null: check it as given.
            _http.require_exact_json(data, "data")
        except InvalidDataError as error:
            log.debug("herald unix datagram dropped: %s", error)
            return self._count(False)
        try:
            request = PublishRequest(
                topic=topic,
                event_type=event_type,
                data=_http.as_data(data),
                key=key,
                priority=priority or "normal",
                source=source,
                timestamp=timestamp,
            )
        except ValidationError as error:
            raise refused_before_sending(error) from error
        return self.send(request)

    def send(self, request: PublishRequest) -> bool:
        """Sends a prepared request (see :meth:`publish`)."""
        try:
            # Checked on the data as given: its wire form has already turned
            # NaN and infinities into null, which would change the data.
            _http.require_exact_json(request.data, "data")
            payload = _http.encode(request.to_wire())
        except ValueError as error:  # a value the hub could not pass on (InvalidDataError is a ValueError)
            log.debug("herald unix datagram dropped: %s", error)
            return self._count(False)
        if len(payload) > MAX_DATAGRAM:
            log.debug("herald unix datagram of %d bytes over the limit dropped", len(payload))
            return self._count(False)
        try:
            sent = self._socket.sendto(payload, self.path)
        except OSError as error:
            # ENOENT/ECONNREFUSED: no hub; EAGAIN/ENOBUFS: its queue is full.
            if error.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOBUFS, errno.EMSGSIZE):
                log.debug("herald unix datagram dropped: %s", error)
            return self._count(False)
        return self._count(sent == len(payload))

    def _count(self, sent: bool) -> bool:
        with self._lock:
            if sent:
                self.sent += 1
            else:
                self.dropped += 1
        return sent

    def close(self) -> None:
        """Closes the sending socket."""
        self._socket.close()

    def __enter__(self) -> UnixPublisher:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()
