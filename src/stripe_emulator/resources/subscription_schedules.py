"""Subscription schedules: create (`from_subscription`, or `customer` + `phases`), retrieve,
list, update, release, cancel; phase transitions when a test clock passes a phase's end.

A schedule's phases are contiguous: each starts where the previous one ends. A phase ends at
its `end_date`, or `duration` (`{interval, interval_count}`, API `2026-10-28.endive`) after
its start; a last phase with neither lasts one interval of its first price. The scheduled
subscription carries a private `_schedule_phase_end` (its current phase's end) that the
subscriptions module's clock walk treats as a due moment (before a renewal at the same
moment), calling `_on_phase_end` here: the next phase's items and settings are applied as a
subscription update with the phase's `proration_behavior`, or, after the last phase,
`end_behavior` releases the subscription (schedule `released`) or cancels it (schedule
`completed`). Phases may differ in billing interval (all prices of one phase share one);
entering a phase at another interval restarts the billing cycle at the phase start and
invoices the new period (`subscriptions.apply_schedule_phase`).
"""

from __future__ import annotations

import copy
from typing import Any

from stripe_emulator import billing_time
from stripe_emulator.clock import SWEEPS, note_due
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources import invoices, subscriptions
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    fetch,
    new_metadata,
    previous_attributes,
)
from stripe_emulator.resources._payments import expandable_when_null
from stripe_emulator.routing import Router
from stripe_emulator.state import INDEXED_FIELDS, StripeObject

KIND = "subscription_schedule"
SWEEP = "subscription_schedule_start"
CLOCK = "test_helpers.test_clock"
END_BEHAVIORS = ("release", "cancel")
PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
INTERVALS = ("day", "week", "month", "year")
_CREATE_HANDLED = frozenset(
    {
        "customer",
        "from_subscription",
        "phases",
        "end_behavior",
        "metadata",
        "default_settings",
        "start_date",
        "billing_mode",
    }
)
_UPDATE_HANDLED = frozenset(
    {"phases", "end_behavior", "metadata", "default_settings", "proration_behavior"}
)
_PHASE_HANDLED = frozenset(
    {
        "items",
        "end_date",
        "duration",
        "start_date",
        "proration_behavior",
        "metadata",
        "trial",
        "trial_end",
        "collection_method",
        "automatic_tax",
        "default_payment_method",
        "currency",
        "invoice_settings",
        "description",
    }
)
_PHASE_ITEM_HANDLED = frozenset({"price", "quantity", "metadata"})
_DEFAULTS_HANDLED = frozenset(
    {"collection_method", "default_payment_method", "automatic_tax", "invoice_settings"}
)
_INVOICE_SETTINGS_HANDLED = frozenset({"days_until_due"})

INDEXED_FIELDS.setdefault(KIND, ("customer", "status"))
expandable_when_null(
    KIND, "customer", "subscription", "test_clock", "application", "released_subscription"
)


def register(router: Router) -> None:
    """Attach the endpoints and the phase-end hook of the subscriptions' clock walk."""
    p = "_subscription_schedule_"
    base = "/v1/subscription_schedules"
    one = base + "/{schedule}"
    router.add("POST", base, f"{p}create_params.SubscriptionScheduleCreateParams", create)
    router.add("GET", base, f"{p}list_params.SubscriptionScheduleListParams", list_schedules)
    router.add("GET", one, f"{p}retrieve_params.SubscriptionScheduleRetrieveParams", retrieve)
    router.add("POST", one, f"{p}update_params.SubscriptionScheduleUpdateParams", update)
    router.add(
        "POST", one + "/release", f"{p}release_params.SubscriptionScheduleReleaseParams", release
    )
    router.add(
        "POST", one + "/cancel", f"{p}cancel_params.SubscriptionScheduleCancelParams", cancel
    )
    invoices.PREVIEW["schedule"] = preview
    if _on_phase_end not in subscriptions.SCHEDULE_PHASE_HOOKS:
        subscriptions.SCHEDULE_PHASE_HOOKS.append(_on_phase_end)
    if _on_subscription_canceled not in subscriptions.SCHEDULE_CANCEL_HOOKS:
        subscriptions.SCHEDULE_CANCEL_HOOKS.append(_on_subscription_canceled)


# --- create_preview with `schedule` ----------------------------------------------------------


