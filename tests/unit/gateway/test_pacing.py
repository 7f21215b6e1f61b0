"""The token bucket, driven by a fake clock: no real sleeping."""

from __future__ import annotations

import pytest

from billing_reconciler.stripe_gateway import RateLimiter, default_rate_limit


class FakeTime:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_defaults_follow_stripe_budgets() -> None:
    assert (default_rate_limit("test"), default_rate_limit("live")) == (25, 100)


def test_burst_up_to_one_second_of_budget_then_paces() -> None:
    t = FakeTime()
    limiter = RateLimiter(10, clock=t.clock, sleep=t.sleep)
    waits = [limiter.acquire() for _ in range(10)]
    assert waits == [0.0] * 10
    assert limiter.acquire() == pytest.approx(0.1)
    assert limiter.acquire() == pytest.approx(0.1)


def test_sustained_rate_matches_budget() -> None:
    t = FakeTime()
    limiter = RateLimiter(25, clock=t.clock, sleep=t.sleep)
    for _ in range(25 + 250):
        limiter.acquire()
    # 25 free in the first burst, then 250 more at 25/s.
    assert t.now == pytest.approx(10.0)


def test_idle_time_refills_but_never_beyond_capacity() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        limiter.acquire()
    t.now += 100.0
    assert [limiter.acquire() for _ in range(5)] == [0.0] * 5
    assert limiter.acquire() == pytest.approx(0.2)


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
