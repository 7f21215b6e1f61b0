"""Subscriptions and their items: create, retrieve, list, update, cancel;
`/v1/subscription_items`; renewals, trial ends and period-end cancellations driven by test
clocks (`advance_clock`, registered on `Emulator.clock_hooks`).

Periods live on the items (`current_period_start/end`, API `2026-10-28.endive`), anchored at
`billing_cycle_anchor` (`billing_time`): the start, the trial end, a requested anchor (the
first period up to it prorated) or, after `billing_cycle_anchor[type]=now`, the reset time.
Every item of a subscription shares one interval; an update (or a schedule phase) that moves
every item to another interval resets the cycle as `billing_cycle_anchor=now` does, at the
time of the change (`cycle_resets`). The clock walk also sends `invoice.upcoming`
`UPCOMING_RENEWAL_DAYS` before a renewal and invoices pending items on a
`pending_invoice_item_interval`. Responses and events never carry the `_` fields
(`render.strip_private`).

Status machine (Stripe's): a `charge_automatically` subscription starts `incomplete` until its
first invoice is paid (`active`), `incomplete_expired` 23 hours later if it never is;
`trialing` until `trial_end`, then `active` with a renewal invoice (or `canceled` / `paused`
without a payment method, as `trial_settings.end_behavior.missing_payment_method` says);
a failed renewal payment makes it `past_due`, paying the invoice makes it `active` again;
exhausted retries may make it `unpaid` (resources/dunning.py): it still renews, its invoices
finalized but not attempted, until one is paid (`active`);
`canceled` by cancel, by `cancel_at_period_end` / `cancel_at`, or when its customer is deleted.

Proration (`proration_behavior=create_prorations`, the default, or `always_invoice`): each
changed item gets an "Unused time" credit for its old amount and a "Remaining time" charge for
its new one over `[proration_date, current_period_end)` of the period, to the second
(`billing_time.prorated`), as pending invoice items (invoiced at once with `always_invoice`).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripe_emulator import billing_time
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.listing import envelope, expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import ExpandTree, expand_tree, render
from stripe_emulator.resources import (
    customers,
    invoices,
    meters,
    payment_intents,
    payment_methods,
)
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    deleted_stub,
    fetch,
    new_metadata,
    previous_attributes,
    save_update,
)
from stripe_emulator.resources._payments import expandable_when_null
from stripe_emulator.resources.prices import as_plan
from stripe_emulator.routing import Router
from stripe_emulator.state import INDEXED_FIELDS, Store, StripeObject
from stripe_emulator.tax import customer_location

KIND = "subscription"
CLOCK = "test_helpers.test_clock"
STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
LIST_STATUSES = (*STATUSES, "all", "ended")
PAYMENT_BEHAVIORS = (
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
)
PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")
MISSING_PM_BEHAVIORS = ("cancel", "create_invoice", "pause")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
# Parameters each endpoint implements; every other one the SDK accepts is refused (400 naming
# it) rather than silently ignored. `off_session` on create has no effect here (the first
# invoice is charged on session); `proration_behavior` on create applies to the period up to a
# `billing_cycle_anchor`.
_CREATE_HANDLED = frozenset(
    {
        "customer",
        "items",
        "payment_behavior",
        "collection_method",
        "days_until_due",
        "trial_settings",
        "default_payment_method",
        "currency",
        "trial_end",
        "trial_period_days",
        "trial_from_plan",
        "cancel_at",
        "cancel_at_period_end",
        "description",
        "metadata",
        "off_session",
        "proration_behavior",
        "billing_mode",
        "automatic_tax",
        "billing_cycle_anchor",
        "billing_cycle_anchor_config",
        "pending_invoice_item_interval",
    }
)
_UPDATE_HANDLED = frozenset(
    {
        "cancel_at_period_end",
        "cancel_at",
        "cancellation_details",
        "collection_method",
        "days_until_due",
        "default_payment_method",
        "description",
        "trial_settings",
        "metadata",
        "items",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
        "off_session",
        "automatic_tax",
        "billing_cycle_anchor",
        "pending_invoice_item_interval",
    }
)
_ITEM_HANDLED = frozenset(
    {
        "subscription",
        "price",
        "quantity",
        "metadata",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
    }
)
_ITEM_FIELDS_HANDLED = frozenset({"id", "price", "quantity", "metadata", "deleted"})
DAY = 24 * 3600
INCOMPLETE_EXPIRY = 23 * 3600
TRIAL_WILL_END_NOTICE = 3 * DAY
# `invoice.upcoming` is sent this many days before a renewal of a `charge_automatically`
# subscription (Stripe's account setting "upcoming renewal events"; an operator may change it:
# `subscriptions.UPCOMING_RENEWAL_DAYS = n`, 0 turns the event off).
UPCOMING_RENEWAL_DAYS = 3
ENDED = ("canceled", "incomplete_expired")
# Statuses whose periods renew on the clock walk. The SDK's `Subscription.status` docstring:
# for `unpaid`, "no subsequent invoices will be attempted (invoices will be created, ...)".
RENEWING = ("active", "past_due", "unpaid")
PENDING_INTERVALS = ("day", "week", "month", "year")
# The longest `pending_invoice_item_interval` Stripe accepts: one year, in each unit.
_PENDING_MAX = {"day": 365, "week": 52, "month": 12, "year": 1}
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}
_ZERO_DECIMAL = frozenset({"jpy", "krw", "vnd", "clp", "isk", "xaf", "xof", "bif", "djf"})

# Secondary indexes of the billing collections (state.INDEXED_FIELDS is the shared registry;
# `ensure_indexes` rebuilds a collection restored before this module was imported).
BILLING_INDEXES: dict[str, tuple[str, ...]] = {
    KIND: ("customer", "status", "test_clock"),
    invoices.KIND: ("customer", "status", "_subscription", "test_clock"),
    invoices.ITEM: ("customer",),
}
for _kind, _fields in BILLING_INDEXES.items():
    INDEXED_FIELDS.setdefault(_kind, _fields)


def ensure_indexes(store: Store) -> None:
    """Re-index collections created (e.g. restored from a state file) before their indexes
    were registered (every collection, `Store.reindex`)."""
    store.reindex()


expandable_when_null(
    KIND,
    "customer",
    "default_payment_method",
    "latest_invoice",
    "test_clock",
    "schedule",
    "pending_setup_intent",
    "on_behalf_of",
    "application",
    "default_source",
)


def register(router: Router) -> None:
    """Attach the subscription and subscription item endpoints; hook customer deletion,
    invoice payments, `customer.subscriptions` and subscription previews."""
    p = "_subscription_"
    base, one = "/v1/subscriptions", "/v1/subscriptions/{subscription}"
    router.add("POST", base, f"{p}create_params.SubscriptionCreateParams", create)
    router.add("GET", base, f"{p}list_params.SubscriptionListParams", list_subscriptions)
    router.add("GET", one, f"{p}retrieve_params.SubscriptionRetrieveParams", retrieve)
    router.add("POST", one, f"{p}update_params.SubscriptionUpdateParams", update)
    router.add("DELETE", one, f"{p}cancel_params.SubscriptionCancelParams", cancel)
    q = "_subscription_item_"
    items, item = "/v1/subscription_items", "/v1/subscription_items/{item}"
    router.add("GET", items, f"{q}list_params.SubscriptionItemListParams", list_items)
    router.add("POST", items, f"{q}create_params.SubscriptionItemCreateParams", create_item)
    router.add("GET", item, f"{q}retrieve_params.SubscriptionItemRetrieveParams", retrieve_item)
    router.add("POST", item, f"{q}update_params.SubscriptionItemUpdateParams", update_item)
    router.add("DELETE", item, f"{q}delete_params.SubscriptionItemDeleteParams", delete_item)
    customers.on_customer_deleted(_cancel_for_deleted_customer)
    customers.INCLUDED_LISTS["subscriptions"] = _of_customer
    if _on_invoice_payment not in invoices.PAYMENT_HOOKS:
        invoices.PAYMENT_HOOKS.append(_on_invoice_payment)
    invoices.PREVIEW["subscription"] = preview


# --- create -------------------------------------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscriptions`."""
    _refuse_unsupported(params)
    if "customer" not in params:
        raise invalid("Missing required param: customer.", param="customer")
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    raw_items = params.get("items") or []
    if not raw_items:
        raise invalid("Missing required param: items.", param="items")
    behavior = params.get("payment_behavior", "allow_incomplete")
    check_enum(behavior, "payment_behavior", PAYMENT_BEHAVIORS)
    method = params.get("collection_method", "charge_automatically")
    check_enum(method, "collection_method", COLLECTION_METHODS)
    if method == "send_invoice" and "days_until_due" not in params:
        raise invalid(
            "Missing required param: days_until_due (required with "
            "collection_method=send_invoice).",
            param="days_until_due",
        )
    if method == "charge_automatically" and "days_until_due" in params:
        raise invalid(
            "`days_until_due` can only be set with collection_method=send_invoice.",
            param="days_until_due",
        )
    missing_pm = ((params.get("trial_settings") or {}).get("end_behavior") or {}).get(
        "missing_payment_method", "create_invoice"
    )
    check_enum(
        missing_pm, "trial_settings[end_behavior][missing_payment_method]", MISSING_PM_BEHAVIORS
    )
    cctx = invoices.clocked(ctx, customer["id"])
    now = cctx.now()
    for i, raw in enumerate(raw_items):
        invoices.refuse_unhandled(
            raw, _ITEM_FIELDS_HANDLED - {"id", "deleted"}, prefix=f"items[{i}]"
        )
    prices = [_price_for(ctx, raw, f"items[{i}]") for i, raw in enumerate(raw_items)]
    for i, price in enumerate(prices):
        if any(other["id"] == price["id"] for other in prices[:i]):
            raise duplicate_price(price["id"])
    cur = _currency_of(params, prices)
    _check_intervals(prices)
    pm = params.get("default_payment_method")
    if pm is not None:
        _check_attached(ctx, pm, customer["id"], "default_payment_method")
    trial_end = _trial_end(params, prices, now)
    proration = params.get("proration_behavior", "create_prorations")
    check_enum(proration, "proration_behavior", PRORATION_BEHAVIORS)
    requested, anchor_config = _requested_anchor(params, prices[0], now, trial_end)
    _check_customer_currency(ctx, customer, cur)
    pending_interval = _pending_interval(params.get("pending_invoice_item_interval"))
    interval, count = _interval(prices[0])
    if trial_end is not None:
        anchor, period = trial_end, (now, trial_end)
    elif requested is not None:
        anchor, period = requested, (now, requested)
    else:
        anchor, period = now, (now, billing_time.add_intervals(now, interval, count))
    sub_id = new_id("sub")
    items = [
        _item(sub_id, price, raw.get("quantity", 1), raw.get("metadata"), period, now)
        for price, raw in zip(prices, raw_items, strict=True)
    ]
    for item, price in zip(items, prices, strict=True):
        _set_unit(item, price, cur)
    sub: StripeObject = {
        "id": sub_id,
        "object": KIND,
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": _automatic_tax(params.get("automatic_tax")),
        "billing_cycle_anchor": anchor,
        "billing_cycle_anchor_config": anchor_config,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": bool(params.get("cancel_at_period_end", False)),
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": method,
        "created": now,
        "currency": cur,
        "customer": customer["id"],
        "customer_account": None,
        "days_until_due": params.get("days_until_due"),
        "default_payment_method": pm,
        "default_source": None,
        "default_tax_rates": [],
        "description": params.get("description"),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"type": "self"},
        },
        "items": envelope(items, False, f"/v1/subscription_items?subscription={sub_id}"),
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": new_metadata(params.get("metadata")),
        "next_pending_invoice_item_invoice": _next_pending(pending_interval, now),
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": pending_interval,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": now,
        "status": "trialing" if trial_end is not None else "incomplete",
        "status_details": None,
        "test_clock": customer.get("test_clock"),
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": missing_pm}},
        "trial_start": now if trial_end is not None else None,
    }
    if "cancel_at" in params and params["cancel_at"] not in ("", None):
        sub["cancel_at"] = int(params["cancel_at"])
    if sub["cancel_at_period_end"]:
        # Stripe: `canceled_at` is the time of the request that set `cancel_at_period_end`.
        sub["cancel_at"], sub["canceled_at"] = period[1], now
        sub["cancellation_details"]["reason"] = "cancellation_requested"
    if requested is not None:
        # The first period, up to the anchor, is prorated (or free with `none`).
        sub["_first_proration"] = proration
    if method == "send_invoice" and trial_end is None:
        sub["status"] = "active"
    if sub["automatic_tax"]["enabled"] and customer_location(customer) is None:
        # The first invoice is finalized at once, so Stripe refuses the subscription itself.
        raise invoices.tax_location_invalid()
    if behavior == "error_if_incomplete" and sub["status"] == "incomplete":
        _charge_would_succeed_or_raise(cctx, sub, customer, _first_amount(sub))
    ctx.store.insert(KIND, sub)
    _set_customer_currency(cctx, customer, cur)
    _first_invoice(cctx, sub, customer, confirm=behavior != "default_incomplete")
    current = ctx.store.get(KIND, sub_id) or sub
    return render_subscription(ctx, current, expand_of(params))


