"""Payment methods: `card` (test numbers, `tok_...` tokens) and `customer_balance`; create,
retrieve, update, attach, detach, list (also `GET /v1/customers/{customer}/payment_methods`).

The test payment methods (`pm_card_visa`, ... see `test_cards`) are accepted wherever a
payment method id is; each use mints a new `pm_...`, as on Stripe. A card's behaviour
(declines, authentication) is kept in private `_card` keys of the stored object.
"""

from __future__ import annotations

import copy
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    fetch,
    new_metadata,
    nullable,
    save_update,
)
from stripe_emulator.resources._payments import (
    PaymentError,
    error_object,
    expandable_when_null,
)
from stripe_emulator.resources.customers import on_customer_deleted
from stripe_emulator.resources.test_cards import (
    DECLINE_MESSAGES,
    TEST_PAYMENT_METHODS,
    TEST_TOKENS,
    CardBehaviour,
    card_for,
    fingerprint,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "payment_method"
SUPPORTED_TYPES = ("card", "customer_balance")
ALLOW_REDISPLAY = ("always", "limited", "unspecified")
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def register(router: Router) -> None:
    """Attach the payment method endpoints."""
    p = "_payment_method_"
    one = "/v1/payment_methods/{payment_method}"
    router.add("POST", "/v1/payment_methods", f"{p}create_params.PaymentMethodCreateParams", create)
    router.add("GET", "/v1/payment_methods", f"{p}list_params.PaymentMethodListParams", list_all)
    router.add("GET", one, f"{p}retrieve_params.PaymentMethodRetrieveParams", retrieve)
    router.add("POST", one, f"{p}update_params.PaymentMethodUpdateParams", update)
    router.add("POST", one + "/attach", f"{p}attach_params.PaymentMethodAttachParams", attach)
    router.add("POST", one + "/detach", f"{p}detach_params.PaymentMethodDetachParams", detach)
    c = "_customer_payment_method_"
    of_customer = "/v1/customers/{customer}/payment_methods"
    router.add(
        "GET", of_customer, f"{c}list_params.CustomerPaymentMethodListParams", list_of_customer
    )
    router.add(
        "GET",
        of_customer + "/{payment_method}",
        f"{c}retrieve_params.CustomerPaymentMethodRetrieveParams",
        retrieve_of_customer,
    )
    on_customer_deleted(detach_all)
    expandable_when_null(KIND, "customer")


def detach_all(ctx: RequestContext, customer: StripeObject) -> None:
    """A deleted customer's payment methods are detached (`payment_method.detached`)."""
    attached = [
        pm
        for pm in ctx.store.collection(KIND).objects.values()
        if pm.get("customer") == customer["id"]
    ]
    for pm in attached:
        after = copy.deepcopy(pm)
        after["customer"] = None
        after["_consumed"] = True
        ctx.store.replace(KIND, after)
        ctx.emit("payment_method.detached", after, previous_attributes={"customer": customer["id"]})


# --- building -----------------------------------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_methods`."""
    for cloning in ("customer", "payment_method"):
        if cloning in params:
            raise invalid(
                "Cloning payment methods to connected accounts is not supported by the emulator.",
                param=cloning,
            )
    kind = params.get("type")
    if kind is None:
        raise invalid("Missing required param: type.", param="type", code="parameter_missing")
    pm = build(ctx, params, param_prefix="")
    ctx.store.insert(KIND, pm)
    return render(ctx.store, pm, expand_of(params))


def build(ctx: RequestContext, data: Params, *, param_prefix: str) -> StripeObject:
    """A new, unsaved payment method from create params or `payment_method_data`."""
    kind = data.get("type")
    check_enum(kind, f"{param_prefix}type", SUPPORTED_TYPES)
    check_enum(data.get("allow_redisplay"), f"{param_prefix}allow_redisplay", ALLOW_REDISPLAY)
    for other in data:
        if other in SUPPORTED_TYPES and other != kind:
            raise invalid(
                f"You passed `{other}` details but `type` is `{kind}`.",
                param=f"{param_prefix}{other}",
            )
    pm = _skeleton(ctx, kind, data.get("billing_details"))
    pm["allow_redisplay"] = data.get("allow_redisplay", "unspecified")
    pm["metadata"] = new_metadata(data.get("metadata"), param=f"{param_prefix}metadata")
    if kind == "card":
        number, exp = _card_input(ctx, data.get("card") or {}, f"{param_prefix}card")
        _fill_card(pm, number, exp, cvc=bool((data.get("card") or {}).get("cvc")))
    else:
        pm["customer_balance"] = {}
    return pm


def _skeleton(ctx: RequestContext, kind: Any, billing: dict[str, Any] | None) -> StripeObject:
    billing = billing or {}
    address = billing.get("address")
    return {
        "id": new_id("pm"),
        "object": KIND,
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {k: nullable((address or {}).get(k)) for k in _ADDRESS_FIELDS},
            "email": nullable(billing.get("email")),
            "name": nullable(billing.get("name")),
            "phone": nullable(billing.get("phone")),
            "tax_id": nullable(billing.get("tax_id")),
        },
        "created": ctx.now(),
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "type": kind,
    }


