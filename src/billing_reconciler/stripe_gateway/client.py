"""The Stripe client: SDK setup, and the one path every request takes (pace, send, retry).

Every call into the SDK goes through `StripeGateway.request`, which takes a token from the rate
limiter, translates SDK exceptions (`errors.translate`), retries transient ones under the retry
policy, and reports one `RequestOutcome` per logical call for metrics. The SDK's own network
retries are off: two retry loops would multiply attempts and hide them from our budget.

At debug level every HTTP attempt is logged (`stripe request`: method, path, status, request
id, idempotency key, latency, retries so far) by the SDK's HTTP client, the one place that sees
all of them; bodies, query strings and headers other than the idempotency key never are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import stripe
import structlog

from billing_reconciler.config import mask
from billing_reconciler.stripe_gateway.errors import (
    StripeAuthenticationError,
    StripeGatewayError,
    StripeUnreachableError,
    TransientStripeError,
    connection_failure_reason,
    translate,
)
from billing_reconciler.stripe_gateway.pacing import KeyMode, RateLimiter, default_rate_limit
from billing_reconciler.stripe_gateway.retry import RetryPolicy

if TYPE_CHECKING:
    # The SDK exports this TypedDict only from its private module.
    from stripe._base_address import BaseAddresses

R = TypeVar("R")

_log = structlog.get_logger("billing_reconciler.stripe")

STRIPE_API_BASE: Final[str] = "https://api.stripe.com"
CONNECT_TIMEOUT_SECONDS: Final[float] = 3.0
"""Connecting takes milliseconds when the host is up; waiting the full request timeout for
a host that drops packets would keep the user in silence for half a minute."""

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
    """The key as logs may show it: prefix and last four characters (none of a short key)."""
    return mask(api_key)


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
        self._attempt = _AttemptCounter()
        self.sdk = stripe.StripeClient(
            api_key,
            base_addresses=_base_addresses(api_base),
            max_network_retries=0,
            http_client=_LoggedHttpClient(
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout_seconds), timeout_seconds),
                retries_so_far=self._attempt.retries,
            ),
        )

    @property
    def base_url(self) -> str:
        """Where requests go: the configured base (emulator, proxy) or Stripe's API."""
        return (self.api_base or STRIPE_API_BASE).rstrip("/")

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
            self._attempt.set(attempts)
            attempts += 1
            self.limiter.acquire()
            try:
                return send()
            except stripe.StripeError as error:
                translated = self._translate(error)
                if translated.http_status == 429:
                    rate_limited += 1
                raise translated from error

        try:
            result = self.retry.run(attempt, on_retry=self._warn_unreachable).value
        except StripeGatewayError as error:
            self._report(
                method,
                endpoint,
                error.http_status,
                _error_label(error),
                attempts,
                started,
                rate_limited,
            )
            raise
        self._report(method, endpoint, _status_of(result), None, attempts, started, rate_limited)
        return result

    def _translate(self, error: stripe.StripeError) -> StripeGatewayError:
        # The two failures a user fixes outside this program get a message saying what to
        # fix; the SDK's own text ("let us know at support@stripe.com") does not.
        if isinstance(error, stripe.AuthenticationError):
            return StripeAuthenticationError(
                f"Stripe rejected the API key (401): check STRIPE_API_KEY ({self._redacted_key})",
                code=error.code,
                http_status=error.http_status,
                request_id=error.request_id,
            )
        if isinstance(error, stripe.APIConnectionError):
            return StripeUnreachableError(self.base_url, connection_failure_reason(error))
        return translate(error)

    def _warn_unreachable(
        self, retry_number: int, error: TransientStripeError, delay: float
    ) -> None:
        # Warning, not debug: at the default level the user otherwise waits through the
        # whole backoff in silence before learning that the address is wrong.
        if isinstance(error, StripeUnreachableError):
            _log.warning(
                "stripe unreachable, retrying",
                base_url=error.base_url,
                reason=error.reason,
                attempt=retry_number + 1,
                max_attempts=self.retry.max_attempts,
                retry_in_seconds=round(delay, 2),
            )

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


class _AttemptCounter(threading.local):
    """Retries so far of the call running on this thread, for the HTTP client's log line.

    Thread-local because apply workers share one gateway and each runs its own call.
    """

    def __init__(self) -> None:
        self.value = 0

    def set(self, retries: int) -> None:
        self.value = retries

    def retries(self) -> int:
        return self.value


class _LoggedHttpClient(stripe.RequestsClient):
    """The SDK's requests client, logging each exchange at debug (never a body or a key)."""

    def __init__(self, *, timeout: tuple[float, float], retries_so_far: Callable[[], int]):
        super().__init__(timeout=timeout)
        self._retries_so_far = retries_so_far

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,  # the base class's telemetry hook; unused here
    ) -> tuple[Any, int, Mapping[str, str]]:
        started = time.monotonic()
        try:
            content, status, response_headers = super().request(method, url, headers, post_data)
        except stripe.StripeError as error:
            self._log(method, url, headers, started, None, None, type(error).__name__)
            raise
        request_id = _header(response_headers, "request-id")
        self._log(method, url, headers, started, status, request_id, None)
        return content, status, response_headers

    def _log(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        started: float,
        status: int | None,
        request_id: str | None,
        error: str | None,
    ) -> None:
        if not structlog.is_configured():
            # structlog's defaults print every level to stdout, which carries plans: a
            # program that never set up logging (a library user, a benchmark) gets no
            # request lines rather than debug noise in its output.
            return
        _log.debug(
            "stripe request",
            method=method.upper(),
            # The path only: list queries carry params, which are not for logs.
            path=urlsplit(url).path,
            status=status,
            request_id=request_id,
            idempotency_key=_header(headers, "idempotency-key"),
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            retries=self._retries_so_far(),
            **({"error": error} if error else {}),
        )


def _error_label(error: StripeGatewayError) -> str:
    # Metrics label by retry class, not by subclass: dashboards count transient vs permanent.
    return (
        "TransientStripeError"
        if isinstance(error, TransientStripeError)
        else ("PermanentStripeError")
    )


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _base_addresses(api_base: str | None) -> BaseAddresses | None:
    if api_base is None:
        return None
    base = api_base.rstrip("/")
    # The emulator (or a proxy) serves every Stripe host at one address.
    return {"api": base, "connect": base, "files": base, "meter_events": base}


def _status_of(result: object) -> int | None:
    # An SDK object carries its response; a raw request's result is the response.
    response = (
        result
        if isinstance(result, stripe.StripeResponse)
        else getattr(result, "last_response", None)
    )
    code = getattr(response, "code", None)
    return code if isinstance(code, int) else None
