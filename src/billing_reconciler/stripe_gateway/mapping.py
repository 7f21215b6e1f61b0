"""Pure mapping of Stripe objects (as plain dicts) to the comparable records of `model`.

The client layer converts SDK objects with `to_dict(for_json=True)` first, so everything here
works on JSON-shaped data and is tested with Stripe's published fixtures, no SDK involved.

Identity: a marked object's `key` is its ownership marker's `br_key`; an unmarked object gets a
provisional key (`product/<lower(name)>`, `price/<lookup_key or id>`, `feature/<lookup_key>`,
`meter/<event_name>`) and `owner=None`: whether to adopt it is the planner's call.

References between objects (a price's product, a product's default price, a metered price's
meter, a product feature's two ends) are Stripe ids on the wire and keys in records;
`map_catalog` resolves them through the other observed objects, and an id pointing at an
object we did not observe resolves to `""`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from billing_reconciler import model
from billing_reconciler.model import (
    Catalog,
    CurrencyOption,
    FeatureRecord,
    MeterRecord,
    Ownership,
    PriceRecord,
    ProductFeatureRecord,
    ProductRecord,
    Recurring,
    Tier,
)

StripeDict = Mapping[str, Any]

UNKNOWN_KEY = ""


def map_catalog(
    *,
    meters: Iterable[StripeDict] = (),
    features: Iterable[StripeDict] = (),
    products: Iterable[StripeDict] = (),
    prices: Iterable[StripeDict] = (),
    product_features: Iterable[tuple[str, StripeDict]] = (),
) -> Catalog:
    """The observed catalog; `product_features` pairs each attachment with its product's id
    (Stripe's product_feature object does not name its product)."""
    meter_records = tuple(map_meter(obj) for obj in meters)
    feature_records = tuple(map_feature(obj) for obj in features)
    product_records = tuple(map_product(obj) for obj in products)
    meter_keys = _keys_by_id(meter_records)
    product_keys = _keys_by_id(product_records)
    price_records = tuple(
        map_price(obj, product_keys=product_keys, meter_keys=meter_keys) for obj in prices
    )
    price_keys = _keys_by_id(price_records)
    feature_keys = _keys_by_id(feature_records)
    return Catalog(
        meters=meter_records,
        features=feature_records,
        products=tuple(_join_default_price(p, price_keys) for p in product_records),
        prices=price_records,
        product_features=tuple(
            map_product_feature(
                obj, product_id=product_id, product_keys=product_keys, feature_keys=feature_keys
            )
            for product_id, obj in product_features
        ),
    )


def map_meter(obj: StripeDict) -> MeterRecord:
    """A billing meter. Meters have no metadata, so the key is always `meter/<event_name>`."""
    event_name = str(obj["event_name"])
    value_settings = obj.get("value_settings") or {}
    return MeterRecord(
        key=model.object_key(model.Kind.METER, event_name),
        event_name=event_name,
        display_name=str(obj.get("display_name") or ""),
        aggregation=str((obj.get("default_aggregation") or {}).get("formula") or "sum"),
        customer_key=str(
            (obj.get("customer_mapping") or {}).get("event_payload_key") or "stripe_customer_id"
        ),
        value_key=str(value_settings.get("event_payload_key") or "value"),
        active=obj.get("status") == "active",
        stripe_id=str(obj["id"]),
    )


def map_feature(obj: StripeDict) -> FeatureRecord:
    """An entitlements feature."""
    lookup_key = str(obj["lookup_key"])
    metadata = _metadata(obj)
    owner = Ownership.from_metadata(metadata)
    return FeatureRecord(
        key=owner.key if owner else model.object_key(model.Kind.FEATURE, lookup_key),
        lookup_key=lookup_key,
        title=str(obj.get("name") or ""),
        metadata=model.user_metadata(metadata),
        active=bool(obj.get("active", True)),
        stripe_id=str(obj["id"]),
        owner=owner,
    )


def map_product(obj: StripeDict) -> ProductRecord:
    """A product; `default_price_key` is left for `map_catalog` to resolve."""
    title = str(obj.get("name") or "")
    metadata = _metadata(obj)
    owner = Ownership.from_metadata(metadata)
    key = owner.key if owner else model.object_key(model.Kind.PRODUCT, title)
    return ProductRecord(
        key=key,
        name=_name_from_key(key, fallback=title.lower()),
        title=title,
        description=obj.get("description"),
        metadata=model.user_metadata(metadata),
        active=bool(obj.get("active", True)),
        stripe_id=str(obj["id"]),
        default_price_id=_id_of(obj.get("default_price")),
        owner=owner,
        protect=_protected(metadata),
        features_record=metadata.get(model.META_FEATURES),
    )


def map_price(
    obj: StripeDict,
    *,
    product_keys: Mapping[str, str] | None = None,
    meter_keys: Mapping[str, str] | None = None,
) -> PriceRecord:
    """A price; its product and meter ids resolve through `product_keys` / `meter_keys`.

    Amounts: Stripe sends both `unit_amount` (int) and `unit_amount_decimal` (string, may carry
    fractions of a minor unit). We read the int, fall back to the decimal only when it is
    integral, and otherwise map `None`: a sub-minor-unit price is not something we manage.
    """
    metadata = _metadata(obj)
    owner = Ownership.from_metadata(metadata)
    lookup_key = obj.get("lookup_key")
    provisional = model.object_key(model.Kind.PRICE, str(lookup_key or obj["id"]))
    key = owner.key if owner else provisional
    product_id = _id_of(obj.get("product"))
    currency = str(obj["currency"]).lower()
    return PriceRecord(
        key=key,
        product_key=_resolve(product_id, product_keys),
        name=key.rsplit("/", 1)[-1],
        currency=currency,
        unit_amount=_amount(obj, "unit_amount"),
        lookup_key=lookup_key,
        billing_scheme=str(obj.get("billing_scheme") or "per_unit"),
        tiers_mode=obj.get("tiers_mode"),
        tiers=map_tiers(obj.get("tiers")),
        recurring=map_recurring(obj.get("recurring"), meter_keys=meter_keys),
        currency_options=map_currency_options(obj.get("currency_options"), own_currency=currency),
        nickname=obj.get("nickname"),
        tax_behavior=_tax_behavior(obj.get("tax_behavior")),
        metadata=model.user_metadata(metadata),
        active=bool(obj.get("active", True)),
        stripe_id=str(obj["id"]),
        product_stripe_id=product_id,
        owner=owner,
        protect=_protected(metadata),
    )


def map_product_feature(
    obj: StripeDict,
    *,
    product_id: str,
    product_keys: Mapping[str, str] | None = None,
    feature_keys: Mapping[str, str] | None = None,
) -> ProductFeatureRecord:
    """A feature attached to a product; keyed `product_feature/<product name>/<lookup key>`."""
    feature = obj.get("entitlement_feature")
    feature_id = _id_of(feature)
    product_key = _resolve(product_id, product_keys)
    feature_key = _resolve(feature_id, feature_keys)
    return ProductFeatureRecord(
        key=_product_feature_key(product_key, feature_key, feature),
        product_key=product_key,
        feature_key=feature_key,
        stripe_id=str(obj["id"]),
        product_stripe_id=product_id,
        feature_stripe_id=feature_id,
    )


def map_tiers(tiers: Iterable[StripeDict] | None) -> tuple[Tier, ...]:
    """Stripe tiers; `up_to: null` (Stripe's `inf`) becomes `None`."""
    return tuple(
        Tier(
            up_to=_int_or_none(tier.get("up_to")),
            unit_amount=_amount(tier, "unit_amount"),
            flat_amount=_amount(tier, "flat_amount"),
        )
        for tier in tiers or ()
    )


def map_recurring(
    recurring: StripeDict | None, *, meter_keys: Mapping[str, str] | None = None
) -> Recurring | None:
    """`recurring`; a meter id becomes the observed meter's key (`""` when unknown)."""
    if not recurring:
        return None
    meter_id = _id_of(recurring.get("meter"))
    return Recurring(
        interval=str(recurring["interval"]),
        interval_count=int(recurring.get("interval_count") or 1),
        usage_type=str(recurring.get("usage_type") or "licensed"),
        meter_key=None if meter_id is None else _resolve(meter_id, meter_keys),
    )


def map_currency_options(
    options: Mapping[str, StripeDict] | None, *, own_currency: str
) -> dict[str, CurrencyOption]:
    """Other currencies of a price. Stripe echoes the price's own currency inside
    `currency_options`; it is the price itself, not an option, so it is left out."""
    return {
        currency.lower(): CurrencyOption(
            unit_amount=_amount(option, "unit_amount"),
            tiers=map_tiers(option.get("tiers")),
            tax_behavior=_tax_behavior(option.get("tax_behavior")),
        )
        for currency, option in sorted((options or {}).items())
        if currency.lower() != own_currency
    }


def _join_default_price(product: ProductRecord, price_keys: Mapping[str, str]) -> ProductRecord:
    if product.default_price_id is None:
        return product
    return dataclasses.replace(
        product, default_price_key=_resolve(product.default_price_id, price_keys)
    )


def _product_feature_key(product_key: str, feature_key: str, feature: object) -> str:
    product_name = _name_from_key(product_key, fallback=product_key)
    feature_name = _name_from_key(feature_key, fallback="")
    if not feature_name and isinstance(feature, Mapping):
        feature_name = str(feature.get("lookup_key") or feature.get("id") or "")
    return model.object_key(model.Kind.PRODUCT_FEATURE, product_name, feature_name)


def _keys_by_id(
    records: Iterable[MeterRecord | FeatureRecord | ProductRecord | PriceRecord],
) -> dict[str, str]:
    return {r.stripe_id: r.key for r in records if r.stripe_id is not None}


def _resolve(stripe_id: str | None, keys: Mapping[str, str] | None) -> str:
    if stripe_id is None:
        return UNKNOWN_KEY
    return (keys or {}).get(stripe_id, UNKNOWN_KEY)


def _name_from_key(key: str, *, fallback: str) -> str:
    """`product/team_seat` -> `team_seat`: the identity after the kind prefix."""
    _, sep, name = key.partition("/")
    return name if sep and name else fallback


def _id_of(value: object) -> str | None:
    """A reference as Stripe sends it: an id string, or an expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        ident = value.get("id")
        return str(ident) if ident else None
    return None


def _metadata(obj: StripeDict) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def _protected(metadata: Mapping[str, str]) -> bool:
    return metadata.get(model.META_PROTECT, "").lower() == "true"


def _tax_behavior(value: object) -> str | None:
    # Stripe reports "unspecified" for a price nobody set a tax behavior on: that is "not set".
    return None if value in (None, "unspecified") else str(value)


def _amount(obj: StripeDict, field: str) -> int | None:
    """`obj[field]` as an int, else `obj[field + "_decimal"]` when it is integral."""
    value = obj.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _integral(obj.get(f"{field}_decimal"))


def _integral(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return int(number) if number == number.to_integral_value() else None


def _int_or_none(value: object) -> int | None:
    if value is None or value == "inf":
        return None
    return int(str(value))
