"""The work queue: coalescing, per-domain exclusion, backoff, error policy, stop.

Most tests drive the queue on the test's thread with `run_pending()` and a fake clock; the
threaded ones synchronise with events, never with sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import (
    MAX_RERUNS_AT_ONCE,
    Backoff,
    Debounce,
    FollowUp,
    Outcome,
    PermanentError,
    TransientError,
    UnexpectedError,
    WorkQueue,
    classify,
)
from billing_reconciler.stripe_gateway import PermanentStripeError, TransientStripeError

WAIT = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def catalog(*products: str, reason: str = "test") -> ReconcileRequest:
    scope = frozenset(f"product/{p}" for p in products) if products else None
    return ReconcileRequest("catalog", scope, reason)


class Recorder:
    """A handler that records requests and raises the errors it is given, in turn."""

    def __init__(self, *errors: Exception | None) -> None:
        self.calls: list[ReconcileRequest] = []
        self._errors = list(errors)

    def __call__(self, request: ReconcileRequest) -> None:
        self.calls.append(request)
        if self._errors:
            error = self._errors.pop(0)
            if error is not None:
                raise error


def outcomes() -> tuple[list[Outcome], Callable[[Outcome], None]]:
    seen: list[Outcome] = []
    return seen, seen.append


def test_a_burst_for_one_key_is_one_run() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    added = [queue.put(catalog("team")) for _ in range(1000)]
    assert added.count(True) == 1
    assert queue.depth == 1
    assert queue.run_pending() == 1
    assert handler.calls == [catalog("team")]
    assert queue.depth == 0


def test_requests_during_a_run_are_one_more_run_after_it() -> None:
    queue: WorkQueue
    during: list[bool] = []

    def handler(request: ReconcileRequest) -> None:
        if len(calls) == 0:
            during.extend(queue.put(catalog("team")) for _ in range(50))
        calls.append(request)

    calls: list[ReconcileRequest] = []
    queue = WorkQueue(handler, clock=FakeClock())
    queue.put(catalog("team"))
    assert queue.run_pending() == 2
    assert during.count(True) == 1
    assert len(calls) == 2


def test_a_waiting_whole_domain_request_absorbs_scoped_ones() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    queue.put(catalog())
    assert not queue.put(catalog("team"))
    assert queue.put(ReconcileRequest("customer", frozenset({"cus_1"}), "x"))
    queue.run_pending()
    assert [c.scope for c in handler.calls] == [None, frozenset({"cus_1"})]


def test_a_debounced_burst_waits_for_quiet_but_not_past_the_max_wait() -> None:
    clock = FakeClock()
    handler = Recorder()
    queue = WorkQueue(handler, clock=clock)
    settle = Debounce(quiet=0.5, max_wait=2.0)
    queue.put(catalog("team"), debounce=settle)
    assert queue.next_ready_in() == 0.5
    # A steady stream, one request every 0.3 s, keeps pushing the run back ...
    for _ in range(5):
        clock.advance(0.3)
        queue.put(catalog("team"), debounce=settle)
        assert queue.run_pending() == 0
    # ... until 2 s after the first request, when it runs regardless.
    clock.advance(0.5)
    assert queue.run_pending() == 1
    queue.put(catalog("team"), debounce=settle)
    clock.advance(0.5)
    assert queue.run_pending() == 1
    assert len(handler.calls) == 2


def test_an_undebounced_request_does_not_hurry_a_debounced_one() -> None:
    clock = FakeClock()
    queue = WorkQueue(Recorder(), clock=clock)
    queue.put(catalog("team"), debounce=Debounce(quiet=1, max_wait=5))
    queue.put(catalog("team"))
    assert queue.run_pending() == 0
    clock.advance(1)
    assert queue.run_pending() == 1


def test_different_keys_run_in_arrival_order() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    for domain in ("catalog", "customers", "subscriptions"):
        queue.put(ReconcileRequest(domain, None, "x"))
    queue.run_pending()
    assert [c.domain for c in handler.calls] == ["catalog", "customers", "subscriptions"]


def test_ready_scoped_requests_of_one_domain_run_as_one_batch() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    heard: dict[str, list[Outcome]] = {}
    for product in ("a", "b", "c"):
        queue.put(catalog(product, reason=product), on_done=heard.setdefault(product, []).append)
    queue.put(ReconcileRequest("customers", frozenset({"customer/x"}), "x"))
    assert queue.run_pending() == 2
    assert handler.calls == [
        ReconcileRequest(
            "catalog", frozenset({"product/a", "product/b", "product/c"}), "a (+2 more)"
        ),
        ReconcileRequest("customers", frozenset({"customer/x"}), "x"),
    ]
    assert heard == {"a": [Outcome.DONE], "b": [Outcome.DONE], "c": [Outcome.DONE]}


def test_a_failed_batch_runs_each_request_alone_and_only_the_failing_one_hears_it() -> None:
    calls: list[frozenset[str] | None] = []

    def handler(request: ReconcileRequest) -> None:
        calls.append(request.scope)
        if request.scope is not None and "product/b" in request.scope:
            raise PermanentError("Stripe refused product b")

    queue = WorkQueue(handler, clock=FakeClock())
    heard: dict[str, list[Outcome]] = {}
    errors: dict[str, list[str]] = {}
    for product in ("a", "b", "c"):
        queue.put(
            catalog(product),
            on_done=heard.setdefault(product, []).append,
            on_error=lambda error, p=product: errors.setdefault(p, []).append(str(error)),
        )
    assert queue.run_pending() == 4
    assert calls == [
        frozenset({"product/a", "product/b", "product/c"}),
        frozenset({"product/a"}),
        frozenset({"product/b"}),
        frozenset({"product/c"}),
    ]
    assert heard == {"a": [Outcome.DONE], "b": [Outcome.FAILED], "c": [Outcome.DONE]}
    assert errors == {"b": ["Stripe refused product b"]}  # never told of the batch's failure


def test_a_request_not_ready_yet_is_not_batched() -> None:
    clock = FakeClock()
    handler = Recorder()
    queue = WorkQueue(handler, clock=clock)
    queue.put(catalog("a"))
    queue.put(catalog("b"), debounce=Debounce(quiet=5, max_wait=10))
    assert queue.run_pending() == 1
    assert handler.calls == [catalog("a")]
    clock.advance(5)
    assert queue.run_pending() == 1
    assert handler.calls[-1] == catalog("b")


def test_transient_failures_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    handler = Recorder(*[TransientError("stripe is down")] * 6)
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=1, factor=2, cap=5))
    queue.put(catalog("team"))
    delays = []
    for _ in range(6):
        assert queue.run_pending() == 1
        due = queue.next_ready_in()
        assert due is not None
        delays.append(due)
        assert queue.run_pending() == 0, "nothing runs before the backoff is over"
        clock.advance(due)
    assert delays == [1, 2, 4, 5, 5, 5]
    assert queue.run_pending() == 1  # the seventh attempt succeeds
    assert queue.next_ready_in() is None
    assert queue.snapshot().failures == {}


def test_a_success_resets_the_backoff() -> None:
    clock = FakeClock()
    handler = Recorder(TransientError("x"), TransientError("x"), None, TransientError("x"))
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=1, factor=10, cap=100))
    queue.put(catalog())
    queue.run_pending()
    clock.advance(1)
    queue.run_pending()
    clock.advance(10)
    queue.run_pending()  # succeeds
    queue.put(catalog())
    queue.run_pending()  # fails again: first failure since the success
    assert queue.next_ready_in() == 1


def test_a_transient_error_may_name_its_delay() -> None:
    clock = FakeClock()
    queue = WorkQueue(Recorder(TransientError("429", delay=7)), clock=clock)
    queue.put(catalog())
    queue.run_pending()
    assert queue.next_ready_in() == 7


def test_new_requests_for_a_key_in_backoff_wait_for_the_backoff() -> None:
    clock = FakeClock()
    handler = Recorder(TransientError("x"))
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=30))
    queue.put(catalog("team"))
    queue.run_pending()
    assert not queue.put(catalog("team"))
    assert queue.run_pending() == 0
    clock.advance(30)
    assert queue.run_pending() == 1


def test_a_permanent_error_is_not_retried_and_its_callbacks_hear_failed() -> None:
    clock = FakeClock()
    seen, on_done = outcomes()
    handler = Recorder(PermanentError("the plan was refused"))
    queue = WorkQueue(handler, clock=clock)
    queue.put(catalog(), on_done=on_done)
    assert queue.run_pending() == 1
    clock.advance(10_000)
    assert queue.run_pending() == 0
    assert seen == [Outcome.FAILED]


def test_a_handler_that_wrote_nothing_tells_its_callbacks_not_applied() -> None:
    seen, on_done = outcomes()
    queue = WorkQueue(lambda request: Outcome.NOT_APPLIED, clock=FakeClock())
    queue.put(catalog(), on_done=on_done)
    assert queue.run_pending() == 1
    assert seen == [Outcome.NOT_APPLIED]


def test_callbacks_wait_through_retries_and_hear_done_once() -> None:
    clock = FakeClock()
    first, on_first = outcomes()
    second, on_second = outcomes()
    queue = WorkQueue(Recorder(TransientError("x")), clock=clock, backoff=Backoff(initial=1))
    queue.put(catalog("team"), on_done=on_first)
    queue.put(catalog("team"), on_done=on_second)
    queue.run_pending()
    assert first == second == []
    clock.advance(1)
    queue.run_pending()
    assert first == second == [Outcome.DONE]


def test_the_gateways_error_classes_count_as_transient_and_permanent() -> None:
    try:
        try:
            raise TransientStripeError("rate limited", http_status=429, retry_after=3)
        except TransientStripeError as cause:
            raise RuntimeError("step 2 failed") from cause
    except RuntimeError as wrapped:
        policy = classify(wrapped)
    assert isinstance(policy, TransientError)
    assert policy.delay == 3
    assert isinstance(classify(PermanentStripeError("No such price")), PermanentError)
    assert isinstance(classify(KeyError("surprise")), UnexpectedError)


def test_unexpected_errors_are_retried_with_backoff() -> None:
    clock = FakeClock()
    handler = Recorder(OSError("connection refused"))
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=2))
    queue.put(catalog())
    queue.run_pending()
    assert queue.next_ready_in() == 2


def test_depth_is_reported_as_it_changes() -> None:
    depths: list[int] = []
    queue = WorkQueue(Recorder(), clock=FakeClock(), on_depth=depths.append)
    queue.put(catalog("a"))
    queue.put(catalog("b"))
    queue.put(catalog("b"))
    queue.run_pending()
    assert depths[:3] == [1, 2, 2]
    assert depths[-1] == 0


class Gate:
    """A handler that blocks each run until released, and says which runs overlap."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.active: set[str] = set()
        self.max_active = 0
        self.overlap_in_domain = False
        self.calls: list[ReconcileRequest] = []

    def __call__(self, request: ReconcileRequest) -> None:
        with self._lock:
            self.calls.append(request)
            if request.domain in self.active:
                self.overlap_in_domain = True
            self.active.add(request.domain)
            self.max_active = max(self.max_active, len(self.active))
        self.started.release()
        assert self.release.wait(WAIT)
        with self._lock:
            self.active.discard(request.domain)


