"""Shared by payment methods, payment intents and setup intents: card errors (402 with the
intent embedded), the pinned version's `payment_method_types` refusal, and routes validated
by a params class outside `stripe.params`.

`payment_method_types` is gone from `PaymentIntentCreateParams` / `SetupIntentCreateParams`
(and their update/confirm params) in the SDK for `2026-10-28.endive`; Stripe answers it with
400 `payment_method_types_no_longer_supported`, not `parameter_unknown`. To give that answer
the endpoints are validated by subclasses of the SDK's own TypedDicts that add just that key
(`PAYMENT_METHOD_TYPES_REFUSED`), and the handler refuses it.
"""

from __future__ import annotations

import copy
from typing import Any, NoReturn

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.params import Params
from stripe_emulator.render import EXPANDABLE, INCLUDABLE
from stripe_emulator.routing import Handler, Route, Router
from stripe_emulator.state import StripeObject


class PaymentError(StripeError):
    """A 402 `card_error` (or another error type) carrying Stripe's extra error fields:
    `decline_code`, `charge`, `payment_intent`, `setup_intent`, `payment_method`..."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        extra: dict[str, Any],
        status: int = 402,
        type_: str = "card_error",
    ) -> None:
        super().__init__(message, status=status, type_=type_, code=code)
        self.extra = extra

    def body(self, *, request_id: str) -> dict[str, Any]:
        """Stripe's error body with the extra fields (objects embedded as rendered)."""
        body = super().body(request_id=request_id)
        body["error"].update(copy.deepcopy(self.extra))
        return body


def refuse_payment_method_types(params: Params) -> None:
    """The pinned version's answer to `payment_method_types`."""
    if "payment_method_types" in params:
        raise invalid(
            "The `payment_method_types` parameter is no longer supported in this API version "
            "(2026-10-28.endive). Use `allowed_payment_method_types` instead.",
            param="payment_method_types",
            code="payment_method_types_no_longer_supported",
        )


def add_route(
    router: Router, method: str, template: str, params_class: type, handler: Handler
) -> None:
    """`Router.add` for a params class that is not under `stripe.params` (the SDK's class
    extended by one key the handler refuses)."""
    segments = tuple(template.strip("/").split("/"))
    qualified = f"{params_class.__module__}.{params_class.__qualname__}"
    route = Route(method, segments, qualified, handler)
    # Router has no public hook for this; keep its ordering rule (literal segments first).
    bucket = router._routes.setdefault((method, len(segments)), [])
    bucket.append(route)
    bucket.sort(key=lambda r: sum(s.startswith("{") for s in r.segments))


def error_object(
    *,
    code: str,
    message: str,
    type_: str = "card_error",
    decline_code: str | None = None,
    charge: str | None = None,
    payment_method: StripeObject | None = None,
) -> StripeObject:
    """`last_payment_error` / `last_setup_error` as Stripe sets it on the intent."""
    error: StripeObject = {
        "code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "type": type_,
    }
    if decline_code is not None:
        error["decline_code"] = decline_code
    if charge is not None:
        error["charge"] = charge
    if payment_method is not None:
        error["payment_method"] = payment_method
        error["payment_method_type"] = payment_method.get("type")
    return error


def raise_last_error(
    ctx: RequestContext,
    last_error: StripeObject,
    *,
    intent_key: str,
    intent: StripeObject,
    status: int = 402,
) -> NoReturn:
    """Answer the failure the intent now records (its state is already committed)."""
    ctx.emulator.changed()
    extra = {k: v for k, v in last_error.items() if k not in ("code", "message", "type")}
    extra[intent_key] = intent
    raise PaymentError(
        last_error["message"],
        code=last_error["code"],
        extra=extra,
        status=status,
        type_=last_error["type"],
    )


def expandable_when_null(kind: str, *fields: str) -> None:
    """Let `expand` keep these reference fields null while they are unset (as Stripe does)
    instead of refusing them; `render.EXPANDABLE` is the shared registry."""
    EXPANDABLE[kind] = EXPANDABLE.get(kind, frozenset()) | frozenset(fields)


def time_for(ctx: RequestContext, customer_id: str | None) -> int:
    """Now, for an object of this customer: its test clock's frozen time if it has one
    (objects on a test clock live in its time), else the emulator clock."""
    customer = ctx.store.get("customer", customer_id) if customer_id else None
    clock_id = customer.get("test_clock") if customer else None
    clock = ctx.store.get("test_helpers.test_clock", clock_id) if clock_id else None
    return int(clock["frozen_time"]) if clock else ctx.now()


def includable(kind: str, *fields: str) -> None:
    """Fields Stripe leaves out unless expanded (`render.INCLUDABLE`, the shared registry)."""
    INCLUDABLE[kind] = INCLUDABLE.get(kind, frozenset()) | frozenset(fields)