def _card_input(
    ctx: RequestContext, card: dict[str, Any], param: str
) -> tuple[str, tuple[int, int]]:
    token = card.get("token")
    if token is not None:
        number = TEST_TOKENS.get(token)
        if number is None:
            raise invalid(f"No such token: '{token}'", param=f"{param}[token]")
        return number, _default_expiry(ctx)
    for name in ("number", "exp_month", "exp_year"):
        if name not in card:
            raise invalid(
                f"Missing required param: {param}[{name}].",
                param=f"{param}[{name}]",
                code="parameter_missing",
            )
    number = str(card["number"]).replace(" ", "")
    if card_for(number) is None:
        raise _card_invalid(
            "incorrect_number", "Your card number is incorrect.", f"{param}[number]"
        )
    month, year = card["exp_month"], card["exp_year"]
    if not 1 <= month <= 12:
        raise _card_invalid(
            "invalid_expiry_month",
            "Your card's expiration month is invalid.",
            f"{param}[exp_month]",
        )
    if year < 100:
        year += 2000
    this_year, this_month = _year_month(ctx)
    if (year, month) < (this_year, this_month) or year > this_year + 50:
        raise _card_invalid(
            "invalid_expiry_year", "Your card's expiration year is invalid.", f"{param}[exp_year]"
        )
    return number, (month, year)


def _card_invalid(code: str, message: str, param: str) -> PaymentError:
    return PaymentError(message, code=code, extra={"param": param})


def _year_month(ctx: RequestContext) -> tuple[int, int]:
    import datetime as dt

    now = dt.datetime.fromtimestamp(ctx.now(), tz=dt.UTC)
    return now.year, now.month


def _default_expiry(ctx: RequestContext) -> tuple[int, int]:
    # Stripe's test payment methods expire a year from now, in this month.
    year, month = _year_month(ctx)
    return month, year + 1


def _fill_card(pm: StripeObject, number: str, exp: tuple[int, int], *, cvc: bool) -> None:
    card = card_for(number)
    assert card is not None
    pm["card"] = {
        "brand": card.brand,
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass" if cvc else None,
        },
        "country": card.country,
        "display_brand": card.brand,
        "exp_month": exp[0],
        "exp_year": exp[1],
        "fingerprint": fingerprint(number),
        "funding": card.funding,
        "generated_from": None,
        "last4": number[-4:],
        "networks": {"available": [card.brand], "preferred": None},
        "regulated_status": "unregulated",
        "three_d_secure_usage": {"supported": True},
        "wallet": None,
    }
    pm["_number"] = number
    pm["_setup_done"] = False
    pm["_consumed"] = False


def behaviour(pm: StripeObject) -> CardBehaviour | None:
    """The test card behind a card payment method (None for other types)."""
    number = pm.get("_number")
    return card_for(number) if isinstance(number, str) else None


