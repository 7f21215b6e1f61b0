"""Stripe request parameters for the records we create or update.

Parameters reference other objects of the same plan with `Ref(key)`; apply resolves them to Stripe
ids. Values are exactly what the Stripe API takes (form fields), so a saved plan shows the very
requests apply will send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing_reconciler.model import (
    META_FEATURES,
    NO_FEATURES,
    CurrencyOption,
    FeatureRecord,
    MeterRecord,
    Ownership,
    PriceRecord,
    ProductRecord,
    Tier,
)
from billing_reconciler.planning.plan import Ref


def _tier_params(tier: Tier) -> dict[str, Any]:
    params: dict[str, Any] = {"up_to": "inf" if tier.up_to is None else tier.up_to}
    if tier.unit_amount is not None:
        params["unit_amount"] = tier.unit_amount
    if tier.flat_amount is not None:
        params["flat_amount"] = tier.flat_amount
    return params


def _currency_option_params(option: CurrencyOption) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if option.tiers:
        params["tiers"] = [_tier_params(t) for t in option.tiers]
    else:
        params["unit_amount"] = option.unit_amount
    if option.tax_behavior:
        params["tax_behavior"] = option.tax_behavior
    return params


def currency_options_params(options: Mapping[str, CurrencyOption]) -> dict[str, Any]:
    return {cur: _currency_option_params(opt) for cur, opt in sorted(options.items())}


def metadata_params(owner: Ownership, metadata: Mapping[str, str]) -> dict[str, str]:
    return {**dict(sorted(metadata.items())), **owner.as_metadata()}


def meter_create_params(meter: MeterRecord) -> dict[str, Any]:
    return {
        "event_name": meter.event_name,
        "display_name": meter.display_name,
        "default_aggregation": {"formula": meter.aggregation},
        "customer_mapping": {"type": "by_id", "event_payload_key": meter.customer_key},
        "value_settings": {"event_payload_key": meter.value_key},
    }


def feature_create_params(feature: FeatureRecord, owner: Ownership) -> dict[str, Any]:
    return {
        "lookup_key": feature.lookup_key,
        "name": feature.title,
        "metadata": metadata_params(owner, feature.metadata),
    }


def product_create_params(product: ProductRecord, owner: Ownership) -> dict[str, Any]:
    # A new product has no attachments yet: its inventory says so until they are made.
    metadata = {**metadata_params(owner, product.metadata), META_FEATURES: NO_FEATURES}
    params: dict[str, Any] = {"name": product.title, "metadata": metadata}
    if product.description:
        params["description"] = product.description
    return params


def price_create_params(price: PriceRecord, owner: Ownership) -> dict[str, Any]:
    params: dict[str, Any] = {
        "product": Ref(price.product_key),
        "currency": price.currency,
        "metadata": metadata_params(owner, price.metadata),
    }
    if price.billing_scheme == "tiered":
        params["billing_scheme"] = "tiered"
        params["tiers_mode"] = price.tiers_mode
        params["tiers"] = [_tier_params(t) for t in price.tiers]
    else:
        params["unit_amount"] = price.unit_amount
    if price.recurring is not None:
        params["recurring"] = _recurring_params(price)
    if price.currency_options:
        params["currency_options"] = currency_options_params(price.currency_options)
    if price.lookup_key:
        params["lookup_key"] = price.lookup_key
        # Moving the key from the price we supersede is how host apps follow the change.
        params["transfer_lookup_key"] = True
    if price.nickname:
        params["nickname"] = price.nickname
    if price.tax_behavior:
        params["tax_behavior"] = price.tax_behavior
    return params


def _recurring_params(price: PriceRecord) -> dict[str, Any]:
    assert price.recurring is not None
    recurring: dict[str, Any] = {
        "interval": price.recurring.interval,
        "interval_count": price.recurring.interval_count,
        "usage_type": price.recurring.usage_type,
    }
    if price.recurring.meter_key:
        recurring["meter"] = Ref(price.recurring.meter_key)
    return recurring
