"""Checkout Sessions (`/v1/checkout/sessions`): create in `payment`, `subscription` and
`setup` mode, retrieve, list, `line_items`, `expire`; and what the hosted page does, as an
operator control (`complete`, see `control_api`).

Status machine (Stripe's): open -> complete (the customer paid or saved a card) | expired
(`expire`, or the emulator clock passing `expires_at`: the `clock.SWEEPS` sweep
`expire_due` runs when the operator moves the clock, and on a request that touches the
session or lists sessions). `url` is set only while open.

Completion does what the hosted page does: a customer when needed (always in subscription and
setup mode, in payment mode with `customer_creation=always` or `invoice_creation`), the
payment method created and attached, then a subscription (the subscriptions module's create,
with `subscription_data`), a PaymentIntent (and a paid invoice with `invoice_creation`) or a
SetupIntent; `checkout.session.completed` is the last event. A declined card leaves the
session open (the control answers the 402). A card needing authentication leaves it open with
its intent in `requires_action`; when that intent later succeeds (the 3D Secure control) the
session completes through the payment intents' outcome hooks.
"""

from __future__ import annotations

import copy
from typing import Any

from stripe_emulator import tax
from stripe_emulator.clock import SWEEPS, note_due
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import envelope, expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import ExpandTree, render
from stripe_emulator.resources import (
    customers,
    invoices,
    payment_intents,
    payment_methods,
    setup_intents,
    subscriptions,
)
from stripe_emulator.resources._checkout_params import CheckoutSessionCreateParams
from stripe_emulator.resources._common import check_enum, currency, fetch, new_metadata
from stripe_emulator.resources._payments import (
    PaymentError,
    add_route,
    expandable_when_null,
    refuse_payment_method_types,
)
from stripe_emulator.resources.test_cards import TEST_PAYMENT_METHODS, card_for
from stripe_emulator.routing import Router
from stripe_emulator.state import INDEXED_FIELDS, Collection, StripeObject
from stripe_emulator.tax import customer_location

KIND = "checkout.session"
SWEEP = "checkout_session_expiry"
LINE_ITEM = "item"
MODES = ("payment", "setup", "subscription")
CUSTOMER_CREATION = ("always", "if_required")
UPDATE_CHOICES = ("auto", "never")
DEFAULT_LIFETIME = 24 * 3600
MIN_LIFETIME = 30 * 60
MAX_ADJUSTABLE = 999_999
DEFAULT_ADJUSTABLE_MAX = 99
PAYMENT_METHOD_TYPES = ("card", "customer_balance")

_INDEXED = ("customer", "status", "payment_intent", "subscription", "_pending_intent")
INDEXED_FIELDS.setdefault(KIND, _INDEXED)

_HANDLED = frozenset(
    {
        "mode",
        "line_items",
        "subscription_data",
        "customer",
        "customer_email",
        "customer_creation",
        "customer_update",
        "automatic_tax",
        "invoice_creation",
        "allowed_payment_method_types",
        "allow_promotion_codes",
        "expires_at",
        "metadata",
        "client_reference_id",
        "success_url",
        "cancel_url",
        "currency",
        "billing_address_collection",
        "locale",
        "payment_method_types",
    }
)
_SUBSCRIPTION_DATA_HANDLED = frozenset({"trial_period_days", "metadata", "description"})
_LINE_ITEM_HANDLED = frozenset({"price", "quantity", "adjustable_quantity"})


def register(router: Router) -> None:
    """Attach the Checkout Session endpoints."""
    p = "checkout._session_"
    base = "/v1/checkout/sessions"
    one = base + "/{session}"
    add_route(router, "POST", base, CheckoutSessionCreateParams, create)
    router.add("GET", base, f"{p}list_params.SessionListParams", list_sessions)
    router.add("GET", one, f"{p}retrieve_params.SessionRetrieveParams", retrieve)
    router.add("POST", one + "/expire", f"{p}expire_params.SessionExpireParams", expire)
    router.add(
        "GET",
        one + "/line_items",
        f"{p}list_line_items_params.SessionListLineItemsParams",
        list_line_items,
    )
    expandable_when_null(
        KIND,
        "customer",
        "invoice",
        "payment_intent",
        "payment_link",
        "setup_intent",
        "subscription",
    )
    payment_intents.on_intent_outcome(_on_intent_outcome)


