"""The Stripe events the catalog reconciles on (DESIGN §11): its products, prices, features
and meters. `plan.*` is deliberately absent: Stripe emits it beside `price.*` for the same
recurring price, which already routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from billing_reconciler.domains.event_routes import EventRoute, Target, ours, whole_domain
from billing_reconciler.model import META_KEY
from billing_reconciler.planning.scope import product_of


def _catalog_product(obj: Mapping[str, Any]) -> Target | None:
    """A product or price of ours: reconcile the product it belongs to."""
    metadata = ours(obj)
    if metadata is None:
        return None
    key = metadata.get(META_KEY)
    product = product_of(key) if isinstance(key, str) else None
    # Marked but without a usable key (someone edited our metadata): the whole catalog is
    # the safe target, since we cannot tell which desired product it was.
    return Target(None if product is None else frozenset({product}))


CATALOG_ROUTES: Final = (
    EventRoute("product.", _catalog_product),
    EventRoute("price.", _catalog_product),
    EventRoute("entitlements.feature.", whole_domain),
    EventRoute("billing.meter.", whole_domain),
)
