"""Operator-controlled behaviour: request log, injected latency, rate limit and faults."""

from __future__ import annotations

import threading
import time
from collections import deque
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
    """At most N requests per wall-clock second; `None` means unlimited."""

    def __init__(self) -> None:
        self.per_second: int | None = None
        self._window = 0
        self._count = 0

    def allow(self) -> bool:
        """Count one request; False when it is over the limit (answer 429)."""
        if self.per_second is None:
            return True
        window = int(time.monotonic())
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        return self._count <= self.per_second


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
