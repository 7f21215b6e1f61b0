"""Liveness and readiness probes: `/healthz` (the process answers) and `/readyz`.

Readiness is decided by the runtime core: the store answers and `desired/` is valid. A
failing reconcile is reported in the body (`reconcile:<domain>`, from `ReconcileHealth`) but
does not make the replica unready: every replica shares the store and Stripe, so a domain that
keeps failing fails on all of them, and taking them all out of service would stop the API too
without fixing the reconcile. The probe runs in FastAPI's thread pool because the checks may
touch the database.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from billing_reconciler.config import redact

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether this replica should receive traffic, and each check's verdict (`ok` or why not)."""

    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


ReadinessProbe = Callable[[], Readiness]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]*@")


# A quoted error is cut to this many characters.
_ERROR_CHARS = 300


@dataclass(slots=True)
class _Failure:
    since: float
    runs: int
    error: str


class ReconcileHealth:
    """What the recent runs of each domain say, for `reconcile:<domain>` (thread-safe).

    A failure is kept per scope key of the run that failed (`None` for a whole-domain run). A
    success clears what it covers: a whole-domain run every failure of its domain, a targeted
    run the failures of its own scope keys. So a member change's targeted run that succeeds
    never hides a whole-domain pass (or another customer's run) that keeps failing, and when
    a failed batch is run again request by request, only the keys that fail again stay. The
    verdict names the oldest failure standing.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, dict[str | None, _Failure]] = {}

    def failed(self, domain: str, scope: frozenset[str] | None, error: str) -> None:
        """A run of `domain` over `scope` raised `error` (its text; scrubbed when served)."""
        now = self._clock()
        with self._lock:
            failures = self._failures.setdefault(domain, {})
            for key in [None] if scope is None else sorted(scope):
                failure = failures.get(key)
                if failure is None:
                    failures[key] = _Failure(now, 1, error[:_ERROR_CHARS])
                else:
                    failure.runs += 1
                    failure.error = error[:_ERROR_CHARS]

    def succeeded(self, domain: str, scope: frozenset[str] | None) -> None:
        """A run of `domain` over `scope` ended (not interrupted): clear what it covered."""
        with self._lock:
            failures = self._failures.get(domain)
            if not failures:
                return
            if scope is None:
                failures.clear()
                return
            for key in scope:
                failures.pop(key, None)

    def verdict(self, domain: str, *, grace_seconds: float) -> str:
        """`ok`, or the oldest failure standing: `retrying ...` while it is younger than
        `grace_seconds` (a Stripe hiccup the queue's backoff may still ride out), then
        `failing ...`; with how long, how many runs, which scope and the last error."""
        with self._lock:
            failures = self._failures.get(domain, {})
            if not failures:
                return "ok"
            key, failure = min(failures.items(), key=lambda item: item[1].since)
            since, runs, error, count = failure.since, failure.runs, failure.error, len(failures)
        age = max(0, int(self._clock() - since))
        word = "retrying" if age < grace_seconds else "failing"
        where = "whole domain" if key is None else key
        others = f"; {count - 1} more failing" if count > 1 else ""
        plural = "" if runs == 1 else "s"
        return f"{word} for {age} s ({runs} run{plural}, {where}{others}): {error}"


def _scrub(text: str) -> str:
    """A check may quote an error message: mask Stripe keys, webhook secrets, URL passwords."""
    return _URL_PASSWORD.sub(r"\1***@", redact(text))


def health_router(readiness: ReadinessProbe) -> APIRouter:
    """`GET /healthz` and `GET /readyz`."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        # Liveness says only that the event loop answers: restarting the pod cannot fix a
        # database outage, so dependencies belong to readiness, not here.
        return JSONResponse({"status": "ok"})

    @router.get("/readyz")
    def readyz() -> JSONResponse:
        try:
            answer = readiness()
        except Exception as error:  # a failing probe means "not ready", never a 500
            # Only the class name: exception text may carry a database URL or a key.
            _log.warning("readiness probe failed", error=type(error).__name__)
            answer = Readiness(ready=False, checks={"readiness": type(error).__name__})
        checks = {name: _scrub(str(verdict)) for name, verdict in answer.checks.items()}
        return JSONResponse(
            {"ready": answer.ready, "checks": checks},
            status_code=200 if answer.ready else 503,
        )

    return router
