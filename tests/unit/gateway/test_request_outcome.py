"""`RequestOutcome.rate_limited` counts every 429 Stripe answered, retried away or not."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import stripe

from billing_reconciler.stripe_gateway import (
    RequestOutcome,
    RetryPolicy,
    StripeGateway,
    TransientStripeError,
)


def gateway(outcomes: list[RequestOutcome], *, max_attempts: int) -> StripeGateway:
    policy = RetryPolicy(
        max_attempts=max_attempts, base_delay=0.0, rng=random.Random(0), sleep=lambda _: None
    )
    return StripeGateway(
        api_key="sk_test_outcome0000",
        rate_limit_per_second=1000,
        retry=policy,
        on_request=outcomes.append,
    )


def failing(*errors: stripe.StripeError) -> Callable[[], str]:
    pending = list(errors)

    def send() -> str:
        if pending:
            raise pending.pop(0)
        return "done"

    return send


def test_429s_absorbed_by_retries_are_counted() -> None:
    outcomes: list[RequestOutcome] = []
    send = failing(
        stripe.RateLimitError("slow", http_status=429),
        stripe.APIError("boom", http_status=500),
        stripe.RateLimitError("slow", http_status=429),
    )
    gateway(outcomes, max_attempts=5).request(method="GET", endpoint="/v1/prices", send=send)
    [outcome] = outcomes
    assert (outcome.retries, outcome.rate_limited, outcome.error) == (3, 2, None)


def test_429s_that_exhaust_the_retries_are_counted() -> None:
    outcomes: list[RequestOutcome] = []
    send = failing(*[stripe.RateLimitError("slow", http_status=429) for _ in range(3)])
    with pytest.raises(TransientStripeError):
        gateway(outcomes, max_attempts=3).request(method="GET", endpoint="/v1/prices", send=send)
    [outcome] = outcomes
    assert (outcome.status, outcome.retries, outcome.rate_limited) == (429, 2, 3)


def test_no_429_no_count() -> None:
    outcomes: list[RequestOutcome] = []
    gateway(outcomes, max_attempts=1).request(
        method="GET", endpoint="/v1/prices", send=lambda: "done"
    )
    assert outcomes[0].rate_limited == 0
