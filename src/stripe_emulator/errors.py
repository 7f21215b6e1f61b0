"""Stripe-shaped API errors: the `{"error": {...}}` body and the HTTP status the SDK maps.

The SDK picks its exception class from the status and `error.type` (see
`stripe._api_requestor.specific_v1_api_error`), so both must match what real Stripe sends.
"""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    """An error answered to the client in Stripe's JSON shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, *, request_id: str) -> dict[str, Any]:
        """The JSON body Stripe sends for this error."""
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    """A 400 `invalid_request_error`."""
    return StripeError(message, param=param, code=code)


def unknown_parameter(param: str) -> StripeError:
    """What Stripe answers for a parameter the endpoint does not take (or an immutable one)."""
    return invalid(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")


def missing_parameter(param: str) -> StripeError:
    """What Stripe answers when a required parameter is absent."""
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def invalid_enum(param: str, allowed: tuple[str, ...]) -> StripeError:
    """A value outside an enum Stripe enforces."""
    listed = ", ".join(allowed[:-1]) + f", or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    return invalid(
        f"Invalid {param}: must be one of {listed}", param=param, code="parameter_invalid_string"
    )


def no_such(
    resource: str, object_id: str, *, param: str = "id", in_body: bool = False
) -> StripeError:
    """`resource_missing`: 404 for an object named in the URL (`GET /v1/prices/price_nope`),
    400 for one named in a request parameter (`POST /v1/prices product=prod_nope`), as Stripe
    answers: the URL exists, the request is what is invalid."""
    return StripeError(
        f"No such {resource}: '{object_id}'",
        status=400 if in_body else 404,
        code="resource_missing",
        param=param,
    )


def unrecognized_url(method: str, path: str) -> StripeError:
    """404 for a path the emulator does not serve."""
    return StripeError(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        status=404,
    )


def authentication(message: str) -> StripeError:
    """401: the SDK raises `AuthenticationError`."""
    return StripeError(message, status=401)


def permission(message: str) -> StripeError:
    """403: the SDK raises `PermissionError`."""
    return StripeError(message, status=403)


def rate_limited() -> StripeError:
    """429: the SDK raises `RateLimitError`."""
    return StripeError(
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        status=429,
        code="rate_limit",
        headers={"Stripe-Should-Retry": "true"},
    )


def idempotency_conflict(key: str) -> StripeError:
    """400 `idempotency_error`: the SDK raises `IdempotencyError`."""
    return StripeError(
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
        type_="idempotency_error",
    )


def api_error(message: str = "An unknown error occurred") -> StripeError:
    """500 `api_error`: the SDK raises `APIError` (and retries it)."""
    return StripeError(message, status=500, type_="api_error")
