"""Waiting for the targeted reconcile a write asked for (DESIGN §19), generically.

A write that changes Stripe records its request, asks for the targeted reconcile and waits
for it (a bounded time) so the caller sees Stripe's verdict. `request_reconcile` may return a
`ReconcileTicket`: the runtime opens one slot per queued request (`expect()`), hands each
slot's callbacks to its work queue, and `seal()`s the ticket. The API then `wait()`s and gets
a `Verdict`:

- `done`: every queued run finished (re-read the store to see what it did);
- `failed`: a run failed permanently (Stripe refused, the plan was refused): `failure` says why;
- `unavailable`: still unfinished when the wait ended, and its last attempt failed with a
  retryable error (Stripe unreachable, 5xx): the runtime keeps retrying;
- `pending`: still queued or running when the wait ended (`reason="in_progress"`);
- `deferred`: this replica will not run it (`reason="not_leader"`: a follower records the fact
  and the leader's next refresh of that domain carries it to Stripe; `"stopping"`: the replica
  is shutting down and the next leader reconciles at start), or a run finished without
  writing what it planned (`"not_applied"`: applying is suspended, or writing stopped part
  way; the queue's `not_applied` outcome).

Nothing here names a domain, and nothing blocks without a bound. Callbacks arrive on worker
threads; `wait()` runs on a request thread.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

VerdictState = Literal["done", "failed", "unavailable", "pending", "deferred"]
PendingReason = Literal["in_progress", "not_leader", "stopping", "not_applied"]

DEFAULT_WAIT_SECONDS: Final = 5.0
"""How long a write waits for its reconcile before answering 202 (`ApiContext`)."""

_OUTCOME_DONE: Final = "done"
_OUTCOME_NOT_APPLIED: Final = "not_applied"
_OUTCOME_FAILED: Final = "failed"
_OUTCOME_DROPPED: Final = "dropped"


def new_request_id() -> str:
    return "rr_" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class RunFailure:
    """Why one attempt failed; the Stripe fields are set when Stripe answered with an error."""

    message: str
    retrying: bool
    stripe_code: str | None = None
    stripe_param: str | None = None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    request_id: str
    state: VerdictState
    reason: PendingReason | None = None
    failure: RunFailure | None = None


class ReconcileTicket:
    """See the module docstring. Thread-safe."""

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id or new_request_id()
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._open = 0
        self._sealed = False
        self._deferred: PendingReason | None = None
        self._failed: RunFailure | None = None
        self._last_retry: RunFailure | None = None
        self._dropped = False
        self._not_applied = False

    @property
    def sealed(self) -> bool:
        """No more requests join it (sealed, or deferred)."""
        with self._lock:
            return self._sealed

    def expect(self) -> tuple[Callable[[str], None], Callable[[RunFailure], None]]:
        """One more queued request: its `(on_done(outcome), on_failure(failure))` callbacks.

        `outcome` is the work queue's outcome value (`done`, `failed`, `dropped`); each slot's
        `on_done` counts once, however often it is called.
        """
        with self._lock:
            if self._sealed:
                raise RuntimeError("the ticket is sealed: no more requests can join it")
            self._open += 1
        settled = False

        def on_done(outcome: str) -> None:
            nonlocal settled
            with self._lock:
                if settled:
                    return
                settled = True
                self._open -= 1
                if outcome == _OUTCOME_FAILED and self._failed is None:
                    self._failed = self._last_retry or RunFailure("the reconcile failed", False)
                elif outcome == _OUTCOME_DROPPED:
                    self._dropped = True
                elif outcome == _OUTCOME_NOT_APPLIED:
                    self._not_applied = True
                self._release_if_done()

        def on_failure(failure: RunFailure) -> None:
            with self._lock:
                if failure.retrying:
                    self._last_retry = failure
                elif self._failed is None:
                    self._failed = failure

        return on_done, on_failure

    def defer(self, reason: PendingReason) -> None:
        """This replica will not run it: `wait()` answers `deferred` at once."""
        with self._lock:
            self._deferred = reason
            self._sealed = True
            self._finished.set()

    def seal(self) -> None:
        """Every request has been queued; with none, the ticket is finished."""
        with self._lock:
            self._sealed = True
            self._release_if_done()

    def _release_if_done(self) -> None:
        if self._sealed and self._open <= 0:
            self._finished.set()

    def wait(self, timeout: float) -> Verdict:
        """Block at most `timeout` seconds (0: just look)."""
        finished = self._finished.wait(max(0.0, timeout))
        with self._lock:
            if self._deferred is not None:
                return Verdict(self.request_id, "deferred", reason=self._deferred)
            if self._failed is not None and (finished or not self._failed.retrying):
                return Verdict(self.request_id, "failed", failure=self._failed)
            if not finished:
                if self._last_retry is not None:
                    return Verdict(self.request_id, "unavailable", failure=self._last_retry)
                return Verdict(self.request_id, "pending", reason="in_progress")
            if self._dropped:
                return Verdict(self.request_id, "deferred", reason="stopping")
            if self._not_applied:
                return Verdict(self.request_id, "deferred", reason="not_applied")
            return Verdict(self.request_id, "done")
