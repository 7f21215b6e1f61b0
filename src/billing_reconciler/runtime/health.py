"""Liveness and readiness probes: `/healthz` (the process answers) and `/readyz`.

Readiness is decided by the runtime core (store reachable, desired state valid, last reconcile
not failing for too long); this module only defines the answer's shape and serves it. The
probe runs in FastAPI's thread pool because the checks may touch the database.
"""

from __future__ import annotations

import re
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
