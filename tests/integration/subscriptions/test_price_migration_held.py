"""Tester T1 finding 6: the catalog's price-migration impact line counts what the
subscriptions domain moves. A subscription whose intent has a pending plan change is not moved
off a superseded price (it moves at its period end anyway): the line says how many it moves
and how many it holds back, and why, by the subscriptions domain's own rule
(`price_impact.held_back`)."""

from __future__ import annotations

from billing_reconciler.controller import PlanOptions
from billing_reconciler.domains.price_impact import SETTING_PRICE_MIGRATION
from billing_reconciler.model_subscriptions import PendingChange
from billing_reconciler.registry import CATALOG
from billing_reconciler.store import IntentRepository

from .conftest import World
from .test_price_migration import SEAT_KEY, _price_ids, _supersede_the_seat_price


def test_the_impact_line_counts_the_subscription_a_pending_change_holds_back(
    world: World,
) -> None:
    world.configure(default_plan="")
    billing = world.directory / "billing.yaml"
    billing.write_text(billing.read_text() + "  price_migration: now\n")
    orgs = ("org-a", "org-b")
    for org in orgs:
        world.open(org, members=2)
    world.reconcile()
    for org in orgs:
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    [old_seat] = _price_ids(world, SEAT_KEY)[True]
    with world.store.session() as session:
        IntentRepository(session).set_pending_change(
            world.account("org-b").id, PendingChange("team_yearly", None), requested_by="test"
        )
    _supersede_the_seat_price(world)

    catalog = world.controller(CATALOG).plan(PlanOptions()).plan
    [impact] = [s.impact for s in catalog.steps if s.impact]
    assert impact == (
        f"2 live subscriptions, 36.00 USD/month on {old_seat}: 1 moved to the new price now "
        f"({SETTING_PRICE_MIGRATION}: now); 1 held back (1 with a pending plan change: the "
        "pending change or cancel moves or ends it at its period end)"
    )
    # The subscriptions domain moves exactly the one the line says it moves.
    subscriptions = world.plan(allow_mass_change=True)
    moved = [s.key for s in subscriptions.steps if SETTING_PRICE_MIGRATION in s.causes]
    assert moved == ["subscription/org-a"]
