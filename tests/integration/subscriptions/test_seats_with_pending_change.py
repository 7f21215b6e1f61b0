"""Seats that change while a plan change is pending (DESIGN §16; helper H5's finding).

A member added while the schedule holds a change to the yearly plan: the subscription's seat
quantity and the schedule's current phase must both say the new count, in one pass. Before,
the current phase was written with the quantity Stripe showed, so the schedule update that
followed the quantity update put the old count back: the pass never converged, and every
retry left a pair of proration items behind.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from billing_reconciler.store import MemberRepository

from .conftest import World
from .test_cancel_upcoming import APP, SUBS, _schedule_of, api

__all__ = ["api"]


def _seat_quantities(world: World, schedule: Any) -> list[int | None]:
    """Per phase, the quantity of its per-seat item (the team_seat product's price)."""
    seat_prices = {
        p.id
        for p in world.stripe.v1.prices.list({"limit": 100}).data
        if p.lookup_key and "seat" in p.lookup_key
    }
    quantities: list[int | None] = []
    for phase in schedule.phases:
        found = [i.quantity for i in phase["items"] if str(i.price) in seat_prices]
        quantities.append(found[0] if found else None)
    return quantities


def test_a_member_added_while_a_change_is_pending_moves_both_phases_in_one_pass(
    world: World, api: TestClient
) -> None:
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    intent_id = world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    (sub,) = world.subscriptions("acme")
    changed = api.post(f"{SUBS}/{intent_id}/change", json={"plan": "team_yearly"}, headers=APP)
    assert changed.status_code == 200, changed.text
    world.reconcile()
    schedule = _schedule_of(world, sub.id)
    assert _seat_quantities(world, schedule) == [2, 2]

    with world.store.session() as session:
        MemberRepository(session).upsert("acme", "user-new")
    world.reconcile()  # asserts the pass converged

    (after,) = world.subscriptions("acme")
    seat = [i.quantity for i in after["items"].data if i.quantity and i.quantity > 1]
    assert seat == [3]
    schedule = _schedule_of(world, sub.id)
    assert _seat_quantities(world, schedule) == [3, 3]
    assert world.reconcile().steps == ()
