"""The path of one `/v1` request: auth, rate limit, latency, faults, params, idempotency,
handler, request log.

Kept free of ASGI details: `app.py` turns the wire into an `ApiRequest` and an
`ApiResponse` back into bytes (or a dropped connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stripe_emulator.auth import api_key_from, check_key
from stripe_emulator.clock import run_sweeps
from stripe_emulator.core import API_VERSION, Emulator, RequestContext
from stripe_emulator.errors import (
    StripeError,
    api_error,
    invalid,
    rate_limited,
    unrecognized_url,
)
from stripe_emulator.forms import FormTree, parse_query
from stripe_emulator.idempotency import StoredResponse, fingerprint
from stripe_emulator.ids import new_request_id
from stripe_emulator.operations import LoggedRequest
from stripe_emulator.params import Params, validate
from stripe_emulator.routing import Route, Router

logger = logging.getLogger("stripe_emulator")


@dataclass(slots=True)
class ApiRequest:
    """An HTTP request to `/v1/...`."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    wait_disconnect: Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ApiResponse:
    """What to answer; `drop` closes the connection instead of answering."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class Pipeline:
    """Runs requests against one `Emulator` through one `Router`."""

    def __init__(self, emulator: Emulator, router: Router) -> None:
        self.emulator = emulator
        self.router = router

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request and record it in the request log.

        The log stamps each request when it arrived, not when it was answered: Stripe counts
        requests against the rate limit as they come in, and a backlog answered at once (the
        emulator shares the machine with its clients) must not look like a burst."""
        received = self.emulator.clock.now_float()
        request_id = new_request_id()
        key = request.headers.get("idempotency-key")
        replayed = False
        try:
            response = await self._gate(request, request_id)
            replayed = response.headers.get("Idempotent-Replayed") == "true"
        except StripeError as error:
            response = _error_response(error, request_id)
        response.headers.setdefault("Request-Id", request_id)
        response.headers["Stripe-Version"] = API_VERSION
        if key:
            response.headers["Idempotency-Key"] = key
        self.emulator.request_log.add(
            LoggedRequest(
                method=request.method,
                path=request.path,
                status=response.status,
                idempotency_key=key,
                timestamp=received,
                request_id=response.headers["Request-Id"],
                replayed=replayed,
            )
        )
        return response

    async def _gate(self, request: ApiRequest, request_id: str) -> ApiResponse:
        check_key(api_key_from(request.headers.get("authorization")), request.method)
        _check_version(request.headers.get("stripe-version"))
        if not self.emulator.rate_limiter.allow():
            raise rate_limited()
        if self.emulator.settings.latency_ms > 0:
            await asyncio.sleep(self.emulator.settings.latency_ms / 1000)
        fault = self.emulator.faults.fire(request.method, request.path)
        if fault == "500":
            raise api_error("An unknown error occurred (injected by the emulator).")
        if fault == "timeout":
            return await self._hang(request)
        response = self._execute(request, request_id)
        state_file = self.emulator.state_file
        if state_file is not None and request.method != "GET":
            # With `--state`, a write is answered only once it is on disk (group commit:
            # `StateFile.wait_saved`), off the event loop.
            await asyncio.to_thread(state_file.wait_saved, state_file.dirty_generation)
        response.drop = fault == "drop_after_commit"
        return response

    async def _hang(self, request: ApiRequest) -> ApiResponse:
        # Hold the request until the client gives up (its timeout) or the hang ends; nothing
        # was committed, so a retry runs for real.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.wait_disconnect(), self.emulator.settings.hang_seconds)
        raise api_error("The request timed out (injected by the emulator).")

    def _execute(self, request: ApiRequest, request_id: str) -> ApiResponse:
        resolved = self.router.resolve(request.method, request.path)
        if resolved is None:
            raise unrecognized_url(request.method, request.path)
        route, path_params = resolved
        params = validate(route.params, _raw_params(request))
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        # What fell due as wall time passed (an open Checkout Session past `expires_at`)
        # happens before the request sees the account, as on Stripe.
        run_sweeps(self.emulator)
        with self.emulator.lock:
            if key is None:
                return self._run(route, params, path_params, request, request_id, None)
            return self._run_idempotent(route, params, path_params, request, request_id, key)

    def _run_idempotent(
        self,
        route: Route,
        params: Params,
        path_params: dict[str, str],
        request: ApiRequest,
        request_id: str,
        key: str,
    ) -> ApiResponse:
        now = self.emulator.clock.now_float()
        print_ = fingerprint(request.method, request.path, params)
        stored = self.emulator.idempotency.lookup(key, print_, now)
        if stored is not None:
            return ApiResponse(
                stored.status,
                stored.body,
                {
                    "Idempotent-Replayed": "true",
                    "Original-Request": stored.request_id,
                    "Request-Id": request_id,
                },
            )
        response = self._run(route, params, path_params, request, request_id, key)
        if response.status < 500:
            stored = StoredResponse(print_, response.status, response.body, request_id, now)
            self.emulator.idempotency.remember(key, stored)
        return response

    def _run(
        self,
        route: Route,
        params: Params,
        path_params: dict[str, str],
        request: ApiRequest,
        request_id: str,
        key: str | None,
    ) -> ApiResponse:
        context = RequestContext(self.emulator, request_id, key, request.path)
        try:
            body = route.handler(context, params, path_params)
        except StripeError as error:
            return _error_response(error, request_id)
        except Exception:
            logger.exception("emulator handler failed for %s %s", request.method, request.path)
            return _error_response(api_error(), request_id)
        if request.method != "GET":
            self.emulator.changed()
        return ApiResponse(200, _dumps(body))


def _raw_params(request: ApiRequest) -> FormTree:
    tree = parse_query(request.query)
    if request.method == "POST" and request.body:
        content_type = request.headers.get("content-type", "")
        if "json" in content_type:
            raise invalid("The emulator accepts form-encoded bodies only, as Stripe's v1 API.")
        tree.update(parse_query(request.body.decode()))
    return tree


def _check_version(version: str | None) -> None:
    if version is not None and version != API_VERSION:
        raise invalid(
            f"The Stripe emulator serves API version {API_VERSION} only, the version the "
            f"installed SDK pins; got Stripe-Version: {version}."
        )


def _error_response(error: StripeError, request_id: str) -> ApiResponse:
    return ApiResponse(error.status, _dumps(error.body(request_id=request_id)), dict(error.headers))


def _dumps(body: object) -> bytes:
    return json.dumps(body, indent=2).encode()