def test_workers_run_domains_concurrently_but_never_one_domain_twice() -> None:
    gate = Gate()
    queue = WorkQueue(gate, workers=3)
    queue.start()
    try:
        queue.put(catalog("a"))
        queue.put(catalog())
        queue.put(ReconcileRequest("customer", None, "x"))
        assert gate.started.acquire(timeout=WAIT)
        assert gate.started.acquire(timeout=WAIT)
        # Two are running (catalog and customer); the second catalog key waits its turn.
        assert queue.depth == 1
        gate.release.set()
        assert gate.started.acquire(timeout=WAIT)
    finally:
        assert queue.stop(timeout=WAIT)
    assert len(gate.calls) == 3
    assert gate.max_active == 2
    assert not gate.overlap_in_domain


def test_stop_lets_the_running_item_finish_and_drops_the_rest() -> None:
    gate = Gate()
    queue = WorkQueue(gate, workers=1)
    queue.start()
    running, on_running = outcomes()
    waiting, on_waiting = outcomes()
    queue.put(catalog("a"), on_done=on_running)
    assert gate.started.acquire(timeout=WAIT)
    queue.put(catalog("b"), on_done=on_waiting)

    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(queue.stop(timeout=WAIT)))
    stopper.start()
    gate.release.set()
    stopper.join(WAIT)
    assert stopped == [True]
    assert running == [Outcome.DONE]
    assert waiting == [Outcome.DROPPED]
    assert len(gate.calls) == 1
    late, on_late = outcomes()
    assert not queue.put(catalog("c"), on_done=on_late)
    assert late == [Outcome.DROPPED]


