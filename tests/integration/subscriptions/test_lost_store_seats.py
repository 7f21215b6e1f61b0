"""A lost store, before and after the host re-sends its orgs (tester T1 findings 5 and 10),
through the real domains on the emulator, SQLite and PostgreSQL:

- before the org is re-PUT, the live subscription of ours on its customer is not invisible:
  the subscriptions plan warns of it, names the org and says the mass-change population
  leaves it out; the customers plan warns of the customer;
- after the re-PUT (its default plan's intent, no member re-sent yet) the subscription is
  adopted with its 2 seats: no update cuts the quantity to 1 (with its prorated credit), a
  notice says the seats are held; the first members the host sends set the quantity again.
"""

from __future__ import annotations

from pathlib import Path

from billing_reconciler.controller import PlanOptions
from billing_reconciler.registry import CUSTOMERS
from billing_reconciler.store import MemberRepository

from .conftest import World
from .test_lost_store import _live, _lost_store, _on_team


def _seats(sub: object) -> list[int]:
    items = sub["items"]["data"]  # type: ignore[index]
    return sorted(int(i.quantity) for i in items if i.quantity is not None)


def test_a_lost_store_warns_of_unknown_orgs_then_holds_the_adopted_seats(
    world: World, tmp_path: Path
) -> None:
    customer, paid = _on_team(world)  # acme: team_monthly, 2 members -> seat quantity 2
    assert _seats(paid) == [1, 2]
    with _lost_store(world, tmp_path):
        # A full resync of the new store (no cursor yet) lists the customer of ours.
        customers = world.controller(CUSTOMERS).plan(PlanOptions()).plan
        assert [w for w in customers.warnings if "orgs the store does not know" in w] == [
            "1 Stripe customer of ours for orgs the store does not know: re-PUT those orgs "
            "(acme); nothing is planned for them"
        ]
        world.reconcile()  # the catalog's records restored; no account yet
        plan = world.plan()
        assert plan.steps == ()
        (warning,) = [w for w in plan.warnings if "orgs the store does not know" in w]
        assert warning.startswith(
            "1 live subscription of ours for orgs the store does not know: re-PUT those orgs "
            "(acme); nothing is planned for them"
        ), warning
        assert "mass-change guard" in warning

        world.open("acme", members=0)  # the host re-PUTs the org; members not re-sent yet
        world.reconcile()
        world.reconcile()
        [live] = _live(world, customer)
        assert live.id == paid.id
        assert _seats(live) == [1, 2]  # held, not cut to 1
        replan = world.plan()
        assert replan.steps == ()
        assert [n.message for n in replan.notices if "seats held at 2" in n.message]
        assert not [w for w in replan.warnings if "orgs the store does not know" in w]
        customers = world.controller(CUSTOMERS).plan(PlanOptions()).plan
        assert not [w for w in customers.warnings if "orgs the store does not know" in w]

        with world.store.session() as session:
            for index in range(3):
                MemberRepository(session).upsert("acme", f"user-{index}")
        world.reconcile()
        [live] = _live(world, customer)
        assert _seats(live) == [1, 3]  # the members are known again: the quantity follows
        assert world.plan().steps == ()
