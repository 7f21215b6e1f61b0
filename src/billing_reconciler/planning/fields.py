"""Comparable field views of records and the three-way field diff (DESIGN §4).

`comparable_fields(record)` is the JSON view of the fields we own on an object; it is what the
store keeps as "last applied". `three_way(desired, live, applied)` compares those views field by
field (metadata key by key) and says, for each difference, whether it is a desired change or
drift (live differs from what we last applied while desired did not move).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from billing_reconciler.model import (
    CatalogRecord,
    CurrencyOption,
    FeatureRecord,
    JSONValue,
    MeterRecord,
    PlanRecord,
    PriceRecord,
    ProductFeatureRecord,
    ProductRecord,
    Recurring,
    Tier,
)
from billing_reconciler.planning.plan import FieldChange


def tier_view(tier: Tier) -> dict[str, JSONValue]:
    return {"up_to": tier.up_to, "unit_amount": tier.unit_amount, "flat_amount": tier.flat_amount}


def recurring_view(recurring: Recurring | None) -> JSONValue:
    if recurring is None:
        return None
    return {
        "interval": recurring.interval,
        "interval_count": recurring.interval_count,
        "usage_type": recurring.usage_type,
        "meter": recurring.meter_key,
    }


def currency_option_view(option: CurrencyOption) -> dict[str, JSONValue]:
    return {
        "unit_amount": option.unit_amount,
        "tiers": [tier_view(t) for t in option.tiers],
        "tax_behavior": option.tax_behavior,
    }


def comparable_fields(record: CatalogRecord) -> dict[str, JSONValue]:
    """The fields we own on `record`, as plain JSON values."""
    match record:
        case MeterRecord():
            return {
                "event_name": record.event_name,
                "display_name": record.display_name,
                "aggregation": record.aggregation,
                "customer_key": record.customer_key,
                "value_key": record.value_key,
            }
        case FeatureRecord():
            return {
                "lookup_key": record.lookup_key,
                "title": record.title,
                "metadata": dict(record.metadata),
            }
        case ProductRecord():
            return {
                "title": record.title,
                "description": record.description,
                "metadata": dict(record.metadata),
                "default_price": record.default_price_key,
            }
        case PriceRecord():
            return _price_fields(record)
        case ProductFeatureRecord():
            return {"product": record.product_key, "feature": record.feature_key}
        case PlanRecord():
            return {
                "title": record.title,
                "description": record.description,
                "interval": record.interval,
                "products": list(record.product_keys),
                "trial_days": record.trial_days,
                "on_start_credits": record.on_start_credits,
                "metadata": dict(record.metadata),
            }


def _price_fields(price: PriceRecord) -> dict[str, JSONValue]:
    return {
        "product": price.product_key,
        "currency": price.currency,
        "unit_amount": price.unit_amount,
        "billing_scheme": price.billing_scheme,
        "tiers_mode": price.tiers_mode,
        "tiers": [tier_view(t) for t in price.tiers],
        "recurring": recurring_view(price.recurring),
        "currency_options": {
            currency: currency_option_view(option)
            for currency, option in sorted(price.currency_options.items())
        },
        "lookup_key": price.lookup_key,
        "nickname": price.nickname,
        "tax_behavior": price.tax_behavior,
        "metadata": dict(price.metadata),
    }


# Price fields Stripe never lets us update: a difference means supersede (DESIGN §5).
PRICE_IMMUTABLE = ("product", "currency", "unit_amount", "billing_scheme", "tiers_mode", "tiers")
PRICE_IMMUTABLE_NESTED = ("recurring",)


@dataclass(frozen=True, slots=True)
class FieldDiff:
    changes: tuple[FieldChange, ...]
    drift: tuple[FieldChange, ...]

    @property
    def empty(self) -> bool:
        return not self.changes and not self.drift


def three_way(
    desired: Mapping[str, JSONValue],
    live: Mapping[str, JSONValue],
    applied: Mapping[str, JSONValue] | None,
) -> FieldDiff:
    """Differences between desired and live, each marked as drift or a desired change.

    A field desired leaves unset (None) that we never applied is not ours: it is left alone.
    Metadata is compared key by key: keys neither desired nor applied belong to someone else.
    """
    changes: list[FieldChange] = []
    for name, wanted in desired.items():
        before = live.get(name)
        was = None if applied is None else applied.get(name)
        if name == "metadata":
            changes.extend(_metadata_changes(wanted, before, was, applied is not None))
            continue
        if wanted == before:
            continue
        if wanted is None and (applied is None or was is None):
            continue
        drifted = applied is not None and name in applied and was == wanted and before != was
        changes.append(FieldChange(path=name, before=before, after=wanted, drift=drifted))
    return FieldDiff(
        changes=tuple(c for c in changes if not c.drift),
        drift=tuple(c for c in changes if c.drift),
    )


def _metadata_changes(
    wanted: JSONValue, live: JSONValue, applied: JSONValue, has_applied: bool
) -> list[FieldChange]:
    wanted_map = wanted if isinstance(wanted, dict) else {}
    live_map = live if isinstance(live, dict) else {}
    applied_map = applied if isinstance(applied, dict) else {}
    changes: list[FieldChange] = []
    for key in sorted(set(wanted_map) | set(applied_map)):
        after = wanted_map.get(key)
        before = live_map.get(key)
        if after == before:
            continue
        was = applied_map.get(key)
        drifted = has_applied and key in applied_map and was == after and before != was
        changes.append(
            FieldChange(path=f"metadata.{key}", before=before, after=after, drift=drifted)
        )
    return changes


def immutable_price_changes(desired: PriceRecord, live: PriceRecord) -> tuple[FieldChange, ...]:
    """Differences in the fields that force a supersede, marked as such."""
    want, have = _price_fields(desired), _price_fields(live)
    changes = [
        FieldChange(path=name, before=have[name], after=want[name], forces_supersede=True)
        for name in (*PRICE_IMMUTABLE, *PRICE_IMMUTABLE_NESTED)
        if want[name] != have[name]
    ]
    if _tax_behavior_fixed(live) and want["tax_behavior"] != have["tax_behavior"]:
        changes.append(
            FieldChange(
                path="tax_behavior",
                before=have["tax_behavior"],
                after=want["tax_behavior"],
                forces_supersede=True,
            )
        )
    return tuple(changes)


def _tax_behavior_fixed(price: PriceRecord) -> bool:
    # Stripe: "Once specified as either inclusive or exclusive, tax_behavior cannot be
    # changed"; only an unspecified one may still be set in place.
    return price.tax_behavior in ("inclusive", "exclusive")


def mutable_price_view(price: PriceRecord) -> dict[str, JSONValue]:
    """The price fields Stripe lets us update in place."""
    fields = _price_fields(price)
    return {
        name: value
        for name, value in fields.items()
        if name not in PRICE_IMMUTABLE and name not in PRICE_IMMUTABLE_NESTED
    }
