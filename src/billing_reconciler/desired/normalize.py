"""From plan-file models (as written) to canonical specs (as the planner wants them).

Owns the defaults that depend on context: a price's currency (billing.default_currency, else
usd, as Frontier), unnamed prices (`default_<index>`, as Frontier), `flat` -> `per_unit`,
meter defaults, implicit features (a product may grant a feature nobody declared; Frontier
creates it, with the name as title).

Frontier's `metered_aggregate` maps onto a Stripe meter's aggregation like this:
`sum` -> sum, `count` -> count, `last_during_period`/`last` -> last, and `last_ever` -> last
with a warning (Stripe meters only aggregate within a billing period). `max` is refused by
the model (Stripe meters have no maximum).
"""

from __future__ import annotations

from typing import Literal

from billing_reconciler.desired.diagnostics import Diagnostic
from billing_reconciler.desired.formats import Located
from billing_reconciler.desired.models import (
    FeatureModel,
    MeterModel,
    PlanModel,
    PriceModel,
    ProductModel,
    TierModel,
)
from billing_reconciler.desired.state import (
    CurrencyOptionSpec,
    FeatureSpec,
    MeterSpec,
    PlanSpec,
    PriceSpec,
    ProductConfigSpec,
    ProductSpec,
    TierSpec,
)

Aggregation = Literal["sum", "count", "last"]
_AGGREGATIONS: dict[str, Aggregation] = {
    "sum": "sum",
    "count": "count",
    "last": "last",
    "last_during_period": "last",
    "last_ever": "last",
}


def feature_spec(model: FeatureModel) -> FeatureSpec:
    """A declared feature."""
    return FeatureSpec(
        name=model.name.lower(), title=model.title or model.name, metadata=model.metadata or {}
    )


def implicit_features(
    products: list[Located[ProductModel]], declared: set[str]
) -> list[Located[FeatureSpec]]:
    """Features products grant but nobody declared (first reference wins the title)."""
    found: dict[str, Located[FeatureSpec]] = {}
    for product in products:
        for index, ref in enumerate(product.item.features):
            name = ref.name.lower()
            if name in declared or name in found:
                continue
            spec = FeatureSpec(name=name, title=ref.title or ref.name, metadata=ref.metadata or {})
            found[name] = Located(spec, product.document, (*product.loc, "features", index))
    return list(found.values())


def product_spec(
    located: Located[ProductModel], *, default_currency: str
) -> tuple[ProductSpec, list[Diagnostic]]:
    """The canonical product, and warnings about lossy mappings."""
    model = located.item
    prices, warnings = [], []
    for index, price in enumerate(model.prices):
        prices.append(
            price_spec(price, index=index, product=model, default_currency=default_currency)
        )
        explicit = price.meter is not None and price.meter.aggregation is not None
        if price.metered_aggregate == "last_ever" and not explicit:
            warnings.append(
                located.diagnostic(
                    "metered_aggregate 'last_ever' becomes Stripe meter aggregation 'last', "
                    "which only looks at the current billing period",
                    at=("prices", index, "metered_aggregate"),
                    warning=True,
                )
            )
    spec = ProductSpec(
        name=model.name.lower(),
        title=model.title,
        description=model.description or "",
        behavior=model.behavior,
        config=ProductConfigSpec(**model.config.model_dump()),
        prices=tuple(prices),
        features=tuple(ref.name.lower() for ref in model.features),
        metadata=model.metadata or {},
        protect=model.protect,
        active=model.state == "active",
    )
    return spec, warnings


def price_spec(
    model: PriceModel, *, index: int, product: ProductModel, default_currency: str
) -> PriceSpec:
    """The canonical price of `product`."""
    name = (model.name or f"default_{index}").lower()
    tiered = model.billing_scheme == "tiered"
    return PriceSpec(
        name=name,
        amount=model.amount,
        currency=model.currency or default_currency,
        interval=model.interval,
        interval_count=model.interval_count,
        usage_type=model.usage_type,
        billing_scheme="tiered" if tiered else "per_unit",
        tier_mode=(model.tier_mode or "graduated") if tiered else None,
        tiers=_tiers(model.tiers),
        meter=_meter(model, product=product, price_name=name),
        lookup_key=model.lookup_key,
        nickname=model.nickname,
        tax_behavior=model.tax_behavior,
        currency_options={
            code: CurrencyOptionSpec(
                amount=option.amount, tiers=_tiers(option.tiers), tax_behavior=option.tax_behavior
            )
            for code, option in (model.currency_options or {}).items()
        },
        metadata=model.metadata or {},
        protect=model.protect,
        active=model.state == "active",
    )


def plan_spec(model: PlanModel) -> PlanSpec:
    """The canonical plan."""
    return PlanSpec(
        name=model.name.lower(),
        title=model.title,
        description=model.description or "",
        interval=model.interval,
        products=tuple(ref.name.lower() for ref in model.products),
        trial_days=model.trial_days,
        on_start_credits=model.on_start_credits,
        metadata=model.metadata or {},
        active=model.state == "active",
    )


def _tiers(tiers: list[TierModel] | None) -> tuple[TierSpec, ...]:
    return tuple(
        TierSpec(up_to=tier.bound, unit_amount=tier.unit_amount, flat_amount=tier.flat)
        for tier in tiers or ()
    )


def _meter(model: PriceModel, *, product: ProductModel, price_name: str) -> MeterSpec | None:
    if model.usage_type != "metered":
        return None
    meter = model.meter or MeterModel()
    aggregation = meter.aggregation or _AGGREGATIONS[model.metered_aggregate or "sum"]
    return MeterSpec(
        event_name=meter.event_name or f"{product.name.lower()}_{price_name}",
        display_name=meter.display_name or product.title,
        aggregation=aggregation,
        value_key=meter.value_key,
        customer_key=meter.customer_key,
    )
