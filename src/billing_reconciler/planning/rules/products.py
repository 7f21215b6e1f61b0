"""Products: in-place updates, reactivation, adoption of unmarked look-alikes by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from billing_reconciler.model import (
    JSONValue,
    Kind,
    ProductRecord,
)
from billing_reconciler.planning import params as p
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    comparable_fields,
)
from billing_reconciler.planning.plan import Action, Reason, Step
from billing_reconciler.planning.rules.common import (
    adopt,
    applied_fields,
    ours_by_key,
    previous_id,
    remove_unwanted,
    update_simple,
)

# --- products ------------------------------------------------------------------------------


def _product_view(product: ProductRecord) -> dict[str, JSONValue]:
    view = comparable_fields(product)
    view.pop("default_price")
    return view


def plan_products(
    builder: PlanBuilder,
    desired: Sequence[ProductRecord],
    observed: Sequence[ProductRecord],
    applied: Mapping[str, AppliedState],
) -> dict[str, ProductRecord]:
    """Plan products; returns the live product each desired key maps to (for default prices)."""
    ours = ours_by_key(builder, observed)
    unmarked = [prod for prod in observed if prod.owner is None and prod.active]
    current: dict[str, ProductRecord] = {}
    for product in desired:
        live = next(iter(ours.get(product.key, [])), None)
        if live is None:
            match = _unmarked_product(product, unmarked)
            if match is None:
                owner = builder.policy.owner(product.key)
                builder.add(
                    Phase.PRODUCTS,
                    Step(
                        Action.CREATE,
                        Kind.PRODUCT,
                        product.key,
                        Reason.NEW,
                        p.product_create_params(product, owner),
                    ),
                    before=previous_id(applied, product.key),
                )
            else:
                current[product.key] = match
                adopt(
                    builder,
                    Phase.PRODUCTS,
                    Kind.PRODUCT,
                    product.key,
                    match,
                    _product_view(product),
                    {"title": "name"},
                )
            continue
        assert live.stripe_id is not None
        builder.known_ids[product.key] = live.stripe_id
        current[product.key] = live
        update_simple(
            builder,
            phase=Phase.PRODUCTS,
            kind=Kind.PRODUCT,
            desired=_product_view(product),
            live_record=live,
            applied=applied_fields(applied, product.key),
            renames={"title": "name"},
        )
    remove_unwanted(
        builder, ours, {prod.key for prod in desired}, Kind.PRODUCT, Phase.ARCHIVE_PRODUCTS
    )
    return current


def _unmarked_product(
    product: ProductRecord, candidates: Sequence[ProductRecord]
) -> ProductRecord | None:
    names = {product.title.lower(), product.name.lower()}
    return next((c for c in candidates if c.title.lower() in names), None)
