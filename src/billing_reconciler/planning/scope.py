"""Restricting a plan to part of a domain: what a webhook-triggered reconcile applies.

`restrict_to(plan, scope, scope_of)` is generic: a domain says which request key each of its
object keys belongs to (`Domain.scope_of`), and the plan keeps what falls inside the scope.
For the catalog:

A webhook says one product (or one of its prices) changed; the targeted reconcile still
observes everything (webhooks are hints, never state) but applies only the steps of that
product: the product itself, its prices, and its feature attachments.
"""

from __future__ import annotations

from collections.abc import Callable
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
    return restrict_to(plan, product_keys, product_of)


def restrict_to(plan: Plan, scope: frozenset[str], scope_of: Callable[[str], str | None]) -> Plan:
    """The part of `plan` whose objects belong to a request key in `scope`."""

    def inside(key: str) -> bool:
        return scope_of(key) in scope

    return replace(
        plan,
        steps=tuple(step for step in plan.steps if inside(step.key)),
        drift=tuple(item for item in plan.drift if inside(item.key)),
        orphans=tuple(n for n in plan.orphans if inside(n.key)),
        adoptable=tuple(n for n in plan.adoptable if inside(n.key)),
    )
