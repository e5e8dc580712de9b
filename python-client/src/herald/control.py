"""Control requests for a producer: ``control.cancel``, ``control.pause``,
``control.resume`` on a task's (or a run's) topic, as a user's browser sends
them (``{"action": "cancel", "task_id": "t1"}``).

::

    async with hub.control(task_id="t1") as requests:
        async for request in requests:
            if request.action == "cancel":
                stop_the_task(request.reason)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError

from ._http import Endpoint, Token
from ._session import SessionConfig
from .errors import InvalidRequestError
from .models import ControlRequest, Event, Snapshot
from .subscription import Subscription, SubscriptionItemNoGap

log = logging.getLogger("herald")

ControlAction = Literal["cancel", "pause", "resume"]

_ACTIONS: dict[str, ControlAction] = {
    "control.cancel": "cancel",
    "control.pause": "pause",
    "control.resume": "resume",
}


@dataclass(frozen=True)
class ControlCommand:
    """One control request for the producer to act on."""

    action: ControlAction
    """``cancel``, ``pause`` or ``resume``."""
    request: ControlRequest
    """``task_id`` / ``run_id``, ``reason``, ``requested_by`` (the user, when known)."""
    event: Event
    """The ``control.*`` event itself (topic, seq, id, timestamp)."""

    @property
    def reason(self) -> str | None:
        return self.request.reason

    @property
    def requested_by(self) -> str | None:
        return self.request.requested_by


class ControlStream:
    """The control requests of one task or run, live (see
    :meth:`herald.AsyncHerald.control`).

    Only ``control.*`` events of the stream's own :attr:`topic` are yielded.
    The hub delivers ``global`` (broadcasts) and the connection's
    ``user:{id}`` messages to every connection whatever it subscribed to, and
    a ``control.cancel`` there, whatever task its ``data`` names, is not a
    request for this task: it is skipped. A ``control.*`` event whose
    ``data`` is not a control request is skipped with a warning on the
    ``herald`` logger. A gap in the stream raises :class:`~herald.GapError`
    (a request may have been missed), except an empty one (the stream
    restarted, nothing was missed). If :meth:`open` (or ``async with``)
    raises, the stream is closed, socket included."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        task_id: str | None,
        run_id: str | None,
        since: int | None,
        config: SessionConfig | None,
        open_timeout: float,
    ) -> None:
        if (task_id is None) == (run_id is None):
            raise InvalidRequestError("name exactly one of task_id and run_id")
        self.topic = f"task:{task_id}" if task_id is not None else f"run:{run_id}"
        """The topic the requests are published on: ``task:{task_id}`` or ``run:{run_id}``."""
        resume: Mapping[str, Any] | None = None if since is None else {self.topic: since}
        self._subscription: Subscription[SubscriptionItemNoGap] = Subscription(
            endpoint,
            [self.topic],
            since=resume,
            filter={"types": ["control.*"]},
            gaps="raise",
            config=config,
            open_timeout=open_timeout,
        )

    async def __aenter__(self) -> ControlStream:
        await self._subscription.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ControlStream:
        return self

    async def __anext__(self) -> ControlCommand:
        while True:
            item = await self._subscription.__anext__()
            if isinstance(item, Snapshot) or item.topic != self.topic:
                # Broadcasts (`global`) and user messages reach every
                # connection: a control.* there is not this task's request.
                continue
            action = _ACTIONS.get(item.event_type)
            if action is None:
                continue  # a custom control.* type this version does not know
            try:
                request = ControlRequest.model_validate(item.data)
            except ValidationError as error:
                # Any producer may publish on the topic and the hub does not
                # check `data`: one malformed request must not end the loop
                # the task relies on to be stopped.
                log.warning(
                    "herald control: skipped %s on %s (seq %d): its data is not a control request: %s",
                    item.event_type,
                    item.topic,
                    item.seq,
                    error,
                )
                continue
            return ControlCommand(action=action, request=request, event=item)

    async def open(self) -> None:
        """Subscribes and waits for the hub's confirmation."""
        await self._subscription.open()

    async def aclose(self) -> None:
        """Stops listening."""
        await self._subscription.aclose()

    async def set_token(self, token: Token) -> None:
        """A fresh token; see :meth:`herald.Subscription.set_token`."""
        await self._subscription.set_token(token)

    @property
    def checkpoints(self) -> dict[str, Any]:
        """Where the stream is; see :attr:`herald.Subscription.checkpoints`."""
        return self._subscription.checkpoints
