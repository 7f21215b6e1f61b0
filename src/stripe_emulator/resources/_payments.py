"""Shared by payment methods, payment intents and setup intents: card errors (402 with the
intent embedded), the pinned version's `payment_method_types` refusal, routes validated by a
params class outside `stripe.params`, and the steps both intents take alike (payment method
resolution, the 3D Secure `next_action`, status refusals, unsupported parameters).

`payment_method_types` is gone from `PaymentIntentCreateParams` / `SetupIntentCreateParams`
(and their update/confirm params) in the SDK for `2026-10-28.endive`; Stripe answers it with
400 `payment_method_types_no_longer_supported`, not `parameter_unknown`. To give that answer
the endpoints are validated by subclasses of the SDK's own TypedDicts that add just that key
(`PAYMENT_METHOD_TYPES_REFUSED`), and the handler refuses it.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Callable
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


# --- shared by payment and setup intents ------------------------------------------------------
#
# `label` is the object's name in messages (`PaymentIntent`, `SetupIntent`) and `kind` its
# type (`payment_intent`, `setup_intent`), the prefix of its error codes and next-action URLs.

_ALPHABET = string.ascii_letters + string.digits


def random_secret(length: int) -> str:
    """The random tail of a `client_secret`."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def refuse_unsupported(params: Params, names: tuple[str, ...]) -> None:
    """400 naming the first of `names` that is given (parameters not emulated)."""
    for name in names:
        if name in params:
            raise invalid(f"`{name}` is not supported by the emulator.", param=name)


def unexpected_state(intent: StripeObject, action: str, *, label: str, kind: str) -> StripeError:
    """`{kind}_unexpected_state`: the intent's status does not allow `action`."""
    return invalid(
        f"You cannot {action} this {label} because it has a status of {intent['status']}.",
        param="intent",
        code=f"{kind}_unexpected_state",
    )


def require_payment_method(intent: StripeObject, *, label: str, kind: str) -> None:
    """Confirming needs a payment method (`{kind}_unexpected_state`, `param: payment_method`)."""
    if intent["payment_method"] is None:
        raise invalid(
            f"You cannot confirm this {label} because it's missing a payment method. "
            f"Update the {label} with a payment method and then confirm it again.",
            param="payment_method",
            code=f"{kind}_unexpected_state",
        )


def authentication_action(intent: StripeObject, params: Params, *, kind: str) -> StripeObject:
    """`next_action` of an intent waiting for 3D Secure: `redirect_to_url` with a
    `return_url` (unless `use_stripe_sdk`), else `use_stripe_sdk` (placeholder URLs)."""
    return_url = params.get("return_url")
    if return_url is not None and not params.get("use_stripe_sdk"):
        return {
            "type": "redirect_to_url",
            "redirect_to_url": {
                "return_url": return_url,
                "url": f"https://hooks.stripe.com/3d_secure_2/hosted?{kind}={intent['id']}",
            },
        }
    return {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "type": "three_d_secure_redirect",
            "stripe_js": f"https://hooks.stripe.com/redirect/authenticate/{intent['id']}",
        },
    }


def payment_method_from(
    ctx: RequestContext,
    intent: StripeObject,
    params: Params,
    *,
    label: str,
    kind: str,
    owner_message: Callable[[StripeObject, str], str],
    raw_cards: bool,
) -> StripeObject | None:
    """The payment method named by `payment_method` / `payment_method_data` (or None),
    checked against the intent's customer (`owner_message(pm, owner)` words the refusal),
    reusability and allowed types; a type the intent did not list yet is added unless
    `allowed_payment_method_types` was given (then 400 `{kind}_incompatible_payment_method`).
    Without `raw_cards`, a card in `payment_method_data` is refused."""
    from stripe_emulator.resources import payment_methods

    if "payment_method" in params and "payment_method_data" in params:
        raise invalid(
            "You may only specify one of these parameters: payment_method, payment_method_data.",
            param="payment_method_data",
        )
    if "payment_method_data" in params:
        pm = payment_methods.build(
            ctx, params["payment_method_data"], param_prefix="payment_method_data"
        )
        if pm["type"] == "card" and not raw_cards:
            raise invalid(
                "Raw card numbers in payment_method_data are not accepted; create a "
                "PaymentMethod or use a test payment method such as pm_card_visa.",
                param="payment_method_data[type]",
            )
        ctx.store.insert(payment_methods.KIND, pm)
    elif "payment_method" in params:
        pm = payment_methods.resolve(ctx, params["payment_method"], param="payment_method")
    else:
        return None
    owner = pm["customer"]
    if owner is not None and owner != intent["customer"]:
        raise invalid(owner_message(pm, owner), param="payment_method")
    payment_methods.check_reusable(pm, param="payment_method")
    types = intent["payment_method_types"]
    if pm["type"] not in types:
        if intent["allowed_payment_method_types"] is not None:
            raise invalid(
                f"The PaymentMethod provided ({pm['type']}) is not allowed for this "
                f"{label}. Allowed types: {', '.join(types)}.",
                param="payment_method",
                code=f"{kind}_incompatible_payment_method",
            )
        intent["payment_method_types"] = [*types, pm["type"]]
    return pm
