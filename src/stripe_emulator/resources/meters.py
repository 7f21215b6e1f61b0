"""Billing meters (create, update, deactivate, reactivate, list), meter events and event
summaries (`sum`, `count`, `last` over a time range, optionally per hour or day)."""

from __future__ import annotations

import copy
from decimal import Decimal, InvalidOperation

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import envelope, expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import check_enum, fetch, save_update
from stripe_emulator.resources._payments import time_for
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "billing.meter"
EVENT = "billing.meter_event"
FORMULAS = ("count", "last", "sum")
WINDOWS = {"hour": 3600, "day": 86400}
IDENTIFIER_WINDOW_SECONDS = 24 * 3600
MAX_IDENTIFIER_LENGTH = 100
# An event's timestamp: within the past 35 calendar days, at most 5 minutes ahead (Stripe).
PAST_LIMIT_SECONDS = 35 * 86400
FUTURE_LIMIT_SECONDS = 5 * 60


def register(router: Router) -> None:
    """Attach the meter endpoints."""
    p = "billing._meter_"
    router.add("POST", "/v1/billing/meters", f"{p}create_params.MeterCreateParams", create)
    router.add("GET", "/v1/billing/meters", f"{p}list_params.MeterListParams", list_meters)
    router.add(
        "GET", "/v1/billing/meters/{id}", f"{p}retrieve_params.MeterRetrieveParams", retrieve
    )
    router.add("POST", "/v1/billing/meters/{id}", f"{p}update_params.MeterUpdateParams", update)
    router.add(
        "POST",
        "/v1/billing/meters/{id}/deactivate",
        f"{p}deactivate_params.MeterDeactivateParams",
        deactivate,
    )
    router.add(
        "POST",
        "/v1/billing/meters/{id}/reactivate",
        f"{p}reactivate_params.MeterReactivateParams",
        reactivate,
    )
    router.add(
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        f"{p}event_summary_list_params.MeterEventSummaryListParams",
        event_summaries,
    )
    router.add(
        "POST",
        "/v1/billing/meter_events",
        f"{p}event_create_params.MeterEventCreateParams",
        create_event,
    )


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing/meters`: event names are unique among active meters."""
    formula = params["default_aggregation"]["formula"]
    check_enum(formula, "default_aggregation[formula]", FORMULAS)
    check_enum(params.get("event_time_window"), "event_time_window", tuple(WINDOWS))
    if _active_meter_for(ctx, params["event_name"]) is not None:
        raise invalid(
            f"An active meter with event_name `{params['event_name']}` already exists.",
            param="event_name",
        )
    now = ctx.now()
    meter: StripeObject = {
        "id": new_id("mtr"),
        "object": KIND,
        "created": now,
        "customer_mapping": params.get(
            "customer_mapping", {"event_payload_key": "stripe_customer_id", "type": "by_id"}
        ),
        "default_aggregation": {"formula": formula},
        "display_name": params["display_name"],
        "event_name": params["event_name"],
        "event_time_window": params.get("event_time_window"),
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": params.get("value_settings", {"event_payload_key": "value"}),
    }
    ctx.store.insert(KIND, meter)
    ctx.emit("billing.meter.created", meter)
    return render(ctx.store, meter, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/billing/meters/{id}`."""
    return render(ctx.store, fetch(ctx, KIND, path["id"], "billing meter"), expand_of(params))


def list_meters(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/billing/meters` (filter `status`)."""
    equals = {"status": [params["status"]]} if "status" in params else {}
    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/billing/meters", equals=equals
    )


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing/meters/{id}`: only `display_name` can change."""
    before = fetch(ctx, KIND, path["id"], "billing meter")
    after = copy.deepcopy(before)
    if "display_name" in params:
        after["display_name"] = params["display_name"]
    save_update(ctx, KIND, before, after, "billing.meter.updated")
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def deactivate(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing/meters/{id}/deactivate`."""
    return _set_status(ctx, params, path["id"], active=False)


def reactivate(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing/meters/{id}/reactivate`."""
    return _set_status(ctx, params, path["id"], active=True)


def _set_status(
    ctx: RequestContext, params: Params, meter_id: str, *, active: bool
) -> StripeObject:
    before = fetch(ctx, KIND, meter_id, "billing meter")
    wanted = "active" if active else "inactive"
    if before["status"] == wanted:
        raise invalid(f"This meter is already {wanted}.", param="id")
    if active and _active_meter_for(ctx, before["event_name"]) is not None:
        raise invalid(
            f"An active meter with event_name `{before['event_name']}` already exists.",
            param="id",
        )
    after = copy.deepcopy(before)
    after["status"] = wanted
    after["status_transitions"] = {"deactivated_at": None if active else ctx.now()}
    after["updated"] = ctx.now()
    ctx.store.replace(KIND, after)
    ctx.emit(
        "billing.meter.reactivated" if active else "billing.meter.deactivated",
        after,
        previous_attributes={"status": before["status"]},
    )
    return render(ctx.store, after, expand_of(params))


def _active_meter_for(ctx: RequestContext, event_name: str) -> StripeObject | None:
    for meter in ctx.store.collection(KIND).lookup("event_name", event_name):
        if meter["status"] == "active":
            return meter
    return None