def _requested_anchor(
    params: Params, price: StripeObject, now: int, trial_end: int | None
) -> tuple[int | None, StripeObject | None]:
    """`billing_cycle_anchor` (a future timestamp no later than the next natural billing date)
    or `billing_cycle_anchor_config` (the next occurrence of its day of month and time, monthly
    and yearly prices only): the anchor and the stored config."""
    given = [n for n in ("billing_cycle_anchor", "billing_cycle_anchor_config") if n in params]
    if not given:
        return None, None
    if len(given) == 2:
        raise invalid(
            "You may only specify one of these parameters: billing_cycle_anchor, "
            "billing_cycle_anchor_config.",
            param="billing_cycle_anchor_config",
        )
    name = given[0]
    if trial_end is not None:
        raise invalid(
            f"`{name}` together with a trial is not supported by the emulator (see "
            "docs/emulator.md).",
            param=name,
        )
    interval, count = _interval(price)
    natural = billing_time.add_intervals(now, interval, count)
    config: StripeObject | None = None
    if name == "billing_cycle_anchor":
        anchor = int(params[name])
        if anchor <= now:
            raise invalid("Invalid timestamp: must be in the future.", param=name)
    else:
        raw = params[name] or {}
        if interval not in ("month", "year"):
            raise invalid(
                "`billing_cycle_anchor_config` is only valid with monthly and yearly price "
                "intervals.",
                param=name,
            )
        bounds = {"day_of_month": (1, 31), "month": (1, 12), "hour": (0, 23)}
        config = {}
        for key in ("day_of_month", "hour", "minute", "month", "second"):
            value = raw.get(key)
            low, high = bounds.get(key, (0, 59))
            if value is not None and not low <= int(value) <= high:
                raise invalid(
                    f"Invalid {name}[{key}]: must be between {low} and {high}.",
                    param=f"{name}[{key}]",
                )
            config[key] = None if value is None else int(value)
        anchor = billing_time.next_occurrence(
            now,
            day_of_month=int(config["day_of_month"]),
            hour=int(config["hour"] or 0),
            minute=int(config["minute"] or 0),
            second=int(config["second"] or 0),
            month=config["month"],
        )
    if anchor > natural:
        raise invalid(
            f"`billing_cycle_anchor` cannot be later than next natural billing date ({natural}) "
            "for plan",
            param=name,
        )
    return anchor, config


def _anchor_day(sub: StripeObject) -> int | None:
    config = sub.get("billing_cycle_anchor_config")
    return None if config is None else int(config["day_of_month"])


def _cycle(sub: StripeObject, at: int) -> tuple[int, int]:
    """The period of the subscription's cycle containing `at`."""
    interval, count = _interval(sub["items"]["data"][0]["price"])
    return billing_time.period_containing(
        sub["billing_cycle_anchor"], interval, count, at, day_of_month=_anchor_day(sub)
    )


def _pending_interval(raw: Any) -> StripeObject | None:
    """`pending_invoice_item_interval`: `{interval, interval_count}` up to one year, or ""."""
    if raw in (None, ""):
        return None
    name = "pending_invoice_item_interval"
    check_enum(raw.get("interval"), f"{name}[interval]", PENDING_INTERVALS)
    interval = str(raw["interval"])
    count = int(raw.get("interval_count", 1))
    if not 1 <= count <= _PENDING_MAX[interval]:
        raise invalid(
            "The pending invoice item interval can be at most one year (1 year, 12 months, 52 "
            "weeks or 365 days).",
            param=f"{name}[interval_count]",
        )
    return {"interval": interval, "interval_count": count}


def _next_pending(pending: StripeObject | None, since: int) -> int | None:
    if pending is None:
        return None
    return billing_time.add_intervals(
        since, str(pending["interval"]), int(pending["interval_count"])
    )


def _check_customer_currency(ctx: RequestContext, customer: StripeObject, cur: str) -> None:
    """Stripe refuses a second currency on a customer that still has a live subscription or
    pending invoice item in its currency."""
    have = customer.get("currency")
    if have in (None, cur):
        return
    live = any(
        s["status"] not in ENDED and s["currency"] != cur
        for s in ctx.store.collection(KIND).lookup("customer", customer["id"])
    )
    pending = any(ii["currency"] != cur for ii in invoices.pending_items(ctx, customer["id"]))
    if live or pending:
        raise invalid(
            "You cannot combine currencies on a single customer. This customer has an active "
            f"subscription, subscription schedule, discount, quote, or invoice item with "
            f"currency {have}."
        )


def _set_customer_currency(ctx: RequestContext, customer: StripeObject, cur: str) -> None:
    """A customer's first subscription sets its `currency` (`customer.updated`)."""
    current = ctx.store.get("customer", customer["id"]) or customer
    if current.get("currency") is not None:
        return
    after = copy.deepcopy(current)
    after["currency"] = cur
    save_update(ctx, "customer", current, after, "customer.updated")


def _emit(
    ctx: RequestContext,
    event_type: str,
    sub: StripeObject,
    previous: dict[str, Any] | None = None,
) -> None:
    """A subscription event (`emit` drops the private keys of both at any depth)."""
    ctx.emit(event_type, sub, previous_attributes=previous)


def _automatic_tax(raw: Any) -> StripeObject:
    enabled = bool((raw or {}).get("enabled"))
    if raw and raw.get("liability") and raw["liability"].get("type") != "self":
        raise invalid(
            "Only `automatic_tax[liability][type]=self` is supported by the emulator.",
            param="automatic_tax[liability][type]",
        )
    return {
        "disabled_reason": None,
        "enabled": enabled,
        "liability": {"type": "self"} if enabled else None,
    }


def _refuse_unsupported(params: Params) -> None:
    invoices.refuse_unhandled(params, _CREATE_HANDLED)
    mode = (params.get("billing_mode") or {}).get("type", "classic")
    if mode != "classic":
        raise invalid(
            "`billing_mode[type]=flexible` is not supported by the emulator (see "
            "docs/emulator.md).",
            param="billing_mode[type]",
        )


def _price_for(ctx: RequestContext, raw: dict[str, Any], where: str) -> StripeObject:
    if "price_data" in raw or "plan" in raw:
        name = "price_data" if "price_data" in raw else "plan"
        raise invalid(
            f"`{where}[{name}]` is not supported by the emulator; pass `price`.",
            param=f"{where}[{name}]",
        )
    if "price" not in raw:
        raise invalid(f"Missing required param: {where}[price].", param=f"{where}[price]")
    price = fetch(ctx, "price", raw["price"], "price", param=f"{where}[price]", in_body=True)
    if price["recurring"] is None:
        raise invalid(
            "The price specified is set to `type=one_time` but this field only accepts prices "
            "with `type=recurring`.",
            param=f"{where}[price]",
        )
    if not price["active"]:
        raise invalid(
            "The price specified is inactive. This field only accepts active prices.",
            param=f"{where}[price]",
        )
    if _is_metered(price) and "quantity" in raw:
        raise invalid(
            "Quantity should not be specified where usage_type is `metered`. Remove quantity "
            f"from `{where}`.",
            param=f"{where}[quantity]",
        )
    if price["billing_scheme"] != "per_unit" and not _is_metered(price):
        raise invalid(
            "Tiered licensed prices are not supported by the emulator's subscriptions yet "
            "(tiered metered prices are).",
            param=f"{where}[price]",
        )
    if "quantity" in raw and int(raw["quantity"]) < 0:
        raise invalid("Invalid quantity: must be at least 0.", param=f"{where}[quantity]")
    return price


