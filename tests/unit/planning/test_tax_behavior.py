"""A price's tax behaviour, once inclusive or exclusive, changes only by a supersede (Stripe:
"Once specified as either inclusive or exclusive, tax_behavior cannot be changed"). Found by a
fresh-user test of issue 8: it was planned as an in-place update that failed every apply."""

from __future__ import annotations

import dataclasses

from billing_reconciler.model import Catalog
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.plan import Action

from .factories import applied_from, link, live, policy, price, product


def _plan(live_behavior: str | None, desired_behavior: str) -> list[tuple[Action, str]]:
    desired_price = dataclasses.replace(price("team"), tax_behavior=desired_behavior)
    desired = Catalog(products=(product("team"),), prices=(desired_price,))
    observed_price = dataclasses.replace(price("team"), tax_behavior=live_behavior)
    products, prices = link([live(desired.products[0])], [live(observed_price)])
    observed = Catalog(products=tuple(products), prices=tuple(prices))
    plan = diff(desired, observed, applied_from(observed), policy())
    return [(s.action, s.key) for s in plan.steps]


def test_a_fixed_tax_behavior_changes_by_supersede() -> None:
    steps = _plan("exclusive", "inclusive")
    assert (Action.SUPERSEDE, "price/team/monthly") in steps
    assert (Action.UPDATE, "price/team/monthly") not in steps


def test_an_unspecified_tax_behavior_is_set_in_place() -> None:
    assert _plan("unspecified", "inclusive") == [(Action.UPDATE, "price/team/monthly")]