def preview(ctx: RequestContext, params: Params) -> StripeObject:
    """`POST /v1/invoices/create_preview` with `schedule` (the SDK: "The identifier of the
    schedule whose upcoming invoice you'd like to retrieve. Cannot be used with subscription
    or subscription fields"): the next invoice of its subscription. When the current phase
    ends at the subscription's period end and a phase follows, that invoice is the one the
    next phase makes as it starts (`subscriptions.preview_phase`: the cycle restarting at
    another interval, else the renewal on its items); a last phase ending then with
    `end_behavior: cancel` has none; otherwise it is the subscription's renewal. An active
    schedule only; a phase starting inside the period is not previewed (emulator
    limitation)."""
    for name in ("subscription", "subscription_details"):
        if name in params:
            raise invalid(f"You cannot set `{name}` if `schedule` is set.", param=name)
    schedule = fetch(
        ctx, KIND, params["schedule"], "subscription_schedule", param="schedule", in_body=True
    )
    if "customer" in params and params["customer"] != schedule["customer"]:
        raise invalid("The schedule does not belong to this customer.", param="customer")
    sub = ctx.store.get(subscriptions.KIND, schedule["subscription"] or "")
    if schedule["status"] != "active" or sub is None:
        raise invalid(
            f"Previewing a `{schedule['status']}` schedule is not supported by the emulator.",
            param="schedule",
        )
    index = int(schedule["_phase"])
    ends = schedule["phases"][index]["end_date"]
    period_end = max(int(item["current_period_end"]) for item in sub["items"]["data"])
    if ends is None or int(ends) > period_end:
        return subscriptions.preview(ctx, {"subscription": sub["id"]})
    if int(ends) < period_end:
        raise invalid(
            "Previewing a schedule whose next phase starts inside the current period is not "
            "supported by the emulator.",
            param="schedule",
        )
    if index + 1 >= len(schedule["phases"]):
        if schedule["end_behavior"] == "cancel":
            raise invalid(
                "No upcoming invoices for a subscription that ends with its current period.",
                code="invoice_upcoming_none",
            )
        return subscriptions.preview(ctx, {"subscription": sub["id"]})
    phase = schedule["phases"][index + 1]
    update = _phase_update(sub, phase, schedule["default_settings"], phase["proration_behavior"])
    return subscriptions.preview_phase(ctx, sub, update, at=period_end)


# --- create -------------------------------------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_schedules`."""
    invoices.refuse_unhandled(params, _CREATE_HANDLED)
    if (params.get("billing_mode") or {}).get("type", "classic") != "classic":
        raise invalid(
            "`billing_mode[type]=flexible` is not supported by the emulator.",
            param="billing_mode[type]",
        )
    end_behavior = params.get("end_behavior", "release")
    check_enum(end_behavior, "end_behavior", END_BEHAVIORS)
    if "from_subscription" in params:
        # The SDK's `from_subscription` docstring: "other parameters (such as phase values)
        # cannot be set"; Stripe answers each with this message (metadata included).
        for name in (
            "customer",
            "phases",
            "start_date",
            "default_settings",
            "end_behavior",
            "metadata",
        ):
            if name in params:
                raise invalid(f"You cannot set `{name}` if `from_subscription` is set.", param=name)
        return _from_subscription(ctx, params)
    if "customer" not in params:
        raise invalid("Missing required param: customer (or from_subscription).", param="customer")
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    raw_phases = params.get("phases") or []
    if not raw_phases:
        raise invalid("Missing required param: phases.", param="phases")
    cctx = invoices.clocked(ctx, customer["id"])
    now = cctx.now()
    raw_start = params.get("start_date", "now")
    start = now if raw_start == "now" else int(raw_start)
    if start < now:
        raise invalid(
            "A schedule starting in the past (a backdated start_date) is not supported by the "
            "emulator (see docs/emulator.md).",
            param="start_date",
        )
    defaults = _default_settings(ctx, params.get("default_settings") or {}, customer["id"])
    phases = _phases(ctx, raw_phases, start, customer["id"], defaults, None)
    schedule = _new_schedule(cctx, customer, params, defaults, phases, end_behavior)
    if start > now:
        # Stripe's `not_started`: no subscription until the start (the SDK's docstring of
        # `start_date`: "set a future date for the subscription to start on").
        schedule["status"] = "not_started"
        _set_current(schedule)
        ctx.store.insert(KIND, schedule)
        cctx.emit("subscription_schedule.created", schedule)
        _watch_start(ctx, schedule)
        return render(ctx.store, schedule, expand_of(params))
    sub_id = _create_subscription(cctx, schedule)
    schedule["subscription"] = sub_id
    ctx.store.insert(KIND, schedule)
    cctx.emit("subscription_schedule.created", schedule)
    return render(ctx.store, schedule, expand_of(params))


def _create_subscription(cctx: RequestContext, schedule: StripeObject) -> str:
    """Create the scheduled subscription from the first phase (at `cctx`'s time), linked to
    the schedule; its id."""
    first = schedule["phases"][0]
    defaults = schedule["default_settings"]
    sub_params: Params = {
        "customer": schedule["customer"],
        "items": [_item_param(i) for i in first["items"]],
        "currency": first["currency"],
        "collection_method": _setting(first, defaults, "collection_method"),
    }
    days = _days_until_due(first, defaults)
    if sub_params["collection_method"] == "send_invoice":
        sub_params["days_until_due"] = days
    pm = _setting(first, defaults, "default_payment_method")
    if pm is not None:
        sub_params["default_payment_method"] = pm
    if first["metadata"]:
        sub_params["metadata"] = first["metadata"]
    if first["trial_end"] is not None:
        sub_params["trial_end"] = first["trial_end"]
    sub_id: str = subscriptions.create(cctx, sub_params, {})["id"]
    sub = cctx.store.get(subscriptions.KIND, sub_id)
    assert sub is not None
    subscriptions.apply_schedule_phase(
        cctx, sub, {}, schedule=schedule["id"], phase_end=first["end_date"]
    )
    return sub_id