def create_event(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing/meter_events`. Identifiers are unique for 24 hours: a second event
    with one is refused (400, "An event already exists with identifier ...", as Stripe
    answers; the idempotency key of the first request replays its answer instead). The
    timestamp must be within the past 35 calendar days and at most 5 minutes ahead, of the
    emulator's time (not checked for a customer on a test clock)."""
    now = ctx.now()
    _check_identifier(params.get("identifier"))
    identifier = params.get("identifier") or new_id("mtrevt")[len("mtrevt_") :]
    for earlier in ctx.store.collection(EVENT).lookup("identifier", identifier):
        if now - earlier["created"] < IDENTIFIER_WINDOW_SECONDS:
            raise invalid(
                f"An event already exists with identifier {identifier}.", param="identifier"
            )
    meter = _active_meter_for(ctx, params["event_name"])
    customer: str | None = None
    if meter is not None:
        _check_payload(meter, params["payload"])
        customer = params["payload"].get(meter["customer_mapping"]["event_payload_key"])
    at = time_for(ctx, customer)
    timestamp = params.get("timestamp", at)
    # Checked for customers without a test clock only: events of clocked customers are
    # stamped in the clock's time, which tests move freely (docs/emulator.md, omissions).
    clocked = _has_clock(ctx, customer)
    if not clocked and not at - PAST_LIMIT_SECONDS <= timestamp <= at + FUTURE_LIMIT_SECONDS:
        raise invalid(
            "The timestamp must be within the past 35 calendar days and no more than 5 "
            "minutes in the future.",
            param="timestamp",
        )
    event: StripeObject = {
        "id": new_id("mtrevt"),
        "object": EVENT,
        "created": now,
        "event_name": params["event_name"],
        "identifier": identifier,
        "livemode": False,
        "payload": params["payload"],
        "timestamp": timestamp,
    }
    ctx.store.insert(EVENT, event)
    return render(ctx.store, event, expand_of(params))


def _check_identifier(value: str | None) -> None:
    """Stripe's OpenAPI gives `identifier` `maxLength: 100` (not the 5,000 of other strings):
    a longer one is refused in Stripe's spelling of a too-long string (param `identifier`)."""
    if value is not None and len(value) > MAX_IDENTIFIER_LENGTH:
        raise invalid(
            f"Invalid string: {value[:10]}...{value[-10:]}; must be at most "
            f"{MAX_IDENTIFIER_LENGTH} characters",
            param="identifier",
        )


def _has_clock(ctx: RequestContext, customer_id: str | None) -> bool:
    customer = ctx.store.get("customer", customer_id) if customer_id else None
    return bool(customer and customer.get("test_clock"))


def _check_payload(meter: StripeObject, payload: dict[str, str]) -> None:
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    if customer_key not in payload:
        raise invalid(
            f"Missing required param: payload[{customer_key}].", param=f"payload[{customer_key}]"
        )
    if meter["default_aggregation"]["formula"] != "count":
        _number(payload.get(value_key), f"payload[{value_key}]")


def _number(value: str | None, param: str) -> Decimal:
    try:
        return Decimal(value or "")
    except InvalidOperation:
        raise invalid(f"Invalid {param}: must be a number.", param=param) from None


def event_summaries(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/billing/meters/{id}/event_summaries` for one customer and time range."""
    meter = fetch(ctx, KIND, path["id"], "billing meter")
    window = params.get("value_grouping_window")
    check_enum(window, "value_grouping_window", tuple(WINDOWS))
    start, end = params["start_time"], params["end_time"]
    if end <= start:
        raise invalid("end_time must be after start_time.", param="end_time")
    events = _customer_events(ctx, meter, params["customer"], start, end)
    step = WINDOWS[window] if window else end - start
    summaries = [
        _summary(meter, bucket_start, min(bucket_start + step, end), events)
        for bucket_start in range(start, end, step)
    ]
    url = f"/v1/billing/meters/{meter['id']}/event_summaries"
    limit = params.get("limit", 10)
    return envelope(summaries[:limit], len(summaries) > limit, url)


def _customer_events(
    ctx: RequestContext, meter: StripeObject, customer: str, start: int, end: int
) -> list[StripeObject]:
    key = meter["customer_mapping"]["event_payload_key"]
    return [
        e
        for e in ctx.store.collection(EVENT).lookup("event_name", meter["event_name"])
        if e["payload"].get(key) == customer and start <= e["timestamp"] < end
    ]


def _summary(meter: StripeObject, start: int, end: int, events: list[StripeObject]) -> StripeObject:
    inside = [e for e in events if start <= e["timestamp"] < end]
    return {
        "id": f"mtrusg_{meter['id'].removeprefix('mtr_')}_{start}",
        "object": "billing.meter_event_summary",
        "aggregated_value": _aggregate(meter, inside),
        "end_time": end,
        "livemode": False,
        "meter": meter["id"],
        "start_time": start,
    }


def _aggregate(meter: StripeObject, events: list[StripeObject]) -> float:
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return float(len(events))
    key = meter["value_settings"]["event_payload_key"]
    values = [Decimal(e["payload"].get(key, "0")) for e in events]
    if formula == "last":
        latest = max(events, key=lambda e: e["timestamp"], default=None)
        return float(Decimal(latest["payload"].get(key, "0"))) if latest else 0.0
    return float(sum(values, Decimal(0)))


def usage(ctx: RequestContext, meter_id: str, customer_id: str, start: int, end: int) -> Decimal:
    """A customer's usage on a meter over `[start, end)` (event timestamps), aggregated by
    the meter's formula (`sum`, `count`, `last`); 0 for an unknown meter."""
    meter = ctx.store.get(KIND, meter_id)
    if meter is None:
        return Decimal(0)
    events = _customer_events(ctx, meter, customer_id, start, end)
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return Decimal(len(events))
    key = meter["value_settings"]["event_payload_key"]
    if formula == "last":
        latest = max(events, key=lambda e: (e["timestamp"], e["created"]), default=None)
        return Decimal(latest["payload"].get(key, "0")) if latest else Decimal(0)
    return sum((Decimal(e["payload"].get(key, "0")) for e in events), Decimal(0))
