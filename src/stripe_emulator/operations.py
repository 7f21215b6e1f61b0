"""Operator-controlled behaviour: request log, injected latency, rate limit and faults."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["500", "timeout", "drop_after_commit"]
FAULT_KINDS: tuple[str, ...] = ("500", "timeout", "drop_after_commit")
_LOG_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One API request as the request log records it."""

    method: str
    path: str
    status: int
    idempotency_key: str | None
    timestamp: float
    request_id: str
    replayed: bool

    def as_json(self) -> dict[str, Any]:
        """JSON form for `/_emulator/requests`."""
        return asdict(self)


class RequestLog:
    """The last requests to `/v1/*`, newest last (bounded, so benchmarks don't grow it)."""

    def __init__(self) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=_LOG_LIMIT)
        self._lock = threading.Lock()

    def add(self, entry: LoggedRequest) -> None:
        """Record a finished request."""
        with self._lock:
            self._entries.append(entry)

    def entries(self, *, method: str | None, path_prefix: str | None) -> list[LoggedRequest]:
        """Recorded requests, optionally filtered."""
        with self._lock:
            return [
                e
                for e in self._entries
                if (method is None or e.method == method.upper())
                and (path_prefix is None or e.path.startswith(path_prefix))
            ]

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


class RateLimiter:
    """Stripe's request rate limiter, a token bucket; `per_second=None` means unlimited.

    The bucket holds up to `capacity` tokens (the `burst`, by default `per_second`) and
    refills continuously at `per_second` tokens a second; a request takes one token, or is
    refused (429) when less than one is left. A client that sends N requests a second evenly
    never runs dry however its requests jitter within the second; a burst of more than
    `capacity` at once is refused past the capacity. Stripe's engineering blog ("Scaling your
    API with rate limiters") describes its request rate limiter as a token bucket, and its
    rate-limits docs give the limits per second with bursts tolerated.

    Time is `clock()` (monotonic seconds by default; tests pass their own), never the
    emulator clock: moving that by a month must not refill or drain the bucket."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.per_second: int | None = None
        self.burst: int | None = None
        self._tokens = 0.0
        self._updated = 0.0

    @property
    def capacity(self) -> int | None:
        """How many tokens a full bucket holds (None: unlimited)."""
        if self.per_second is None:
            return None
        return self.burst if self.burst is not None else self.per_second

    def configure(self, per_second: int | None, burst: int | None = None) -> None:
        """Refill `per_second` tokens a second into a bucket of `burst` (default
        `per_second`); the bucket starts full. `per_second=None` turns the limit off."""
        if per_second is not None and per_second < 1:
            raise ValueError("per_second must be a positive integer or None")
        if burst is not None and burst < 1:
            raise ValueError("burst must be a positive integer or None")
        with self._lock:
            self.per_second = per_second
            self.burst = None if per_second is None else burst
            self._tokens = float(self.capacity or 0)
            self._updated = self._clock()

    def allow(self) -> bool:
        """Take one token for a request; False when none is left (answer 429)."""
        with self._lock:
            capacity = self.capacity
            if self.per_second is None or capacity is None:
                return True
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._updated = max(self._updated, now)
            self._tokens = min(float(capacity), self._tokens + elapsed * self.per_second)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass(slots=True)
class Fault:
    """Fail the `nth` request (1-based) matching method and path prefix, once."""

    method: str
    path_prefix: str
    nth: int
    kind: FaultKind
    seen: int = 0
    fired: bool = False

    def as_json(self) -> dict[str, Any]:
        """JSON form for `/_emulator/faults`."""
        return asdict(self)


class FaultPlan:
    """The armed faults; each request asks which one (if any) fires for it."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Arm a fault."""
        self.faults.append(fault)

    def clear(self) -> None:
        """Disarm every fault."""
        self.faults.clear()

    def fire(self, method: str, path: str) -> FaultKind | None:
        """Count this request against every matching fault; the kind of one that fires."""
        fired: FaultKind | None = None
        for fault in self.faults:
            if fault.fired or fault.method != method or not path.startswith(fault.path_prefix):
                continue
            fault.seen += 1
            if fault.seen == fault.nth and fired is None:
                fault.fired = True
                fired = fault.kind
        return fired


@dataclass(slots=True)
class Settings:
    """Operator knobs that are not faults."""

    latency_ms: float = 0.0
    # How long a `timeout` fault hangs before giving up (a client should time out first).
    hang_seconds: float = 30.0
