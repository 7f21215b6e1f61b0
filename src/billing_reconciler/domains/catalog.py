"""The catalog domain: what the desired catalog is, as records the planner compares.

`desired_catalog(state, installation_id)` turns validated YAML (products, prices, features,
plans, and the meters behind metered prices) into `model` records. Choices made here:
- a product's default price is its first active price in the YAML;
- default lookup keys are `<product>_<price>`; an installation other than `default` prefixes
  its default keys (and feature lookup keys) with `<installation>.`, because lookup keys are
  unique per Stripe account and two installations must never take each other's;
- products carry their plan names (`br_plans`) and behaviour (`br_behavior`) in metadata so
  host applications can read the catalog from Stripe alone; `protect` is stamped as
  `br_protect=true` so it still holds after the object leaves the YAML;
- specs marked inactive (Frontier's `state: inactive`) are left out of the desired catalog:
  removed objects are archived with `reconcile.prune`, or reported as orphans.
"""

from __future__ import annotations

from collections.abc import Iterable

from billing_reconciler.desired.state import (
    CurrencyOptionSpec,
    DesiredState,
    FeatureSpec,
    PlanSpec,
    PriceSpec,
    ProductSpec,
    TierSpec,
)
from billing_reconciler.model import (
    META_BEHAVIOR,
    META_PLANS,
    META_PROTECT,
    Catalog,
    CurrencyOption,
    FeatureRecord,
    Kind,
    MeterRecord,
    PlanRecord,
    PriceRecord,
    ProductFeatureRecord,
    ProductRecord,
    Recurring,
    Tier,
    object_key,
)

DEFAULT_INSTALLATION = "default"


def desired_catalog(state: DesiredState, *, installation_id: str) -> Catalog:
    products = [p for p in state.products if p.active]
    plans = [plan for plan in state.plans if plan.active]
    plans_of = _plans_by_product(plans)
    return Catalog(
        meters=tuple(_meters(products)),
        features=tuple(_feature(f, installation_id) for f in state.features),
        products=tuple(_product(p, plans_of.get(p.name.lower(), ())) for p in products),
        prices=tuple(
            _price(price, product, installation_id)
            for product in products
            for price in product.prices
            if price.active
        ),
        product_features=tuple(
            ProductFeatureRecord(
                key=object_key(Kind.PRODUCT_FEATURE, p.name, feature),
                product_key=object_key(Kind.PRODUCT, p.name),
                feature_key=object_key(Kind.FEATURE, feature),
            )
            for p in products
            for feature in p.features
        ),
        plans=tuple(_plan(plan) for plan in plans),
    )


def _scoped(name: str, installation_id: str) -> str:
    return name if installation_id == DEFAULT_INSTALLATION else f"{installation_id}.{name}"


def _plans_by_product(plans: Iterable[PlanSpec]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for plan in plans:
        for product in plan.products:
            found.setdefault(product.lower(), []).append(plan.name.lower())
    return {product: tuple(sorted(names)) for product, names in found.items()}


def _meters(products: Iterable[ProductSpec]) -> Iterable[MeterRecord]:
    seen: set[str] = set()
    for product in products:
        for price in product.prices:
            meter = price.meter
            if meter is None or meter.event_name in seen or not price.active:
                continue
            seen.add(meter.event_name)
            yield MeterRecord(
                key=object_key(Kind.METER, meter.event_name),
                event_name=meter.event_name,
                display_name=meter.display_name,
                aggregation=meter.aggregation,
                customer_key=meter.customer_key,
                value_key=meter.value_key,
            )


def _feature(feature: FeatureSpec, installation_id: str) -> FeatureRecord:
    return FeatureRecord(
        key=object_key(Kind.FEATURE, feature.name),
        lookup_key=_scoped(feature.name.lower(), installation_id),
        title=feature.title,
        metadata=dict(feature.metadata),
    )


def _product(product: ProductSpec, plans: tuple[str, ...]) -> ProductRecord:
    metadata = dict(product.metadata)
    metadata[META_BEHAVIOR] = product.behavior
    if plans:
        metadata[META_PLANS] = ",".join(plans)
    if product.protect:
        metadata[META_PROTECT] = "true"
    for name, value in product.config.model_dump().items():
        if value is not None:
            metadata[f"br_{name}"] = str(value)
    first_price = next((price for price in product.prices if price.active), None)
    return ProductRecord(
        key=object_key(Kind.PRODUCT, product.name),
        name=product.name.lower(),
        title=product.title,
        description=product.description or None,
        metadata=metadata,
        default_price_key=(
            object_key(Kind.PRICE, product.name, first_price.name) if first_price else None
        ),
        protect=product.protect,
    )


def _price(price: PriceSpec, product: ProductSpec, installation_id: str) -> PriceRecord:
    lookup_key = price.lookup_key or _scoped(
        price.effective_lookup_key(product.name.lower()), installation_id
    )
    metadata = dict(price.metadata)
    if price.protect:
        metadata[META_PROTECT] = "true"
    tiered = price.billing_scheme == "tiered"
    return PriceRecord(
        key=object_key(Kind.PRICE, product.name, price.name),
        product_key=object_key(Kind.PRODUCT, product.name),
        name=price.name.lower(),
        currency=price.currency,
        unit_amount=None if tiered else price.amount,
        lookup_key=lookup_key,
        billing_scheme=price.billing_scheme,
        tiers_mode=price.tier_mode if tiered else None,
        tiers=_tiers(price.tiers) if tiered else (),
        recurring=_recurring(price),
        currency_options={
            currency: _currency_option(option, tiered=tiered, tax_behavior=price.tax_behavior)
            for currency, option in sorted(price.currency_options.items())
        },
        nickname=price.nickname,
        tax_behavior=price.tax_behavior,
        metadata=metadata,
        protect=price.protect,
    )


def _tiers(tiers: Iterable[TierSpec]) -> tuple[Tier, ...]:
    return tuple(
        Tier(up_to=t.up_to, unit_amount=t.unit_amount, flat_amount=t.flat_amount) for t in tiers
    )


def _currency_option(
    option: CurrencyOptionSpec, *, tiered: bool, tax_behavior: str | None
) -> CurrencyOption:
    # Stripe gives a currency option the price's tax behaviour unless it names its own.
    return CurrencyOption(
        unit_amount=None if tiered else option.amount,
        tiers=_tiers(option.tiers) if tiered else (),
        tax_behavior=option.tax_behavior or tax_behavior,
    )


def _recurring(price: PriceSpec) -> Recurring | None:
    if price.interval is None:
        return None
    return Recurring(
        interval=price.interval,
        interval_count=price.interval_count,
        usage_type=price.usage_type,
        meter_key=object_key(Kind.METER, price.meter.event_name) if price.meter else None,
    )


def _plan(plan: PlanSpec) -> PlanRecord:
    return PlanRecord(
        key=object_key(Kind.PLAN, plan.name),
        name=plan.name.lower(),
        title=plan.title,
        description=plan.description or None,
        interval=plan.interval,
        product_keys=tuple(object_key(Kind.PRODUCT, name) for name in plan.products),
        trial_days=plan.trial_days,
        on_start_credits=plan.on_start_credits,
        metadata=dict(plan.metadata),
    )