def test_stop_reports_a_worker_that_overran_the_timeout() -> None:
    gate = Gate()
    queue = WorkQueue(gate, workers=1)
    queue.start()
    queue.put(catalog())
    assert gate.started.acquire(timeout=WAIT)
    assert queue.stop(timeout=0.05) is False
    gate.release.set()


def test_a_threaded_queue_retries_after_the_backoff() -> None:
    done = threading.Event()
    handler = Recorder(TransientError("x", delay=0.01))
    queue = WorkQueue(handler, workers=1)
    queue.start()
    try:
        queue.put(catalog(), on_done=lambda outcome: done.set())
        assert done.wait(WAIT)
    finally:
        queue.stop(timeout=WAIT)
    assert len(handler.calls) == 2


@pytest.mark.parametrize("workers", [0, -1])
def test_a_queue_needs_a_worker(workers: int) -> None:
    with pytest.raises(ValueError, match="worker"):
        WorkQueue(Recorder(), workers=workers)


def test_error_callbacks_hear_every_failed_attempt_before_the_outcome() -> None:
    clock = FakeClock()
    heard: list[str] = []
    queue = WorkQueue(
        Recorder(TransientError("first"), PermanentError("second")),
        clock=clock,
        backoff=Backoff(initial=1),
    )
    queue.put(
        catalog("team"),
        on_done=lambda outcome: heard.append(f"done:{outcome.value}"),
        on_error=lambda error: heard.append(f"error:{error}"),
    )
    queue.run_pending()
    assert heard == ["error:first"]  # retried: no outcome yet
    clock.advance(1)
    queue.run_pending()
    assert heard == ["error:first", "error:second", "done:failed"]


