"""Small factories for catalog records, desired and observed, used by the planning tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from billing_reconciler.model import (
    NO_FEATURES,
    Catalog,
    Kind,
    Ownership,
    PriceRecord,
    ProductRecord,
    object_key,
)
from billing_reconciler.planning.builder import AppliedState, PlanPolicy
from billing_reconciler.planning.fields import comparable_fields

INSTALLATION = "test"


def policy(**overrides: Any) -> PlanPolicy:
    values: dict[str, Any] = {
        "installation_id": INSTALLATION,
        "revision": "rev1",
        "now": 1_700_000_000,
    }
    values.update(overrides)
    return PlanPolicy(**values)


def product(
    name: str, *, title: str | None = None, default: str | None = "monthly", **kw: Any
) -> ProductRecord:
    key = object_key(Kind.PRODUCT, name)
    return ProductRecord(
        key=key,
        name=name,
        title=title or name.title(),
        default_price_key=object_key(Kind.PRICE, name, default) if default else None,
        **kw,
    )


def price(
    product_name: str, name: str = "monthly", *, amount: int = 1000, **kw: Any
) -> PriceRecord:
    values: dict[str, Any] = {
        "key": object_key(Kind.PRICE, product_name, name),
        "product_key": object_key(Kind.PRODUCT, product_name),
        "name": name,
        "currency": "usd",
        "unit_amount": amount,
        "lookup_key": f"{product_name}_{name}",
    }
    values.update(kw)
    return PriceRecord(**values)


_counter = iter(range(1, 1_000_000))


def live(record: Any, *, installation: str = INSTALLATION, marked: bool = True, **kw: Any) -> Any:
    """The record as the gateway would observe it after we created it."""
    prefix = {ProductRecord: "prod", PriceRecord: "price"}.get(type(record), "obj")
    owner = (
        Ownership(installation_id=installation, key=record.key, revision="rev0") if marked else None
    )
    values: dict[str, Any] = {"stripe_id": f"{prefix}_{next(_counter):06d}", "owner": owner}
    if isinstance(record, ProductRecord) and marked:
        # We create products with an empty attachment inventory (`br_features`).
        values["features_record"] = NO_FEATURES
    values.update(kw)
    return dataclasses.replace(record, **values)


def link(
    products: list[ProductRecord], prices: list[PriceRecord]
) -> tuple[list[ProductRecord], list[PriceRecord]]:
    """Fill Stripe ids that observed records use to point at each other."""
    by_key = {pr.key: pr for pr in products}
    linked_prices = [
        dataclasses.replace(pr, product_stripe_id=by_key[pr.product_key].stripe_id)
        if pr.product_key in by_key
        else pr
        for pr in prices
    ]
    price_ids = {pr.key: pr.stripe_id for pr in linked_prices if pr.active}
    linked_products = [
        dataclasses.replace(prod, default_price_id=price_ids.get(prod.default_price_key or ""))
        for prod in products
    ]
    return linked_products, linked_prices


def applied_from(catalog: Catalog) -> Mapping[str, AppliedState]:
    """What the store would hold after we applied `catalog`."""
    state: dict[str, AppliedState] = {}
    for record in (
        *catalog.meters,
        *catalog.features,
        *catalog.products,
        *catalog.prices,
        *catalog.product_features,
    ):
        if getattr(record, "active", True):
            state[record.key] = AppliedState(
                stripe_id=record.stripe_id, fields=comparable_fields(record)
            )
    return state
