"""Gateway errors: Stripe's exceptions translated into two classes that encode retry policy.

`TransientStripeError` may succeed if the same request is sent again (rate limits, 5xx,
connection failures, `Stripe-Should-Retry: true`); `PermanentStripeError` will not (bad
parameters, authentication, idempotency misuse). The retry loop decides, the class informs
(STYLE 7, 8). Every message is scrubbed of secrets before it leaves the gateway, because
errors end up in logs, plans and the apply journal (DESIGN §8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import stripe

from billing_reconciler.config import redact


def scrub(text: str) -> str:
    """`text` with every secret shortened to its prefix and last four characters.

    The same masking as `config.redact`, on purpose: two rules would show the same key two
    ways (or one of them too much of it).
    """
    return redact(text)


class StripeGatewayError(Exception):
    """A failed Stripe call, with what Stripe told us and its request id for support."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = scrub(message)
        self.code = code
        self.param = param
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(self.message)

    def __str__(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.http_status),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"param={self.param!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r})"
        )


class TransientStripeError(StripeGatewayError):
    """Worth retrying with the same idempotency key; `retry_after` is the server's hint."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code=code, param=param, http_status=http_status, request_id=request_id
        )
        self.retry_after = retry_after


class PermanentStripeError(StripeGatewayError):
    """Sending the same request again cannot succeed: the step fails with Stripe's message."""


class IdempotencyKeyReusedError(PermanentStripeError):
    """Stripe refused a key already used with other parameters (400 `idempotency_error`): it
    says nothing of what the key's first request did (it may have created an object)."""


class StripeAuthenticationError(PermanentStripeError):
    """Stripe refused the API key (401). The only fix is another key, so the message says
    that and nothing else (the SDK's text quotes the key and links to the dashboard)."""

    def __str__(self) -> str:
        return self.message


class StripeUnreachableError(TransientStripeError):
    """No HTTP answer at all from `base_url` (refused, DNS, timeout): `reason` says which."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason

    def __str__(self) -> str:
        return self.message


def connection_failure_reason(error: BaseException) -> str:
    """The root cause of a connection failure in a few words (`connection refused`).

    The SDK wraps requests, which wraps urllib3, which wraps the socket error: the innermost
    OS error says what happened; the wrappers only add pool and object addresses.
    """
    chain = _exception_chain(error)
    for cause in reversed(chain):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    # Checked after the OS errors: urllib3 files a refused connection under a Timeout class.
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in chain):
        return "timed out"
    return type(chain[-1]).__name__


def _exception_chain(error: BaseException) -> list[BaseException]:
    # Causes, contexts, exception arguments and urllib3's `reason`, outermost first.
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        pending += [e for e in linked if isinstance(e, BaseException)]
    return found


def translate(error: stripe.StripeError) -> StripeGatewayError:
    """The gateway error for a Stripe SDK exception, chained by the caller with `from`."""
    fields = _fields(error)
    if _is_transient(error):
        return TransientStripeError(**fields, retry_after=_retry_after(error.headers))
    if isinstance(error, stripe.IdempotencyError):
        return IdempotencyKeyReusedError(**fields)
    return PermanentStripeError(**fields)


class _ErrorFields(TypedDict):
    message: str
    code: str | None
    param: str | None
    http_status: int | None
    request_id: str | None


def _fields(error: stripe.StripeError) -> _ErrorFields:
    param = getattr(error, "param", None)
    return {
        "message": error.user_message or type(error).__name__,
        "code": error.code,
        "param": param if isinstance(param, str) else None,
        "http_status": error.http_status,
        "request_id": error.request_id,
    }


def _is_transient(error: stripe.StripeError) -> bool:
    # Stripe's own verdict wins when it gives one: it knows whether the request may have
    # been applied (the SDK's retry logic follows the same order).
    verdict = _header(error.headers, "stripe-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    status = error.http_status
    if status is None:
        return False
    # 409 is Stripe's "another request with this idempotency key is in flight" (or a lock
    # conflict): the first one will finish, so asking again later is safe.
    return status == 429 or status == 409 or status >= 500


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare enough that our own backoff is a fine answer
    return max(seconds, 0.0)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value).strip().lower()
    return None