def test_callbacks_of_a_request_coalesced_into_a_waiting_one_hear_the_merged_run() -> None:
    """A request that joins a waiting one (the same key, or its domain's whole-domain
    request) is released when that run ends, and hears its failures."""
    queue: WorkQueue
    heard: list[str] = []

    def tell(name: str) -> dict[str, Callable[..., None]]:
        return {
            "on_done": lambda outcome: heard.append(f"{name} {outcome.value}"),
            "on_error": lambda error: heard.append(f"{name} saw {error}"),
        }

    def handler(request: ReconcileRequest) -> None:
        if request.reason == "running":
            # While this runs: a new waiting entry, a request joining it, and a scoped
            # request absorbed by it (the whole-domain one).
            assert queue.put(catalog(reason="merged"), **tell("second"))
            assert not queue.put(catalog(reason="merged"), **tell("third"))
            assert not queue.put(catalog("team", reason="merged"), **tell("fourth"))
            return
        raise PermanentError("refused")

    queue = WorkQueue(handler, clock=FakeClock())
    queue.put(catalog(reason="running"), **tell("first"))
    assert queue.run_pending() == 2
    assert heard == [
        "first done",
        "second saw refused",
        "third saw refused",
        "fourth saw refused",
        "second failed",
        "third failed",
        "fourth failed",
    ]


