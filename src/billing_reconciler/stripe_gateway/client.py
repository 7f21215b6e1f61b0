"""The Stripe client: SDK setup, and the one path every request takes (pace, send, retry).

Every call into the SDK goes through `StripeGateway.request`, which takes a token from the rate
limiter, translates SDK exceptions (`errors.translate`), retries transient ones under the retry
policy, and reports one `RequestOutcome` per logical call for metrics. The SDK's own network
retries are off: two retry loops would multiply attempts and hide them from our budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import stripe

from billing_reconciler.stripe_gateway.errors import StripeGatewayError, scrub, translate
from billing_reconciler.stripe_gateway.pacing import KeyMode, RateLimiter, default_rate_limit
from billing_reconciler.stripe_gateway.retry import RetryPolicy

if TYPE_CHECKING:
    # The SDK exports this TypedDict only from its private module.
    from stripe._base_address import BaseAddresses

R = TypeVar("R")

_LIVE_PREFIXES = ("sk_live_", "rk_live_")
_TEST_PREFIXES = ("sk_test_", "rk_test_")


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """One logical call as metrics see it; `endpoint` is a template (`/v1/prices/{id}`)."""

    method: str
    endpoint: str
    status: int | None
    error: str | None
    retries: int
    duration_seconds: float
    rate_limited: int = 0
    """Attempts Stripe answered 429 (Too Many Requests), including ones a retry absorbed."""


def key_mode(api_key: str) -> KeyMode:
    """`test` for test-mode keys; anything else counts as `live`.

    Unknown prefixes are treated as live on purpose: the live-key confirmation guard then
    errs on the side of asking.
    """
    return "test" if api_key.startswith(_TEST_PREFIXES) else "live"


def redact_key(api_key: str) -> str:
    """The key as logs may show it: prefix and last four characters."""
    redacted = scrub(api_key)
    return redacted if redacted != api_key else "…" + api_key[-4:]


class StripeGateway:
    """The configured Stripe client. `sdk` is for the gateway's own modules only."""

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        rate_limit_per_second: int | None = None,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30,
        on_request: Callable[[RequestOutcome], None] | None = None,
    ) -> None:
        self.key_mode: KeyMode = key_mode(api_key)
        self.api_base = api_base
        self._redacted_key = redact_key(api_key)
        self.limiter = RateLimiter(rate_limit_per_second or default_rate_limit(self.key_mode))
        self.retry = retry or RetryPolicy()
        self._on_request = on_request
        self.sdk = stripe.StripeClient(
            api_key,
            base_addresses=_base_addresses(api_base),
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
        )

    def __repr__(self) -> str:
        return (
            f"StripeGateway(key={self._redacted_key!r}, mode={self.key_mode!r}, "
            f"api_base={self.api_base!r}, rate_limit={self.limiter.per_second:g}/s)"
        )

    def request(self, *, method: str, endpoint: str, send: Callable[[], R]) -> R:
        """Run `send` (one SDK call) paced, translated and retried; report its outcome.

        `send` must be repeatable as is: a write closes over its idempotency key, so every
        attempt carries the same one.
        """
        started = time.monotonic()
        attempts = 0
        rate_limited = 0

        def attempt() -> R:
            nonlocal attempts, rate_limited
            attempts += 1
            self.limiter.acquire()
            try:
                return send()
            except stripe.StripeError as error:
                translated = translate(error)
                if translated.http_status == 429:
                    rate_limited += 1
                raise translated from error

        try:
            result = self.retry.run(attempt).value
        except StripeGatewayError as error:
            self._report(
                method,
                endpoint,
                error.http_status,
                type(error).__name__,
                attempts,
                started,
                rate_limited,
            )
            raise
        self._report(method, endpoint, _status_of(result), None, attempts, started, rate_limited)
        return result

    def _report(
        self,
        method: str,
        endpoint: str,
        status: int | None,
        error: str | None,
        attempts: int,
        started: float,
        rate_limited: int,
    ) -> None:
        if self._on_request is None:
            return
        outcome = RequestOutcome(
            method=method,
            endpoint=endpoint,
            status=status,
            error=error,
            retries=max(attempts - 1, 0),
            duration_seconds=time.monotonic() - started,
            rate_limited=rate_limited,
        )
        self._on_request(outcome)


def _base_addresses(api_base: str | None) -> BaseAddresses | None:
    if api_base is None:
        return None
    base = api_base.rstrip("/")
    # The emulator (or a proxy) serves every Stripe host at one address.
    return {"api": base, "connect": base, "files": base, "meter_events": base}


def _status_of(result: object) -> int | None:
    response = getattr(result, "last_response", None)
    code = getattr(response, "code", None)
    return code if isinstance(code, int) else None
