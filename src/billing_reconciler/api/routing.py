"""What every route shares: the error-translating route class, path and paging parameters.

`ApiRoute` wraps each handler, so validation failures (raised before the handler runs, hence
before the store is touched), `ApiError`s, the store's typed errors and anything unexpected
all leave as the §19 envelope, from this router alone.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, Path, Query, Request, Response
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_reconciler.api.auth import Requires
from billing_reconciler.api.errors import (
    ApiError,
    fallback_response,
    from_http,
    from_store,
    from_validation,
    invalid,
    unexpected,
)
from billing_reconciler.api.models import Accepted, ErrorBody
from billing_reconciler.customer_validation import not_only_dots
from billing_reconciler.store import StoreError

PREFIX: Final = "/v1beta1"
ORG_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
"""An org id's characters (DESIGN §15); `is_org_id` also refuses one of dots only."""
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_BODY_BYTES: Final = 1024 * 1024
"""The largest request body read; a larger one is 422 `invalid_argument` (field `body`)."""
_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def not_padded(value: str) -> str:
    """An id that is not blank and neither begins nor ends with whitespace."""
    if not value.strip():
        raise ValueError("must not be blank (only whitespace)")
    if value != value.strip():
        raise ValueError("must not begin or end with whitespace")
    return value


def is_org_id(value: str) -> bool:
    """What `OrgId` accepts."""
    return re.fullmatch(ORG_ID_PATTERN, value) is not None and bool(value.strip("."))


OrgId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=ORG_ID_PATTERN,
        description="The host's organization id: 1-64 characters of [A-Za-z0-9_.:-], not "
        "only dots.",
    ),
    AfterValidator(not_only_dots),
]
UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The host's user id: no control characters, no '/', not only dots, not "
        "blank, no whitespace at either end.",
    ),
    AfterValidator(not_padded),
    AfterValidator(not_only_dots),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (max 500).")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="The `next_cursor` of the previous page."),
]

T = TypeVar("T")