def test_a_stopped_queue_tells_error_callbacks_nothing_and_done_callbacks_dropped() -> None:
    queue = WorkQueue(Recorder(), clock=FakeClock())
    queue.stop(timeout=1)
    heard: list[str] = []
    assert not queue.put(
        catalog(),
        on_done=lambda outcome: heard.append(outcome.value),
        on_error=lambda error: heard.append(str(error)),
    )
    assert heard == ["dropped"]


def test_a_run_that_did_not_converge_backs_off_from_the_first_retry() -> None:
    clock = FakeClock()
    stuck = TransientError("apply did not converge: 1 applied step(s) still wanted")
    queue = WorkQueue(Recorder(stuck, stuck), clock=clock, backoff=Backoff(initial=1))
    queue.put(catalog("team"))
    assert queue.run_pending() == 1
    assert queue.next_ready_in() == 1
    clock.advance(1)
    assert queue.run_pending() == 1
    assert queue.next_ready_in() == 2
    assert queue.snapshot().failures == {("catalog", frozenset({"product/team"})): 2}


class FollowingUp:
    """A handler whose runs end well, the first `times` of them finding new input."""

    def __init__(self, follow_up: ReconcileRequest, times: int) -> None:
        self.calls: list[ReconcileRequest] = []
        self._follow_up = follow_up
        self._times = times

    def __call__(self, request: ReconcileRequest) -> FollowUp | None:
        self.calls.append(request)
        if len(self.calls) <= self._times:
            return FollowUp(self._follow_up)
        return None


def test_a_run_that_found_new_input_is_done_and_its_follow_up_runs_at_once() -> None:
    clock = FakeClock()
    handler = FollowingUp(catalog("b", reason="new input"), times=1)
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=30))
    seen, on_done = outcomes()
    errors: list[BaseException] = []
    queue.put(catalog("a", "b"), on_done=on_done, on_error=errors.append)
    assert queue.run_pending() == 2  # no backoff: the follow-up ran at once
    assert handler.calls == [catalog("a", "b"), catalog("b", reason="new input")]
    assert seen == [Outcome.DONE]  # heard once, when its own run ended
    assert errors == []  # no failure was told
    assert queue.snapshot().failures == {}
    assert queue.next_ready_in() is None


def test_a_follow_up_joins_a_request_already_waiting_and_keeps_its_time() -> None:
    clock = FakeClock()
    queue: WorkQueue
    heard: list[Outcome] = []

    def handler(request: ReconcileRequest) -> FollowUp | None:
        calls.append(request)
        if len(calls) == 1:
            # A member added during the run: its own request waits, and the follow-up
            # naming the same customer is that request, not a second run.
            queue.put(catalog("b", reason="member added"), on_done=heard.append)
            return FollowUp(catalog("b", reason="new input"))
        return None

    calls: list[ReconcileRequest] = []
    queue = WorkQueue(handler, clock=clock)
    queue.put(catalog("a", "b"))
    assert queue.run_pending() == 2
    assert calls[1] == catalog("b", reason="member added")
    assert heard == [Outcome.DONE]


def test_follow_ups_alone_in_a_row_run_at_once_a_bounded_number_of_times() -> None:
    clock = FakeClock()
    handler = FollowingUp(catalog("a", reason="new input"), times=MAX_RERUNS_AT_ONCE + 2)
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=1))
    queue.put(catalog("a"))
    assert queue.run_pending() == 1 + MAX_RERUNS_AT_ONCE
    assert queue.next_ready_in() == 1  # a step whose parameters change at every plan
    clock.advance(1)
    assert queue.run_pending() == 1
    assert queue.next_ready_in() == 2
    # A request from outside joining the follow-up resets the count: new input is real.
    assert not queue.put(catalog("a"))
    assert queue.next_ready_in() == 2  # ... but does not hurry the one backing off
    clock.advance(2)
    assert queue.run_pending() == 1
    assert queue.next_ready_in() is None
    assert queue.snapshot().failures == {}


