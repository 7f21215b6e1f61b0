"""The rate limiter, driven by a fake clock: no real sleeping.

The property that matters is Stripe's: no one-second window ever holds more than the budget,
whatever the pattern of requests (bursts after idle time included), while a steady stream
still runs at the budget.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_reconciler.stripe_gateway import RateLimiter, default_rate_limit


class FakeTime:
    """A clock that moves only when something sleeps on it or the test advances it.

    Thread-safe: under the limiter only the head of the queue sleeps, so threads advance
    one shared timeline.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most send times in any half-open window [t, t + window)."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        # A tiny epsilon: 0.1 * 10 is not exactly 1.0 in floating point.
        while ordered[start] <= t - window + 1e-9:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_defaults_follow_stripe_budgets() -> None:
    assert (default_rate_limit("test"), default_rate_limit("live")) == (25, 100)


@settings(max_examples=300, deadline=None)
@given(
    budget=st.integers(min_value=1, max_value=30),
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.5)), max_size=200),
)
def test_no_one_second_window_ever_holds_more_than_the_budget(
    budget: int, gaps: list[float]
) -> None:
    # A caller comes `gap` seconds after the previous one went (idle time, or none: a
    # burst); it sends when acquire returns.
    t = FakeTime()
    limiter = RateLimiter(budget, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    sent = []
    for gap in gaps:
        t.now += gap
        limiter.acquire()
        sent.append(t.now)
    assert max_in_any_window(sent) <= budget


def test_a_burst_after_idle_time_is_capped_at_the_budget() -> None:
    # The old token bucket sent 10 at once, then refilled one every 0.1 s: 19 in the first
    # second against a budget of 10.
    t = FakeTime()
    limiter = RateLimiter(10, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    sent = []
    for _ in range(30):
        limiter.acquire()
        sent.append(t.now)
    assert max_in_any_window(sent) == 10
    assert sent[:10] == [0.0] * 10
    assert sent[10] == pytest.approx(1.0)


def test_sustained_rate_matches_budget() -> None:
    t = FakeTime()
    limiter = RateLimiter(25, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    for _ in range(25 + 250):
        limiter.acquire()
    # 25 in the first second, then 25 more at the start of each of the next ten.
    assert t.now == pytest.approx(10.0)


def test_the_default_margin_costs_two_percent_of_throughput() -> None:
    t = FakeTime()
    limiter = RateLimiter(25, clock=t.clock, sleep=t.sleep)
    for _ in range(25 + 250):
        limiter.acquire()
    assert t.now == pytest.approx(10 * 1.02)


def test_idle_time_frees_the_whole_window_but_no_more() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    for _ in range(5):
        limiter.acquire()
    t.now += 100.0
    assert [limiter.acquire() for _ in range(5)] == [0.0] * 5
    assert limiter.acquire() == pytest.approx(1.0)


def test_a_fractional_budget_spaces_single_requests() -> None:
    t = FakeTime()
    limiter = RateLimiter(0.5, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    assert [limiter.acquire() for _ in range(3)] == [0.0, pytest.approx(2.0), pytest.approx(2.0)]


def test_concurrent_callers_share_the_budget_exactly() -> None:
    # 400 requests at 10 per second from 8 threads: the last can go no earlier than 39 s
    # without some second holding more than 10, and goes no later if none is wasted.
    t = FakeTime()
    limiter = RateLimiter(10, clock=t.clock, sleep=t.sleep, margin_seconds=0)
    waits: list[float] = []

    def worker() -> None:
        for _ in range(50):
            waits.append(limiter.acquire())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waits) == 400
    assert t.now == pytest.approx(39.0)


def test_callers_go_in_arrival_order() -> None:
    t = FakeTime()
    heads: list[str] = []
    everyone_queued = threading.Event()

    def sleep(seconds: float) -> None:
        # Only the head of the queue sleeps: the order of sleepers is the order of passage.
        # The first head holds on until all callers are queued behind it.
        heads.append(threading.current_thread().name)
        everyone_queued.wait(timeout=5)
        t.sleep(seconds)

    limiter = RateLimiter(1, clock=t.clock, sleep=sleep, margin_seconds=0)
    limiter.acquire()  # the window is now full: everyone below queues behind it
    threads = [threading.Thread(target=limiter.acquire, name=f"caller-{n}") for n in range(5)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)  # let it take its ticket before the next one comes
    everyone_queued.set()
    for thread in threads:
        thread.join()
    assert heads == [f"caller-{n}" for n in range(5)]
    assert t.now == pytest.approx(5.0)


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