def _encode_cursor(kind: str, name: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{name}".encode()).decode().rstrip("=")


def _decode_cursor(kind: str, cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, sep, name = text.partition(":")
    if not sep or prefix != kind or _encode_cursor(kind, name) != cursor:
        raise invalid("not a cursor this list handed out", field="cursor")
    return name


def paginate(
    items: Sequence[T], name: Callable[[T], str], *, kind: str, limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """A page of `items` ordered by `name` (unique), after the `cursor` of the previous page,
    and the next page's cursor (None: last). Cursors are opaque (the last name of a page, with
    the list's `kind`): one of another list, or not one at all, is 400 `invalid_argument`
    field `cursor`, as the transactions and subscriptions lists answer; an item removed
    between two pages does not break the walk."""
    ordered = sorted(items, key=name)
    if cursor is not None:
        after = _decode_cursor(kind, cursor)
        ordered = [item for item in ordered if name(item) > after]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, _encode_cursor(kind, name(page[-1])) if more and page else None


_ERROR_DESCRIPTIONS: Final = {
    400: "Unreadable request (malformed JSON, a bad path parameter)",
    401: "No valid token (`unauthenticated`)",
    403: "An app token on an admin route (`forbidden`)",
    404: "No such organization, account or object (`not_found`)",
    402: "Stripe declined a payment (`payment_failed`)",
    409: "Conflict (`already_exists`, `id_conflict`, `failed_precondition`)",
    422: "Invalid field (`invalid_argument`) or `insufficient_credits`",
    503: "The store or Stripe is unavailable (`provider_unavailable`); retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    return {
        status: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
        for status in sorted({400, 401, 422, 503, *statuses})
    }


def accepted_response() -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entry of a write that may answer 202 (its reconcile unfinished)."""
    return {
        202: {
            "model": Accepted,
            "description": "Recorded; the reconcile with Stripe had not finished in time, or "
            "this replica does not write (poll the `Location`)",
        }
    }


def _body_too_large() -> ApiError:
    return invalid(
        f"the request body exceeds {MAX_BODY_BYTES} bytes",
        field="body",
        limit=MAX_BODY_BYTES,
    )


async def _read_capped_body(request: Request) -> None:
    """Read the body (at most `MAX_BODY_BYTES` + 1 bytes) so the handler parses the cached
    copy; a larger body is refused before it is buffered or parsed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _body_too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _body_too_large()
        chunks.append(chunk)
    # Starlette's `Request.body()` answers from this cache (the stream is consumed).
    request._body = b"".join(chunks)


_EMPTY_BODY: Final = re.compile(rb"[ \t\r\n]*(\{[ \t\r\n]*\})?[ \t\r\n]*")
"""What a route without a body takes as none: nothing, JSON whitespace, or `{}`."""


def _parameter_errors(request: Request) -> list[Any]:
    """The route's path and query parameter errors, as FastAPI's validation would find them
    after its dependencies ran."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return []
    errors: list[Any] = []
    _, found = request_params_to_args(route.dependant.path_params, request.path_params)
    errors.extend(found)
    _, found = request_params_to_args(route.dependant.query_params, request.query_params)
    errors.extend(found)
    return errors


def _unknown_query_parameter(request: Request) -> str | None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return None
    known = {param.alias for param in route.dependant.query_params}
    return next((name for name in request.query_params if name not in known), None)


def _repeated_query_parameter(request: Request) -> str | None:
    """A query parameter given more than once (`?force=false&force=true`: which one counts
    would be a guess; tester T4-2)."""
    names = [name for name, _ in request.query_params.multi_items()]
    return next((name for name in names if names.count(name) > 1), None)


def _refusal(request: Request, body: bytes) -> tuple[str, str] | None:
    """Why a route without a body refuses this request, (message, field), or None."""
    where = f"{request.method} {request.url.path}"
    repeated = _repeated_query_parameter(request)
    if repeated is not None:
        return (
            f"{where}: the query parameter {repeated!r} is given more than once; give it once",
            repeated,
        )
    unknown = _unknown_query_parameter(request)
    if unknown is not None:
        # Tester T3-4: `?org_id=acme` on the fleet-wide invoice route was ignored as a body
        # was (and `?forced=true`, a typo of `force`): what such a route acts on is its path
        # and its declared query parameters alone.
        return (
            f"{where} has no query parameter {unknown!r}: it would be ignored (this route "
            "acts on its path and declared parameters alone)",
            unknown,
        )
    if _EMPTY_BODY.fullmatch(body):
        return None
    return (
        f"{where} takes no request body: what it acts on is its path and query alone, so a "
        "body (say an org id) would be ignored; send none, or {}",
        "body",
    )


async def _refuse_body(request: Request) -> None:
    body = await request.body()  # `ApiRoute` has read it (capped): the cached copy
    refusal = _refusal(request, body)
    if refusal is None:
        return
    # Dependencies run before FastAPI validates the path and query: a bad org id in the path
    # still answers 400 naming `org`, as it does without a body.
    errors = _parameter_errors(request)
    if errors:
        raise RequestValidationError(errors)
    message, field = refusal
    raise invalid(message, field=field)


NO_BODY: Final = Depends(_refuse_body)
"""The dependency of a mutating route without a body (tester T1 F15): a body other than
nothing, whitespace or `{}`, or a query parameter the route does not declare (T3-4), is 422
`invalid_argument` (field `body`, or the parameter's name), before the route does
anything (a bad path parameter still answers first, as without a body). Such a body was
ignored: `{"org_id": "acme"}` sent to the fleet-wide invoice route looked scoped and was
not."""


def _is_json(content_type: str | None) -> bool:
    """`application/json` or `application/<something>+json`, parameters aside (FastAPI parses
    a body as JSON only then)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _require_json(request: Request) -> None:
    """A body sent with another content type (curl's `-d` sends form encoding) would reach
    validation as bytes ("Input should be a valid dictionary"): say what is wrong instead."""
    if request._body and not _is_json(request.headers.get("content-type")):
        raise invalid("the body must be JSON (Content-Type: application/json)", field="body")


class ApiRoute(APIRoute):
    """A route whose every failure is answered in the API's error envelope.

    Order: the token first (nothing else of an unauthenticated request is looked at), then
    the body's size and content type, then FastAPI's parsing and validation, then the
    handler."""

    def _authorize(self, request: Request) -> None:
        for dependency in self.dependencies:
            check = dependency.dependency
            if isinstance(check, Requires):
                check.authorize(request.headers.get("Authorization"))

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await respond(request)
            except Exception as error:
                # Building an error answer failed (it should not): still the envelope.
                try:
                    return unexpected(error, request).response()
                except Exception:
                    return fallback_response()

        async def respond(request: Request) -> Response:
            try:
                self._authorize(request)
                if request.method not in _BODYLESS:
                    await _read_capped_body(request)
                    if self.body_field is not None:
                        _require_json(request)
                return await handler(request)
            except ApiError as error:
                return error.response()
            except RequestValidationError as error:
                return from_validation(error).response()
            except StarletteHTTPException as error:
                # FastAPI's own refusal of a body it could not parse (e.g. nested too deep).
                return from_http(error).response()
            except StoreError as error:
                answer = from_store(error)
                org = request.path_params.get("org")
                if org is not None and answer.status != 503:
                    answer.details.setdefault("org_id", org)
                return answer.response()
            except Exception as error:
                return unexpected(error, request).response()

        return handle