# --- create -------------------------------------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/checkout/sessions`."""
    refuse_payment_method_types(params)
    invoices.refuse_unhandled(params, _HANDLED)
    mode = params.get("mode")
    if mode is None:
        raise invalid("Missing required param: mode.", param="mode", code="parameter_missing")
    check_enum(mode, "mode", MODES)
    if "customer" in params and "customer_email" in params:
        raise invalid(
            "You may only specify one of these parameters: customer, customer_email.",
            param="customer_email",
        )
    customer = None
    if "customer" in params:
        customer = fetch(
            ctx, "customer", params["customer"], "customer", param="customer", in_body=True
        )
    creation = params.get("customer_creation")
    check_enum(creation, "customer_creation", CUSTOMER_CREATION)
    if creation is not None and mode == "subscription":
        raise invalid(
            "`customer_creation` can only be used in `payment` and `setup` mode.",
            param="customer_creation",
        )
    update = params.get("customer_update") or {}
    for name, value in update.items():
        check_enum(value, f"customer_update[{name}]", UPDATE_CHOICES)
    if update and customer is None:
        raise invalid(
            "`customer_update` can only be used with `customer`.", param="customer_update"
        )
    invoice_creation = params.get("invoice_creation")
    if invoice_creation is not None and mode != "payment":
        raise invalid(
            "You can only set `invoice_creation` in `payment` mode.", param="invoice_creation"
        )
    sub_data = params.get("subscription_data")
    if sub_data is not None:
        if mode != "subscription":
            raise invalid(
                "You can only set `subscription_data` in `subscription` mode.",
                param="subscription_data",
            )
        invoices.refuse_unhandled(sub_data, _SUBSCRIPTION_DATA_HANDLED, prefix="subscription_data")
    allowed = params.get("allowed_payment_method_types")
    for i, kind in enumerate(allowed or []):
        check_enum(kind, f"allowed_payment_method_types[{i}]", PAYMENT_METHOD_TYPES)
    now = ctx.now()
    expires_at = _expires_at(params.get("expires_at"), now)
    session_id = new_id("cs_test")
    items = _line_items(ctx, params.get("line_items"), mode, session_id)
    cur = _session_currency(params, items, mode, allowed)
    subtotal = sum(i["amount_subtotal"] for i in items) if items else None
    automatic = bool((params.get("automatic_tax") or {}).get("enabled"))
    session: StripeObject = {
        "id": session_id,
        "object": KIND,
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": params.get("allow_promotion_codes"),
        "allowed_payment_method_types": list(allowed) if allowed else None,
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "automatic_tax": {
            "enabled": automatic,
            "liability": {"type": "self"} if automatic else None,
            "provider": "stripe" if automatic else None,
            "status": _tax_status(customer, automatic),
        },
        "billing_address_collection": params.get("billing_address_collection"),
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": cur,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer["id"] if customer else None,
        "customer_account": None,
        "customer_creation": (creation or "if_required") if mode != "subscription" else None,
        "customer_details": _customer_details(customer, params.get("customer_email")),
        "customer_email": params.get("customer_email"),
        "discounts": [],
        "expires_at": expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": _invoice_creation(invoice_creation) if mode == "payment" else None,
        "livemode": False,
        "locale": params.get("locale"),
        "managed_payments": None,
        "metadata": new_metadata(params.get("metadata")),
        "mode": mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always" if mode != "setup" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": list(allowed) if allowed else ["card"],
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": {
            "allow_redisplay_filters": ["always"],
            "payment_method_remove": "disabled",
            "payment_method_save": None,
        },
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": params.get("success_url"),
        "total_details": (
            {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0} if items else None
        ),
        "ui_mode": "hosted",
        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        "wallet_options": None,
        "_line_items": items,
        "_customer_update": dict(update),
        "_subscription_data": copy.deepcopy(sub_data or {}),
        "_pending_intent": None,
        "_pending": None,
    }
    _apply_tax(ctx, session, customer)
    ctx.store.insert(KIND, session)
    note_due(ctx.emulator.clock, SWEEP, int(session["expires_at"]))
    return _render(ctx, session, expand_of(params))


def _expires_at(value: Any, now: int) -> int:
    if value is None:
        return now + DEFAULT_LIFETIME
    expires = int(value)
    if expires < now + MIN_LIFETIME:
        raise invalid(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
            "creation.",
            param="expires_at",
        )
    if expires > now + DEFAULT_LIFETIME:
        raise invalid(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
            param="expires_at",
        )
    return expires