def _currency_of(params: Params, prices: list[StripeObject]) -> str:
    cur = currency(params["currency"]) if "currency" in params else prices[0]["currency"]
    for i, price in enumerate(prices):
        if _unit_amount(price, cur) is None:
            raise invalid(
                f"The price {price['id']} does not have a currency option for {cur}.",
                param=f"items[{i}][price]",
            )
    return cur


def _unit_amount(price: StripeObject, cur: str) -> int | None:
    if price["currency"] == cur:
        return int(price["unit_amount"] or 0)
    option = (price.get("currency_options") or {}).get(cur)
    if option is None or option.get("unit_amount") is None:
        return None
    return int(option["unit_amount"])


def _interval(price: StripeObject) -> tuple[str, int]:
    recurring = price["recurring"]
    return str(recurring["interval"]), int(recurring["interval_count"])


def _check_intervals(prices: list[StripeObject], params: list[str] | None = None) -> None:
    """All recurring prices of one subscription (or one schedule phase) share one interval;
    `params` names each price's parameter (default `items[i][price]`)."""
    first = _interval(prices[0])
    for i, price in enumerate(prices[1:], start=1):
        if _interval(price) != first:
            raise invalid(
                "The price specified has a different billing interval than the other items; "
                "all items of a subscription must share one interval.",
                param=params[i] if params is not None else f"items[{i}][price]",
            )


def check_intervals(prices: list[StripeObject], params: list[str]) -> None:
    """`_check_intervals` for the schedules module (one phase's prices)."""
    _check_intervals(prices, params)


def cycle_resets(params: Params, before: StripeObject, after: StripeObject) -> bool:
    """Whether the update `params` that made `after` from `before` starts a new billing
    cycle at the time of the change: `billing_cycle_anchor[type]=now`, or items moved to a
    price of another interval (Stripe's "changing to a price with a different billing
    interval" resets the billing cycle anchor to the change and invoices at once)."""
    return _resets_anchor(params) or restarts_cycle(before, after)


def restarts_cycle(before: StripeObject, after: StripeObject) -> bool:
    """Whether moving `before`'s items to `after`'s restarts the billing cycle now: another
    interval outside a trial (a trialing subscription keeps its trial, and the new
    interval's first period starts at the trial end)."""
    return _interval_changed(before, after) and before["status"] != "trialing"


def _interval_changed(before: StripeObject, after: StripeObject) -> bool:
    old, new = before["items"]["data"], after["items"]["data"]
    return bool(old and new) and _interval(old[0]["price"]) != _interval(new[0]["price"])


def _trial_end(params: Params, prices: list[StripeObject], now: int) -> int | None:
    if "trial_end" in params and "trial_period_days" in params:
        raise invalid(
            "You may only specify one of these parameters: trial_end, trial_period_days.",
            param="trial_end",
        )
    if "trial_end" in params:
        value = params["trial_end"]
        if value == "now":
            return None
        end = int(value)
        if end <= now:
            raise invalid("Invalid timestamp: must be in the future.", param="trial_end")
        return end
    if "trial_period_days" in params:
        days = int(params["trial_period_days"])
        if days < 0 or days > 730:
            raise invalid(
                "Invalid trial_period_days: must be between 0 and 730.", param="trial_period_days"
            )
        return now + days * DAY if days else None
    if params.get("trial_from_plan"):
        days = prices[0]["recurring"].get("trial_period_days")
        return now + int(days) * DAY if days else None
    return None


def _item(
    sub_id: str,
    price: StripeObject,
    quantity: int,
    metadata: Any,
    period: tuple[int, int],
    now: int,
) -> StripeObject:
    public = {k: copy.deepcopy(v) for k, v in price.items() if not k.startswith("_")}
    public.pop("currency_options", None)
    public.pop("tiers", None)
    return {
        "id": new_id("si"),
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": now,
        "current_period_end": period[1],
        "current_period_start": period[0],
        "current_trial": None,
        "discounts": [],
        "metadata": new_metadata(metadata),
        "plan": as_plan(price),
        "price": public,
        "quantity": None if _is_metered(price) else int(quantity),
        "subscription": sub_id,
        "tax_rates": [],
    }


def _check_attached(ctx: RequestContext, pm_id: str, customer_id: str, param: str) -> None:
    pm = ctx.store.get(payment_methods.KIND, pm_id)
    if pm is None or pm.get("customer") != customer_id:
        raise invalid(
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            param=param,
        )


def _first_amount(sub: StripeObject) -> int:
    return sum(_first_line_amount(sub, item) for item in sub["items"]["data"])


def _first_line_amount(sub: StripeObject, item: StripeObject) -> int:
    """An item's amount on the first invoice: the full price, or, up to a
    `billing_cycle_anchor`, the price prorated over `[created, anchor)` of the cycle period
    ending at the anchor (nothing with `proration_behavior=none`)."""
    full = _item_amount(item, sub["currency"])
    first = sub.get("_first_proration")
    if first is None:
        return full
    if first == "none":
        return 0
    anchor = int(sub["billing_cycle_anchor"])
    start, _ = _cycle(sub, anchor - 1)
    return billing_time.prorated(full, start, anchor, int(sub["created"]))


def _first_period_line(
    ctx: RequestContext,
    invoice: StripeObject,
    sub: StripeObject,
    item: StripeObject,
    period: tuple[int, int],
) -> None:
    """The line of a licensed item for the period up to the `billing_cycle_anchor`."""
    price = item["price"]
    product = _product_name(ctx, price["product"])
    quantity = int(item["quantity"] or 0)
    unit = _item_unit(item, sub["currency"])
    prorate = sub["_first_proration"] != "none"
    when = datetime.fromtimestamp(period[0], UTC).strftime("%d %b %Y")
    if prorate:
        description = f"Remaining time on {quantity} × {product} after {when}"
    else:
        description = (
            f"{quantity} × {product} (at {_money(unit, sub['currency'])} / "
            f"{_interval_words(price)})"
        )
    invoices.line(
        invoice,
        amount=_first_line_amount(sub, item),
        description=description,
        period=period,
        price={"id": price["id"], "product": price["product"], "unit_amount_decimal": str(unit)},
        quantity=quantity,
        subscription_id=sub["id"],
        subscription_item=item["id"],
        proration=prorate,
        metadata=item["metadata"],
        tax_behavior=price.get("tax_behavior"),
    )


def _item_amount(item: StripeObject, cur: str) -> int:
    return _item_unit(item, cur) * int(item["quantity"] or 0)


def _item_unit(item: StripeObject, cur: str) -> int:
    price = item["price"]
    if price["currency"] == cur:
        return int(price["unit_amount"] or 0)
    return int(item.get("_unit_amount", price["unit_amount"] or 0))


def _charge_would_succeed_or_raise(
    ctx: RequestContext, sub: StripeObject, customer: StripeObject, amount: int
) -> None:
    """`error_if_incomplete`: a first payment that would fail answers its 402 (a real
    declined PaymentIntent) before anything of the subscription exists."""
    if amount == 0:
        return
    pm_id = sub["default_payment_method"] or (customer.get("invoice_settings") or {}).get(
        "default_payment_method"
    )
    if pm_id is None:
        raise invalid(
            "This customer has no attached payment source or default payment method. Please "
            "consider adding a default payment method.",
            code="resource_missing",
        )
    pm = ctx.store.get(payment_methods.KIND, pm_id)
    card = payment_methods.behaviour(pm) if pm is not None else None
    if card is None or (card.decline_code is None and card.authentication != "always"):
        return
    payment_intents.create(
        ctx,
        {
            "amount": amount,
            "currency": sub["currency"],
            "customer": customer["id"],
            "payment_method": pm_id,
            "confirm": True,
            "off_session": True,
        },
        {},
    )


def _first_invoice(
    ctx: RequestContext, sub: StripeObject, customer: StripeObject, *, confirm: bool
) -> None:
    trial = sub["status"] == "trialing"
    period = _period(sub)
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason="subscription_create",
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        auto_advance=True,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    for item in sub["items"]["data"]:
        if sub.get("_first_proration") is not None and not _is_metered(item["price"]):
            _first_period_line(ctx, invoice, sub, item, period)
        else:
            _item_line(ctx, invoice, sub, item, period, trial=trial)
    taken = invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    invoices.claim_items(ctx, invoice, taken)
    invoice["period_start"] = invoice["period_end"] = ctx.now()
    invoices.recompute(invoice)
    ctx.store.replace(invoices.KIND, invoice)
    _set_latest_invoice(ctx, sub["id"], invoice["id"])
    # `customer.subscription.created` carries its first invoice as `latest_invoice`.
    _emit(ctx, "customer.subscription.created", ctx.store.get(KIND, sub["id"]) or sub)
    invoices.announce_created(ctx, invoice)
    finalized = invoices.finalize(ctx, invoice)
    if (
        finalized["status"] == "open"
        and finalized["collection_method"] == "charge_automatically"
        and confirm
    ):
        invoices.attempt_payment(ctx, finalized, off_session=False)


def _set_latest_invoice(ctx: RequestContext, sub_id: str, invoice_id: str) -> None:
    current = ctx.store.get(KIND, sub_id)
    if current is None:
        return
    after = copy.deepcopy(current)
    after["latest_invoice"] = invoice_id
    ctx.store.replace(KIND, after)


def _period(sub: StripeObject) -> tuple[int, int]:
    first = sub["items"]["data"][0]
    return int(first["current_period_start"]), int(first["current_period_end"])


def _item_line(
    ctx: RequestContext,
    invoice: StripeObject,
    sub: StripeObject,
    item: StripeObject,
    period: tuple[int, int],
    *,
    trial: bool,
) -> None:
    price = item["price"]
    if _is_metered(price):
        _metered_line(ctx, invoice, sub, item, period, trial=trial)
        return
    product = _product_name(ctx, price["product"])
    quantity = int(item["quantity"] or 0)
    unit = _item_unit(item, sub["currency"])
    if trial:
        description = f"Trial period for {product}"
        amount = 0
    else:
        description = (
            f"{quantity} × {product} (at {_money(unit, sub['currency'])} / "
            f"{_interval_words(price)})"
        )
        amount = unit * quantity
    invoices.line(
        invoice,
        amount=amount,
        description=description,
        period=period,
        price={"id": price["id"], "product": price["product"], "unit_amount_decimal": str(unit)},
        quantity=quantity,
        subscription_id=sub["id"],
        subscription_item=item["id"],
        metadata=item["metadata"],
        tax_behavior=price.get("tax_behavior"),
    )


