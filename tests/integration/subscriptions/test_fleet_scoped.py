"""A fleet rewrite the mass-change guard holds back does not leak through targeted runs
(tester T1 finding 15): through the `Controller` against the emulator over HTTP, on SQLite and
PostgreSQL. A targeted (scoped) plan is made with the fleet settings a whole-domain pass last
put in force, so a member change of one customer after a `billing.yaml` edit neither rewrites
that customer nor differs from what the guard approved; once the whole-domain apply ran (with
`--allow-mass-change`), targeted runs follow the new values. A fleet setting changed that
rewrites no live subscription is stated on the plan (finding 14c)."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.controller import PlanOptions
from billing_reconciler.domains.subscription_rules import SETTING_AUTO_TAX, SETTING_SEAT_CHANGE
from billing_reconciler.planning.plan import SettingChange
from billing_reconciler.planning.render import render_text
from billing_reconciler.registry import CATALOG, SUBSCRIPTIONS
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import PermanentError
from billing_reconciler.store import MemberRepository

from .conftest import World

ORGS = ("acme", "globex", "hooli", "initech", "umbrella")


def _ours(world: World, org: str) -> Any:
    [sub] = [s for s in world.subscriptions(org) if "managed_by" in s.metadata]
    return sub


def _seats(world: World, org: str) -> list[int]:
    return sorted(int(i.quantity) for i in _ours(world, org)["items"].data)


def _five_paid_subscriptions(world: World) -> None:
    world.configure(default_plan="")
    for org in ORGS:
        world.open(org, members=2)
    world.reconcile()
    for org in ORGS:
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    assert world.plan().steps == ()


def _add_member(org: str, user: str, world: World) -> None:
    with world.store.session() as session:
        MemberRepository(session).upsert(org, user)


def test_a_held_back_fleet_rewrite_is_not_applied_by_targeted_runs(world: World) -> None:
    _five_paid_subscriptions(world)
    world.configure(default_plan="", auto_tax=True)
    # The whole-domain plan: 5 of 5 repriced, refused by the guard.
    assert world.plan().refused

    # A member change of acme: its targeted run sets the seats, not automatic tax.
    _add_member("acme", "user-new", world)
    scoped = world.reconcile(frozenset({"customer/acme"}))
    [step] = scoped.steps
    assert step.causes == ()
    assert "automatic_tax" not in step.params
    assert _seats(world, "acme") == [1, 3]
    assert _ours(world, "acme").automatic_tax.enabled is False
    # A targeted run of a customer with nothing of its own to do writes nothing.
    assert world.plan(frozenset({"customer/globex"})).steps == ()
    # A new customer subscribed meanwhile gets the fleet's shape (the setting in force).
    world.open("newco", members=1)
    world.reconcile(frozenset({"customer/newco"}))
    world.add_card("newco")
    world.subscribe("newco", "team_monthly")
    world.reconcile(frozenset({"customer/newco"}))
    assert _ours(world, "newco").automatic_tax.enabled is False
    assert all(_ours(world, org).automatic_tax.enabled is False for org in ORGS)
    # The whole plan is still refused, and still names every subscription.
    refused = world.plan()
    assert refused.refused
    assert len([s for s in refused.steps if s.causes == (SETTING_AUTO_TAX,)]) == 6

    # The operator approves: the whole-domain apply rewrites the fleet...
    world.reconcile(allow_mass_change=True)
    assert all(_ours(world, org).automatic_tax.enabled is True for org in (*ORGS, "newco"))
    # ...and targeted runs now follow the new value: a new customer is created with it.
    world.open("later", members=1)
    world.reconcile(frozenset({"customer/later"}))
    world.add_card("later")
    world.subscribe("later", "team_monthly")
    created = world.plan(frozenset({"customer/later"}))
    assert [s.params["automatic_tax"] for s in created.steps if s.action.value == "create"] == [
        {"enabled": True}
    ]


def test_a_targeted_run_after_a_revert_keeps_the_value_in_force(world: World) -> None:
    """T1's repro: automatic tax applied to the fleet, then `billing.yaml` reverted; the guard
    holds the revert back and a member change of one customer does not flip it back."""
    _five_paid_subscriptions(world)
    world.configure(default_plan="", auto_tax=True)
    world.reconcile(allow_mass_change=True)
    world.configure(default_plan="", auto_tax=False)
    assert world.plan().refused

    _add_member("hooli", "user-new", world)
    world.reconcile(frozenset({"customer/hooli"}))
    assert _seats(world, "hooli") == [1, 3]
    assert all(_ours(world, org).automatic_tax.enabled is True for org in ORGS)


def test_a_targeted_run_records_no_fleet_setting(world: World) -> None:
    """Only a whole-domain pass puts a fleet setting in force: a targeted apply (or a
    targeted pass with nothing to do) leaves the recorded value, so the guard still holds the
    rewrite back afterwards."""
    _five_paid_subscriptions(world)
    world.configure(default_plan="", auto_tax=True)
    _add_member("acme", "user-new", world)
    controller = world.controller(SUBSCRIPTIONS)
    planned = controller.plan(PlanOptions(scope=frozenset({"customer/acme"})))
    controller.apply(planned)
    controller.plan(PlanOptions(scope=frozenset({"customer/globex"})))
    controller.record_settings_in_force()
    assert world.plan().refused
    _add_member("globex", "user-new", world)
    world.reconcile(frozenset({"customer/globex"}))
    assert _ours(world, "globex").automatic_tax.enabled is False


def test_a_fleet_setting_that_rewrites_nothing_is_stated(world: World) -> None:
    _five_paid_subscriptions(world)
    world.configure(default_plan="", seat_change="incremental")
    plan = world.plan()
    assert plan.steps == ()
    assert plan.future_only == (
        SettingChange(setting=SETTING_SEAT_CHANGE, before="exact", after="incremental"),
    )
    assert (
        f'  i {SETTING_SEAT_CHANGE} changed ("exact" -> "incremental"): applies to future '
        "events only; no live subscription rewritten"
    ) in render_text(plan)
    # A targeted plan states no fleet setting (it is made with the ones in force).
    assert world.plan(frozenset({"customer/acme"})).future_only == ()

    # Put in force by a whole pass that writes nothing to Stripe: no more said.
    controller = world.controller(SUBSCRIPTIONS)
    assert controller.plan().plan.steps == ()
    controller.record_settings_in_force()
    assert world.plan().future_only == ()

    # Back to `exact` with a member gone: the rewrite lowers the seats, so it is a step
    # naming the setting, not a statement.
    with world.store.session() as session:
        MemberRepository(session).delete("acme", "user-1")
    world.configure(default_plan="", seat_change="exact")
    plan = world.plan()
    [step] = plan.steps
    assert step.causes == (SETTING_SEAT_CHANGE,)
    assert plan.future_only == ()


def test_a_price_migration_the_guard_holds_back_waits_for_the_whole_pass(world: World) -> None:
    """`reconcile.price_migration: now` in force before the catalog supersedes the seat
    price: the whole plan (5 of 5 repriced) is refused, and a targeted plan of one customer
    holds its move back (a notice) instead of repricing it alone."""
    _five_paid_subscriptions(world)
    billing = world.directory / "billing.yaml"
    billing.write_text(billing.read_text() + "  price_migration: now\n")
    # A whole pass with nothing to write puts `now` in force.
    subscriptions = world.controller(SUBSCRIPTIONS)
    assert subscriptions.plan().plan.steps == ()
    subscriptions.record_settings_in_force()
    catalog = world.directory / "plans" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("amount: 900\n", "amount: 1000\n"))
    controller = world.controller(CATALOG)
    controller.apply(controller.plan())
    whole = world.plan()
    assert whole.refused
    assert {s.key for s in whole.steps if s.mass_change} == {f"subscription/{o}" for o in ORGS}

    scoped = world.plan(frozenset({"customer/acme"}))
    assert scoped.steps == ()
    [notice] = [n for n in scoped.notices if n.key == "subscription/acme"]
    assert "reconcile.price_migration" in notice.message
    assert "held back" in notice.message
    assert not scoped.refused


def test_a_pass_the_guard_refused_still_applies_the_rest(world: World) -> None:
    """Tester T2: while the guard holds a fleet rewrite back, `serve`'s scheduled pass applied
    nothing at all, so a seat change recorded without a targeted run of its own (a follower
    replica's API write, which the leader's next pass carries) never reached Stripe. The pass
    now applies everything but the held-back rewrite, and still fails with the refusal."""
    _five_paid_subscriptions(world)
    world.configure(default_plan="", auto_tax=True)
    assert world.plan().refused
    _add_member("acme", "user-new", world)  # recorded; no targeted request for it

    runner = world.runner(SUBSCRIPTIONS)
    with pytest.raises(PermanentError, match="max_fleet_change_fraction"):
        runner.reconcile(ReconcileRequest("subscriptions", None, "refresh"), may_write=lambda: True)
    assert _seats(world, "acme") == [1, 3]
    assert all(_ours(world, org).automatic_tax.enabled is False for org in ORGS)
    # Still held back: the whole plan is refused and names every subscription.
    refused = world.plan()
    assert refused.refused
    assert len([s for s in refused.steps if s.causes == (SETTING_AUTO_TAX,)]) == 5
