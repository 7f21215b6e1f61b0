"""Retry policy: only transient errors, bounded attempts, capped full-jitter backoff."""

from __future__ import annotations

import random

import pytest

from billing_reconciler.stripe_gateway import (
    PermanentStripeError,
    RetryPolicy,
    TransientStripeError,
)


class Flaky:
    """Fails with the given errors in order, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(sleeps: list[float], **overrides: object) -> RetryPolicy:
    settings: dict[str, object] = {
        "max_attempts": 4,
        "base_delay": 1.0,
        "max_delay": 4.0,
        "rng": random.Random(7),
        "sleep": sleeps.append,
        **overrides,
    }
    return RetryPolicy(**settings)  # type: ignore[arg-type]


def transient(retry_after: float | None = None) -> TransientStripeError:
    return TransientStripeError("busy", http_status=503, retry_after=retry_after)


def test_retries_transient_errors_until_success() -> None:
    sleeps: list[float] = []
    call = Flaky(transient(), transient())
    attempted = policy(sleeps).run(call)
    assert (attempted.value, attempted.retries, call.calls) == ("ok", 2, 3)
    assert len(sleeps) == 2


def test_permanent_error_is_not_retried() -> None:
    sleeps: list[float] = []
    call = Flaky(PermanentStripeError("bad", http_status=400))
    with pytest.raises(PermanentStripeError):
        policy(sleeps).run(call)
    assert (call.calls, sleeps) == (1, [])


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps: list[float] = []
    last = transient()
    call = Flaky(transient(), transient(), transient(), last, transient())
    with pytest.raises(TransientStripeError) as raised:
        policy(sleeps).run(call)
    assert raised.value is last
    assert (call.calls, len(sleeps)) == (4, 3)


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    p = policy([], rng=random.Random(1), base_delay=0.5, max_delay=3.0)
    for retry_number, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (8, 3.0)]:
        delays = [p.delay(retry_number, transient()) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a fixed delay


def test_retry_after_is_honoured_and_capped() -> None:
    p = policy([], max_retry_after=10.0)
    assert p.delay(0, transient(retry_after=3.0)) == 3.0
    assert p.delay(0, transient(retry_after=600.0)) == 10.0


def test_single_attempt_policy_never_retries() -> None:
    call = Flaky(transient())
    with pytest.raises(TransientStripeError):
        RetryPolicy(max_attempts=1).run(call)
    assert call.calls == 1


def test_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
