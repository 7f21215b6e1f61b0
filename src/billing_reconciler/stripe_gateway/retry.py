"""Bounded retries of transient Stripe failures: capped exponential backoff, full jitter.

Only `TransientStripeError` is retried (STYLE 8); a permanent error propagates at once. The
caller's closure is re-invoked unchanged, so a write carries the same idempotency key on every
attempt: if an attempt was committed by Stripe but its response was lost, the retry replays
Stripe's stored response instead of creating a duplicate (DESIGN §7).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from billing_reconciler.stripe_gateway.errors import TransientStripeError

T = TypeVar("T")

RetryHook = Callable[[int, TransientStripeError, float], None]
"""Called as `(retry_number, error, delay_seconds)` before each retry's sleep."""


@dataclass(frozen=True, slots=True)
class Attempted(Generic[T]):
    """A call's result and how many retries it took to get it."""

    value: T
    retries: int


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` total attempts (1 = no retry); delays in seconds.

    The n-th retry waits a uniform random time in [0, min(max_delay, base_delay * 2**n)]
    ("full jitter", so a fleet of clients hit by the same 429 storm spreads out), or the
    server's `Retry-After` when it sent one, capped by `max_retry_after`.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, retry_number: int, error: TransientStripeError) -> float:
        """Seconds to wait before retry number `retry_number` (0-based)."""
        if error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * (2**retry_number))
        return self.rng.uniform(0.0, ceiling)

    def run(self, attempt: Callable[[], T], *, on_retry: RetryHook | None = None) -> Attempted[T]:
        """Call `attempt` until it succeeds, raises a permanent error, or attempts run out.

        `on_retry(retry_number, error, delay)` runs before each backoff sleep, so a caller can
        say what it is waiting for while it waits (not only after the last attempt failed).
        """
        for retry_number in range(self.max_attempts):
            try:
                return Attempted(attempt(), retry_number)
            except TransientStripeError as error:
                if retry_number + 1 >= self.max_attempts:
                    raise
                delay = self.delay(retry_number, error)
                if on_retry is not None:
                    on_retry(retry_number, error, delay)
                self.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")


NO_RETRY = RetryPolicy(max_attempts=1)