def test_a_batch_with_a_request_from_outside_restarts_the_count_of_follow_ups() -> None:
    clock = FakeClock()
    queue: WorkQueue
    calls: list[ReconcileRequest] = []

    def handler(request: ReconcileRequest) -> FollowUp:
        calls.append(request)
        if len(calls) == MAX_RERUNS_AT_ONCE:
            queue.put(catalog("b", reason="member added"))
        return FollowUp(catalog("a", reason="new input"))

    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=1))
    queue.put(catalog("a"))
    # The follow-up of the fifth run is batched with b's request: that run counts as asked
    # for, so its follow-ups run at once MAX_RERUNS_AT_ONCE more times.
    assert queue.run_pending() == 2 * MAX_RERUNS_AT_ONCE + 1
    assert calls[MAX_RERUNS_AT_ONCE].scope == frozenset({"product/a", "product/b"})
    assert queue.next_ready_in() == 1


def test_a_run_that_did_not_converge_still_follows_up_its_new_input_at_once() -> None:
    clock = FakeClock()
    calls: list[ReconcileRequest] = []

    def handler(request: ReconcileRequest) -> None:
        calls.append(request)
        if request.scope is None:
            raise TransientError(
                "apply did not converge: 1 applied step(s) still wanted (product/a)",
                follow_up=catalog("b", reason="new input"),
            )

    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=30))
    queue.put(catalog())
    assert queue.run_pending() == 2
    assert calls == [catalog(), catalog("b", reason="new input")]
    assert queue.next_ready_in() == 30  # the whole-domain run backs off on its own
    assert queue.snapshot().failures == {("catalog", None): 1}


def test_a_whole_domain_request_backing_off_does_not_hold_back_scoped_ones() -> None:
    clock = FakeClock()
    handler = Recorder(TransientError("the fleet's refresh did not converge"))
    queue = WorkQueue(handler, clock=clock, backoff=Backoff(initial=30))
    queue.put(catalog())
    assert queue.run_pending() == 1  # fails: the whole-domain run waits 30 s
    assert queue.put(catalog("team"))  # not absorbed: it would wait the 30 s too
    assert queue.run_pending() == 1
    assert handler.calls[-1].scope == frozenset({"product/team"})
    clock.advance(30)
    assert queue.run_pending() == 1
    assert handler.calls[-1].scope is None


def test_a_batch_that_did_not_converge_runs_again_as_one_and_then_splits_if_refused() -> None:
    calls: list[frozenset[str] | None] = []
    moved = TransientError("apply did not converge: 2 step(s) remain", delay=0)
    failures: list[Exception] = [moved, PermanentError("Stripe refused product b")]

    def handler(request: ReconcileRequest) -> None:
        calls.append(request.scope)
        if failures and request.scope is not None and len(request.scope) > 1:
            raise failures.pop(0)
        if request.scope == frozenset({"product/b"}):
            raise PermanentError("Stripe refused product b")

    queue = WorkQueue(handler, clock=FakeClock())
    heard: dict[str, list[Outcome]] = {}
    errors: dict[str, list[str]] = {}
    for product in ("a", "b"):
        queue.put(
            catalog(product),
            on_done=heard.setdefault(product, []).append,
            on_error=lambda error, p=product: errors.setdefault(p, []).append(str(error)),
        )
    assert queue.run_pending() == 4
    both = frozenset({"product/a", "product/b"})
    assert calls == [both, both, frozenset({"product/a"}), frozenset({"product/b"})]
    assert heard == {"a": [Outcome.DONE], "b": [Outcome.FAILED]}
    # Both heard the batch's transient failure; only b its own refusal.
    assert errors == {
        "a": ["apply did not converge: 2 step(s) remain"],
        "b": ["apply did not converge: 2 step(s) remain", "Stripe refused product b"],
    }