def _start(cctx: RequestContext, schedule: StripeObject) -> None:
    """A `not_started` schedule reached its start (`cctx` is at that moment): the subscription
    is created from the first phase, the schedule becomes `active`
    (`subscription_schedule.updated`). A schedule whose customer is gone is canceled."""
    before = copy.deepcopy(schedule)
    after = copy.deepcopy(schedule)
    if cctx.store.get("customer", schedule["customer"]) is None:
        after["status"] = "canceled"
        after["canceled_at"] = cctx.now()
        _set_current(after)
        cctx.store.replace(KIND, after)
        cctx.emit("subscription_schedule.canceled", after)
        return
    after["subscription"] = _create_subscription(cctx, after)
    after["status"] = "active"
    _set_current(after)
    cctx.store.replace(KIND, after)
    changes = previous_attributes(before, after)
    cctx.emit("subscription_schedule.updated", after, previous_attributes=changes)


def _from_subscription(ctx: RequestContext, params: Params) -> StripeObject:
    sub = fetch(
        ctx,
        subscriptions.KIND,
        params["from_subscription"],
        "subscription",
        param="from_subscription",
        in_body=True,
    )
    if sub["schedule"] is not None:
        raise invalid(
            f"The subscription is already attached to the schedule `{sub['schedule']}`.",
            param="from_subscription",
        )
    if sub["status"] in ("canceled", "incomplete_expired", "incomplete"):
        raise invalid(
            f"A schedule cannot be created from a subscription with status {sub['status']}.",
            param="from_subscription",
        )
    if sub["cancel_at"] is not None:
        raise invalid(
            "A schedule cannot be created from a subscription that is set to cancel.",
            param="from_subscription",
        )
    customer = ctx.store.get("customer", sub["customer"])
    assert customer is not None
    cctx = invoices.clocked(ctx, sub["customer"])
    first_item = sub["items"]["data"][0]
    phase = _phase_object(
        items=[
            _phase_item(
                i["price"]["id"],
                None if i["quantity"] is None else int(i["quantity"]),
                i["metadata"],
            )
            for i in sub["items"]["data"]
        ],
        start=int(first_item["current_period_start"]),
        end=int(first_item["current_period_end"]),
        cur=sub["currency"],
    )
    phase["collection_method"] = sub["collection_method"]
    phase["default_payment_method"] = sub["default_payment_method"]
    phase["trial_end"] = sub["trial_end"] if sub["status"] == "trialing" else None
    defaults = _default_settings(ctx, {}, customer["id"])
    defaults["collection_method"] = sub["collection_method"]
    defaults["default_payment_method"] = sub["default_payment_method"]
    defaults["invoice_settings"]["days_until_due"] = sub["days_until_due"]
    # The subscription's automatic tax carries over, so later phases keep it unless they say.
    defaults["automatic_tax"] = copy.deepcopy(sub["automatic_tax"])
    schedule = _new_schedule(cctx, customer, params, defaults, [phase], "release")
    schedule["subscription"] = sub["id"]
    ctx.store.insert(KIND, schedule)
    subscriptions.apply_schedule_phase(
        cctx, sub, {}, schedule=schedule["id"], phase_end=phase["end_date"]
    )
    cctx.emit("subscription_schedule.created", schedule)
    return render(ctx.store, schedule, expand_of(params))


def _new_schedule(
    ctx: RequestContext,
    customer: StripeObject,
    params: Params,
    defaults: StripeObject,
    phases: list[StripeObject],
    end_behavior: str,
) -> StripeObject:
    schedule: StripeObject = {
        "id": new_id("sub_sched"),
        "object": KIND,
        "application": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "canceled_at": None,
        "completed_at": None,
        "created": ctx.now(),
        "current_phase": None,
        "customer": customer["id"],
        "customer_account": None,
        "default_settings": defaults,
        "end_behavior": end_behavior,
        "livemode": False,
        "metadata": new_metadata(params.get("metadata")),
        "pause_schedules": [],
        "phases": phases,
        "released_at": None,
        "released_subscription": None,
        "status": "active",
        "subscription": None,
        "test_clock": customer.get("test_clock"),
        "_phase": 0,
    }
    _set_current(schedule)
    return schedule


def _set_current(schedule: StripeObject) -> None:
    if schedule["status"] != "active":
        schedule["current_phase"] = None
        return
    phase = schedule["phases"][schedule["_phase"]]
    schedule["current_phase"] = {"end_date": phase["end_date"], "start_date": phase["start_date"]}


# --- phases -------------------------------------------------------------------------------