def _line_items(
    ctx: RequestContext, raw_items: Any, mode: str, session_id: str
) -> list[StripeObject]:
    raw_items = raw_items or []
    if mode == "setup":
        if raw_items:
            raise invalid("You cannot pass `line_items` in `setup` mode.", param="line_items")
        return []
    if not raw_items:
        raise invalid(
            f"`line_items` is required in `{mode}` mode.",
            param="line_items",
            code="parameter_missing",
        )
    items: list[StripeObject] = []
    recurring = 0
    for i, raw in enumerate(raw_items):
        where = f"line_items[{i}]"
        if "price_data" in raw:
            raise invalid(
                f"`{where}[price_data]` is not supported by the emulator (see "
                "docs/emulator.md); create the price first.",
                param=f"{where}[price_data]",
            )
        invoices.refuse_unhandled(raw, _LINE_ITEM_HANDLED, prefix=where)
        if "price" not in raw:
            raise invalid(
                f"Missing required param: {where}[price].",
                param=f"{where}[price]",
                code="parameter_missing",
            )
        if "quantity" not in raw:
            raise invalid(
                f"Missing required param: {where}[quantity].",
                param=f"{where}[quantity]",
                code="parameter_missing",
            )
        price = fetch(ctx, "price", raw["price"], "price", param=f"{where}[price]", in_body=True)
        if not price.get("active", True):
            raise invalid(
                f"The price specified ({price['id']}) is inactive. This field only accepts "
                "active prices.",
                param=f"{where}[price]",
            )
        if price.get("recurring"):
            recurring += 1
            if mode == "payment":
                raise invalid(
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    param=f"{where}[price]",
                )
        quantity = int(raw["quantity"])
        adjustable = _adjustable(raw.get("adjustable_quantity"), quantity, where)
        if price.get("unit_amount") is None:
            raise invalid(
                f"The price {price['id']} has no `unit_amount`; the emulator's Checkout "
                "supports per-unit prices only.",
                param=f"{where}[price]",
            )
        items.append(_item(ctx, price, quantity, adjustable))
    if mode == "subscription" and recurring == 0:
        raise invalid(
            "You must specify at least one recurring price in `subscription` mode when using "
            "prices.",
            param="line_items",
        )
    currencies = {i["currency"] for i in items}
    if len(currencies) > 1:
        raise invalid(
            "All prices on a Checkout Session must have the same currency.", param="line_items"
        )
    return items


def _adjustable(raw: Any, quantity: int, where: str) -> StripeObject | None:
    if raw is None:
        if quantity < 1:
            raise invalid(
                f"Invalid {where}[quantity]: must be at least 1.", param=f"{where}[quantity]"
            )
        return None
    enabled = bool(raw.get("enabled"))
    minimum = int(raw.get("minimum", 0))
    maximum = int(raw.get("maximum", DEFAULT_ADJUSTABLE_MAX))
    if not enabled and ("minimum" in raw or "maximum" in raw):
        raise invalid(
            f"`{where}[adjustable_quantity][enabled]` must be true to set a minimum or maximum.",
            param=f"{where}[adjustable_quantity][enabled]",
        )
    if not 0 <= minimum <= maximum <= MAX_ADJUSTABLE:
        raise invalid(
            f"Invalid {where}[adjustable_quantity]: need 0 <= minimum <= maximum <= "
            f"{MAX_ADJUSTABLE}.",
            param=f"{where}[adjustable_quantity]",
        )
    if enabled and not minimum <= quantity <= maximum:
        raise invalid(
            f"{where}[quantity] must be between the adjustable minimum ({minimum}) and "
            f"maximum ({maximum}).",
            param=f"{where}[quantity]",
        )
    return {"enabled": enabled, "maximum": maximum, "minimum": minimum}


def _item(
    ctx: RequestContext, price: StripeObject, quantity: int, adjustable: StripeObject | None
) -> StripeObject:
    product = ctx.store.get("product", price["product"]) or {}
    amount = int(price["unit_amount"]) * quantity
    return {
        "id": new_id("li"),
        "object": LINE_ITEM,
        "adjustable_quantity": adjustable,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price["currency"],
        "description": product.get("name"),
        "metadata": {},
        "price": price["id"],
        "quantity": quantity,
    }


def _session_currency(
    params: Params, items: list[StripeObject], mode: str, allowed: Any
) -> str | None:
    if items:
        cur: str = items[0]["currency"]
        if "currency" in params and currency(params["currency"]) != cur:
            raise invalid("`currency` must match the currency of the prices.", param="currency")
        return cur
    if "currency" in params:
        return currency(params["currency"])
    if mode == "setup" and not allowed:
        raise invalid(
            "Missing required param: currency (required in `setup` mode when "
            "`allowed_payment_method_types` is not set).",
            param="currency",
            code="parameter_missing",
        )
    return None


