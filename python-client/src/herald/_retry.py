"""How HTTP calls are retried: exponential backoff, jittered within [cap/2, cap]."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for retryable failures (connection errors, timeouts, 5xx, 429).

    A publish carries its event ``id`` from the first attempt on, so a retry
    is never stored or delivered twice. Every field states its default.
    """

    max_attempts: int = 8
    """Attempts in all, the first included; 1 disables retries."""
    initial_delay: float = 0.1
    """Seconds: the delay cap before the second attempt; it doubles after."""
    max_delay: float = 5.0
    """Seconds: the largest delay cap (with the defaults, about 11 s in all)."""

    def delay_cap(self, attempt: int) -> float:
        """The delay cap after failed attempt ``attempt`` (1-based)."""
        return min(self.max_delay, self.initial_delay * float(1 << min(max(attempt - 1, 0), 62)))

    def delay(self, attempt: int) -> float:
        """Uniform in ``[cap / 2, cap]``: retries spread out, never all at once."""
        cap = self.delay_cap(attempt)
        return cap / 2 + random.uniform(0, cap / 2)

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(max_attempts=1)