def _default_settings(ctx: RequestContext, raw: dict[str, Any], customer_id: str) -> StripeObject:
    invoices.refuse_unhandled(raw, _DEFAULTS_HANDLED, prefix="default_settings")
    check_enum(
        raw.get("collection_method"), "default_settings[collection_method]", COLLECTION_METHODS
    )
    invoice_settings = raw.get("invoice_settings") or {}
    invoices.refuse_unhandled(
        invoice_settings, _INVOICE_SETTINGS_HANDLED, prefix="default_settings[invoice_settings]"
    )
    pm = raw.get("default_payment_method") or None
    if pm is not None:
        _check_pm(ctx, pm, customer_id, "default_settings[default_payment_method]")
    return {
        "application_fee_percent": None,
        "automatic_tax": _automatic_tax(raw.get("automatic_tax"))
        or {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
        },
        "billing_cycle_anchor": "automatic",
        "billing_thresholds": None,
        "collection_method": raw.get("collection_method", "charge_automatically"),
        "default_payment_method": pm,
        "description": None,
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "days_until_due": invoice_settings.get("days_until_due"),
            "description": None,
            "footer": None,
            "issuer": {"type": "self"},
        },
        "on_behalf_of": None,
        "transfer_data": None,
    }


def _automatic_tax(raw: Any) -> StripeObject | None:
    if raw is None:
        return None
    return {"disabled_reason": None, "enabled": bool(raw.get("enabled")), "liability": None}


def _check_pm(ctx: RequestContext, pm_id: str, customer_id: str, param: str) -> None:
    pm = ctx.store.get("payment_method", pm_id)
    if pm is None or pm.get("customer") != customer_id:
        raise invalid(
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            param=param,
        )


def _phases(
    ctx: RequestContext,
    raw_phases: list[dict[str, Any]],
    start: int,
    customer_id: str,
    defaults: StripeObject,
    sub_currency: str | None,
    *,
    first_may_end_at_start: bool = False,
) -> list[StripeObject]:
    """Contiguous phases from `start`, validated against the SDK params' meaning. With
    `first_may_end_at_start` (the current phase ending `now` in the second it started) the
    first phase may be empty."""
    phases: list[StripeObject] = []
    at = start
    for i, raw in enumerate(raw_phases):
        where = f"phases[{i}]"
        invoices.refuse_unhandled(raw, _PHASE_HANDLED, prefix=where)
        if i > 0 and "start_date" in raw and raw["start_date"] not in ("now", at):
            raise invalid(
                "Phases must be contiguous: a phase's start_date must equal the previous "
                "phase's end_date.",
                param=f"{where}[start_date]",
            )
        raw_items = raw.get("items") or []
        if not raw_items:
            raise invalid(f"Missing required param: {where}[items].", param=f"{where}[items]")
        prices: list[StripeObject] = []
        items: list[StripeObject] = []
        for j, item in enumerate(raw_items):
            iw = f"{where}[items][{j}]"
            invoices.refuse_unhandled(item, _PHASE_ITEM_HANDLED, prefix=iw)
            if "price" not in item:
                raise invalid(f"Missing required param: {iw}[price].", param=f"{iw}[price]")
            price = fetch(ctx, "price", item["price"], "price", param=f"{iw}[price]", in_body=True)
            if price["recurring"] is None:
                raise invalid(
                    "The price specified is set to `type=one_time` but this field only "
                    "accepts prices with `type=recurring`.",
                    param=f"{iw}[price]",
                )
            prices.append(price)
            metered = subscriptions.is_metered(price)
            if metered and "quantity" in item:
                # As on a subscription's own items (the subscriptions module's wording).
                raise invalid(
                    "Quantity should not be specified where usage_type is `metered`. Remove "
                    "quantity from the request.",
                    param=f"{iw}[quantity]",
                )
            quantity = None if metered else int(item.get("quantity", 1))
            items.append(_phase_item(price["id"], quantity, item.get("metadata")))
        # Within one phase every recurring price shares an interval (they become one
        # subscription's items); phases may differ: entering a phase at another interval
        # restarts the billing cycle at the phase start (`subscriptions.apply_schedule_phase`).
        subscriptions.check_intervals(
            prices, [f"{where}[items][{j}][price]" for j in range(len(prices))]
        )
        cur = (
            currency(raw["currency"], param=f"{where}[currency]")
            if "currency" in raw
            else sub_currency or prices[0]["currency"]
        )
        if "end_date" in raw and "duration" in raw:
            raise invalid(
                f"You may only specify one of these parameters: {where}[end_date], "
                f"{where}[duration].",
                param=f"{where}[end_date]",
            )
        if raw.get("end_date") == "now":
            # Only the current phase of an active schedule can end `now` (`update`).
            raise invalid(
                "`end_date=now` applies to the current phase of an active schedule only.",
                param=f"{where}[end_date]",
            )
        if "end_date" in raw:
            end = int(raw["end_date"])
        elif "duration" in raw:
            duration = raw["duration"] or {}
            check_enum(duration.get("interval"), f"{where}[duration][interval]", INTERVALS)
            end = billing_time.add_intervals(
                at, str(duration["interval"]), int(duration.get("interval_count", 1))
            )
        elif i == len(raw_phases) - 1:
            recurring = prices[0]["recurring"]
            end = billing_time.add_intervals(
                at, str(recurring["interval"]), int(recurring["interval_count"])
            )
        else:
            raise invalid(
                f"Missing required param: {where}[end_date] (or {where}[duration]); every "
                "phase but the last needs an end.",
                param=f"{where}[end_date]",
            )
        if end < at or (end == at and not (i == 0 and first_may_end_at_start)):
            raise invalid(
                "A phase's end_date must be after its start_date.", param=f"{where}[end_date]"
            )
        phase = _phase_object(items=items, start=at, end=end, cur=cur)
        behavior = raw.get("proration_behavior", "create_prorations")
        check_enum(behavior, f"{where}[proration_behavior]", PRORATION_BEHAVIORS)
        phase["proration_behavior"] = behavior
        phase["metadata"] = new_metadata(raw.get("metadata"), param=f"{where}[metadata]")
        check_enum(raw.get("collection_method"), f"{where}[collection_method]", COLLECTION_METHODS)
        phase["collection_method"] = raw.get("collection_method")
        pm = raw.get("default_payment_method") or None
        if pm is not None:
            _check_pm(ctx, pm, customer_id, f"{where}[default_payment_method]")
        phase["default_payment_method"] = pm
        phase["automatic_tax"] = _automatic_tax(raw.get("automatic_tax"))
        phase["description"] = raw.get("description") or None
        settings = raw.get("invoice_settings")
        if settings is not None:
            invoices.refuse_unhandled(
                settings, _INVOICE_SETTINGS_HANDLED, prefix=f"{where}[invoice_settings]"
            )
            phase["invoice_settings"] = {
                "account_tax_ids": None,
                "custom_fields": None,
                "days_until_due": settings.get("days_until_due"),
                "description": None,
                "footer": None,
                "issuer": None,
            }
        trial = bool(raw.get("trial", False))
        if "trial_end" in raw or trial:
            if i > 0:
                raise invalid(
                    "Trials in a later phase are not supported by the emulator (see "
                    "docs/emulator.md).",
                    param=f"{where}[trial_end]" if "trial_end" in raw else f"{where}[trial]",
                )
            if "trial_end" in raw and trial:
                # The SDK's docstring of `trial_end`: "can not be combined with `trial`".
                raise invalid(
                    f"You may only specify one of these parameters: {where}[trial], "
                    f"{where}[trial_end].",
                    param=f"{where}[trial_end]",
                )
            if "trial_end" in raw:
                trial_end = int(raw["trial_end"])
                # "Must be before the phase end date" (the SDK's docstring).
                if not at < trial_end < end:
                    raise invalid(
                        "The trial_end must be after the phase's start and before its end_date.",
                        param=f"{where}[trial_end]",
                    )
                phase["trial_end"] = trial_end
            else:
                # `trial=true`: "the entire phase is counted as a trial".
                phase["trial_end"] = end
                phase["trial"] = True
        phases.append(phase)
        at = end
    if defaults["collection_method"] is None:
        defaults["collection_method"] = "charge_automatically"
    return phases