def mint_test_payment_method(ctx: RequestContext, token: str) -> StripeObject:
    """A new `pm_...` for `pm_card_visa` & co."""
    pm = _skeleton(ctx, "card", None)
    _fill_card(pm, TEST_PAYMENT_METHODS[token], _default_expiry(ctx), cvc=True)
    ctx.store.insert(KIND, pm)
    return pm


def resolve(ctx: RequestContext, pm_id: str, *, param: str, in_body: bool = True) -> StripeObject:
    """A stored payment method, minting one for a test payment method id."""
    if pm_id in TEST_PAYMENT_METHODS:
        return mint_test_payment_method(ctx, pm_id)
    return fetch(ctx, KIND, pm_id, "PaymentMethod", param=param, in_body=in_body)


# --- endpoints ---------------------------------------------------------------------------


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/payment_methods/{payment_method}`."""
    pm = resolve(ctx, path["payment_method"], param="payment_method", in_body=False)
    return render(ctx.store, pm, expand_of(params))


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_methods/{payment_method}`: only a saved payment method changes."""
    before = fetch(ctx, KIND, path["payment_method"], "PaymentMethod", param="payment_method")
    if before["customer"] is None:
        raise invalid(
            "You must save this PaymentMethod to a customer before you can update it.",
            param="payment_method",
        )
    check_enum(params.get("allow_redisplay"), "allow_redisplay", ALLOW_REDISPLAY)
    after = copy.deepcopy(before)
    if "allow_redisplay" in params:
        after["allow_redisplay"] = params["allow_redisplay"]
    billing = params.get("billing_details") or {}
    for key in ("email", "name", "phone", "tax_id"):
        if key in billing:
            after["billing_details"][key] = nullable(billing[key])
    address = billing.get("address")
    if address is not None:
        current = after["billing_details"]["address"]
        for key in _ADDRESS_FIELDS:
            current[key] = None if address == "" else nullable(address.get(key, current[key]))
    card = params.get("card")
    if card is not None:
        if after["type"] != "card":
            raise invalid("This PaymentMethod is not a card.", param="card")
        for key in ("exp_month", "exp_year"):
            if key in card:
                after["card"][key] = card[key]
        if "networks" in card:
            after["card"]["networks"]["preferred"] = nullable(card["networks"].get("preferred"))
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, KIND, before, after, "payment_method.updated")
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def attach(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_methods/{payment_method}/attach` (a declining card fails the check)."""
    if "customer_account" in params:
        raise invalid("Accounts v2 are not supported by the emulator.", param="customer_account")
    if "customer" not in params:
        raise invalid(
            "Missing required param: customer.", param="customer", code="parameter_missing"
        )
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    pm = resolve(ctx, path["payment_method"], param="payment_method", in_body=False)
    attach_to(ctx, pm, customer["id"])
    return render(ctx.store, ctx.store.get(KIND, pm["id"]) or pm, expand_of(params))


def check_reusable(pm: StripeObject, *, param: str) -> None:
    """A payment method used without a customer, or detached, cannot be used again."""
    if pm.get("_consumed"):
        raise invalid(
            f"The provided PaymentMethod {pm['id']} was previously used with a PaymentIntent "
            "without Customer attachment, shared with a connected account without Customer "
            "attachment, or was detached from a Customer. It may not be used again. To use a "
            "PaymentMethod multiple times, you must attach it to a Customer first.",
            param=param,
        )


