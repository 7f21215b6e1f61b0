"""Restricting a plan to part of the catalog: what a webhook-triggered reconcile applies.

A webhook says one product (or one of its prices) changed; the targeted reconcile still
observes everything (webhooks are hints, never state) but applies only the steps of that
product: the product itself, its prices, and its feature attachments.
"""

from __future__ import annotations

from dataclasses import replace

from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Plan

_PRODUCT_SCOPED = (Kind.PRODUCT, Kind.PRICE, Kind.PRODUCT_FEATURE)


def product_of(key: str) -> str | None:
    """`product/<p>` for keys of a product, its prices and attachments; None otherwise."""
    kind, _, rest = key.partition("/")
    if kind not in {k.value for k in _PRODUCT_SCOPED} or not rest:
        return None
    return f"{Kind.PRODUCT.value}/{rest.split('/', 1)[0]}"


def restrict(plan: Plan, product_keys: frozenset[str]) -> Plan:
    """The part of `plan` that touches the given products."""

    def inside(key: str) -> bool:
        return product_of(key) in product_keys

    return replace(
        plan,
        steps=tuple(step for step in plan.steps if inside(step.key)),
        drift=tuple(item for item in plan.drift if inside(item.key)),
        orphans=tuple(n for n in plan.orphans if inside(n.key)),
        adoptable=tuple(n for n in plan.adoptable if inside(n.key)),
    )