def _phase_item(price_id: str, quantity: int | None, metadata: Any) -> StripeObject:
    return {
        "billing_thresholds": None,
        "discounts": [],
        "metadata": new_metadata(metadata) if not isinstance(metadata, dict) else dict(metadata),
        "plan": price_id,
        "price": price_id,
        "quantity": quantity,
        "tax_rates": [],
    }


def _phase_object(*, items: list[StripeObject], start: int, end: int, cur: str) -> StripeObject:
    return {
        "add_invoice_items": [],
        "application_fee_percent": None,
        "automatic_tax": None,
        "billing_cycle_anchor": None,
        "billing_thresholds": None,
        "collection_method": None,
        "currency": cur,
        "default_payment_method": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "end_date": end,
        "invoice_settings": None,
        "items": items,
        "metadata": {},
        "on_behalf_of": None,
        "proration_behavior": "create_prorations",
        "start_date": start,
        "transfer_data": None,
        "trial": None,
        "trial_end": None,
    }


def _setting(phase: StripeObject, defaults: StripeObject, name: str) -> Any:
    value = phase.get(name)
    return defaults.get(name) if value is None else value


def _days_until_due(phase: StripeObject, defaults: StripeObject) -> Any:
    own = (phase.get("invoice_settings") or {}).get("days_until_due")
    return own if own is not None else defaults["invoice_settings"]["days_until_due"]


def _item_param(item: StripeObject) -> dict[str, Any]:
    out: dict[str, Any] = {"price": item["price"]}
    if item["quantity"] is not None:  # a metered price takes no quantity
        out["quantity"] = item["quantity"]
    if item["metadata"]:
        out["metadata"] = item["metadata"]
    return out


