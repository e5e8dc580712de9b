"""The one way this package bounds an await: ``async with within(seconds):``.

``asyncio.wait_for`` is not used: on Python 3.10 and 3.11 it can swallow a
cancellation of the calling task when the awaited operation completes in the
same loop iteration (the task then goes on as if never cancelled, and a
cancelled subscription keeps its socket forever). ``asyncio.timeout``
(3.11+) and the ``async-timeout`` package (3.10) re-raise such a
cancellation. Both raise ``asyncio.TimeoutError`` (the built-in
``TimeoutError`` from 3.11 on) when the time runs out.
"""

from __future__ import annotations

import sys
from contextlib import AbstractAsyncContextManager
from typing import Any

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:
    from async_timeout import timeout as _timeout


def within(seconds: float | None) -> AbstractAsyncContextManager[Any]:
    """A context that cancels its body after ``seconds`` (never when None)
    and then raises ``asyncio.TimeoutError``; a cancellation from outside
    always propagates."""
    return _timeout(seconds)
