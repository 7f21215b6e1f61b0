"""Client-side pacing: never more than the budget's requests in any one-second window.

Stripe answers 429 past roughly 25 requests per second in test mode and 100 in live mode
(DESIGN §7), counted per second. Retrying 429s works but wastes the budget on rejected calls;
pacing ourselves keeps an apply of thousands of objects at the budget with no failed requests.

A token bucket is not enough: one holding a second's worth lets an idle client send that
burst and then, refilling continuously, nearly another second's worth within the same second
(about 2x the budget in the first window; `bench/catalog.py` saw 1.08x over a short apply).
So the limiter remembers the last N send times and holds each request until the N-th most
recent one is a full window old: every window of that length holds at most N, and a steady
stream still runs at N per window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

KeyMode = Literal["test", "live"]

DEFAULT_BUDGET: dict[KeyMode, int] = {"test": 25, "live": 100}

DEFAULT_MARGIN_SECONDS: Final[float] = 0.02
"""Added to the window. Stripe counts arrivals, which come a few milliseconds after we let a
request through and not all equally late; without slack, a request delayed a little more
than the one N after it puts N+1 in one of Stripe's seconds. The emulator's arrival log in
`bench/catalog.py` is the check."""


def default_rate_limit(mode: KeyMode) -> int:
    """Stripe's documented per-account budget for keys of this mode."""
    return DEFAULT_BUDGET[mode]


class RateLimiter:
    """At most `per_second` requests in any one-second window (a sliding window log).

    The log holds the times requests were let through, measured after any wait: a caller
    that wakes late (scheduler, GIL) counts from when it really went, so lateness can never
    squeeze N+1 sends into a window. Thread-safe, and callers go in arrival order: each takes
    a ticket and only the oldest ticket may pass, sleeping (outside the lock) until its slot.
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"rate limit must be positive, got {per_second}")
        if margin_seconds < 0:
            raise ValueError(f"margin must not be negative, got {margin_seconds}")
        self.per_second = float(per_second)
        self._clock = clock
        self._sleep = sleep
        # A fractional budget (0.5/s) becomes 1 request per 2 s: a whole request per window.
        self._capacity = max(1, math.floor(self.per_second))
        self._window = self._capacity / self.per_second + margin_seconds
        self._sent: deque[float] = deque(maxlen=self._capacity)
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> float:
        """Wait until one more request fits the budget; returns the seconds waited."""
        with self._turn:
            ticket = self._next_ticket
            self._next_ticket += 1
            started = self._clock()
        while True:
            with self._turn:
                while ticket != self._serving:
                    self._turn.wait()
                now = self._clock()
                wait = self._wait_for_slot(now)
                if wait <= 0:
                    self._sent.append(now)  # maxlen drops the oldest, no longer needed
                    self._serving += 1
                    self._turn.notify_all()
                    return now - started
            # Only the head of the queue sleeps, and without the lock, so callers can
            # still take tickets meanwhile; it re-checks the clock when it wakes.
            self._sleep(wait)

    def _wait_for_slot(self, now: float) -> float:
        if len(self._sent) < self._capacity:
            return 0.0
        return self._sent[0] + self._window - now