def _phase_update(
    sub: StripeObject, phase: StripeObject, defaults: StripeObject, proration: str
) -> Params:
    """The subscription update that makes `sub` look like `phase`."""
    wanted = {item["price"]: item for item in phase["items"]}
    items: list[dict[str, Any]] = []
    for current in sub["items"]["data"]:
        price_id = current["price"]["id"]
        if price_id in wanted:
            item = wanted.pop(price_id)
            if current["quantity"] != item["quantity"]:
                items.append({"id": current["id"], "quantity": item["quantity"]})
        else:
            items.append({"id": current["id"], "deleted": True})
    items.extend(_item_param(item) for item in wanted.values())
    # Additions first so the subscription never has zero items in between.
    items.sort(key=lambda raw: "id" in raw)
    params: Params = {"proration_behavior": proration}
    if items:
        params["items"] = items
    method = _setting(phase, defaults, "collection_method")
    if method is not None and method != sub["collection_method"]:
        params["collection_method"] = method
        if method == "send_invoice":
            params["days_until_due"] = _days_until_due(phase, defaults)
    pm = _setting(phase, defaults, "default_payment_method")
    if pm is not None and pm != sub["default_payment_method"]:
        params["default_payment_method"] = pm
    tax = _setting(phase, defaults, "automatic_tax")
    if tax is not None and bool(tax["enabled"]) != bool(sub["automatic_tax"]["enabled"]):
        # The phase's `automatic_tax` is the subscription's while the phase is in force.
        params["automatic_tax"] = {"enabled": bool(tax["enabled"])}
    if phase["metadata"]:
        params["metadata"] = phase["metadata"]
    return params


# --- time ---------------------------------------------------------------------------------


def _watch_start(ctx: RequestContext, schedule: StripeObject) -> None:
    """Make sure the start of a `not_started` schedule is noticed: by the test clock walk
    (`advance_clock`) for a customer on a test clock, else by the emulator clock's sweep."""
    if schedule["test_clock"]:
        ensure_clock_hook(ctx.emulator.clock_hooks)
    else:
        note_due(ctx.emulator.clock, SWEEP, int(schedule["phases"][0]["start_date"]))


def ensure_clock_hook(hooks: list[Any]) -> None:
    """Register `advance_clock` on `Emulator.clock_hooks` ahead of the subscriptions' walk
    (which it drives itself up to each start, so starts and renewals stay in time order)."""
    if advance_clock not in hooks:
        hooks.insert(0, advance_clock)


def _not_started(ctx: RequestContext) -> list[StripeObject]:
    waiting = ctx.store.collection(KIND).lookup("status", "not_started")
    return sorted(
        waiting,
        key=lambda s: (s["phases"][0]["start_date"], ctx.store.collection(KIND).seq_of[s["id"]]),
    )


def start_due(ctx: RequestContext) -> int | None:
    """The emulator-clock sweep (`clock.SWEEPS`): start every `not_started` schedule of a
    customer without a test clock whose start has passed, each at its start moment; the next
    start still ahead, or None."""
    ensure_clock_hook(ctx.emulator.clock_hooks)
    now = ctx.now()
    following: int | None = None
    for schedule in _not_started(ctx):
        if schedule["test_clock"]:
            continue
        at = int(schedule["phases"][0]["start_date"])
        if at > now:
            following = at if following is None else min(following, at)
            continue
        _start(
            invoices.ClockedContext(
                ctx.emulator, ctx.request_id, ctx.idempotency_key, ctx.path, ctx.events, frozen=at
            ),
            schedule,
        )
    return following


SWEEPS[SWEEP] = start_due


def advance_clock(ctx: RequestContext, clock: StripeObject, target: int) -> None:
    """The test clock hook: start the clock's `not_started` schedules whose start falls up to
    `target`, in time order; before each start the subscriptions' walk runs up to just before
    it (so earlier renewals come first, and the new subscription's own renewals after), and
    the clock's `frozen_time` moves to the start."""
    clock_id = clock["id"]
    while True:
        due = [
            s
            for s in _not_started(ctx)
            if s["test_clock"] == clock_id and int(s["phases"][0]["start_date"]) <= target
        ]
        if not due:
            return
        schedule = due[0]
        at = int(schedule["phases"][0]["start_date"])
        current = ctx.store.get(CLOCK, clock_id)
        if current is None:
            return
        if at - 1 > int(current["frozen_time"]):
            subscriptions.advance_clock(ctx, current, at - 1)
            current = ctx.store.get(CLOCK, clock_id)
            if current is None:
                return
        if current["frozen_time"] != at:
            moved = copy.deepcopy(current)
            moved["frozen_time"] = at
            ctx.store.replace(CLOCK, moved)
        _start(invoices.clocked(ctx, schedule["customer"]), schedule)


