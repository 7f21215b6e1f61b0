"""`/billing/plans`, `/billing/products`, `/billing/features`: the catalog as applied.

"As applied" means what the last successful applies recorded, not what desired/ says now (a
plan that is merged but not applied yet is not for sale): plans come from the store's plans
table (active ones), products, prices and features from this installation's last-applied
state, which holds the fields we last wrote to Stripe and the Stripe ids. Lists are ordered
by name and paged as every list (`?limit=`, default 50, max 500; `?cursor=`, `next_cursor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Path

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import not_found
from billing_reconciler.api.models import Feature, Page, Plan, Price, Product
from billing_reconciler.api.routing import (
    DEFAULT_LIMIT,
    PREFIX,
    ApiRoute,
    Cursor,
    Limit,
    error_responses,
    paginate,
)
from billing_reconciler.model import Kind
from billing_reconciler.store import LastApplied, LastAppliedRepository, PlanRecord, PlanRepository


def plan(record: PlanRecord) -> Plan:
    return Plan(
        name=record.name,
        title=record.title,
        description=record.description,
        interval=record.interval,
        trial_days=record.trial_days,
        on_start_credits=record.on_start_credits,
        products=list(record.products),
        metadata=dict(record.metadata),
    )


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) else None


def _int(fields: Mapping[str, Any], key: str) -> int | None:
    value = fields.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _price(entry: LastApplied) -> Price:
    fields = entry.fields
    recurring = fields.get("recurring")
    return Price(
        name=entry.object_key.rsplit("/", 1)[-1],
        stripe_price_id=entry.stripe_id,
        currency=_text(fields, "currency"),
        amount=_int(fields, "unit_amount"),
        interval=_text(recurring, "interval") if isinstance(recurring, Mapping) else None,
        lookup_key=_text(fields, "lookup_key"),
    )


def _products(entries: Mapping[str, LastApplied]) -> list[Product]:
    prices: dict[str, list[Price]] = {}
    for entry in entries.values():
        if entry.kind == Kind.PRICE.value:
            product = entry.object_key.split("/")[1]
            prices.setdefault(product, []).append(_price(entry))
    return [
        Product(
            name=entry.object_key.split("/", 1)[1],
            title=_text(entry.fields, "title"),
            description=_text(entry.fields, "description"),
            stripe_product_id=entry.stripe_id,
            prices=prices.get(entry.object_key.split("/", 1)[1], []),
        )
        for entry in entries.values()
        if entry.kind == Kind.PRODUCT.value
    ]


def _features(entries: Mapping[str, LastApplied]) -> list[Feature]:
    return [
        Feature(
            name=entry.object_key.split("/", 1)[1],
            title=_text(entry.fields, "title"),
            stripe_feature_id=entry.stripe_id,
            lookup_key=_text(entry.fields, "lookup_key"),
        )
        for entry in entries.values()
        if entry.kind == Kind.FEATURE.value
    ]


def _name(item: Plan | Product | Feature) -> str:
    return item.name


def catalog_router(context: ApiContext) -> APIRouter:
    router = APIRouter(
        prefix=f"{PREFIX}/billing",
        tags=["catalog"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    @router.get("/plans", response_model=Page[Plan], responses=error_responses())
    def list_plans(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[Plan]:
        """Active plans, by name."""
        with context.store.session() as session:
            records = PlanRepository(session).list_active()
        page, next_cursor = paginate(
            [plan(r) for r in records], _name, kind="plan", limit=limit, cursor=cursor
        )
        return Page[Plan](data=page, next_cursor=next_cursor)

    @router.get("/plans/{name}", response_model=Plan, responses=error_responses(404))
    def get_plan(name: str = Path(max_length=255)) -> Plan:
        """One active plan (names are case-insensitive)."""
        with context.store.session() as session:
            record = PlanRepository(session).get(name)
        if record is None or record.state.value != "active":
            raise not_found(f"no plan {name}", plan=name)
        return plan(record)

    @router.get("/products", response_model=Page[Product], responses=error_responses())
    def list_products(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[Product]:
        """Products with their prices, as last applied to Stripe, by name."""
        with context.store.session() as session:
            entries = LastAppliedRepository(session).for_installation(context.installation_id())
        page, next_cursor = paginate(
            _products(entries), _name, kind="product", limit=limit, cursor=cursor
        )
        return Page[Product](data=page, next_cursor=next_cursor)

    @router.get("/features", response_model=Page[Feature], responses=error_responses())
    def list_features(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[Feature]:
        """Features, as last applied to Stripe, by name."""
        with context.store.session() as session:
            entries = LastAppliedRepository(session).for_installation(context.installation_id())
        page, next_cursor = paginate(
            _features(entries), _name, kind="feature", limit=limit, cursor=cursor
        )
        return Page[Feature](data=page, next_cursor=next_cursor)

    return router
