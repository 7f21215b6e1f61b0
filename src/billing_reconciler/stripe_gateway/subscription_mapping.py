"""Stripe subscriptions and subscription schedules (plain dicts) as `model_subscriptions`
records (DESIGN §16; the pinned API `2026-10-28.endive`: periods on `items.data[]`).

Pure: no SDK call here. A subscription or schedule without our marker, or (given
`installation_id`) with another installation's, maps with `owner=None`: the rules never
modify it, but it still counts (one live subscription per account).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing_reconciler.model import MANAGED_BY, META_INSTALLATION, META_KEY, META_MANAGED_BY
from billing_reconciler.model_subscriptions import (
    META_PLAN,
    ItemRecord,
    PhaseItem,
    SchedulePhase,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
    user_metadata,
)


def map_subscription(
    obj: Mapping[str, Any], *, installation_id: str | None = None
) -> SubscriptionRecord:
    """A Stripe subscription as a record; `items.data` must be complete (the caller pages
    the items of a subscription whose embedded list `has_more`)."""
    metadata = _metadata(obj)
    pending = obj.get("pending_invoice_item_interval")
    trial_settings = obj.get("trial_settings") or {}
    end_behavior = trial_settings.get("end_behavior") or {}
    cancellation = obj.get("cancellation_details") or {}
    schedule = obj.get("schedule")
    latest_invoice = obj.get("latest_invoice")
    clock = obj.get("test_clock")
    return SubscriptionRecord(
        stripe_id=str(obj["id"]),
        customer_id=_id_of(obj.get("customer")) or "",
        status=str(obj.get("status") or ""),
        currency=str(obj.get("currency") or ""),
        items=tuple(map_item(item, installation_id=installation_id) for item in _items(obj)),
        collection_method=str(obj.get("collection_method") or "charge_automatically"),
        days_until_due=_int(obj.get("days_until_due")),
        automatic_tax=bool((obj.get("automatic_tax") or {}).get("enabled", False)),
        trial_start=_int(obj.get("trial_start")),
        trial_end=_int(obj.get("trial_end")),
        cancel_at=_int(obj.get("cancel_at")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        canceled_at=_int(obj.get("canceled_at")),
        ended_at=_int(obj.get("ended_at")),
        schedule_id=_id_of(schedule),
        pending_invoice_item_interval=(
            (str(pending["interval"]), int(pending.get("interval_count") or 1))
            if isinstance(pending, Mapping) and pending.get("interval")
            else None
        ),
        latest_invoice_id=_id_of(latest_invoice),
        test_clock=_id_of(clock),
        created=int(obj.get("created") or 0),
        metadata=user_metadata(metadata),
        owner=_owner(metadata, installation_id),
        trial_missing_payment_method=_str(end_behavior.get("missing_payment_method")),
        cancellation_reason=_str(cancellation.get("reason")),
    )


def map_item(obj: Mapping[str, Any], *, installation_id: str | None = None) -> ItemRecord:
    """A subscription item: its price id, quantity (None for a metered price), period, and
    the price's catalog key when the price carries our marker (of `installation_id`, when
    given): Stripe embeds the whole price in the item."""
    price = obj.get("price")
    return ItemRecord(
        price_id=_id_of(price) or "",
        quantity=_int(obj.get("quantity")) if not _metered(price) else None,
        item_id=_str(obj.get("id")),
        current_period_start=_int(obj.get("current_period_start")),
        current_period_end=_int(obj.get("current_period_end")),
        price_key=_price_key(price, installation_id),
    )


def _price_key(price: object, installation_id: str | None) -> str | None:
    if not isinstance(price, Mapping):
        return None
    metadata = _metadata(price)
    if metadata.get(META_MANAGED_BY) != MANAGED_BY:
        return None
    if installation_id is not None and metadata.get(META_INSTALLATION) != installation_id:
        return None
    return metadata.get(META_KEY) or None


def map_schedule(obj: Mapping[str, Any], *, installation_id: str | None = None) -> ScheduleRecord:
    """A Stripe subscription schedule as a record. The owner comes from the schedule's own
    metadata (we mark it when we write its phases)."""
    metadata = _metadata(obj)
    current = obj.get("current_phase")
    return ScheduleRecord(
        stripe_id=str(obj["id"]),
        subscription_id=_id_of(obj.get("subscription")),
        customer_id=_id_of(obj.get("customer")) or "",
        status=str(obj.get("status") or ""),
        end_behavior=str(obj.get("end_behavior") or "release"),
        phases=tuple(map_phase(p) for p in obj.get("phases") or () if isinstance(p, Mapping)),
        metadata=user_metadata(metadata),
        owner=_owner(metadata, installation_id),
        current_phase=(
            (int(current["start_date"]), int(current["end_date"]))
            if isinstance(current, Mapping)
            else None
        ),
        released_subscription=_id_of(obj.get("released_subscription")),
        created=int(obj.get("created") or 0),
    )


def map_phase(obj: Mapping[str, Any]) -> SchedulePhase:
    """One schedule phase; `plan` is the phase metadata's `plan` (we write it)."""
    automatic_tax = obj.get("automatic_tax")
    plan = (obj.get("metadata") or {}).get(META_PLAN)
    return SchedulePhase(
        start=int(obj["start_date"]),
        end=_int(obj.get("end_date")),
        items=tuple(
            PhaseItem(price_id=_id_of(i.get("price")) or "", quantity=_int(i.get("quantity")))
            for i in obj.get("items") or ()
            if isinstance(i, Mapping)
        ),
        proration_behavior=_str(obj.get("proration_behavior")),
        collection_method=_str(obj.get("collection_method")),
        automatic_tax=(
            bool(automatic_tax.get("enabled")) if isinstance(automatic_tax, Mapping) else None
        ),
        plan=plan if isinstance(plan, str) and plan else None,
    )


def _owner(metadata: Mapping[str, str], installation_id: str | None) -> SubscriptionOwner | None:
    owner = SubscriptionOwner.from_metadata(metadata)
    if owner is None or (installation_id is not None and owner.installation_id != installation_id):
        return None
    return owner


def _items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    return [i for i in data or () if isinstance(i, Mapping)]


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = obj.get("metadata") or {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _metered(price: object) -> bool:
    if not isinstance(price, Mapping):
        return False
    return bool((price.get("recurring") or {}).get("usage_type") == "metered")


def _id_of(value: object) -> str | None:
    """An id, or the id of an expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