def _on_phase_end(ctx: RequestContext, sub: StripeObject) -> None:
    """The clock reached the current phase's end: enter the next phase, or end the schedule."""
    schedule = ctx.store.get(KIND, sub["schedule"] or "")
    if schedule is None or schedule["status"] != "active":
        subscriptions.apply_schedule_phase(ctx, sub, {}, schedule=None, phase_end=None)
        return
    before = copy.deepcopy(schedule)
    after = copy.deepcopy(schedule)
    index = int(after["_phase"]) + 1
    if index < len(after["phases"]):
        phase = after["phases"][index]
        after["_phase"] = index
        _set_current(after)
        ctx.store.replace(KIND, after)
        params = _phase_update(sub, phase, after["default_settings"], phase["proration_behavior"])
        subscriptions.apply_schedule_phase(
            ctx, sub, params, schedule=after["id"], phase_end=phase["end_date"]
        )
        ctx.emit(
            "subscription_schedule.updated",
            after,
            previous_attributes=previous_attributes(before, after),
        )
        return
    now = ctx.now()
    if after["end_behavior"] == "cancel":
        after["status"] = "completed"
        after["completed_at"] = now
        _set_current(after)
        ctx.store.replace(KIND, after)
        detached = subscriptions.apply_schedule_phase(
            ctx, sub, {}, schedule=after["id"], phase_end=None
        )
        subscriptions.cancel_for_schedule(ctx, detached)
        ctx.emit("subscription_schedule.completed", after)
        return
    _release(ctx, after, sub)


def _on_subscription_canceled(ctx: RequestContext, sub: StripeObject) -> None:
    """The scheduled subscription was canceled underneath (directly or by its customer's
    deletion): a still-active schedule is canceled with it."""
    schedule = ctx.store.get(KIND, sub["schedule"] or "")
    if schedule is None or schedule["status"] != "active":
        return
    after = copy.deepcopy(schedule)
    after["status"] = "canceled"
    after["canceled_at"] = ctx.now()
    _set_current(after)
    ctx.store.replace(KIND, after)
    ctx.emit("subscription_schedule.canceled", after)


def _release(ctx: RequestContext, schedule: StripeObject, sub: StripeObject | None) -> StripeObject:
    schedule["status"] = "released"
    schedule["released_at"] = ctx.now()
    schedule["released_subscription"] = schedule["subscription"]
    schedule["subscription"] = None
    _set_current(schedule)
    ctx.store.replace(KIND, schedule)
    if sub is not None:
        subscriptions.apply_schedule_phase(ctx, sub, {}, schedule=None, phase_end=None)
    ctx.emit("subscription_schedule.released", schedule)
    return schedule


# --- retrieve / list ----------------------------------------------------------------------


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscription_schedules/{schedule}`."""
    schedule = fetch(ctx, KIND, path["schedule"], "subscription_schedule")
    return render(ctx.store, schedule, expand_of(params))


def list_schedules(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/subscription_schedules`: `customer`, `scheduled` (not started), and the
    `canceled_at` / `completed_at` / `released_at` ranges (ints or `{gt, gte, lt, lte}`)."""
    if "customer_account" in params:
        raise invalid(
            "`customer_account` is not supported by the emulator.", param="customer_account"
        )
    equals: dict[str, list[Any]] = {}
    if "customer" in params:
        equals["customer"] = [params["customer"]]
    if params.get("scheduled") is True:
        equals["status"] = ["not_started"]
    ranges = {
        name: params[name]
        for name in ("canceled_at", "completed_at", "released_at")
        if name in params
    }

    def matches(schedule: StripeObject) -> bool:
        for name, bound in ranges.items():
            value = schedule[name]
            if value is None:
                return False
            if isinstance(bound, int) and not isinstance(bound, bool):
                if value != bound:
                    return False
                continue
            checks = {
                "gt": value > bound.get("gt", value - 1),
                "gte": value >= bound.get("gte", value),
                "lt": value < bound.get("lt", value + 1),
                "lte": value <= bound.get("lte", value),
            }
            if not all(checks.values()):
                return False
        return True

    return list_response(
        ctx.store,
        kind=KIND,
        params=params,
        url="/v1/subscription_schedules",
        equals=equals,
        predicate=matches,
    )


# --- update / release / cancel ------------------------------------------------------------


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_schedules/{schedule}`: `phases` replaces the current and later
    phases (its first phase is the current one, keeping its start); a change to the current
    phase applies to the subscription at once with `proration_behavior`."""
    invoices.refuse_unhandled(params, _UPDATE_HANDLED)
    before = fetch(ctx, KIND, path["schedule"], "subscription_schedule")
    if before["status"] not in ("active", "not_started"):
        raise invalid(
            f"You cannot update a subscription schedule that is currently in the "
            f"`{before['status']}` status. It must be in `not_started` or `active`."
        )
    behavior = params.get("proration_behavior", "create_prorations")
    check_enum(behavior, "proration_behavior", PRORATION_BEHAVIORS)
    cctx = invoices.clocked(ctx, before["customer"])
    after = copy.deepcopy(before)
    if "end_behavior" in params:
        check_enum(params["end_behavior"], "end_behavior", END_BEHAVIORS)
        after["end_behavior"] = params["end_behavior"]
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    if "default_settings" in params:
        after["default_settings"] = _default_settings(
            ctx, params["default_settings"] or {}, after["customer"]
        )
    sub = ctx.store.get(subscriptions.KIND, after["subscription"] or "")
    if "phases" in params:
        raw_phases = params["phases"] or []
        if not raw_phases:
            raise invalid("Missing required param: phases.", param="phases")
        current = after["phases"][after["_phase"]]
        first_start = raw_phases[0].get("start_date")
        if (
            first_start is not None
            and first_start != "now"
            and int(first_start) != current["start_date"]
        ):
            raise invalid(
                "You can not modify the start date of the current phase.",
                param="phases[0][start_date]",
            )
        raw = [dict(p) for p in raw_phases]
        raw[0].pop("start_date", None)
        for later in raw[1:]:
            later.pop("start_date", None)
        for i, later in enumerate(raw[1:], start=1):
            if later.get("end_date") == "now":
                raise invalid(
                    "Only the current phase can end `now`.", param=f"phases[{i}][end_date]"
                )
        # `phases[0][end_date]=now` (the SDK's `int|Literal['now']`): the current phase ends at
        # the request and the next phase starts at once (an immediate change), or the
        # schedule ends by its `end_behavior` when there is none.
        end_now = raw[0].get("end_date") == "now"
        if end_now:
            if sub is None or before["status"] != "active":
                raise invalid(
                    "`phases[0][end_date]=now` needs an active schedule with a subscription.",
                    param="phases[0][end_date]",
                )
            raw[0]["end_date"] = cctx.now()
        cur = sub["currency"] if sub is not None else None
        phases = _phases(
            ctx,
            raw,
            current["start_date"],
            after["customer"],
            after["default_settings"],
            cur,
            first_may_end_at_start=end_now,
        )
        if phases[0]["end_date"] <= cctx.now() and not end_now:
            raise invalid("The current phase must end in the future.", param="phases[0][end_date]")
        if (
            sub is not None
            and sub["status"] == "trialing"
            and not end_now
            and phases[0]["trial_end"] is None
        ):
            # Phases are declarative: a current phase without `trial` / `trial_end` is not a
            # trial, so Stripe would end the running trial now and bill; not modelled here.
            raise invalid(
                "The current phase of a trialing subscription must keep its trial "
                "(`phases[0][trial]=true` or `phases[0][trial_end]`): ending a trial through a "
                "schedule update is not supported by the emulator (see docs/emulator.md).",
                param="phases[0][trial_end]",
            )
        after["phases"] = after["phases"][: after["_phase"]] + phases
        _set_current(after)
    if sub is not None:
        phase = after["phases"][after["_phase"]]
        update_params = _phase_update(sub, phase, after["default_settings"], behavior)
        if "phases" not in params:
            update_params.pop("items", None)
            update_params.pop("metadata", None)
        subscriptions.apply_schedule_phase(
            cctx, sub, update_params, schedule=after["id"], phase_end=phase["end_date"]
        )
    changes = previous_attributes(before, after)
    if changes:
        ctx.store.replace(KIND, after)
        cctx.emit("subscription_schedule.updated", after, previous_attributes=changes)
    if "phases" in params and (params["phases"][0] or {}).get("end_date") == "now":
        scheduled = ctx.store.get(subscriptions.KIND, after["subscription"] or "")
        if scheduled is not None:
            _on_phase_end(cctx, scheduled)
        after = ctx.store.get(KIND, after["id"]) or after
    return render(ctx.store, after, expand_of(params))


