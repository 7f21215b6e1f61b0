"""The operator API on `/_emulator/*` (JSON in, JSON out; no API key needed).

Tests and benchmarks use it, through `control.EmulatorControl`, to reset state, count the API
calls a reconcile makes, slow the server down, rate-limit it, inject faults, move the clock
and watch webhook deliveries.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from stripe_emulator.clock import run_sweeps
from stripe_emulator.core import Emulator, RequestContext
from stripe_emulator.errors import StripeError
from stripe_emulator.forms import parse_query
from stripe_emulator.ids import new_request_id
from stripe_emulator.operations import FAULT_KINDS, Fault
from stripe_emulator.pipeline import ApiRequest, ApiResponse

Json = dict[str, Any]
_Handler = Callable[[Json, dict[str, str]], Json]


class ControlError(Exception):
    """A bad operator request (400)."""


class ControlAnswer(Exception):
    """An operator request answered with a status other than 200 (e.g. the 402 of a
    declined checkout completion)."""

    def __init__(self, status: int, body: Json) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class OperatorApi:
    """Dispatches `/_emulator/<name>` by method and name."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._handlers: dict[tuple[str, str], _Handler] = {
            ("GET", "health"): self._health,
            ("POST", "reset"): self._reset,
            ("GET", "requests"): self._requests,
            ("DELETE", "requests"): self._clear_requests,
            ("GET", "counters"): self._counters,
            ("POST", "latency"): self._latency,
            ("POST", "hang"): self._hang,
            ("POST", "rate_limit"): self._rate_limit,
            ("GET", "faults"): self._faults,
            ("POST", "faults"): self._add_fault,
            ("DELETE", "faults"): self._clear_faults,
            ("GET", "clock"): self._clock,
            ("POST", "clock"): self._set_clock,
            ("GET", "webhooks/deliveries"): self._deliveries,
            ("POST", "webhooks/config"): self._webhook_config,
            ("GET", "billing/retries"): self._billing_retries,
            ("POST", "billing/retries"): self._set_billing_retries,
            ("POST", "save"): self._save,
            # `<collection>/*/<action>`: the id in the path reaches the handler as query["id"].
            ("POST", "customers/*/fund_cash_balance"): self._fund_cash_balance,
            ("POST", "payment_intents/*/authenticate"): self._authenticate_payment_intent,
            ("POST", "setup_intents/*/authenticate"): self._authenticate_setup_intent,
            ("POST", "checkout/sessions/*/complete"): self._complete_checkout_session,
        }

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one operator request."""
        name = request.path.removeprefix("/_emulator/").strip("/")
        handler = self._handlers.get((request.method, name))
        parts = name.split("/")
        path_id: str | None = None
        if handler is None and len(parts) == 3:
            handler = self._handlers.get((request.method, f"{parts[0]}/*/{parts[2]}"))
            path_id = parts[1]
        if handler is None and len(parts) == 4:
            handler = self._handlers.get((request.method, f"{parts[0]}/{parts[1]}/*/{parts[3]}"))
            path_id = parts[2]
        if handler is None:
            return _json(404, {"error": f"no operator endpoint {request.method} {request.path}"})
        try:
            body: Json = json.loads(request.body) if request.body else {}
            query = {k: v for k, v in parse_query(request.query).items() if isinstance(v, str)}
            if path_id is not None:
                query["id"] = path_id
            with self.emulator.lock:
                return _json(200, handler(body, query))
        except ControlAnswer as answer:
            return _json(answer.status, answer.body)
        except (ControlError, ValueError, KeyError, TypeError) as error:
            return _json(400, {"error": str(error)})

    def _health(self, body: Json, query: dict[str, str]) -> Json:
        counts = {k: len(c) for k, c in self.emulator.store.collections.items()}
        return {"ok": True, "objects": counts, "now": self.emulator.clock.now_float()}

    def _reset(self, body: Json, query: dict[str, str]) -> Json:
        self.emulator.reset()
        return {"ok": True}

    def _requests(self, body: Json, query: dict[str, str]) -> Json:
        entries = self.emulator.request_log.entries(
            method=query.get("method"), path_prefix=query.get("path_prefix")
        )
        return {"requests": [e.as_json() for e in entries], "count": len(entries)}

    def _clear_requests(self, body: Json, query: dict[str, str]) -> Json:
        self.emulator.request_log.clear()
        return {"ok": True}

    def _counters(self, body: Json, query: dict[str, str]) -> Json:
        entries = self.emulator.request_log.entries(method=None, path_prefix=None)
        return {
            "total": len(entries),
            "by_method": dict(Counter(e.method for e in entries)),
            "by_status": {str(k): v for k, v in Counter(e.status for e in entries).items()},
            "by_endpoint": dict(Counter(f"{e.method} {e.path}" for e in entries)),
        }

    def _latency(self, body: Json, query: dict[str, str]) -> Json:
        self.emulator.settings.latency_ms = float(body["ms"])
        return {"latency_ms": self.emulator.settings.latency_ms}

    def _hang(self, body: Json, query: dict[str, str]) -> Json:
        self.emulator.settings.hang_seconds = float(body["seconds"])
        return {"hang_seconds": self.emulator.settings.hang_seconds}

    def _rate_limit(self, body: Json, query: dict[str, str]) -> Json:
        per_second = body.get("per_second")
        burst = body.get("burst")
        for name, value in (("per_second", per_second), ("burst", burst)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ControlError(f"{name} must be a positive integer or null")
        if per_second is None and burst is not None:
            raise ControlError("burst needs per_second")
        limiter = self.emulator.rate_limiter
        limiter.configure(per_second, burst)
        return {"per_second": limiter.per_second, "burst": limiter.capacity}

    def _faults(self, body: Json, query: dict[str, str]) -> Json:
        return {"faults": [f.as_json() for f in self.emulator.faults.faults]}

    def _add_fault(self, body: Json, query: dict[str, str]) -> Json:
        kind = body["kind"]
        if kind not in FAULT_KINDS:
            raise ControlError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        nth = int(body.get("nth", 1))
        if nth < 1:
            raise ControlError("nth must be >= 1")
        fault = Fault(
            method=str(body["method"]).upper(),
            path_prefix=str(body.get("path_prefix", "/")),
            nth=nth,
            kind=kind,
        )
        self.emulator.faults.add(fault)
        return fault.as_json()

    def _clear_faults(self, body: Json, query: dict[str, str]) -> Json:
        self.emulator.faults.clear()
        return {"ok": True}

    def _clock(self, body: Json, query: dict[str, str]) -> Json:
        return {"now": self.emulator.clock.now_float()}

    def _set_clock(self, body: Json, query: dict[str, str]) -> Json:
        if "time" in body:
            self.emulator.clock.set_time(float(body["time"]))
        elif "advance" in body:
            self.emulator.clock.advance(float(body["advance"]))
        else:
            raise ControlError("give either 'time' or 'advance'")
        self.emulator.changed()
        # What fell due while time moved (checkout expiry, schedule starts) happens now.
        run_sweeps(self.emulator)
        return {"now": self.emulator.clock.now_float()}

    def _deliveries(self, body: Json, query: dict[str, str]) -> Json:
        return {
            "deliveries": self.emulator.webhooks.deliveries(),
            "idle": self.emulator.webhooks.idle(),
        }

    def _webhook_config(self, body: Json, query: dict[str, str]) -> Json:
        delays = tuple(float(d) for d in body["retry_delays"])
        self.emulator.webhooks.retry_delays = delays
        return {"retry_delays": list(delays)}

    def _billing_retries(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.resources import dunning

        return dunning.settings_of(self.emulator).as_json()

    def _set_billing_retries(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.resources import dunning

        return dunning.configure(self.emulator, body).as_json()

    def _stripe_call(self, path: str, call: Callable[[RequestContext], Json]) -> Json:
        # Resource logic run as a request would run it (events, webhooks), answered as JSON.
        context = RequestContext(self.emulator, new_request_id(), None, path)
        try:
            result = call(context)
        except StripeError as error:
            raise ControlError(error.message) from None
        self.emulator.changed()
        return result

    def _fund_cash_balance(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.resources import payment_intents

        customer = query["id"]
        return self._stripe_call(
            f"/_emulator/customers/{customer}/fund_cash_balance",
            lambda ctx: payment_intents.fund_cash_balance(
                ctx, customer, int(body["amount"]), str(body["currency"]), body.get("reference")
            ),
        )

    def _authenticate_payment_intent(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.render import render
        from stripe_emulator.resources import payment_intents

        intent = query["id"]
        return self._stripe_call(
            f"/_emulator/payment_intents/{intent}/authenticate",
            lambda ctx: render(
                ctx.store,
                payment_intents.complete_authentication(ctx, intent, str(body["outcome"])),
            ),
        )

    def _authenticate_setup_intent(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.render import render
        from stripe_emulator.resources import setup_intents

        intent = query["id"]
        return self._stripe_call(
            f"/_emulator/setup_intents/{intent}/authenticate",
            lambda ctx: render(
                ctx.store,
                setup_intents.complete_authentication(ctx, intent, str(body["outcome"])),
            ),
        )

    def _complete_checkout_session(self, body: Json, query: dict[str, str]) -> Json:
        from stripe_emulator.render import render
        from stripe_emulator.resources import checkout_sessions

        session = query["id"]
        context = RequestContext(
            self.emulator,
            new_request_id(),
            None,
            f"/_emulator/checkout/sessions/{session}/complete",
        )
        try:
            completed = checkout_sessions.complete(context, session, body)
        except checkout_sessions.CheckoutFailed as failed:
            self.emulator.changed()
            raise ControlAnswer(failed.status, failed.body) from None
        except StripeError as error:
            self.emulator.changed()
            raise ControlAnswer(error.status, error.body(request_id=context.request_id)) from None
        self.emulator.changed()
        return render(context.store, completed)

    def _save(self, body: Json, query: dict[str, str]) -> Json:
        if self.emulator.state_file is None:
            raise ControlError("the emulator was started without a state file")
        self.emulator.state_file.save()
        return {"ok": True, "path": str(self.emulator.state_file.path)}


def _json(status: int, body: Json) -> ApiResponse:
    return ApiResponse(status, json.dumps(body).encode())
