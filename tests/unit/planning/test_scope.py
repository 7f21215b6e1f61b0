"""A targeted reconcile applies only the steps of the products a webhook named."""

from __future__ import annotations

from billing_reconciler.model import Catalog
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.scope import product_of, restrict

from .factories import policy, price, product


def test_product_of_maps_product_price_and_attachment_keys() -> None:
    assert product_of("product/team") == "product/team"
    assert product_of("price/team/monthly") == "product/team"
    assert product_of("product_feature/team/sso") == "product/team"
    assert product_of("feature/sso") is None
    assert product_of("plan/team_monthly") is None


def test_restrict_keeps_only_the_named_products_steps() -> None:
    desired = Catalog(
        products=(product("team"), product("base")),
        prices=(price("team"), price("base")),
    )
    full = diff(desired, Catalog(), {}, policy())
    plan = restrict(full, frozenset({"product/team"}))
    assert {s.key for s in plan.steps} == {"product/team", "price/team/monthly"}
    # The order is the full plan's, minus the other product's steps.
    assert list(plan.steps) == [s for s in full.steps if "team" in s.key]