def release(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_schedules/{schedule}/release`: the subscription stays as it
    is, without a schedule (`preserve_cancel_date` has nothing to keep: scheduled
    subscriptions here never carry a `cancel_at`)."""
    schedule = fetch(ctx, KIND, path["schedule"], "subscription_schedule")
    _require_live(schedule, "release")
    cctx = invoices.clocked(ctx, schedule["customer"])
    sub = ctx.store.get(subscriptions.KIND, schedule["subscription"] or "")
    released = _release(cctx, copy.deepcopy(schedule), sub)
    return render(ctx.store, released, expand_of(params))


def cancel(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/subscription_schedules/{schedule}/cancel`: the subscription is canceled at
    once too (`invoice_now`, `prorate` as on a subscription cancel; `prorate` defaults to
    true, as the SDK's docstring says)."""
    schedule = fetch(ctx, KIND, path["schedule"], "subscription_schedule")
    _require_live(schedule, "cancel")
    cctx = invoices.clocked(ctx, schedule["customer"])
    after = copy.deepcopy(schedule)
    after["status"] = "canceled"
    after["canceled_at"] = cctx.now()
    _set_current(after)
    ctx.store.replace(KIND, after)
    sub = ctx.store.get(subscriptions.KIND, schedule["subscription"] or "")
    if sub is not None and sub["status"] not in ("canceled", "incomplete_expired"):
        subscriptions.apply_schedule_phase(cctx, sub, {}, schedule=after["id"], phase_end=None)
        cancel_params: Params = {"prorate": params.get("prorate", True)}
        if "invoice_now" in params:
            cancel_params["invoice_now"] = params["invoice_now"]
        subscriptions.cancel(cctx, cancel_params, {"subscription": sub["id"]})
    cctx.emit("subscription_schedule.canceled", after)
    return render(ctx.store, after, expand_of(params))


def _require_live(schedule: StripeObject, verb: str) -> None:
    if schedule["status"] not in ("active", "not_started"):
        raise invalid(
            f"You cannot {verb} a subscription schedule that is currently in the "
            f"`{schedule['status']}` status. It must be in `not_started` or `active`."
        )
