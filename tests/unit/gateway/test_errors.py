"""Stripe SDK exceptions -> transient/permanent gateway errors; secrets never leak."""

from __future__ import annotations

import pytest
import stripe

from billing_reconciler.stripe_gateway import (
    PermanentStripeError,
    TransientStripeError,
    scrub,
    translate,
)

SECRET = "sk_test_51ABCDEFghijklmnopqrstuvwxyz0123456789abcd"


def test_rate_limit_is_transient_and_keeps_request_id() -> None:
    error = translate(
        stripe.RateLimitError("Too many requests", http_status=429, headers={"request-id": "req_1"})
    )
    assert isinstance(error, TransientStripeError)
    assert (error.http_status, error.request_id, error.retry_after) == (429, "req_1", None)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(status: int) -> None:
    assert isinstance(translate(stripe.APIError("boom", http_status=status)), TransientStripeError)


def test_connection_error_is_transient() -> None:
    error = translate(stripe.APIConnectionError("Connection reset", should_retry=True))
    assert isinstance(error, TransientStripeError)
    assert error.http_status is None


def test_invalid_request_is_permanent_with_param_code_and_request_id() -> None:
    error = translate(
        stripe.InvalidRequestError(
            "Received unknown parameter: colour",
            "colour",
            code="parameter_unknown",
            http_status=400,
            headers={"request-id": "req_42"},
        )
    )
    assert isinstance(error, PermanentStripeError)
    assert (error.param, error.code, error.http_status, error.request_id) == (
        "colour",
        "parameter_unknown",
        400,
        "req_42",
    )
    assert "param=colour" in str(error)
    assert "req_42" in str(error)


@pytest.mark.parametrize(
    "sdk_error",
    [
        stripe.AuthenticationError("Invalid API Key", http_status=401),
        stripe.PermissionError("forbidden", http_status=403),
        stripe.IdempotencyError("Keys for idempotent requests ...", http_status=400),
        stripe.InvalidRequestError("No such price", "price", http_status=404),
    ],
)
def test_client_errors_are_permanent(sdk_error: stripe.StripeError) -> None:
    assert isinstance(translate(sdk_error), PermanentStripeError)


def test_idempotency_key_in_use_conflict_is_transient() -> None:
    error = stripe.IdempotencyError("in use by another request", http_status=409)
    assert isinstance(translate(error), TransientStripeError)


def test_should_retry_header_overrides_status() -> None:
    retry_400 = stripe.InvalidRequestError(
        "lock timeout", None, http_status=400, headers={"Stripe-Should-Retry": "true"}
    )
    no_retry_500 = stripe.APIError(
        "boom", http_status=500, headers={"stripe-should-retry": "false"}
    )
    assert isinstance(translate(retry_400), TransientStripeError)
    assert isinstance(translate(no_retry_500), PermanentStripeError)


def test_retry_after_header_is_kept() -> None:
    error = translate(stripe.RateLimitError("slow", http_status=429, headers={"Retry-After": "2"}))
    assert isinstance(error, TransientStripeError)
    assert error.retry_after == 2.0


def test_messages_are_scrubbed_of_secrets() -> None:
    error = translate(
        stripe.AuthenticationError(f"Invalid API Key provided: {SECRET}", http_status=401)
    )
    assert SECRET not in error.message
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert "sk_test_…abcd" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {SECRET}!", "key sk_test_…abcd!"),
        ("rk_live_0123456789abcdefWXYZ", "rk_live_…WXYZ"),
        ("whsec_0123456789abcdefghij", "whsec_…ghij"),
        ("sk_test_short", "sk_test_…"),
        ("pk_test_0123456789abcdef is public", "pk_test_0123456789abcdef is public"),
        ("nothing secret", "nothing secret"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert scrub(text) == expected
