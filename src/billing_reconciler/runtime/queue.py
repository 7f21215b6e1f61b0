"""The work queue of `reconcile serve`: coalescing, bounded concurrency, backoff by key.

A request's key is `(domain, scope)`. Requests carry identity only (STYLE 11), so any number
of requests for one key while it waits is one run; while it runs, they are one more run after
the current one (the current run may have observed Stripe before their change). A waiting
whole-domain request (`scope=None`) also absorbs scoped requests of its domain: it covers them
(unless it waits longer than they would: one backing off after a failure does not hand its
backoff to a member's seat change).

Webhook-triggered requests may be debounced (`Debounce(quiet, max_wait)`): Stripe sends a
burst of events for one edit (and 1,000 for a bulk script), and each run re-reads Stripe
anyway, so waiting a moment gathers the burst into one run at a bounded cost in latency.

Worker threads (default 2) take the oldest ready key whose domain is not running: two runs of
one domain never overlap (the catalog apply is not safe to run concurrently with itself).

The handler's exception decides what happens next (STYLE 8: exception classes encode retry
policy, the loop decides):
- `TransientError(delay)` and the gateway's `TransientStripeError` (anywhere in the cause
  chain): the key runs again after `delay`, or after its exponential backoff (capped); a run
  that did not converge (a step it wrote is still wanted) is one;
- `PermanentError` and the gateway's `PermanentStripeError`: logged, not retried; the next
  scheduled run (or a new request) tries again;
- anything else is unexpected: logged with its traceback and retried with backoff, since a
  store or network hiccup is likelier than a bug that retrying makes worse.

A handler may instead return `FollowUp(request)`: its run ended well, but its re-plan found
new input (facts that arrived while it applied: a member added during the seat update of the
one before). That is no failure: the callbacks hear `DONE`, the key's failures are cleared,
and `request` (the new input's scopes) is queued at once, without backoff. A
`TransientError` may carry a `follow_up` too (a run that did not converge for one customer
and found new input for others): the key backs off, the follow-up does not wait for it. A
follow-up that keeps finding new input with nothing else asked for in between (a step whose
parameters change at every plan would look so) runs at once `MAX_RERUNS_AT_ONCE` times in a
row, then backs off.

Each request may carry an `on_done` callback (the inbox marks its events processed there),
called once with the key's final outcome: `DONE`, `NOT_APPLIED` (the handler ran and returned
it: it looked, but did not write what it found, e.g. applying is suspended), `FAILED`
(permanently), or `DROPPED` (the queue stopped first). A transient failure keeps the
callbacks for the retry. An `on_error` callback hears every failed attempt as it happens
(the exception; the retry, if any, follows), so a caller waiting on `on_done` can tell
"still running" from "failing". A request that coalesces into a waiting one hands its
callbacks to it: they hear how the merged run ends.

Time comes from an injected clock; `run_pending()` runs ready work on the calling thread, so
tests drive the queue without threads or sleeps.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import structlog

from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.stripe_gateway import PermanentStripeError, TransientStripeError

Key = tuple[str, frozenset[str] | None]

_log = structlog.get_logger(__name__)

# The longest a worker sleeps without looking again: a safety net against a clock that does
# not move like the condition variable's (an injected one), never the normal wake-up path.
_MAX_IDLE_WAIT_SECONDS = 1.0


class TransientError(Exception):
    """Worth retrying: after `delay` seconds if given, else after the key's backoff.

    `follow_up`: a request to queue at once beside the retry (the new input a run that did
    not converge also found; see the module docstring).
    """

    def __init__(
        self,
        message: str,
        *,
        delay: float | None = None,
        follow_up: ReconcileRequest | None = None,
    ) -> None:
        super().__init__(message)
        self.delay = delay
        self.follow_up = follow_up


class PermanentError(Exception):
    """Retrying will not help (a refused plan, a rejected request): wait for the next run."""


class UnexpectedError(TransientError):
    """Any other exception: retried with backoff, and logged with its traceback."""


class Outcome(enum.StrEnum):
    DONE = "done"
    NOT_APPLIED = "not_applied"
    FAILED = "failed"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A handler's answer for a run that ended well and found new input: `request` runs next,
    at once (see the module docstring)."""

    request: ReconcileRequest


MAX_RERUNS_AT_ONCE: Final = 5
"""Follow-ups in a row, with no other request joining them, that run at once."""

OnDone = Callable[[Outcome], None]
OnError = Callable[[BaseException], None]
Handler = Callable[[ReconcileRequest], "Outcome | FollowUp | None"]
"""Runs one request; returns `Outcome.NOT_APPLIED` when it wrote nothing it should have,
`FollowUp` when it found new input, else None (done). Raising decides retries (see the module
docstring)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """`initial * factor**(failures-1)` seconds, at most `cap`."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # Past ~60 doublings the float overflows long after it passed any sane cap.
        exponent = min(failures - 1, 60)
        return float(min(self.cap, self.initial * self.factor**exponent))