def _is_metered(price: StripeObject) -> bool:
    return bool((price.get("recurring") or {}).get("usage_type") == "metered")


def is_metered(price: StripeObject) -> bool:
    """A price billed in arrears by a meter (its items take no quantity); for schedules."""
    return _is_metered(price)


def _metered_line(
    ctx: RequestContext,
    invoice: StripeObject,
    sub: StripeObject,
    item: StripeObject,
    period: tuple[int, int],
    *,
    trial: bool,
) -> None:
    """A metered item bills in arrears: the usage its meter recorded for the customer over
    `sub._usage_windows[item id]` (the previous period, set at renewal and for a preview),
    priced per unit or through the price's tiers; no window (first invoice, trial): 0."""
    price = item["price"]
    window = None if trial else (sub.get("_usage_windows") or {}).get(item["id"])
    used = Decimal(0)
    if window:
        meter = str(price["recurring"]["meter"])
        used = meters.usage(ctx, meter, sub["customer"], int(window[0]), int(window[1]))
    stored = ctx.store.get("price", price["id"]) or price
    amount = _usage_amount(stored, used)
    quantity = int(used.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    product = _product_name(ctx, price["product"])
    if stored["billing_scheme"] == "tiered":
        unit_decimal = None
        description = f"{quantity} × {product} (tiered, {stored['tiers_mode']})"
    else:
        unit_decimal = str(stored.get("unit_amount_decimal") or stored.get("unit_amount") or 0)
        description = (
            f"{quantity} × {product} (at {_money(int(Decimal(unit_decimal)), sub['currency'])}"
            f" / {_interval_words(price)})"
        )
    invoices.line(
        invoice,
        amount=amount,
        description=description,
        period=(int(window[0]), int(window[1])) if window else period,
        price={"id": price["id"], "product": price["product"], "unit_amount_decimal": unit_decimal},
        quantity=quantity,
        subscription_id=sub["id"],
        subscription_item=item["id"],
        metadata=item["metadata"],
        tax_behavior=price.get("tax_behavior"),
    )


def _usage_amount(price: StripeObject, used: Decimal) -> int:
    """Minor units for `used` units: per unit, or graduated / volume tiers (a tier's flat
    amount is charged when any unit falls in it); rounded half up once, at the end."""
    if used <= 0:
        return 0
    if price["billing_scheme"] != "tiered":
        unit = Decimal(str(price.get("unit_amount_decimal") or price.get("unit_amount") or 0))
        return int((used * unit).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    tiers = price["tiers"]
    total = Decimal(0)
    if price["tiers_mode"] == "volume":
        tier = next((t for t in tiers if t["up_to"] is None or used <= t["up_to"]), tiers[-1])
        total = used * _dec(tier["unit_amount_decimal"]) + _dec(tier["flat_amount_decimal"])
    else:
        below = Decimal(0)
        for tier in tiers:
            top = used if tier["up_to"] is None else min(used, Decimal(tier["up_to"]))
            units = top - below
            if units <= 0:
                break
            total += units * _dec(tier["unit_amount_decimal"]) + _dec(tier["flat_amount_decimal"])
            below = top
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def _product_name(ctx: RequestContext, product_id: str) -> str:
    product = ctx.store.get("product", product_id)
    return str(product["name"]) if product else product_id


def _money(amount: int, cur: str) -> str:
    symbol = _SYMBOLS.get(cur, cur.upper() + " ")
    if cur in _ZERO_DECIMAL:
        return f"{symbol}{amount}"
    return f"{symbol}{amount / 100:.2f}"


def _interval_words(price: StripeObject) -> str:
    interval, count = _interval(price)
    return interval if count == 1 else f"every {count} {interval}s"


# --- retrieve / list ----------------------------------------------------------------------


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscriptions/{subscription}`."""
    return render_subscription(ctx, _sub(ctx, path["subscription"]), expand_of(params))


def list_subscriptions(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscriptions`: not canceled unless `status` says so (`all`, `ended`)."""
    status = params.get("status")
    check_enum(status, "status", LIST_STATUSES)
    equals: dict[str, list[Any]] = {}
    for name in ("customer", "test_clock"):
        if name in params:
            equals[name] = [params[name]]
    if status is None:
        equals["status"] = [s for s in STATUSES if s not in ("canceled", "incomplete_expired")]
    elif status == "ended":
        equals["status"] = ["canceled", "incomplete_expired"]
    elif status != "all":
        equals["status"] = [status]
    price = params.get("price") or params.get("plan")
    method = params.get("collection_method")

    def matches(sub: StripeObject) -> bool:
        if method is not None and sub["collection_method"] != method:
            return False
        return price is None or any(i["price"]["id"] == price for i in sub["items"]["data"])

    paths: list[str] = params.get("expand", [])
    nested = [p for p in paths if p.startswith("data.items")]
    plain = {**params, "expand": [p for p in paths if p not in nested]}
    listed = list_response(
        ctx.store,
        kind=KIND,
        params=plain,
        url="/v1/subscriptions",
        equals=equals,
        predicate=matches,
    )
    if nested:
        tree = expand_tree([p.removeprefix("data.") for p in nested])
        for out in listed["data"]:
            out["items"] = _render_items(ctx, out["items"], tree["items"])
    return listed


def render_subscription(ctx: RequestContext, sub: StripeObject, tree: ExpandTree) -> StripeObject:
    """The subscription's response; `items.data.price(.product)` expands inside the embedded
    items (the shared renderer only follows ids)."""
    rest = {k: v for k, v in tree.items() if k != "items"}
    out = render(ctx.store, sub, rest)
    if "items" in tree:
        out["items"] = _render_items(ctx, out["items"], tree["items"])
    return out


def _render_items(ctx: RequestContext, items: StripeObject, tree: ExpandTree) -> StripeObject:
    for name in tree:
        if name != "data":
            raise invalid(f"This property cannot be expanded (items.{name}).", param="expand")
    data = [render_item(ctx, item, tree.get("data", {})) for item in items["data"]]
    return {**items, "data": data}


def render_item(ctx: RequestContext, item: StripeObject, tree: ExpandTree) -> StripeObject:
    """A subscription item; `price.product` expands inside the embedded price."""
    rest = {k: v for k, v in tree.items() if k != "price"}
    out = render(ctx.store, item, rest)
    if "price" in tree:
        out["price"] = render(ctx.store, item["price"], tree["price"])
    return out


def _of_customer(ctx: RequestContext, customer: StripeObject) -> list[StripeObject]:
    subs = ctx.store.collection(KIND).lookup("customer", customer["id"])
    return [s for s in reversed(subs) if s["status"] not in ENDED]


def _sub(
    ctx: RequestContext, sub_id: str, *, param: str = "id", in_body: bool = False
) -> StripeObject:
    return fetch(ctx, KIND, sub_id, "subscription", param=param, in_body=in_body)


# --- update -------------------------------------------------------------------------------


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscriptions/{subscription}`."""
    before = _sub(ctx, path["subscription"])
    if before["schedule"] is not None and (
        "cancel_at" in params or "cancel_at_period_end" in params
    ):
        name = "cancel_at" if "cancel_at" in params else "cancel_at_period_end"
        raise invalid(
            f"The subscription is managed by the subscription schedule `{before['schedule']}`, "
            "and updating any cancelation behavior directly is not allowed. Please update the "
            "schedule instead.",
            param=name,
        )
    cctx = invoices.clocked(ctx, before["customer"])
    after, prorations = apply_update(cctx, before, params, save=True)
    if cycle_resets(params, before, after):
        # A new period from now, invoiced at once with the credits for the old one.
        invoice = _cycle_invoice(cctx, after, billing_reason="subscription_update")
        after["latest_invoice"] = invoice["id"]
        _save(cctx, before, after)
        _settle_now(cctx, invoice)
    else:
        _save(cctx, before, after)
        if prorations and params.get("proration_behavior") == "always_invoice":
            _invoice_now(cctx, after, billing_reason="subscription_update")
    current = ctx.store.get(KIND, after["id"]) or after
    return render_subscription(ctx, current, expand_of(params))


def apply_update(
    ctx: RequestContext, before: StripeObject, params: Params, *, save: bool
) -> tuple[StripeObject, list[StripeObject]]:
    """The subscription after `params` and its proration invoice items (inserted, with
    `invoiceitem.created`, only when `save`)."""
    if before["status"] in ("canceled", "incomplete_expired"):
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    invoices.refuse_unhandled(params, _UPDATE_HANDLED)
    for i, raw in enumerate(params.get("items") or []):
        invoices.refuse_unhandled(raw, _ITEM_FIELDS_HANDLED, prefix=f"items[{i}]")
    behavior = params.get("proration_behavior", "create_prorations")
    check_enum(behavior, "proration_behavior", PRORATION_BEHAVIORS)
    check_enum(params.get("payment_behavior"), "payment_behavior", PAYMENT_BEHAVIORS)
    after = copy.deepcopy(before)
    now = ctx.now()
    at = int(params.get("proration_date", now))
    if "cancel_at_period_end" in params:
        after["cancel_at_period_end"] = bool(params["cancel_at_period_end"])
        if after["cancel_at_period_end"]:
            after["cancel_at"] = _period(after)[1]
            # The SDK's `Subscription.canceled_at`: with `cancel_at_period_end`, the time of
            # the most recent update request, not the period end.
            after["canceled_at"] = now
            after["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            after["cancel_at"] = None
            after["canceled_at"] = None
            after["cancellation_details"]["reason"] = None
    if "cancel_at" in params:
        value = params["cancel_at"]
        after["cancel_at"] = None if value in ("", None) else int(value)
        after["cancel_at_period_end"] = False
        after["canceled_at"] = None
    if "cancellation_details" in params:
        details = params["cancellation_details"] or {}
        for key in ("comment", "feedback"):
            if key in details:
                after["cancellation_details"][key] = details[key] or None
    if "collection_method" in params:
        check_enum(params["collection_method"], "collection_method", COLLECTION_METHODS)
        after["collection_method"] = params["collection_method"]
    if "days_until_due" in params:
        after["days_until_due"] = params["days_until_due"]
    if after["collection_method"] == "send_invoice" and after["days_until_due"] is None:
        raise invalid(
            "Missing required param: days_until_due (required with "
            "collection_method=send_invoice).",
            param="days_until_due",
        )
    if after["collection_method"] == "charge_automatically":
        after["days_until_due"] = None
    if "default_payment_method" in params:
        pm = params["default_payment_method"] or None
        if pm is not None:
            _check_attached(ctx, pm, after["customer"], "default_payment_method")
        after["default_payment_method"] = pm
    if "description" in params:
        after["description"] = params["description"] or None
    if "automatic_tax" in params:
        after["automatic_tax"] = _automatic_tax(params["automatic_tax"])
    if "trial_settings" in params:
        value = ((params["trial_settings"] or {}).get("end_behavior") or {}).get(
            "missing_payment_method"
        )
        check_enum(
            value, "trial_settings[end_behavior][missing_payment_method]", MISSING_PM_BEHAVIORS
        )
        if value is not None:
            after["trial_settings"]["end_behavior"]["missing_payment_method"] = value
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    if "pending_invoice_item_interval" in params:
        pending = _pending_interval(params["pending_invoice_item_interval"])
        if pending != after["pending_invoice_item_interval"]:
            after["pending_invoice_item_interval"] = pending
            after["next_pending_invoice_item_invoice"] = _next_pending(pending, now)
    reset = _resets_anchor(params)
    if reset and after["status"] not in ("active", "past_due"):
        raise invalid(
            f"Resetting the billing cycle anchor of a `{after['status']}` subscription is not "
            "supported by the emulator.",
            param="billing_cycle_anchor",
        )
    changes: list[tuple[StripeObject | None, StripeObject | None]] = []
    if "items" in params:
        changes = _apply_items(ctx, after, params["items"], now)
    if _interval_changed(before, after):
        if after["status"] not in ("active", "past_due", "trialing"):
            raise invalid(
                f"Changing the billing interval of a `{after['status']}` subscription is not "
                "supported by the emulator.",
                param="items",
            )
        # In a trial the trial runs on (its period, its end as the anchor): the new
        # interval's first period starts when the trial ends. Otherwise the cycle restarts.
        reset = reset or after["status"] != "trialing"
    if reset:
        # Every old item's unused time is credited; the new period is billed in full.
        changes = [(old, None) for old in before["items"]["data"]]
        at = now
    prorations: list[StripeObject] = []
    prorate = behavior != "none" and after["status"] not in ("trialing", "incomplete")
    if prorate:
        customer = ctx.store.get("customer", after["customer"])
        assert customer is not None
        for old, new in changes:
            prorations.extend(_prorate(ctx, customer, before if reset else after, old, new, at))
        if save:
            for ii in prorations:
                ctx.store.insert(invoices.ITEM, ii)
                ctx.emit("invoiceitem.created", ii)
    if reset:
        interval, count = _interval(after["items"]["data"][0]["price"])
        end = billing_time.add_intervals(now, interval, count)
        after["billing_cycle_anchor"] = now
        after["billing_cycle_anchor_config"] = None
        for item in after["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = now, end
        if after["cancel_at_period_end"]:
            after["cancel_at"] = end
    return after, prorations


def _resets_anchor(params: Params) -> bool:
    """`billing_cycle_anchor[type]`: `now` resets the cycle, `unchanged` keeps it (the
    object form of API 2026-09-30.endive)."""
    raw = params.get("billing_cycle_anchor")
    if raw is None:
        return False
    kind = (raw or {}).get("type")
    check_enum(kind, "billing_cycle_anchor[type]", ("now", "unchanged"))
    return bool(kind == "now")


def _apply_items(
    ctx: RequestContext, sub: StripeObject, raw_items: list[dict[str, Any]], now: int
) -> list[tuple[StripeObject | None, StripeObject | None]]:
    """Apply `items[]` (add, change price / quantity / metadata, delete); returns the
    (old, new) version of each item whose amount changed."""
    data: list[StripeObject] = sub["items"]["data"]
    by_id = {item["id"]: item for item in data}
    period = _period(sub)
    changes: list[tuple[StripeObject | None, StripeObject | None]] = []
    for i, raw in enumerate(raw_items):
        where = f"items[{i}]"
        if "id" in raw:
            current = by_id.get(raw["id"])
            if current is None:
                raise invalid(f"Invalid subscription_item id: {raw['id']}", param=f"{where}[id]")
            old = copy.deepcopy(current)
            if raw.get("deleted"):
                data.remove(current)
                del by_id[current["id"]]
                changes.append((old, None))
                continue
            if "price" in raw and raw["price"] != current["price"]["id"]:
                price = _price_for(ctx, raw, where)
                _check_item_price(sub, price, where)
                if any(i is not current and i["price"]["id"] == price["id"] for i in data):
                    raise duplicate_price(price["id"])
                fresh = _item(sub["id"], price, current["quantity"], None, period, now)
                current["price"], current["plan"] = fresh["price"], fresh["plan"]
                _set_unit(current, price, sub["currency"])
            if "quantity" in raw:
                if _is_metered(current["price"]):
                    raise invalid(
                        "Quantity should not be specified where usage_type is `metered`.",
                        param=f"{where}[quantity]",
                    )
                if int(raw["quantity"]) < 0:
                    raise invalid(
                        "Invalid quantity: must be at least 0.", param=f"{where}[quantity]"
                    )
                current["quantity"] = int(raw["quantity"])
            if "metadata" in raw:
                current["metadata"] = apply_metadata(current["metadata"], raw["metadata"])
            if _item_amount(old, sub["currency"]) != _item_amount(current, sub["currency"]):
                changes.append((old, copy.deepcopy(current)))
        else:
            price = _price_for(ctx, raw, where)
            _check_item_price(sub, price, where)
            if any(item["price"]["id"] == price["id"] for item in data):
                raise duplicate_price(price["id"])
            fresh = _item(
                sub["id"], price, raw.get("quantity", 1), raw.get("metadata"), period, now
            )
            _set_unit(fresh, price, sub["currency"])
            data.append(fresh)
            changes.append((None, copy.deepcopy(fresh)))
    if not data:
        raise invalid(
            "A subscription must have at least one active item; cancel it instead.",
            param="items",
        )
    # Checked on the result, so every item may move to another interval in one update.
    prices = [item["price"] for item in data]
    _check_intervals(prices, [_item_param_name(raw_items, item) for item in data])
    return changes


def _item_param_name(raw_items: list[dict[str, Any]], item: StripeObject) -> str:
    for i, raw in enumerate(raw_items):
        if raw.get("id") == item["id"] or (
            "id" not in raw and raw.get("price") == item["price"]["id"]
        ):
            return f"items[{i}][price]"
    return "items"


def duplicate_price(price_id: str) -> StripeError:
    """Stripe's answer to a second item of a price already on the subscription (the error
    recorded in stripe-archive/submigrate#1: message and `param: plan`)."""
    return invalid(
        f"Cannot add multiple subscription items with the same plan: {price_id}", param="plan"
    )


def _check_item_price(sub: StripeObject, price: StripeObject, where: str) -> None:
    if _unit_amount(price, sub["currency"]) is None:
        raise invalid(
            f"The price {price['id']} does not have a currency option for {sub['currency']}.",
            param=f"{where}[price]",
        )


def _set_unit(item: StripeObject, price: StripeObject, cur: str) -> None:
    if price["currency"] != cur:
        item["_unit_amount"] = _unit_amount(price, cur)
    else:
        item.pop("_unit_amount", None)


def _prorate(
    ctx: RequestContext,
    customer: StripeObject,
    sub: StripeObject,
    old: StripeObject | None,
    new: StripeObject | None,
    at: int,
) -> list[StripeObject]:
    start, end = _period(sub)
    when = datetime.fromtimestamp(at, UTC).strftime("%d %b %Y")
    items: list[StripeObject] = []
    for version, sign, words in ((old, -1, "Unused time"), (new, 1, "Remaining time")):
        if version is None:
            continue
        amount = billing_time.prorated(_item_amount(version, sub["currency"]), start, end, at)
        if amount == 0:
            continue
        price = version["price"]
        quantity = int(version["quantity"] or 0)
        product = _product_name(ctx, price["product"])
        unit = _item_unit(version, sub["currency"])
        items.append(
            invoices.build_item(
                ctx,
                customer,
                amount=sign * amount,
                cur=sub["currency"],
                description=f"{words} on {quantity} × {product} after {when}",
                period=(at, end),
                price={
                    "id": price["id"],
                    "product": price["product"],
                    "unit_amount_decimal": str(unit),
                    "tax_behavior": price.get("tax_behavior"),
                },
                quantity=quantity,
                subscription_id=sub["id"],
                subscription_item=version["id"],
                proration=True,
            )
        )
    return items


def _save(ctx: RequestContext, before: StripeObject, after: StripeObject) -> None:
    changes = previous_attributes(before, after)
    if not changes:
        return
    ctx.store.replace(KIND, after)
    _emit(ctx, "customer.subscription.updated", after, changes)


def _cycle_invoice(ctx: RequestContext, sub: StripeObject, *, billing_reason: str) -> StripeObject:
    """A saved draft for the subscription's (new) current period: its pending items (the
    credits), then a line per item."""
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason=billing_reason,
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    taken = invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    period = _period(sub)
    sub["_usage_windows"] = {item["id"]: None for item in sub["items"]["data"]}
    for item in sub["items"]["data"]:
        _item_line(ctx, invoice, sub, item, period, trial=False)
    invoice["period_start"] = invoice["period_end"] = period[0]
    invoices.claim_items(ctx, invoice, taken)
    invoices.recompute(invoice)
    ctx.store.replace(invoices.KIND, invoice)
    return invoice


def _settle_now(ctx: RequestContext, invoice: StripeObject) -> StripeObject:
    """`invoice.created`, then finalized and, for `charge_automatically`, charged at once."""
    invoices.announce_created(ctx, invoice)
    finalized = invoices.finalize(ctx, invoice)
    if finalized["status"] == "open" and finalized["collection_method"] == "charge_automatically":
        finalized = invoices.attempt_payment(ctx, finalized)
    return finalized


def _invoice_now(
    ctx: RequestContext, sub: StripeObject, *, billing_reason: str
) -> StripeObject | None:
    """Invoice the subscription's pending items at once (finalized and charged)."""
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason=billing_reason,
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    taken = invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    if not taken:
        ctx.store.delete(invoices.KIND, invoice["id"])
        return None
    invoices.claim_items(ctx, invoice, taken)
    invoices.recompute(invoice)
    ctx.store.replace(invoices.KIND, invoice)
    _set_latest_invoice(ctx, sub["id"], invoice["id"])
    invoices.announce_created(ctx, invoice)
    finalized = invoices.finalize(ctx, invoice)
    if finalized["status"] == "open" and finalized["collection_method"] == "charge_automatically":
        finalized = invoices.attempt_payment(ctx, finalized)
    return finalized


# --- cancel -------------------------------------------------------------------------------


def cancel(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/subscriptions/{subscription}` (`invoice_now`, `prorate`)."""
    sub = _sub(ctx, path["subscription"])
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise invalid(
            f"No such subscription: '{sub['id']}' is already canceled.",
            code="resource_missing",
        )
    cctx = invoices.clocked(ctx, sub["customer"])
    if params.get("prorate") and sub["status"] in ("active", "past_due"):
        customer = ctx.store.get("customer", sub["customer"])
        assert customer is not None
        for item in sub["items"]["data"]:
            for ii in _prorate(cctx, customer, sub, item, None, cctx.now()):
                ctx.store.insert(invoices.ITEM, ii)
                cctx.emit("invoiceitem.created", ii)
    if not params.get("prorate") and not params.get("invoice_now"):
        # Stripe's cancel reference: canceling at once, "pending prorations are removed if
        # `invoice_now` and `prorate` are both set to false" (other pending items stay).
        for ii in _owned_pending(cctx, sub):
            if ii["proration"]:
                ctx.store.delete(invoices.ITEM, ii["id"])
                cctx.emit("invoiceitem.deleted", ii)
    details = params.get("cancellation_details") or {}
    after = _cancel(cctx, sub, reason="cancellation_requested", details=details)
    if params.get("invoice_now"):
        _invoice_now(cctx, after, billing_reason="subscription_update")
    current = ctx.store.get(KIND, sub["id"]) or after
    return render_subscription(ctx, current, expand_of(params))


def _cancel(
    ctx: RequestContext,
    sub: StripeObject,
    *,
    reason: str,
    details: dict[str, Any] | None = None,
) -> StripeObject:
    now = ctx.now()
    after = copy.deepcopy(sub)
    after["status"] = "canceled"
    if not (sub["cancel_at_period_end"] and sub["canceled_at"] is not None):
        # A cancellation requested with `cancel_at_period_end` keeps its request time.
        after["canceled_at"] = now
    after["ended_at"] = now
    after["cancellation_details"]["reason"] = reason
    for key in ("comment", "feedback"):
        if key in (details or {}):
            after["cancellation_details"][key] = (details or {})[key] or None
    ctx.store.replace(KIND, after)
    _emit(ctx, "customer.subscription.deleted", after)
    if after["schedule"] is not None:
        for hook in SCHEDULE_CANCEL_HOOKS:
            hook(ctx, after)
    return after


def _cancel_for_deleted_customer(ctx: RequestContext, customer: StripeObject) -> None:
    cctx = invoices.clocked(ctx, customer["id"])
    for sub in list(ctx.store.collection(KIND).lookup("customer", customer["id"])):
        if sub["status"] not in ("canceled", "incomplete_expired"):
            _cancel(cctx, sub, reason="cancellation_requested")


# --- invoice payments move the status -----------------------------------------------------


def _on_invoice_payment(ctx: RequestContext, invoice: StripeObject, succeeded: bool) -> None:
    sub_id = invoice.get("_subscription")
    sub = ctx.store.get(KIND, sub_id) if sub_id else None
    if sub is None or sub["status"] in ("canceled", "incomplete_expired"):
        return
    after = copy.deepcopy(sub)
    if succeeded and sub["status"] in ("incomplete", "past_due", "unpaid"):
        if sub["latest_invoice"] == invoice["id"] or sub["status"] != "incomplete":
            after["status"] = "active"
    elif not succeeded and sub["status"] == "active" and invoice["billing_reason"] != "manual":
        after["status"] = "past_due"
    if not succeeded and invoices.retries_exhausted(invoice) and _latest_unpaid(ctx, sub, invoice):
        # Every scheduled retry failed: the account's setting decides (resources/dunning.py).
        outcome = invoices.exhausted_subscription_status(ctx)
        if outcome == "unpaid":
            after["status"] = "unpaid"
        elif outcome == "canceled":
            _save(ctx, sub, after)
            _cancel(ctx, ctx.store.get(KIND, sub["id"]) or after, reason="payment_failed")
            return
    _save(ctx, sub, after)


def _latest_unpaid(ctx: RequestContext, sub: StripeObject, invoice: StripeObject) -> bool:
    """The outcome of exhausted retries applies unless a later invoice of the subscription
    is paid (https://support.stripe.com/questions/retry-schedules-longer-than-a-subscription-s-billing-period)."""
    latest = ctx.store.get(invoices.KIND, sub["latest_invoice"] or "")
    return latest is None or latest["id"] == invoice["id"] or latest["status"] != "paid"


# --- time: renewals, trial ends, period-end cancellations ---------------------------------


def advance_clock(ctx: RequestContext, clock: StripeObject, target: int) -> None:
    """Walk every subscription and invoice of the clock's customers through what falls due
    up to `target`, in time order (ties in creation order), with the clock's frozen time
    moved to each moment.

    A heap holds each object's next due moment; after an action, the objects of that
    customer are looked at again (an action only changes its own customer's objects), and
    an entry that no longer matches its object's next due moment is skipped."""
    clock_id = clock["id"]
    heap: list[tuple[int, int, int, str, str]] = []
    queued: set[tuple[int, str, str]] = set()

    def push(kind: str, obj: StripeObject) -> None:
        due = _due(kind, obj)
        if due is None or due[0] > target or (due[0], due[1], obj["id"]) in queued:
            return
        queued.add((due[0], due[1], obj["id"]))
        seq = ctx.store.collection(kind).seq_of.get(obj["id"], 0)
        heapq.heappush(heap, (due[0], 0 if kind == KIND else 1, seq, due[1], obj["id"]))

    for sub in ctx.store.collection(KIND).lookup("test_clock", clock_id):
        push(KIND, sub)
    for invoice in ctx.store.collection(invoices.KIND).lookup("test_clock", clock_id):
        push(invoices.KIND, invoice)
    while heap:
        at, rank, _, action, object_id = heapq.heappop(heap)
        queued.discard((at, action, object_id))
        kind = KIND if rank == 0 else invoices.KIND
        obj = ctx.store.get(kind, object_id)
        if obj is None or _due(kind, obj) != (at, action):
            continue
        current = ctx.store.get(CLOCK, clock_id)
        if current is None:
            return
        if current["frozen_time"] != at:
            moved = copy.deepcopy(current)
            moved["frozen_time"] = at
            ctx.store.replace(CLOCK, moved)
        _run(ctx, action, object_id)
        customer_id = obj["customer"]
        for sub in ctx.store.collection(KIND).lookup("customer", customer_id):
            push(KIND, sub)
        for invoice in ctx.store.collection(invoices.KIND).lookup("customer", customer_id):
            push(invoices.KIND, invoice)


def _due(kind: str, obj: StripeObject) -> tuple[int, str] | None:
    if kind == KIND:
        return _sub_due(obj)
    if obj["status"] == "draft" and obj["auto_advance"]:
        when = obj["automatically_finalizes_at"]
        return None if when is None else (int(when), "finalize")
    if (
        obj["status"] == "open"
        and obj["collection_method"] == "send_invoice"
        and obj["due_date"] is not None
        and obj.get("_subscription")
        and not obj.get("_overdue")
    ):
        return int(obj["due_date"]), "overdue"
    retry_at = invoices.retry_due(obj)
    if retry_at is not None:
        return retry_at, "retry"
    return None


def _sub_due(sub: StripeObject) -> tuple[int, str] | None:
    regular = _regular_due(sub)
    phase_end = sub.get("_schedule_phase_end")
    if (
        phase_end is not None
        and sub["status"] in ("trialing", "active", "past_due", "unpaid")
        and (regular is None or int(phase_end) <= regular[0])
    ):
        # A schedule's phase ending with the period applies before the renewal, so the
        # renewal invoice bills the new phase's items.
        return int(phase_end), "schedule_phase"
    return regular


def _regular_due(sub: StripeObject) -> tuple[int, str] | None:
    status = sub["status"]
    if status == "incomplete":
        return sub["created"] + INCOMPLETE_EXPIRY, "expire"
    if status == "trialing":
        notice = sub["trial_end"] - TRIAL_WILL_END_NOTICE
        if not sub.get("_trial_will_end_sent") and notice > sub["created"]:
            return notice, "trial_will_end"
        return sub["trial_end"], "trial_end"
    if status in RENEWING:
        # An `unpaid` subscription still renews; its invoices are finalized but not attempted
        # (`_run`, "finalize"), so no `invoice.upcoming` announces them.
        start, end = _period(sub)
        renews = sub["cancel_at"] is None or sub["cancel_at"] > end
        due: tuple[int, str] = (end, "period_end") if renews else (sub["cancel_at"], "cancel_at")
        pending_at = sub.get("next_pending_invoice_item_invoice")
        if pending_at is not None and int(pending_at) < due[0]:
            due = (int(pending_at), "pending_items")
        notice = end - UPCOMING_RENEWAL_DAYS * DAY
        if (
            UPCOMING_RENEWAL_DAYS > 0
            and renews
            and status != "unpaid"
            and sub["collection_method"] == "charge_automatically"
            and sub.get("_upcoming_sent_for") != end
            and start < notice < due[0]
        ):
            due = (notice, "upcoming")
        return due
    return None


def _run(ctx: RequestContext, action: str, object_id: str) -> None:
    if action == "finalize":
        invoice = ctx.store.get(invoices.KIND, object_id)
        assert invoice is not None
        cctx = invoices.clocked(ctx, invoice["customer"])
        try:
            finalized = invoices.finalize(cctx, invoice)
        except StripeError as refused:
            invoices.finalization_failed(cctx, invoice, refused)
            return
        if (
            finalized["status"] == "open"
            and finalized["collection_method"] == "charge_automatically"
        ):
            owner = ctx.store.get(KIND, finalized.get("_subscription") or "")
            if owner is not None and owner["status"] == "unpaid":
                # An unpaid subscription's invoices are created but not attempted.
                invoices.stop_collection(cctx, finalized)
            else:
                invoices.attempt_payment(cctx, finalized, automatic=True)
        return
    if action == "overdue":
        _overdue(ctx, object_id)
        return
    if action == "retry":
        invoices.retry(ctx, object_id)
        return
    sub = ctx.store.get(KIND, object_id)
    assert sub is not None
    cctx = invoices.clocked(ctx, sub["customer"])
    if action == "expire":
        _expire(cctx, sub)
    elif action == "trial_will_end":
        marked = copy.deepcopy(sub)
        marked["_trial_will_end_sent"] = True
        ctx.store.replace(KIND, marked)
        _emit(cctx, "customer.subscription.trial_will_end", marked)
    elif action == "trial_end":
        _end_trial(cctx, sub)
    elif action == "schedule_phase":
        for hook in SCHEDULE_PHASE_HOOKS:
            hook(cctx, sub)
    elif action in ("cancel_at", "period_end") and (
        action == "cancel_at" or sub["cancel_at_period_end"]
    ):
        ended = _cancel(cctx, sub, reason="cancellation_requested")
        if sub["cancel_at_period_end"]:
            _collect_pending_prorations(cctx, ended)
    elif action == "period_end":
        _renew(cctx, sub)
    elif action == "upcoming":
        _announce_upcoming(cctx, sub)
    elif action == "pending_items":
        _invoice_pending_items(cctx, sub)


def _overdue(ctx: RequestContext, invoice_id: str) -> None:
    """A `send_invoice` invoice unpaid at its due date makes its subscription `past_due`."""
    invoice = ctx.store.get(invoices.KIND, invoice_id)
    assert invoice is not None
    marked = copy.deepcopy(invoice)
    marked["_overdue"] = True
    ctx.store.replace(invoices.KIND, marked)
    sub = ctx.store.get(KIND, invoice["_subscription"])
    if sub is not None and sub["status"] == "active":
        after = copy.deepcopy(sub)
        after["status"] = "past_due"
        _save(invoices.clocked(ctx, sub["customer"]), sub, after)


def _owned_pending(ctx: RequestContext, sub: StripeObject) -> list[StripeObject]:
    return [
        ii
        for ii in invoices.pending_items(ctx, sub["customer"])
        if (ii.get("parent") or {}).get("subscription_details", {}).get("subscription") == sub["id"]
    ]


def _collect_pending_prorations(ctx: RequestContext, sub: StripeObject) -> None:
    """Stripe's cancel reference: with `cancel_at_period_end`, pending prorations "are left in
    place and collected at the end of the period": a last invoice (`subscription_cycle`, the
    subscription's pending items) drafted at the cancellation, finalized an hour later."""
    if any(ii["proration"] for ii in _owned_pending(ctx, sub)):
        _draft_pending(ctx, sub, billing_reason="subscription_cycle")


def _draft_pending(ctx: RequestContext, sub: StripeObject, *, billing_reason: str) -> None:
    """A saved `auto_advance` draft of the subscription's pending items (none: nothing)."""
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason=billing_reason,
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        auto_advance=True,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    taken = invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    if not taken:
        ctx.store.delete(invoices.KIND, invoice["id"])
        return
    invoices.claim_items(ctx, invoice, taken)
    invoices.recompute(invoice)
    ctx.store.replace(invoices.KIND, invoice)
    _set_latest_invoice(ctx, sub["id"], invoice["id"])
    invoices.announce_created(ctx, invoice)


def _invoice_pending_items(ctx: RequestContext, sub: StripeObject) -> None:
    """`pending_invoice_item_interval`: at `next_pending_invoice_item_invoice` the pending
    items are invoiced (`automatic_pending_invoice_item_invoice`, a draft finalized an hour
    later, as Stripe's "analogous to calling Create an invoice"), and the next date moves one
    interval on."""
    after = copy.deepcopy(sub)
    after["next_pending_invoice_item_invoice"] = _next_pending(
        sub["pending_invoice_item_interval"], int(sub["next_pending_invoice_item_invoice"])
    )
    _save(ctx, sub, after)
    _draft_pending(ctx, after, billing_reason="automatic_pending_invoice_item_invoice")


def _announce_upcoming(ctx: RequestContext, sub: StripeObject) -> None:
    """`invoice.upcoming`: the preview of the renewal invoice (`create_preview`), once per
    period, without an id (Stripe's event reference: "The received Invoice object will not
    have an invoice ID"; its lines' `invoice` is null)."""
    marked = copy.deepcopy(sub)
    marked["_upcoming_sent_for"] = _period(sub)[1]
    ctx.store.replace(KIND, marked)
    try:
        upcoming = preview(ctx, {"subscription": sub["id"]})
    except StripeError:
        return
    upcoming.pop("id", None)
    for li in upcoming["lines"]["data"]:
        li["invoice"] = None
    ctx.emit("invoice.upcoming", upcoming)


def _expire(ctx: RequestContext, sub: StripeObject) -> None:
    after = copy.deepcopy(sub)
    after["status"] = "incomplete_expired"
    after["ended_at"] = ctx.now()
    _save(ctx, sub, after)
    invoice = ctx.store.get(invoices.KIND, sub["latest_invoice"] or "")
    if invoice is not None and invoice["status"] == "open":
        invoices.void(ctx, {}, {"invoice": invoice["id"]})


def _end_trial(ctx: RequestContext, sub: StripeObject) -> None:
    cancel_at = sub["cancel_at"]
    if cancel_at is not None and int(cancel_at) <= int(sub["trial_end"]):
        # Set to cancel when the trial ends (`cancel_at_period_end` during the trial, or
        # `cancel_at` at its end): Stripe ends it then, payment method or not, and invoices no
        # period that never starts.
        _cancel(ctx, sub, reason="cancellation_requested")
        return
    customer = ctx.store.get("customer", sub["customer"])
    has_pm = bool(
        sub["default_payment_method"]
        or ((customer or {}).get("invoice_settings") or {}).get("default_payment_method")
    )
    behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
    if not has_pm and sub["collection_method"] == "charge_automatically":
        if behavior == "cancel":
            _cancel(ctx, sub, reason="cancellation_requested")
            return
        if behavior == "pause":
            after = copy.deepcopy(sub)
            after["status"] = "paused"
            _save(ctx, sub, after)
            _emit(ctx, "customer.subscription.paused", after)
            return
    _renew(ctx, sub, from_trial=True)


def _renew(ctx: RequestContext, sub: StripeObject, *, from_trial: bool = False) -> None:
    """The next period starts at the end of the current one; its invoice is drafted now and
    finalized an hour later (auto_advance)."""
    previous, start = _period(sub)
    _, end = _cycle(sub, start)
    after = copy.deepcopy(sub)
    # Metered items bill the period that just ended (none after a trial).
    after["_usage_windows"] = {
        item["id"]: None if from_trial else [item["current_period_start"], start]
        for item in after["items"]["data"]
    }
    for item in after["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end
    if from_trial:
        after["status"] = "active"
    # The renewal invoice is drafted first, so the update event names it as `latest_invoice`.
    invoice = renewal_invoice(ctx, after, save=True, previous_start=previous)
    after["latest_invoice"] = invoice["id"]
    _save(ctx, sub, after)


def renewal_invoice(
    ctx: RequestContext,
    sub: StripeObject,
    *,
    save: bool,
    extra_items: list[StripeObject] | None = None,
    previous_start: int | None = None,
) -> StripeObject:
    """The subscription's invoice for its current period: a line per item, then its
    pending invoice items (and `extra_items`, for a preview). Saved as a draft with
    `invoice.created` when `save`. The invoice's own `period_start` / `period_end` are the
    period that just ended (`previous_start` to the new period's start): the SDK's
    `Invoice.period_end` docstring, "the latest timestamp at which invoice items can be
    associated with this invoice", and Stripe's "the invoice is always for the previous
    period while the line item for the subscription is always for the new" one
    (stripe/stripe-dotnet#1611)."""
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason="subscription_cycle",
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        auto_advance=True,
        save=save,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    period = _period(sub)
    taken = invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    for ii in extra_items or []:
        invoices.add_item_line(invoice, ii)
    for item in sub["items"]["data"]:
        _item_line(ctx, invoice, sub, item, period, trial=False)
    # Stripe lists the prorations (the previous period's changes) first, then the new period.
    invoice["period_start"] = period[0] if previous_start is None else previous_start
    invoice["period_end"] = period[0]
    invoices.recompute(invoice)
    if save:
        invoices.claim_items(ctx, invoice, taken)
        ctx.store.replace(invoices.KIND, invoice)
        _set_latest_invoice(ctx, sub["id"], invoice["id"])
        invoices.announce_created(ctx, invoice)
    return invoice


# --- preview ------------------------------------------------------------------------------


def preview(ctx: RequestContext, params: Params) -> StripeObject:
    """`create_preview` for a subscription: its next invoice (with `subscription_details`
    applied first, prorations included), computed and not saved."""
    if "subscription" not in params:
        raise invalid(
            "Previewing a new subscription (subscription_details without subscription) is not "
            "supported by the emulator; pass `subscription`.",
            param="subscription",
        )
    sub = _sub(ctx, params["subscription"], param="subscription", in_body=True)
    if "customer" in params and params["customer"] != sub["customer"]:
        raise invalid("The subscription does not belong to this customer.", param="customer")
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise invalid(
            "No upcoming invoices for a canceled subscription.",
            code="invoice_upcoming_none",
        )
    cctx = invoices.clocked(ctx, sub["customer"])
    details = params.get("subscription_details") or {}
    update_params: Params = {}
    for name in ("items", "proration_behavior", "proration_date", "cancel_at_period_end"):
        if name in details:
            update_params[name] = details[name]
    simulated, prorations = apply_update(cctx, sub, update_params, save=False)
    if restarts_cycle(sub, simulated):
        # Stripe resets the billing cycle anchor to now and invoices at once: the preview is
        # that invoice (what `update` saves through `_cycle_invoice`), whatever the proration.
        return _cycle_preview(cctx, simulated, prorations)
    if update_params.get("proration_behavior") == "always_invoice" and prorations:
        invoice = invoices.draft(
            cctx,
            ctx.store.get("customer", sub["customer"]) or {},
            cur=sub["currency"],
            billing_reason="subscription_update",
            subscription=simulated,
            save=False,
            automatic_tax=simulated["automatic_tax"]["enabled"],
        )
        # The invoice made now takes the subscription's pending items too (`_invoice_now`).
        invoices.pull_pending_items(cctx, invoice, subscription_id=sub["id"])
        for ii in prorations:
            invoices.add_item_line(invoice, ii)
        invoices.recompute(invoice)
        return invoices.preview_view(cctx, invoice)
    if simulated["cancel_at"] is not None and simulated["cancel_at"] <= _period(simulated)[1]:
        raise invalid(
            "No upcoming invoices for a subscription that ends with its current period.",
            code="invoice_upcoming_none",
        )
    return _renewal_preview(cctx, simulated, prorations, update_params.get("proration_date"))


def preview_phase(
    ctx: RequestContext, sub: StripeObject, params: Params, *, at: int
) -> StripeObject:
    """The invoice a schedule's next phase makes when it starts at the current period end
    `at` (`params`: the update that enters it, `_phase_update`): at another interval the
    cycle restarting then (the new period in full, nothing to credit at the boundary), else
    the renewal on the phase's items. Computed and not saved."""
    cctx = invoices.clocked(ctx, sub["customer"])
    then = invoices.ClockedContext(
        cctx.emulator, cctx.request_id, cctx.idempotency_key, cctx.path, cctx.events, frozen=at
    )
    simulated, prorations = apply_update(then, sub, params, save=False)
    if restarts_cycle(sub, simulated):
        # As `apply_schedule_phase` makes it at the period end: the renewal draft of the new
        # period (the old items' usage windows gone with them).
        simulated["_usage_windows"] = {item["id"]: None for item in simulated["items"]["data"]}
        invoice = renewal_invoice(then, simulated, save=False, previous_start=_period(sub)[0])
        invoice["created"] = at
        invoice["automatically_finalizes_at"] = at + invoices.FINALIZE_DELAY
        return invoices.preview_view(cctx, invoice)
    return _renewal_preview(cctx, simulated, prorations, None)


def _renewal_preview(
    cctx: RequestContext,
    simulated: StripeObject,
    prorations: list[StripeObject],
    proration_date: Any,
) -> StripeObject:
    """The renewal invoice of the (simulated) subscription at its period end, carrying
    `prorations`, not saved."""
    upcoming = copy.deepcopy(simulated)
    previous, start = _period(upcoming)
    _, end = _cycle(upcoming, start)
    # The usage so far in the current period (in a trial: none).
    trialing = upcoming["status"] == "trialing"
    upcoming["_usage_windows"] = {
        item["id"]: None if trialing else [item["current_period_start"], start]
        for item in upcoming["items"]["data"]
    }
    for item in upcoming["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = start, end
    invoice = renewal_invoice(
        cctx, upcoming, save=False, extra_items=prorations, previous_start=previous
    )
    invoice["created"] = start
    invoice["automatically_finalizes_at"] = start + invoices.FINALIZE_DELAY
    if proration_date is not None and invoice["parent"]:
        invoice["parent"]["subscription_details"]["subscription_proration_date"] = proration_date
    return invoices.preview_view(cctx, invoice)


def _cycle_preview(
    ctx: RequestContext, sub: StripeObject, prorations: list[StripeObject]
) -> StripeObject:
    """The invoice an update restarting the cycle now makes (`_cycle_invoice`), not saved:
    the subscription's pending items, the credits for the old items' unused time (none with
    `proration_behavior=none`), then the new period in full (`sub` is the simulated
    subscription, its items' periods already the new period's)."""
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    invoice = invoices.draft(
        ctx,
        customer,
        cur=sub["currency"],
        billing_reason="subscription_update",
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        subscription=sub,
        save=False,
        automatic_tax=sub["automatic_tax"]["enabled"],
    )
    invoices.pull_pending_items(ctx, invoice, subscription_id=sub["id"])
    for ii in prorations:
        invoices.add_item_line(invoice, ii)
    period = _period(sub)
    sub["_usage_windows"] = {item["id"]: None for item in sub["items"]["data"]}
    for item in sub["items"]["data"]:
        _item_line(ctx, invoice, sub, item, period, trial=False)
    invoice["period_start"] = invoice["period_end"] = period[0]
    invoices.recompute(invoice)
    return invoices.preview_view(ctx, invoice)


# --- subscription items -------------------------------------------------------------------


def _find_item(ctx: RequestContext, item_id: str) -> tuple[StripeObject, StripeObject]:
    for sub in ctx.store.collection(KIND).objects.values():
        for item in sub["items"]["data"]:
            if item["id"] == item_id:
                return sub, item
    raise no_such("subscription_item", item_id)


def list_items(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscription_items?subscription=...` (one page)."""
    if "subscription" not in params:
        raise invalid("Missing required param: subscription.", param="subscription")
    sub = _sub(ctx, params["subscription"], param="subscription", in_body=True)
    data = sub["items"]["data"]
    limit = int(params.get("limit", 10))
    return envelope(
        [render(ctx.store, i) for i in data[:limit]],
        len(data) > limit,
        "/v1/subscription_items",
    )


def retrieve_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscription_items/{item}`."""
    _, item = _find_item(ctx, path["item"])
    return render_item(ctx, item, expand_of(params))


def create_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_items`: an item added through a subscription update."""
    invoices.refuse_unhandled(params, _ITEM_HANDLED)
    sub = _sub(ctx, params["subscription"], param="subscription", in_body=True)
    raw: dict[str, Any] = {
        k: params[k] for k in ("price", "quantity", "metadata", "price_data", "plan") if k in params
    }
    known = {i["id"] for i in sub["items"]["data"]}
    after = _item_update(ctx, sub, [raw], params)
    added = [i for i in after["items"]["data"] if i["id"] not in known]
    return render_item(ctx, added[0], expand_of(params))


def update_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_items/{item}` (price, quantity, metadata, proration)."""
    invoices.refuse_unhandled(params, _ITEM_HANDLED)
    sub, item = _find_item(ctx, path["item"])
    raw: dict[str, Any] = {"id": item["id"]}
    for k in ("price", "quantity", "metadata", "price_data", "plan"):
        if k in params:
            raw[k] = params[k]
    after = _item_update(ctx, sub, [raw], params)
    return render_item(
        ctx, next(i for i in after["items"]["data"] if i["id"] == item["id"]), expand_of(params)
    )


def delete_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/subscription_items/{item}`."""
    invoices.refuse_unhandled(params, _ITEM_HANDLED)
    sub, item = _find_item(ctx, path["item"])
    _item_update(ctx, sub, [{"id": item["id"], "deleted": True}], params)
    return deleted_stub(item)


def _item_update(
    ctx: RequestContext, sub: StripeObject, raw_items: list[dict[str, Any]], params: Params
) -> StripeObject:
    update_params: Params = {"items": raw_items}
    for name in ("proration_behavior", "proration_date", "payment_behavior"):
        if name in params:
            update_params[name] = params[name]
    cctx = invoices.clocked(ctx, sub["customer"])
    after, prorations = apply_update(cctx, sub, update_params, save=True)
    if cycle_resets(update_params, sub, after):
        invoice = _cycle_invoice(cctx, after, billing_reason="subscription_update")
        after["latest_invoice"] = invoice["id"]
        _save(cctx, sub, after)
        _settle_now(cctx, invoice)
    else:
        _save(cctx, sub, after)
        if prorations and params.get("proration_behavior") == "always_invoice":
            _invoice_now(cctx, after, billing_reason="subscription_update")
    return ctx.store.get(KIND, sub["id"]) or after


# --- subscription schedules (hooks for resources/subscription_schedules.py) ---------------

# Called (with the clock's context) when a scheduled subscription reaches its
# `_schedule_phase_end` during a test clock advance.
SCHEDULE_PHASE_HOOKS: list[Callable[[RequestContext, StripeObject], None]] = []
# Called when a scheduled subscription is canceled (directly, by its customer's deletion, or by
# its schedule); the schedule module cancels a still-active schedule.
SCHEDULE_CANCEL_HOOKS: list[Callable[[RequestContext, StripeObject], None]] = []


def apply_schedule_phase(
    ctx: RequestContext,
    sub: StripeObject,
    params: Params,
    *,
    schedule: str | None,
    phase_end: int | None,
) -> StripeObject:
    """Apply a schedule phase's settings (`params`, as a subscription update: items, proration,
    collection, payment method, metadata) and the schedule link; `customer.subscription.updated`
    when something public changed."""
    after, prorations = apply_update(ctx, sub, params, save=True)
    after["schedule"] = schedule
    if phase_end is None:
        after.pop("_schedule_phase_end", None)
    else:
        after["_schedule_phase_end"] = phase_end
    if restarts_cycle(sub, after):
        # A phase at another interval: the cycle restarts at the phase start (`apply_update`
        # reset the anchor and the items' periods to now) and the new period is invoiced.
        previous_start, previous_end = _period(sub)
        if ctx.now() == previous_end:
            # At the period end this stands for the renewal (a draft, finalized an hour
            # later); the old items' usage windows are gone with the old items.
            after["_usage_windows"] = {item["id"]: None for item in after["items"]["data"]}
            invoice = renewal_invoice(ctx, after, save=True, previous_start=previous_start)
            after["latest_invoice"] = invoice["id"]
            _save(ctx, sub, after)
            ctx.store.replace(KIND, after)
        else:
            # Mid-period: credits for the unused time and the new period, charged at once.
            invoice = _cycle_invoice(ctx, after, billing_reason="subscription_update")
            after["latest_invoice"] = invoice["id"]
            _save(ctx, sub, after)
            ctx.store.replace(KIND, after)
            _settle_now(ctx, invoice)
        return ctx.store.get(KIND, sub["id"]) or after
    _save(ctx, sub, after)
    ctx.store.replace(KIND, after)
    if prorations and params.get("proration_behavior") == "always_invoice":
        _invoice_now(ctx, after, billing_reason="subscription_update")
    return ctx.store.get(KIND, sub["id"]) or after


def cancel_for_schedule(ctx: RequestContext, sub: StripeObject) -> StripeObject:
    """Cancel a scheduled subscription at once (a schedule canceled or ending with `cancel`)."""
    return _cancel(ctx, sub, reason="cancellation_requested")
