"""Client-side pacing: a token bucket that keeps us under the account's request budget.

Stripe answers 429 past roughly 25 requests per second in test mode and 100 in live mode
(DESIGN §7). Retrying 429s works but wastes the budget on rejected calls; pacing ourselves
keeps an apply of thousands of objects close to the budget with no failed requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

KeyMode = Literal["test", "live"]

DEFAULT_BUDGET: dict[KeyMode, int] = {"test": 25, "live": 100}


def default_rate_limit(mode: KeyMode) -> int:
    """Stripe's documented per-account budget for keys of this mode."""
    return DEFAULT_BUDGET[mode]


class RateLimiter:
    """A token bucket of `per_second` tokens refilled continuously; one token per request.

    The bucket holds at most one second's worth, so an idle client may burst that much and
    no more. Thread-safe: the controller may share one gateway between workers.
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"rate limit must be positive, got {per_second}")
        self.per_second = float(per_second)
        self._clock = clock
        self._sleep = sleep
        self._capacity = max(self.per_second, 1.0)
        self._tokens = self._capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        with self._lock:
            wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def _reserve(self) -> float:
        # Reserving (letting tokens go negative) instead of looping keeps waiters in order and
        # lets us sleep outside the lock.
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.per_second