def attach_to(ctx: RequestContext, pm: StripeObject, customer_id: str) -> StripeObject:
    """Attach (idempotent for the same customer), emitting `payment_method.attached`."""
    if pm["customer"] == customer_id:
        return pm
    if pm["customer"] is not None:
        raise invalid(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    check_reusable(pm, param="payment_method")
    card = behaviour(pm)
    if card is not None and card.declines_on_setup and card.decline_code is not None:
        code = card.decline_code
        ctx.emulator.changed()
        raise PaymentError(
            DECLINE_MESSAGES.get(code, DECLINE_MESSAGES["generic_decline"]),
            code="card_declined",
            extra={"decline_code": code, "param": "", "payment_method": public(ctx, pm)},
        )
    after = copy.deepcopy(pm)
    after["customer"] = customer_id
    ctx.store.replace(KIND, after)
    ctx.emit("payment_method.attached", after)
    return after


def detach(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_methods/{payment_method}/detach`."""
    before = fetch(ctx, KIND, path["payment_method"], "PaymentMethod", param="payment_method")
    customer_id = before["customer"]
    if customer_id is None:
        raise invalid(
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible.",
            param="payment_method",
        )
    after = copy.deepcopy(before)
    after["customer"] = None
    after["_consumed"] = True
    ctx.store.replace(KIND, after)
    _forget_default(ctx, customer_id, before["id"])
    ctx.emit("payment_method.detached", after, previous_attributes={"customer": customer_id})
    return render(ctx.store, after, expand_of(params))


def _forget_default(ctx: RequestContext, customer_id: str, pm_id: str) -> None:
    # A detached payment method stops being the customer's default (customer.updated).
    customer = ctx.store.get("customer", customer_id)
    if customer is None:
        return
    settings = customer.get("invoice_settings") or {}
    if settings.get("default_payment_method") != pm_id:
        return
    after = copy.deepcopy(customer)
    after["invoice_settings"]["default_payment_method"] = None
    save_update(ctx, "customer", customer, after, "customer.updated")


def list_all(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/payment_methods` (`customer`, `type`, `allow_redisplay`)."""
    if "customer_account" in params:
        raise invalid("Accounts v2 are not supported by the emulator.", param="customer_account")
    customer = params.get("customer")
    if customer is not None:
        fetch(ctx, "customer", customer, "customer", param="customer", in_body=True)
    return _list(ctx, params, customer, "/v1/payment_methods")


def list_of_customer(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/payment_methods`."""
    customer = fetch(ctx, "customer", path["customer"], "customer", param="customer")
    return _list(ctx, params, customer["id"], f"/v1/customers/{customer['id']}/payment_methods")


def retrieve_of_customer(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/payment_methods/{payment_method}`."""
    fetch(ctx, "customer", path["customer"], "customer", param="customer")
    pm = fetch(ctx, KIND, path["payment_method"], "PaymentMethod", param="payment_method")
    if pm["customer"] != path["customer"]:
        fetch(ctx, KIND, "", "PaymentMethod", param="payment_method")
    return render(ctx.store, pm, expand_of(params))


def _list(ctx: RequestContext, params: Params, customer: str | None, url: str) -> StripeObject:
    check_enum(params.get("allow_redisplay"), "allow_redisplay", ALLOW_REDISPLAY)
    wanted: dict[str, Any] = {k: params[k] for k in ("type", "allow_redisplay") if k in params}
    if customer is not None:
        wanted["customer"] = customer

    # The store indexes only what state.INDEXED_FIELDS names; payment methods are scanned.
    def matches(pm: StripeObject) -> bool:
        return all(pm.get(k) == v for k, v in wanted.items())

    return list_response(ctx.store, kind=KIND, params=params, url=url, predicate=matches)


def public(ctx: RequestContext, pm: StripeObject) -> StripeObject:
    """The payment method as rendered (for errors and embedded objects)."""
    return render(ctx.store, pm)


def last_error_for_decline(
    ctx: RequestContext, pm: StripeObject, code: str, charge: str | None
) -> StripeObject:
    """`last_payment_error` for a decline with `decline_code` `code`."""
    if code == "authentication_required":
        return error_object(
            code="authentication_required",
            decline_code="authentication_required",
            message=DECLINE_MESSAGES["authentication_required"],
            charge=charge,
            payment_method=public(ctx, pm),
        )
    return error_object(
        code="card_declined",
        decline_code=code,
        message=DECLINE_MESSAGES.get(code, DECLINE_MESSAGES["generic_decline"]),
        charge=charge,
        payment_method=public(ctx, pm),
    )