def _invoice_creation(raw: Any) -> StripeObject:
    data = (raw or {}).get("invoice_data") or {}
    return {
        "enabled": bool((raw or {}).get("enabled")),
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": data.get("description"),
            "footer": data.get("footer"),
            "issuer": {"type": "self"},
            "metadata": new_metadata(data.get("metadata"), param="invoice_data[metadata]"),
            "rendering_options": None,
        },
    }


def _customer_details(customer: StripeObject | None, email: str | None) -> StripeObject | None:
    if customer is None and email is None:
        return None
    address = (customer or {}).get("address")
    return {
        "address": copy.deepcopy(address) if address else None,
        "business_name": None,
        "email": (customer or {}).get("email") or email,
        "individual_name": None,
        "name": (customer or {}).get("name"),
        "phone": (customer or {}).get("phone"),
        "tax_exempt": (customer or {}).get("tax_exempt") or "none",
        "tax_ids": [],
    }


def _apply_tax(ctx: RequestContext, session: StripeObject, customer: StripeObject | None) -> None:
    """Automatic tax on the session's amounts, per line as invoices compute it (`tax.py`):
    each line's `amount_tax` (and, when exclusive, its `amount_total`), `total_details.
    amount_tax` and `amount_total`; nothing without a usable customer location."""
    items = session["_line_items"]
    if not items:
        return
    location = customer_location(customer) if customer is not None else None
    rate = None
    if session["automatic_tax"]["enabled"] and location is not None and customer is not None:
        rate = tax.customer_rate(location, customer.get("tax_exempt") or "none")
    for item in items:
        amount = int(item["amount_subtotal"])
        item["amount_tax"], item["amount_total"] = 0, amount
        if rate is None:
            continue
        price = ctx.store.get("price", item["price"]) or {}
        behavior = price.get("tax_behavior")
        computed = tax.line_tax(
            amount, rate, behavior if behavior in ("inclusive", "exclusive") else "exclusive"
        )
        item["amount_tax"], item["amount_total"] = computed.tax, computed.total
    session["amount_total"] = sum(int(i["amount_total"]) for i in items)
    session["total_details"]["amount_tax"] = sum(int(i["amount_tax"]) for i in items)


def _tax_status(customer: StripeObject | None, automatic: bool) -> str | None:
    if not automatic:
        return None
    if customer is not None and customer_location(customer) is not None:
        return "complete"
    return "requires_location_inputs"


# --- retrieve / list / line items / expire --------------------------------------------------


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/checkout/sessions/{session}`."""
    session = _session(ctx, path["session"])
    return _render(ctx, session, expand_of(params))


def list_sessions(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/checkout/sessions` (`customer`, `payment_intent`, `subscription`, `status`,
    `customer_details[email]`, `created`)."""
    expire_due(ctx)
    if "payment_link" in params or "customer_account" in params:
        name = "payment_link" if "payment_link" in params else "customer_account"
        raise invalid(f"`{name}` is not supported by the emulator.", param=name)
    equals: dict[str, list[Any]] = {}
    for name in ("customer", "payment_intent", "subscription", "status"):
        if name in params:
            equals[name] = [params[name]]
    email = (params.get("customer_details") or {}).get("email")

    def matches(obj: StripeObject) -> bool:
        return email is None or (obj.get("customer_details") or {}).get("email") == email

    page = list_response(
        ctx.store,
        kind=KIND,
        params={k: v for k, v in params.items() if k != "expand"},
        url="/v1/checkout/sessions",
        equals=equals,
        predicate=matches if email is not None else None,
    )
    tree = expand_of(params).get("data", {})
    page["data"] = [_render(ctx, ctx.store.get(KIND, o["id"]) or o, tree) for o in page["data"]]
    return page


def list_line_items(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/checkout/sessions/{session}/line_items`."""
    session = _session(ctx, path["session"])
    return _line_item_list(ctx, session, params)


def _line_item_list(ctx: RequestContext, session: StripeObject, params: Params) -> StripeObject:
    items = [_render_item(ctx, i) for i in session["_line_items"]]
    limit = int(params.get("limit", 10))
    if not 1 <= limit <= 100:
        raise invalid(
            "Invalid limit: must be between 1 and 100",
            param="limit",
            code="parameter_invalid_integer",
        )
    ids = [i["id"] for i in items]
    if "starting_after" in params and params["starting_after"] in ids:
        items = items[ids.index(params["starting_after"]) + 1 :]
    elif "ending_before" in params and params["ending_before"] in ids:
        items = items[: ids.index(params["ending_before"])][-limit:]
    url = f"/v1/checkout/sessions/{session['id']}/line_items"
    return envelope(items[:limit], len(items) > limit, url)


