"""The gateway's request path without a network: translation, retries, outcomes, repr."""

from __future__ import annotations

import random

import pytest
import stripe

from billing_reconciler.stripe_gateway import (
    PermanentStripeError,
    RequestOutcome,
    RetryPolicy,
    StripeGateway,
    TransientStripeError,
    key_mode,
    redact_key,
)

KEY = "sk_test_51Secret0123456789abcdefWXYZ"


def gateway(outcomes: list[RequestOutcome], *, max_attempts: int = 3) -> StripeGateway:
    policy = RetryPolicy(
        max_attempts=max_attempts, base_delay=0.0, rng=random.Random(0), sleep=lambda _: None
    )
    return StripeGateway(
        api_key=KEY, rate_limit_per_second=1000, retry=policy, on_request=outcomes.append
    )


@pytest.mark.parametrize(
    ("key", "mode"),
    [
        ("sk_test_abc", "test"),
        ("rk_test_abc", "test"),
        ("sk_live_abc", "live"),
        ("rk_live_abc", "live"),
        ("something_else", "live"),
    ],
)
def test_key_mode(key: str, mode: str) -> None:
    assert key_mode(key) == mode


def test_default_rate_limit_follows_key_mode() -> None:
    assert StripeGateway(api_key="sk_test_x").limiter.per_second == 25
    assert StripeGateway(api_key="sk_live_x").limiter.per_second == 100
    assert StripeGateway(api_key="sk_live_x", rate_limit_per_second=7).limiter.per_second == 7


def test_repr_never_shows_the_key() -> None:
    text = repr(StripeGateway(api_key=KEY, api_base="http://127.0.0.1:1"))
    assert KEY not in text
    assert "sk_test_…WXYZ" in text
    assert redact_key("opaque-key-1234") == "…1234"


def test_transient_failures_are_retried_and_reported_once() -> None:
    outcomes: list[RequestOutcome] = []
    failures = [
        stripe.APIError("boom", http_status=500),
        stripe.RateLimitError("slow", http_status=429),
    ]

    def send() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    result = gateway(outcomes).request(method="GET", endpoint="/v1/prices", send=send)
    assert result == "done"
    [outcome] = outcomes
    assert (outcome.method, outcome.endpoint, outcome.error, outcome.retries) == (
        "GET",
        "/v1/prices",
        None,
        2,
    )


def test_permanent_failure_surfaces_translated_and_chained() -> None:
    outcomes: list[RequestOutcome] = []
    sdk_error = stripe.InvalidRequestError(
        "bad", "unit_amount", http_status=400, headers={"request-id": "req_9"}
    )

    def send() -> str:
        raise sdk_error

    with pytest.raises(PermanentStripeError) as raised:
        gateway(outcomes).request(method="POST", endpoint="/v1/prices", send=send)
    assert raised.value.__cause__ is sdk_error
    assert (raised.value.param, raised.value.request_id) == ("unit_amount", "req_9")
    [outcome] = outcomes
    assert (outcome.status, outcome.error, outcome.retries) == (
        400,
        "PermanentStripeError",
        0,
    )


def test_exhausted_retries_report_attempts() -> None:
    outcomes: list[RequestOutcome] = []

    def send() -> str:
        raise stripe.APIConnectionError("reset", should_retry=True)

    with pytest.raises(TransientStripeError):
        gateway(outcomes, max_attempts=3).request(method="GET", endpoint="/v1/x", send=send)
    assert outcomes[0].retries == 2
    assert outcomes[0].error == "TransientStripeError"
