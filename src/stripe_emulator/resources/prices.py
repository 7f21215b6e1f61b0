"""Prices: every field, Stripe's immutability (via the update params type), lookup-key
uniqueness and `transfer_lookup_key`, and the default-price archiving rule. No delete."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid, missing_parameter, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    fetch,
    new_metadata,
    nullable,
    previous_attributes,
    save_update,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "price"
LOOKUP_KEY_MAX_LENGTH = 200
INTERVALS = ("day", "week", "month", "year")
USAGE_TYPES = ("licensed", "metered")
TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")
BILLING_SCHEMES = ("per_unit", "tiered")
TIERS_MODES = ("graduated", "volume")


def register(router: Router) -> None:
    """Attach the price endpoints."""
    router.add("POST", "/v1/prices", "_price_create_params.PriceCreateParams", create)
    router.add("GET", "/v1/prices", "_price_list_params.PriceListParams", list_prices)
    router.add("GET", "/v1/prices/{price}", "_price_retrieve_params.PriceRetrieveParams", retrieve)
    router.add("POST", "/v1/prices/{price}", "_price_update_params.PriceUpdateParams", update)


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/prices`."""
    product_id = _product_for(ctx, params)
    price = build_price(ctx, params, product_id=product_id)
    insert_price(ctx, price, transfer=params.get("transfer_lookup_key", False))
    return render(ctx.store, price, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/prices/{price}`."""
    return render(ctx.store, fetch(ctx, KIND, path["price"], "price"), expand_of(params))


def list_prices(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/prices` with `active`, `currency`, `product`, `lookup_keys`, `type`,
    `recurring`, `created` filters."""
    equals: dict[str, Any] = {}
    for name in ("active", "product", "type"):
        if name in params:
            equals[name] = [params[name]]
    if "currency" in params:
        equals["currency"] = [params["currency"].lower()]
    if "lookup_keys" in params:
        if len(params["lookup_keys"]) > 10:
            raise invalid("You can specify up to 10 lookup_keys.", param="lookup_keys")
        equals["lookup_key"] = params["lookup_keys"]
    recurring: dict[str, Any] = params.get("recurring", {})
    predicate = (lambda p: _recurring_matches(p, recurring)) if recurring else None
    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/prices", equals=equals, predicate=predicate
    )


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/prices/{price}`: only the mutable fields exist in `PriceUpdateParams`, so
    `unit_amount` & co. already failed as `parameter_unknown`."""
    before = fetch(ctx, KIND, path["price"], "price")
    after = copy.deepcopy(before)
    if "active" in params:
        _check_archivable(ctx, before, params["active"])
        after["active"] = params["active"]
    if "nickname" in params:
        after["nickname"] = nullable(params["nickname"])
    if "tax_behavior" in params:
        _update_tax_behavior(before, after, params["tax_behavior"])
    if "currency_options" in params:
        _update_currency_options(after, params["currency_options"])
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    if "lookup_key" in params:
        after["lookup_key"] = _lookup_key(nullable(params["lookup_key"]))
        if after["lookup_key"] != before["lookup_key"]:
            _claim_lookup_key(ctx, after, transfer=params.get("transfer_lookup_key", False))
    _save(ctx, before, after)
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def _save(ctx: RequestContext, before: StripeObject, after: StripeObject) -> None:
    changes = previous_attributes(before, after)
    save_update(ctx, KIND, before, after, "price.updated")
    if changes and after["recurring"] is not None:
        plan_changes = {k: v for k, v in changes.items() if k in ("active", "metadata", "nickname")}
        if plan_changes:
            ctx.emit("plan.updated", as_plan(after), previous_attributes=plan_changes)


def build_price(ctx: RequestContext, params: Params, *, product_id: str) -> StripeObject:
    """A new price object from create params (also used by `product.default_price_data`)."""
    cur = currency(params["currency"])
    scheme = params.get("billing_scheme", "per_unit")
    check_enum(scheme, "billing_scheme", BILLING_SCHEMES)
    check_enum(params.get("tax_behavior"), "tax_behavior", TAX_BEHAVIORS)
    recurring = _recurring(ctx, params.get("recurring"))
    price: StripeObject = {
        "id": new_id("price"),
        "object": "price",
        "active": params.get("active", True),
        "billing_scheme": scheme,
        "created": ctx.now(),
        "currency": cur,
        "custom_unit_amount": _custom_unit_amount(params.get("custom_unit_amount")),
        "livemode": False,
        "lookup_key": _lookup_key(params.get("lookup_key")),
        "metadata": new_metadata(params.get("metadata")),
        "nickname": params.get("nickname"),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": params.get("tax_behavior", "unspecified"),
        "tiers_mode": None,
        "transform_quantity": _transform_quantity(params.get("transform_quantity")),
        "type": "recurring" if recurring else "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    }
    if scheme == "tiered":
        _apply_tiers(price, params)
    else:
        _apply_unit_amount(price, params, where=None)
    price["currency_options"] = _currency_options(price, params.get("currency_options"))
    return price


def insert_price(ctx: RequestContext, price: StripeObject, *, transfer: bool) -> None:
    """Store a new price (taking its lookup key if allowed) and emit `price.created`."""
    if price["lookup_key"] is not None:
        _claim_lookup_key(ctx, price, transfer=transfer)
    ctx.store.insert(KIND, price)
    ctx.emit("price.created", price)
    if price["recurring"] is not None:
        # Recurring prices are also plans in Stripe's older API, and it still emits those.
        ctx.emit("plan.created", as_plan(price))


def as_plan(price: StripeObject) -> StripeObject:
    """The legacy `plan` view of a recurring price (same id), as `plan.*` events carry."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": False,
        "metadata": price["metadata"],
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": recurring["trial_period_days"],
        "usage_type": recurring["usage_type"],
    }


def _product_for(ctx: RequestContext, params: Params) -> str:
    if "product" in params and "product_data" in params:
        raise invalid(
            "You may only specify one of these parameters: product, product_data.",
            param="product_data",
        )
    if "product" in params:
        fetch(ctx, "product", params["product"], "product", param="product", in_body=True)
        product_id: str = params["product"]
        return product_id
    if "product_data" in params:
        from stripe_emulator.resources.products import create_product

        return str(create_product(ctx, params["product_data"], param="product_data")["id"])
    raise missing_parameter("product")


def _check_archivable(ctx: RequestContext, price: StripeObject, active: bool) -> None:
    if active:
        return
    product = ctx.store.get("product", price["product"])
    if product is not None and product.get("default_price") == price["id"]:
        raise invalid(
            "This price cannot be archived because it is the default price of its product.",
            param="active",
        )


def _update_tax_behavior(before: StripeObject, after: StripeObject, value: str) -> None:
    check_enum(value, "tax_behavior", TAX_BEHAVIORS)
    if before["tax_behavior"] in ("inclusive", "exclusive") and value != before["tax_behavior"]:
        raise invalid(
            "Once specified as either inclusive or exclusive, tax_behavior cannot be changed.",
            param="tax_behavior",
        )
    after["tax_behavior"] = value


def _lookup_key(value: str | None) -> str | None:
    if value is not None and len(value) > LOOKUP_KEY_MAX_LENGTH:
        raise invalid(
            f"Invalid lookup_key: must be at most {LOOKUP_KEY_MAX_LENGTH} characters",
            param="lookup_key",
        )
    return value


def _claim_lookup_key(ctx: RequestContext, price: StripeObject, *, transfer: bool) -> None:
    """Lookup keys are unique per account; `transfer_lookup_key` moves one atomically."""
    key = price["lookup_key"]
    if key is None:
        return
    holders = [
        p for p in ctx.store.collection(KIND).lookup("lookup_key", key) if p["id"] != price["id"]
    ]
    if not holders:
        return
    holder = holders[0]
    if not transfer:
        raise invalid(
            f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
        )
    released = copy.deepcopy(holder)
    released["lookup_key"] = None
    _save(ctx, holder, released)


def _recurring(ctx: RequestContext, raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if "interval" not in raw:
        raise missing_parameter("recurring[interval]")
    check_enum(raw["interval"], "recurring[interval]", INTERVALS)
    usage_type = raw.get("usage_type", "licensed")
    check_enum(usage_type, "recurring[usage_type]", USAGE_TYPES)
    interval_count = raw.get("interval_count", 1)
    if interval_count < 1:
        raise invalid(
            "Invalid recurring[interval_count]: must be at least 1",
            param="recurring[interval_count]",
        )
    meter = raw.get("meter")
    if usage_type == "metered" and meter is None:
        # Since API version 2025-03-31.basil, metered prices must be backed by a meter.
        raise invalid(
            "Metered prices must be backed by a meter: set recurring[meter].",
            param="recurring[meter]",
        )
    if meter is not None:
        if usage_type != "metered":
            raise invalid(
                "recurring[meter] can only be set when recurring[usage_type] is metered.",
                param="recurring[meter]",
            )
        fetch(ctx, "billing.meter", meter, "billing meter", param="recurring[meter]", in_body=True)
    return {
        "interval": raw["interval"],
        "interval_count": interval_count,
        "meter": meter,
        "trial_period_days": raw.get("trial_period_days"),
        "usage_type": usage_type,
    }


def _param(where: str | None, name: str) -> str:
    return f"{where}[{name}]" if where else name


def _apply_unit_amount(target: StripeObject, params: Params, *, where: str | None) -> None:
    amount, decimal = params.get("unit_amount"), params.get("unit_amount_decimal")
    if amount is not None and decimal is not None:
        raise invalid(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            param=_param(where, "unit_amount_decimal"),
        )
    if amount is None and decimal is None:
        if params.get("custom_unit_amount") is not None:
            return
        raise missing_parameter(_param(where, "unit_amount"))
    if amount is not None and amount < 0:
        raise invalid(
            "Invalid unit_amount: must be greater than or equal to 0",
            param=_param(where, "unit_amount"),
        )
    target["unit_amount"], target["unit_amount_decimal"] = _amount_pair(amount, decimal)


def _integral(decimal: Any) -> int | None:
    # Stripe fills `unit_amount` from a decimal only when the decimal is a whole number.
    value = Decimal(str(decimal))
    return int(value) if value == value.to_integral_value() else None


def _apply_tiers(price: StripeObject, params: Params) -> None:
    if "unit_amount" in params or "unit_amount_decimal" in params:
        raise invalid(
            "You may not specify unit_amount when billing_scheme is tiered.", param="unit_amount"
        )
    if "tiers_mode" not in params:
        raise missing_parameter("tiers_mode")
    check_enum(params["tiers_mode"], "tiers_mode", TIERS_MODES)
    if "transform_quantity" in params:
        raise invalid(
            "transform_quantity cannot be combined with tiers.", param="transform_quantity"
        )
    price["tiers_mode"] = params["tiers_mode"]
    price["tiers"] = build_tiers(params.get("tiers"), param="tiers")


def build_tiers(raw: list[dict[str, Any]] | None, *, param: str) -> list[dict[str, Any]]:
    """Validated tiers: ascending `up_to`, the last one `inf` (rendered as null)."""
    if not raw:
        raise missing_parameter(param)
    tiers: list[dict[str, Any]] = []
    previous = 0
    for index, tier in enumerate(raw):
        where = f"{param}[{index}]"
        up_to = tier.get("up_to")
        if up_to is None:
            raise missing_parameter(f"{where}[up_to]")
        last = index == len(raw) - 1
        if (up_to == "inf") != last:
            raise invalid(
                "The last tier must have up_to set to `inf`, and only the last one.",
                param=f"{where}[up_to]",
            )
        if up_to != "inf":
            if up_to <= previous:
                raise invalid("Tiers must be in ascending order of up_to.", param=f"{where}[up_to]")
            previous = up_to
        tiers.append(_tier(tier, where, None if up_to == "inf" else up_to))
    return tiers


def _tier(tier: dict[str, Any], where: str, up_to: int | None) -> dict[str, Any]:
    flat = _amount_pair(tier.get("flat_amount"), tier.get("flat_amount_decimal"))
    unit = _amount_pair(tier.get("unit_amount"), tier.get("unit_amount_decimal"))
    if flat == (None, None) and unit == (None, None):
        raise invalid("Each tier needs at least one of unit_amount or flat_amount.", param=where)
    return {
        "flat_amount": flat[0],
        "flat_amount_decimal": flat[1],
        "unit_amount": unit[0],
        "unit_amount_decimal": unit[1],
        "up_to": up_to,
    }


def _amount_pair(amount: int | None, decimal: Any) -> tuple[int | None, str | None]:
    """`(x_amount, x_amount_decimal)` as Stripe renders them from either parameter."""
    if amount is not None:
        return amount, str(amount)
    if decimal is not None:
        return _integral(decimal), str(decimal)
    return None, None


def _custom_unit_amount(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None or not raw.get("enabled"):
        return None
    return {k: raw.get(k) for k in ("maximum", "minimum", "preset")}


def _transform_quantity(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    check_enum(raw.get("round"), "transform_quantity[round]", ("up", "down"))
    if raw.get("divide_by", 0) < 1:
        raise invalid(
            "divide_by must be a positive integer.", param="transform_quantity[divide_by]"
        )
    return {"divide_by": raw["divide_by"], "round": raw["round"]}


def _currency_options(price: StripeObject, raw: dict[str, Any] | None) -> dict[str, Any]:
    """Includable `currency_options`: the price's own currency plus any others given."""
    options = {price["currency"]: _own_currency_option(price)}
    for code, option in (raw or {}).items():
        cur = currency(code, param=f"currency_options[{code}]")
        if cur == price["currency"]:
            raise invalid(
                "A currency option cannot repeat the price's own currency.",
                param=f"currency_options[{code}]",
            )
        options[cur] = _currency_option(price, option, f"currency_options[{code}]")
    return options


def _own_currency_option(price: StripeObject) -> dict[str, Any]:
    option = {
        "custom_unit_amount": price["custom_unit_amount"],
        "tax_behavior": price["tax_behavior"],
        "unit_amount": price["unit_amount"],
        "unit_amount_decimal": price["unit_amount_decimal"],
    }
    if price["billing_scheme"] == "tiered":
        option["tiers"] = copy.deepcopy(price["tiers"])
    return option


def _currency_option(price: StripeObject, raw: dict[str, Any], where: str) -> dict[str, Any]:
    check_enum(raw.get("tax_behavior"), f"{where}[tax_behavior]", TAX_BEHAVIORS)
    option: dict[str, Any] = {
        "custom_unit_amount": _custom_unit_amount(raw.get("custom_unit_amount")),
        "tax_behavior": raw.get("tax_behavior", price["tax_behavior"]),
        "unit_amount": None,
        "unit_amount_decimal": None,
    }
    if price["billing_scheme"] == "tiered":
        option["tiers"] = build_tiers(raw.get("tiers"), param=f"{where}[tiers]")
    else:
        _apply_unit_amount(option, raw, where=where)
    return option


def _update_currency_options(price: StripeObject, raw: Any) -> None:
    own = price["currency"]
    if raw == "":
        price["currency_options"] = {own: price["currency_options"][own]}
        return
    for code, option in raw.items():
        cur = currency(code, param=f"currency_options[{code}]")
        if cur == own:
            raise invalid(
                "You are specifying an update to a currency option that matches the top-level "
                "currency for this price. Please remove this currency option and update the "
                "top-level params instead.",
                param=f"currency_options[{code}]",
            )
        price["currency_options"][cur] = _currency_option(
            price, option, f"currency_options[{code}]"
        )


def _recurring_matches(price: StripeObject, wanted: dict[str, Any]) -> bool:
    recurring = price.get("recurring")
    if recurring is None:
        return False
    return all(recurring.get(k) == v for k, v in wanted.items())


def price_or_404(ctx: RequestContext, price_id: str, *, param: str) -> StripeObject:
    """A price referenced by another resource."""
    price = ctx.store.get(KIND, price_id)
    if price is None:
        raise no_such("price", price_id, param=param, in_body=True)
    return price
