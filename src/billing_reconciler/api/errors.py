"""The API's errors: one envelope, a closed set of codes, and the translation of everything
else (validation failures, store errors, unexpected exceptions) into it (DESIGN §19).

Every error answer is `{"error": {"code", "message", "details"}}`; `details` names the
offending field or id. Nothing a client sent that could be a credential is echoed, and no
traceback ever leaves the process: an unexpected exception is logged by class name and
answered as a retryable 503.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_reconciler.customer_validation import field_path
from billing_reconciler.store import ConflictError, NotFoundError, StoreError

ErrorCode = Literal[
    "unauthenticated",
    "forbidden",
    "not_found",
    "invalid_argument",
    "already_exists",
    "id_conflict",
    "seat_limit_reached",
    "failed_precondition",
    "insufficient_credits",
    "payment_failed",
    "provider_unavailable",
]
ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(ErrorCode))

_log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An answer other than success; raise it anywhere below a route."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code: ErrorCode = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return EnvelopeResponse(self.body(), status_code=self.status, headers=headers)


# --- answers that always encode -------------------------------------------------------------

FALLBACK_BODY: Final = (
    b'{"error":{"code":"provider_unavailable","message":"the request could not be '
    b'completed; retry later","details":{}}}'
)
"""The answer of last resort: what an error answer becomes if even its cleaned copy does not
encode (it never should)."""


def printable(value: Any) -> Any:
    """`value` made JSON-encodable: a string that is not Unicode text (a lone surrogate from
    JSON's `\\ud800` escape) with its surrogates spelled as `\\udXXX` text, dict keys as
    strings, a tuple or set as a list, a non-finite float or any other object as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {printable(str(key)): printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [printable(item) for item in value]
    return printable(str(value))


class EnvelopeResponse(JSONResponse):
    """A JSON answer whose rendering cannot fail: content that does not encode (an echoed id
    holding a lone surrogate, an object JSON cannot spell) is rendered cleaned by `printable`,
    and if that fails too the answer is `FALLBACK_BODY`."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (UnicodeError, TypeError, ValueError, RecursionError):
            pass
        try:
            return super().render(printable(content))
        except Exception:  # the last resort: never an exception out of an answer
            _log.error("api answer could not be encoded")
            self.status_code = 503
            return FALLBACK_BODY


def fallback_response() -> Response:
    """The 503 envelope, built from constant bytes (for a failure while answering)."""
    return Response(FALLBACK_BODY, status_code=503, media_type="application/json")


def not_found(message: str, **details: Any) -> ApiError:
    return ApiError(404, "not_found", message, details)


def invalid(message: str, *, status: int = 422, **details: Any) -> ApiError:
    return ApiError(status, "invalid_argument", message, details)


def precondition(message: str, **details: Any) -> ApiError:
    return ApiError(409, "failed_precondition", message, details)


# --- validation ---------------------------------------------------------------------------

# Pydantic error types that mean "the request could not be read", answered 400 rather than 422.
_UNREADABLE: Final = frozenset({"json_invalid", "json_type"})


def _field(loc: Sequence[str | int]) -> str:
    # ("body", "amount") -> "amount"; ("path", "org") -> "org"; ("query", "limit") -> "limit";
    # ("body", "tax_ids", 0, "type") -> "tax_ids[0].type" (the YAML diagnostics' spelling).
    parts = list(loc[1:]) if len(loc) > 1 else list(loc)
    return field_path(parts) or "body"


def from_validation(error: RequestValidationError) -> ApiError:
    """A 400 (unreadable JSON, a bad path parameter) or 422 naming every offending field."""
    problems = []
    status = 422
    for item in error.errors():
        loc = tuple(item.get("loc", ()))
        kind = str(item.get("type", ""))
        if kind in _UNREADABLE or (loc and loc[0] == "path"):
            status = 400
        # The input itself is never echoed: it may be large, or a secret pasted by mistake.
        problems.append(
            {
                "field": "body" if kind in _UNREADABLE else _field(loc),
                "in": str(loc[0]) if loc else "body",
                "type": kind,
                "message": str(item.get("msg", "")),
            }
        )
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    if status == 400 and first.get("type") in _UNREADABLE:
        message = "the request body is not valid JSON"
    else:
        message = f"{first['field']}: {first['message']}"
    return ApiError(
        status, "invalid_argument", message, {"field": first["field"], "errors": problems}
    )


# --- store errors -------------------------------------------------------------------------


_CONFLICT_CODES: Final[dict[str, ErrorCode]] = {
    "already_exists": "already_exists",
    "failed_precondition": "failed_precondition",
    "id_conflict": "id_conflict",
}


def from_store(error: StoreError) -> ApiError:
    """The store's typed refusals, as API errors (their messages name no secrets)."""
    name = type(error).__name__
    message = str(error) or name
    details = {
        key: value
        for key in ("id", "account_id", "entry_id", "balance", "credit_min", "amount")
        if (value := getattr(error, key, None)) is not None
    }
    if name == "InsufficientCreditsError":
        return ApiError(422, "insufficient_credits", message, details)
    if name == "IdConflictError":
        return ApiError(409, "id_conflict", message, details)
    if isinstance(error, NotFoundError):
        return ApiError(404, "not_found", message, details)
    if isinstance(error, ConflictError):
        code: ErrorCode = _CONFLICT_CODES.get(getattr(error, "code", ""), "failed_precondition")
        return ApiError(409, code, message, details)
    _log.error("store error answered 503", error=name)
    return ApiError(503, "provider_unavailable", "the store refused the request; retry later")


def unexpected(error: Exception, request: Request | None = None) -> ApiError:
    """An exception nothing else recognized (validation keeps bad input from reaching the
    store, so this is an outage): logged by class, route path, method and org id, never the
    body, a header or the message (which may quote a connection URL with its password)."""
    route = None if request is None else request.scope.get("route")
    _log.error(
        "api request failed",
        error=type(error).__name__,
        path=getattr(route, "path", None) or (None if request is None else request.url.path),
        method=None if request is None else request.method,
        org_id=None if request is None else request.path_params.get("org"),
    )
    return ApiError(503, "provider_unavailable", "the request could not be completed; retry later")


def from_http(exc: StarletteHTTPException) -> ApiError:
    """A Starlette/FastAPI HTTP refusal (an unparsable body, an unknown route) as ours."""
    if exc.status_code == 405:
        return ApiError(404, "not_found", "no such route for this method")
    if exc.status_code == 404:
        return ApiError(404, "not_found", "no such route")
    if exc.status_code < 500:
        status = exc.status_code if exc.status_code in _CLIENT_STATUSES else 400
        return ApiError(status, "invalid_argument", str(exc.detail), {"field": "body"})
    return ApiError(503, "provider_unavailable", "the request could not be completed; retry later")


_CLIENT_STATUSES: Final = frozenset({400, 422})


# --- app-wide handlers (requests that match no route) ---------------------------------------


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    del request
    assert isinstance(exc, StarletteHTTPException)
    return from_http(exc).response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    del request
    assert isinstance(exc, RequestValidationError)
    return from_validation(exc).response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer unmatched routes and stray validation errors with the API's envelope."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