@dataclass(frozen=True, slots=True)
class Debounce:
    """Let a burst of requests for one key settle before running it (see `WorkQueue.put`)."""

    quiet: float
    max_wait: float


def key_of(request: ReconcileRequest) -> Key:
    return (request.domain, request.scope)


def classify(error: BaseException) -> TransientError | PermanentError:
    """The retry policy an exception stands for (see the module docstring)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError | PermanentError):
            return current
        if isinstance(current, TransientStripeError):
            return TransientError(str(current), delay=current.retry_after)
        if isinstance(current, PermanentStripeError):
            return PermanentError(str(current))
        current = current.__cause__ or current.__context__
    return UnexpectedError(f"unexpected {type(error).__name__}: {error}")


@dataclass(slots=True)
class _Entry:
    request: ReconcileRequest
    order: int
    ready_at: float
    queued_at: float
    callbacks: list[OnDone] = field(default_factory=list)
    error_callbacks: list[OnError] = field(default_factory=list)
    parts: tuple[_Entry, ...] = ()
    """A batch: the scoped requests it runs as one (see `_batch`)."""
    alone: bool = False
    """Run by itself (never batched): it was part of a batch that failed."""
    reruns: int = 0
    """Follow-ups in a row that led here with no other request joining (0: asked for)."""

    @property
    def key(self) -> Key:
        return key_of(self.request)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    waiting: tuple[Key, ...]
    running: tuple[Key, ...]
    failures: dict[Key, int]


class WorkQueue:
    """See the module docstring. `start()` launches the workers; `stop()` ends them."""

    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 2,
        backoff: Backoff = Backoff(),
        clock: Callable[[], float] = time.monotonic,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a work queue needs at least one worker")
        self._handler = handler
        self._workers = workers
        self._backoff = backoff
        self._clock = clock
        self._on_depth = on_depth
        self._condition = threading.Condition()
        self._waiting: dict[Key, _Entry] = {}
        self._running: dict[Key, _Entry] = {}
        self._busy_domains: set[str] = set()
        self._failures: dict[Key, int] = {}
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # --- producers ------------------------------------------------------------------------

    def put(
        self,
        request: ReconcileRequest,
        *,
        on_done: OnDone | None = None,
        on_error: OnError | None = None,
        debounce: Debounce | None = None,
    ) -> bool:
        """Ask for a run; False when it joined a request already waiting (or the queue stopped).

        With `debounce`, the run waits for `quiet` seconds without another request for its
        key, but never longer than `max_wait` after the key was first queued: a burst of
        webhooks then makes one run, and a steady stream still makes one every `max_wait`.
        """
        callbacks = [] if on_done is None else [on_done]
        error_callbacks = [] if on_error is None else [on_error]
        with self._condition:
            if self._stopping:
                dropped = True
            else:
                dropped = False
                added = self._add(
                    request,
                    callbacks,
                    error_callbacks,
                    now=self._clock(),
                    debounce=debounce,
                )
                self._condition.notify()
        if dropped:
            _notify(callbacks, Outcome.DROPPED)
            return False
        self._report_depth()
        return added

    def _add(
        self,
        request: ReconcileRequest,
        callbacks: list[OnDone],
        error_callbacks: list[OnError],
        *,
        now: float,
        debounce: Debounce | None = None,
        not_before: float = 0.0,
        alone: bool = False,
        reruns: int = 0,
    ) -> bool:
        key = key_of(request)
        ready_at = max(not_before, now + (debounce.quiet if debounce is not None else 0.0))
        existing = self._waiting.get(key) or self._covering(request, ready_at)
        if existing is not None:
            existing.alone = existing.alone or alone
            existing.reruns = min(existing.reruns, reruns)
            existing.callbacks.extend(callbacks)
            existing.error_callbacks.extend(error_callbacks)
            if debounce is not None:
                settled = min(existing.queued_at + debounce.max_wait, now + debounce.quiet)
                existing.ready_at = max(existing.ready_at, settled)
            existing.ready_at = max(existing.ready_at, not_before)
            return False
        self._waiting[key] = _Entry(
            request,
            next(self._order),
            ready_at,
            now,
            callbacks,
            error_callbacks,
            alone=alone,
            reruns=reruns,
        )
        return True

    def _covering(self, request: ReconcileRequest, ready_at: float) -> _Entry | None:
        """A waiting whole-domain request that covers this scoped one, if it runs no later:
        one backing off after a failure (a busy fleet's refresh that did not converge) would
        hand its backoff to a member's seat change, so the scoped request waits on its own."""
        if request.scope is None:
            return None
        whole = self._waiting.get((request.domain, None))
        if whole is None or whole.ready_at > ready_at:
            return None
        return whole

    @property
    def depth(self) -> int:
        """Keys waiting to run (running ones excluded)."""
        with self._condition:
            return len(self._waiting)

    def snapshot(self) -> QueueSnapshot:
        with self._condition:
            return QueueSnapshot(
                waiting=tuple(self._waiting),
                running=tuple(self._running),
                failures=dict(self._failures),
            )

    # --- consumers ------------------------------------------------------------------------

    def start(self) -> None:
        with self._condition:
            if self._threads:
                raise RuntimeError("the work queue is already started")
            self._stopping = False
            self._threads = [
                threading.Thread(target=self._work, name=f"reconcile-worker-{n}", daemon=True)
                for n in range(self._workers)
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> bool:
        """Take no new work, let running items finish; True when every worker ended in time.

        Waiting requests are dropped (their callbacks hear `DROPPED`): the next process
        reconciles every domain at start anyway.
        """
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        with self._condition:
            dropped = list(self._waiting.values())
            self._waiting.clear()
        for entry in dropped:
            _notify(entry.callbacks, Outcome.DROPPED)
        self._report_depth()
        return finished

    def run_pending(self) -> int:
        """Run every request ready now on this thread (tests); returns how many ran."""
        ran = 0
        while True:
            with self._condition:
                entry = self._take(self._clock())
            if entry is None:
                return ran
            self._run(entry)
            ran += 1

    def next_ready_in(self) -> float | None:
        """Seconds until the earliest waiting request is due (0: now); None when idle."""
        with self._condition:
            return self._next_ready_in(self._clock())

    def _work(self) -> None:
        while True:
            with self._condition:
                entry = self._wait_for_work()
            if entry is None:
                return
            self._run(entry)

    def _wait_for_work(self) -> _Entry | None:
        while not self._stopping:
            now = self._clock()
            entry = self._take(now)
            if entry is not None:
                return entry
            due = self._next_ready_in(now)
            wait = _MAX_IDLE_WAIT_SECONDS if due is None else min(due, _MAX_IDLE_WAIT_SECONDS)
            self._condition.wait(timeout=max(wait, 0.001))
        return None

    def _take(self, now: float) -> _Entry | None:
        ready = [
            entry
            for entry in self._waiting.values()
            if entry.ready_at <= now and entry.request.domain not in self._busy_domains
        ]
        if not ready:
            return None
        entry = min(ready, key=lambda e: e.order)
        batch = _batch(entry, ready)
        for part in batch:
            del self._waiting[part.key]
        # A batch retried after a transient failure joins a new one by its own requests.
        parts = tuple(inner for part in batch for inner in (part.parts or (part,)))
        if len(batch) > 1:
            scope = frozenset().union(*(part.request.scope or () for part in parts))
            reason = f"{entry.request.reason} (+{len(parts) - 1} more)"
            entry = _Entry(
                ReconcileRequest(entry.request.domain, scope, reason),
                entry.order,
                now,
                min(part.queued_at for part in parts),
                [callback for part in batch for callback in part.callbacks],
                [callback for part in batch for callback in part.error_callbacks],
                parts=parts,
                reruns=min(part.reruns for part in parts),
            )
        self._running[entry.key] = entry
        self._busy_domains.add(entry.request.domain)
        return entry

    def _next_ready_in(self, now: float) -> float | None:
        times = [
            entry.ready_at
            for entry in self._waiting.values()
            if entry.request.domain not in self._busy_domains
        ]
        return None if not times else max(0.0, min(times) - now)

    def _run(self, entry: _Entry) -> None:
        self._report_depth()
        error: BaseException | None = None
        returned: Outcome | FollowUp | None = None
        try:
            returned = self._handler(entry.request)
        except Exception as raised:
            error = raised
            # Before the outcome: a waiter learns why the run failed, then whether it ended.
            # Only waiting entries gain callbacks (`_add`), so this list is not growing now.
            # A batch's refusal may be another customer's: its requests hear their own runs.
            if not (entry.parts and isinstance(classify(raised), PermanentError)):
                _notify_error(entry.error_callbacks, raised)
        self._finish(entry, error, returned)

    def _finish(
        self,
        entry: _Entry,
        error: BaseException | None,
        returned: Outcome | FollowUp | None = None,
    ) -> None:
        key = entry.key
        outcome: Outcome | None
        with self._condition:
            del self._running[key]
            self._busy_domains.discard(entry.request.domain)
            if error is not None and entry.parts and isinstance(classify(error), PermanentError):
                outcome = self._split(entry, error)
            else:
                outcome = self._settle(entry, error, returned)
            self._condition.notify_all()
        if outcome is not None:
            _notify(entry.callbacks, outcome)
        self._report_depth()

    def _split(self, batch: _Entry, error: BaseException) -> Outcome | None:
        """A batch was refused: each of its requests runs again at once by itself, so each
        caller hears how its own customer's run ends (never another's refusal). A transient
        failure retries the batch as one (`_settle`)."""
        _log.info(
            "batched reconcile failed; its requests run one by one",
            domain=batch.request.domain,
            requests=len(batch.parts),
            error=str(error),
        )
        if self._stopping:
            return Outcome.DROPPED
        now = self._clock()
        for part in batch.parts:
            self._add(
                part.request,
                part.callbacks,
                part.error_callbacks,
                now=now,
                alone=True,
                reruns=part.reruns,
            )
        return None

    def _settle(
        self,
        entry: _Entry,
        error: BaseException | None,
        returned: Outcome | FollowUp | None = None,
    ) -> Outcome | None:
        """Record how a run ended; the outcome to tell its callbacks (None: it runs again)."""
        key = entry.key
        if error is None:
            self._failures.pop(key, None)
            if isinstance(returned, FollowUp):
                self._follow_up(entry, returned.request)
            return Outcome.NOT_APPLIED if returned is Outcome.NOT_APPLIED else Outcome.DONE
        policy = classify(error)
        if isinstance(policy, PermanentError):
            self._failures.pop(key, None)
            _log.error(
                "reconcile failed permanently; next attempt at the next scheduled run",
                domain=entry.request.domain,
                reason=entry.request.reason,
                error=str(error),
            )
            return Outcome.FAILED
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = policy.delay if policy.delay is not None else self._backoff.delay(failures)
        delay = min(delay, self._backoff.cap)
        _log.warning(
            "reconcile failed; retrying",
            domain=entry.request.domain,
            reason=entry.request.reason,
            error=str(error),
            failures=failures,
            retry_in_seconds=round(delay, 3),
            exc_info=error if isinstance(policy, UnexpectedError) else None,
        )
        if self._stopping:
            return Outcome.DROPPED
        now = self._clock()
        self._add(
            entry.request,
            entry.callbacks,
            entry.error_callbacks,
            now=now,
            not_before=now + delay,
            reruns=entry.reruns,
        )
        retry = self._waiting.get(key)
        if entry.parts and retry is not None and not retry.parts:
            retry.parts = entry.parts  # still a batch: a later refusal splits it
        if policy.follow_up is not None:
            self._follow_up(entry, policy.follow_up)
        return None

    def _follow_up(self, entry: _Entry, request: ReconcileRequest) -> None:
        """Queue the new input a run found: at once, unless follow-ups alone have led here
        `MAX_RERUNS_AT_ONCE` times in a row (then with the backoff of the excess)."""
        if self._stopping:
            return
        now = self._clock()
        if self._waiting.get(key_of(request)) or self._covering(request, now):
            return  # asked for already: that run re-plans anyway, and must not wait longer
        reruns = entry.reruns + 1
        delay = self._backoff.delay(reruns - MAX_RERUNS_AT_ONCE)
        _log.info(
            "new input found; reconciling it next",
            domain=request.domain,
            after=entry.request.reason,
            scope=None if request.scope is None else len(request.scope),
            reruns=reruns,
            in_seconds=round(delay, 3),
        )
        self._add(request, [], [], now=now, not_before=now + delay, reruns=reruns)

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self.depth)


MAX_BATCH_SCOPE: Final = 100
"""The most scope keys one batched run covers."""


def _batch(first: _Entry, ready: list[_Entry]) -> tuple[_Entry, ...]:
    """`first` and the other ready scoped requests of its domain, in arrival order, up to
    `MAX_BATCH_SCOPE` keys: twenty orgs' seat changes at once are one run that reads and
    writes the twenty customers, not twenty runs one after the other (two runs of a domain
    never overlap). A whole-domain request, or one that must run alone, is never batched."""
    if first.request.scope is None or first.alone:
        return (first,)
    parts = [first]
    keys = set(first.request.scope)
    for entry in sorted(ready, key=lambda e: e.order):
        scope = entry.request.scope
        if entry is first or entry.alone or scope is None:
            continue
        if entry.request.domain != first.request.domain:
            continue
        if len(keys | scope) > MAX_BATCH_SCOPE:
            break
        parts.append(entry)
        keys |= scope
    return tuple(parts)


def _notify(callbacks: list[OnDone], outcome: Outcome) -> None:
    for callback in callbacks:
        try:
            callback(outcome)
        except Exception:
            _log.exception("work queue callback failed", outcome=outcome.value)


def _notify_error(callbacks: list[OnError], error: BaseException) -> None:
    for callback in callbacks:
        try:
            callback(error)
        except Exception:
            _log.exception("work queue error callback failed", error=type(error).__name__)