def _render_item(ctx: RequestContext, item: StripeObject) -> StripeObject:
    out = copy.deepcopy(item)
    price = ctx.store.get("price", item["price"])
    out["price"] = render(ctx.store, price) if price is not None else None
    return out


def expire(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/checkout/sessions/{session}/expire` (only an open session)."""
    session = _session(ctx, path["session"])
    if session["status"] != "open":
        raise invalid(
            f"Only Checkout Sessions with a status of `open` can be expired. This Checkout "
            f"Session has a status of `{session['status']}`.",
        )
    return _render(ctx, _expire(ctx, session), expand_of(params))


def _expire(ctx: RequestContext, session: StripeObject) -> StripeObject:
    after = copy.deepcopy(session)
    after["status"] = "expired"
    after["url"] = None
    ctx.store.replace(KIND, after)
    ctx.emit("checkout.session.expired", _public(ctx, after))
    return after


def expire_due(ctx: RequestContext) -> int | None:
    """Expire every open session whose `expires_at` the emulator clock has passed, each
    with its `checkout.session.expired` dated at its `expires_at` (the moment Stripe expires
    it); the earliest `expires_at` still ahead, or None. The time sweep (`clock.SWEEPS`)."""
    now = ctx.now()
    following: int | None = None
    due = [s for s in _sessions(ctx).lookup("status", "open") if s["expires_at"] <= now]
    for session in sorted(due, key=lambda s: (s["expires_at"], s["created"])):
        at = invoices.ClockedContext(
            ctx.emulator,
            ctx.request_id,
            ctx.idempotency_key,
            ctx.path,
            ctx.events,
            frozen=int(session["expires_at"]),
        )
        _expire(at, session)
    for session in _sessions(ctx).lookup("status", "open"):
        when = int(session["expires_at"])
        following = when if following is None else min(following, when)
    return following


SWEEPS[SWEEP] = expire_due


def _sessions(ctx: RequestContext) -> Collection:
    """The sessions collection with its indexes (`Store.collection` re-indexes one restored
    before this module registered them)."""
    return ctx.store.collection(KIND)


def _session(ctx: RequestContext, session_id: str) -> StripeObject:
    session = fetch(ctx, KIND, session_id, "checkout.session", param="session")
    if session["status"] == "open" and session["expires_at"] <= ctx.now():
        expire_due(ctx)
        session = ctx.store.get(KIND, session_id) or session
    return session


def _render(ctx: RequestContext, session: StripeObject, tree: ExpandTree) -> StripeObject:
    tree = dict(tree)
    line_items = "line_items" in tree
    tree.pop("line_items", None)
    out = render(ctx.store, session, tree)
    if line_items:
        out["line_items"] = _line_item_list(ctx, session, {"limit": 100})
    return out


def _public(ctx: RequestContext, session: StripeObject) -> StripeObject:
    return render(ctx.store, session)


# --- completion (the hosted page, an operator control) -------------------------------------


class CheckoutFailed(Exception):
    """The hosted page could not complete the session; `body` says why (HTTP `status`)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", {}).get("message", "checkout failed"))
        self.status = status
        self.body = body


def complete(ctx: RequestContext, session_id: str, body: dict[str, Any]) -> StripeObject:
    """What the customer does on the hosted page: pay (or save a card) with `card` (a test
    card number) or `payment_method` (a test payment method such as `pm_card_visa`),
    optionally `quantity` (for the first adjustable line item), `address`, `email`, `name`
    and `authenticate` (`succeed`/`fail`: the 3D Secure step, done at once). Returns the
    completed session; raises `CheckoutFailed` (402 for a decline, with `requires_action`
    for authentication) leaving the session open."""
    session = _session(ctx, session_id)
    if session["status"] != "open":
        raise invalid(
            f"This Checkout Session is {session['status']}; only an open session can be completed."
        )
    session = copy.deepcopy(session)
    _apply_quantity(ctx, session, body.get("quantity"))
    pm = _payment_method(ctx, body)
    customer = _customer_for(ctx, session, body)
    session["customer_details"] = _details_from(session, customer, body)
    if customer is not None:
        session["customer"] = customer["id"]
        session["automatic_tax"]["status"] = _tax_status(
            ctx.store.get("customer", customer["id"]), session["automatic_tax"]["enabled"]
        )
        _apply_tax(ctx, session, ctx.store.get("customer", customer["id"]))
        pm = payment_methods.attach_to(ctx, pm, customer["id"])
    ctx.store.replace(KIND, session)
    authenticate = body.get("authenticate")
    if session["mode"] == "payment":
        return _pay(ctx, session, pm, authenticate)
    if session["mode"] == "subscription":
        return _subscribe(ctx, session, pm, authenticate)
    return _setup(ctx, session, pm, authenticate)


def _apply_quantity(ctx: RequestContext, session: StripeObject, quantity: Any) -> None:
    if quantity is None:
        return
    quantity = int(quantity)
    for item in session["_line_items"]:
        adjustable = item["adjustable_quantity"]
        if adjustable and adjustable["enabled"]:
            if not adjustable["minimum"] <= quantity <= adjustable["maximum"]:
                raise invalid(
                    f"quantity must be between {adjustable['minimum']} and "
                    f"{adjustable['maximum']}.",
                    param="quantity",
                )
            price = ctx.store.get("price", item["price"]) or {}
            amount = int(price.get("unit_amount") or 0) * quantity
            item.update(quantity=quantity, amount_subtotal=amount, amount_total=amount)
            total = sum(i["amount_subtotal"] for i in session["_line_items"])
            session["amount_subtotal"] = session["amount_total"] = total
            customer = ctx.store.get("customer", session["customer"] or "")
            _apply_tax(ctx, session, customer)
            return
    raise invalid("No line item of this session has an adjustable quantity.", param="quantity")


def _payment_method(ctx: RequestContext, body: dict[str, Any]) -> StripeObject:
    if "payment_method" in body:
        token = str(body["payment_method"])
        if token not in TEST_PAYMENT_METHODS:
            raise invalid(f"Unknown test payment method {token!r}.", param="payment_method")
        return payment_methods.mint_test_payment_method(ctx, token)
    number = str(body.get("card", "")).replace(" ", "")
    if not number:
        raise invalid("Give `card` (a test card number) or `payment_method`.", param="card")
    if card_for(number) is None:
        raise invalid(f"{number} is not one of the emulator's test cards.", param="card")
    year = 1970 + ctx.now() // 31_556_952 + 5
    pm = payment_methods.build(
        ctx,
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": year, "cvc": "123"},
        },
        param_prefix="",
    )
    ctx.store.insert(payment_methods.KIND, pm)
    return pm


def _customer_for(
    ctx: RequestContext, session: StripeObject, body: dict[str, Any]
) -> StripeObject | None:
    address = body.get("address")
    if session["customer"] is not None:
        customer = fetch(ctx, "customer", session["customer"], "customer")
        update: dict[str, Any] = {}
        if address is not None and session["_customer_update"].get("address") == "auto":
            update["address"] = address
        if body.get("name") and session["_customer_update"].get("name") == "auto":
            update["name"] = body["name"]
        if update:
            customers.update(ctx, update, {"customer": customer["id"]})
        return ctx.store.get("customer", customer["id"])
    needed = (
        session["mode"] != "payment"
        or session["customer_creation"] == "always"
        or bool((session["invoice_creation"] or {}).get("enabled"))
    )
    if not needed:
        return None
    params: dict[str, Any] = {}
    email = body.get("email") or session["customer_email"]
    if email:
        params["email"] = email
    if body.get("name"):
        params["name"] = body["name"]
    if address is not None:
        params["address"] = address
    created = customers.create(ctx, params, {})
    return ctx.store.get("customer", created["id"])


def _details_from(
    session: StripeObject, customer: StripeObject | None, body: dict[str, Any]
) -> StripeObject:
    email = body.get("email") or session["customer_email"]
    details = _customer_details(customer, email) or _customer_details(None, "")
    assert details is not None
    details["email"] = details["email"] or None
    if body.get("address") is not None:
        address: dict[str, Any] = dict.fromkeys(
            ("city", "country", "line1", "line2", "postal_code", "state")
        )
        address.update(body["address"])
        details["address"] = address
    if body.get("name"):
        details["name"] = body["name"]
    return details


def _pay(
    ctx: RequestContext, session: StripeObject, pm: StripeObject, authenticate: Any
) -> StripeObject:
    if (session["invoice_creation"] or {}).get("enabled") and not _declines(pm):
        return _pay_invoice(ctx, session, pm, authenticate)
    params: dict[str, Any] = {
        "amount": session["amount_total"],
        "currency": session["currency"],
        "payment_method": pm["id"],
        "confirm": True,
        "metadata": {},
        "return_url": session["success_url"] or "https://checkout.stripe.com/return",
    }
    if session["customer"]:
        params["customer"] = session["customer"]
    if session["allowed_payment_method_types"]:
        params["allowed_payment_method_types"] = session["allowed_payment_method_types"]
    try:
        intent = payment_intents.create(ctx, params, {})
    except PaymentError as declined:
        intent_id = (declined.extra.get("payment_intent") or {}).get("id")
        _remember(ctx, session, payment_intent=intent_id)
        raise _declined(declined) from None
    _remember(ctx, session, payment_intent=intent["id"])
    return _after_intent(ctx, session["id"], intent, authenticate)


def _declines(pm: StripeObject) -> bool:
    card = payment_methods.behaviour(pm)
    return card is not None and card.decline_code is not None and card.authentication == "none"


def _pay_invoice(
    ctx: RequestContext, session: StripeObject, pm: StripeObject, authenticate: Any
) -> StripeObject:
    """`invoice_creation`: the line items as invoice items on an invoice that the session's
    payment pays (its `payments` names the session's PaymentIntent)."""
    customer_id = session["customer"]
    for item in session["_line_items"]:
        invoices.create_item(
            ctx,
            {
                "customer": customer_id,
                "pricing": {"price": item["price"]},
                "quantity": item["quantity"],
            },
            {},
        )
    data = session["invoice_creation"]["invoice_data"]
    params: dict[str, Any] = {
        "customer": customer_id,
        "pending_invoice_items_behavior": "include",
        "auto_advance": False,
        "currency": session["currency"],
        "metadata": dict(data.get("metadata") or {}),
    }
    if session["automatic_tax"]["enabled"]:
        params["automatic_tax"] = {"enabled": True}
    for name in ("description", "footer"):
        if data.get(name):
            params[name] = data[name]
    draft = invoices.create(ctx, params, {})
    stored = ctx.store.get(invoices.KIND, draft["id"])
    assert stored is not None
    finalized = invoices.finalize(ctx, stored)
    session = _stored(ctx, session["id"])
    session["invoice"] = finalized["id"]
    ctx.store.replace(KIND, session)
    if finalized["status"] != "paid":
        finalized = invoices.attempt_payment(
            ctx, finalized, payment_method=pm["id"], off_session=False
        )
    payments = finalized["payments"]["data"]
    intent_id = payments[0]["payment"]["payment_intent"] if payments else None
    intent = ctx.store.get("payment_intent", intent_id or "")
    if intent is None:
        return _finish(ctx, session["id"], "paid")
    _remember(ctx, session, payment_intent=intent["id"])
    return _after_intent(ctx, session["id"], render(ctx.store, intent), authenticate)


def _subscribe(
    ctx: RequestContext, session: StripeObject, pm: StripeObject, authenticate: Any
) -> StripeObject:
    data = session["_subscription_data"]
    items = [
        {"price": i["price"], "quantity": i["quantity"]}
        for i in session["_line_items"]
        if (ctx.store.get("price", i["price"]) or {}).get("recurring")
    ]
    params: dict[str, Any] = {
        "customer": session["customer"],
        "items": items,
        "default_payment_method": pm["id"],
        "metadata": dict(data.get("metadata") or {}),
    }
    if session["automatic_tax"]["enabled"]:
        params["automatic_tax"] = {"enabled": True}
    if "trial_period_days" in data:
        params["trial_period_days"] = data["trial_period_days"]
    if "description" in data:
        params["description"] = data["description"]
    if _declines(pm):
        # The hosted page refuses a declining card before any subscription exists.
        params["payment_behavior"] = "error_if_incomplete"
    try:
        sub = subscriptions.create(ctx, params, {})
    except PaymentError as declined:
        raise _declined(declined) from None
    session = _stored(ctx, session["id"])
    session["subscription"] = sub["id"]
    stored_sub = ctx.store.get("subscription", sub["id"]) or sub
    invoice = ctx.store.get("invoice", stored_sub.get("latest_invoice") or "")
    if invoice is not None:
        session["invoice"] = invoice["id"]
    ctx.store.replace(KIND, session)
    if stored_sub["status"] in ("active", "trialing"):
        trial_or_free = invoice is None or invoice["amount_paid"] == 0
        return _finish(ctx, session["id"], "no_payment_required" if trial_or_free else "paid")
    payments = (invoice or {}).get("payments", {}).get("data", [])
    intent_id = payments[0]["payment"]["payment_intent"] if payments else None
    intent = ctx.store.get("payment_intent", intent_id or "")
    if intent is None:
        raise CheckoutFailed(
            402,
            {
                "error": {
                    "type": "card_error",
                    "message": "The first invoice was not paid.",
                    "code": "invoice_payment_failed",
                },
                "subscription": sub["id"],
            },
        )
    _remember(ctx, session, payment_intent=None, pending=intent["id"])
    return _after_intent(ctx, session["id"], render(ctx.store, intent), authenticate)


def _setup(
    ctx: RequestContext, session: StripeObject, pm: StripeObject, authenticate: Any
) -> StripeObject:
    params: dict[str, Any] = {
        "customer": session["customer"],
        "payment_method": pm["id"],
        "confirm": True,
        "usage": "off_session",
        "return_url": session["success_url"] or "https://checkout.stripe.com/return",
    }
    try:
        intent = setup_intents.create(ctx, params, {})
    except PaymentError as declined:
        raise _declined(declined) from None
    session = _stored(ctx, session["id"])
    session["setup_intent"] = intent["id"]
    ctx.store.replace(KIND, session)
    if intent["status"] == "requires_action" and authenticate is not None:
        intent = render(
            ctx.store, setup_intents.complete_authentication(ctx, intent["id"], str(authenticate))
        )
    if intent["status"] == "succeeded":
        return _finish(ctx, session["id"], "no_payment_required")
    raise _needs_action(intent, "setup_intent")


def _after_intent(
    ctx: RequestContext, session_id: str, intent: StripeObject, authenticate: Any
) -> StripeObject:
    if intent["status"] == "requires_action" and authenticate is not None:
        # The customer completes (or fails) 3D Secure on the page; a success runs the
        # intent hooks, which complete the session.
        intent = render(
            ctx.store,
            payment_intents.complete_authentication(ctx, intent["id"], str(authenticate)),
        )
    session = _stored(ctx, session_id)
    if session["status"] == "complete":
        return session
    if intent["status"] == "succeeded":
        return _succeeded(ctx, session, intent)
    if intent["status"] == "requires_action":
        raise _needs_action(intent, "payment_intent")
    raise CheckoutFailed(
        402,
        {
            "error": intent.get("last_payment_error") or {"message": "The payment failed."},
            "payment_intent": intent,
        },
    )


def _succeeded(ctx: RequestContext, session: StripeObject, intent: StripeObject) -> StripeObject:
    return _finish(ctx, session["id"], "paid")


def _finish(ctx: RequestContext, session_id: str, payment_status: str) -> StripeObject:
    session = _stored(ctx, session_id)
    session["status"] = "complete"
    session["payment_status"] = payment_status
    session["url"] = None
    session["_pending"] = None
    session["_pending_intent"] = None
    ctx.store.replace(KIND, session)
    ctx.emit("checkout.session.completed", _public(ctx, session))
    return session


def _remember(
    ctx: RequestContext,
    session: StripeObject,
    *,
    payment_intent: str | None,
    pending: str | None = None,
) -> None:
    stored = _stored(ctx, session["id"])
    if payment_intent is not None:
        stored["payment_intent"] = payment_intent
    stored["_pending_intent"] = pending or payment_intent
    ctx.store.replace(KIND, stored)


def _stored(ctx: RequestContext, session_id: str) -> StripeObject:
    found = ctx.store.get(KIND, session_id)
    assert found is not None
    return copy.deepcopy(found)


def _declined(error: PaymentError) -> CheckoutFailed:
    body = error.body(request_id="")
    body["error"].pop("request_log_url", None)
    return CheckoutFailed(error.status, body)


def _needs_action(intent: StripeObject, key: str) -> CheckoutFailed:
    return CheckoutFailed(
        402,
        {
            "error": {
                "type": "card_error",
                "code": "authentication_required",
                "message": (
                    "The card needs 3D Secure authentication; the session stays open. "
                    f"Authenticate the {key.replace('_', ' ')} (POST /_emulator/"
                    f"{key}s/{intent['id']}/authenticate) or complete again with "
                    '"authenticate": "succeed".'
                ),
            },
            "requires_action": True,
            key: intent,
        },
    )


def _on_intent_outcome(ctx: RequestContext, intent: StripeObject, succeeded: bool) -> None:
    """A session waiting on an intent's authentication completes when it succeeds."""
    if not succeeded:
        return
    for session in list(_sessions(ctx).lookup("_pending_intent", intent["id"])):
        if session["status"] != "open":
            continue
        if session["mode"] == "subscription":
            sub = ctx.store.get("subscription", session["subscription"] or "")
            if sub is None or sub["status"] not in ("active", "trialing"):
                continue
            _finish(ctx, session["id"], "paid")
        else:
            _succeeded(ctx, copy.deepcopy(session), intent)
