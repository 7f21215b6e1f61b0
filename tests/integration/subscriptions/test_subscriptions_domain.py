"""The subscriptions domain end to end: intents in the store, subscriptions and schedules in
the emulator (over HTTP, the real SDK), time moved by the Stripe test clock."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.domains.subscription_rules import (
    MIRROR_STEP,
    SCHEDULE_STEP,
    SETTING_AUTO_TAX,
    SETTING_SEAT_CHANGE,
    SUBSCRIPTION_STEP,
)
from billing_reconciler.model_subscriptions import PendingChange, on_start_grant_id
from billing_reconciler.planning.plan import Action
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    LedgerRepository,
    MemberRepository,
    PlanHistoryRepository,
    SubscriptionMirrorRepository,
)

from .conftest import FEB_15, T0, World


def _ours(world: World, org_id: str) -> list[Any]:
    return [s for s in world.subscriptions(org_id) if "managed_by" in s.metadata]


def _steps(plan: Any, kind: str) -> list[Any]:
    return [s for s in plan.steps if s.kind == kind]


def _price_ids(sub: Any) -> dict[str, int | None]:
    return {item.price.lookup_key or item.price.id: item.quantity for item in sub["items"].data}


def _mirror(world: World, stripe_id: str) -> Any:
    with world.store.session() as session:
        return SubscriptionMirrorRepository(session).get(stripe_id)


def _history(world: World, org_id: str) -> list[tuple[str, bool]]:
    account = world.account(org_id)
    with world.store.session() as session:
        periods = PlanHistoryRepository(session).history(account.id)
    return [(p.plan, p.ended_at is None) for p in periods]


def test_a_new_org_with_a_free_default_plan_is_subscribed_once(world: World) -> None:
    world.open("acme")
    with world.store.session() as session:
        intent = IntentRepository(session).current(world.account("acme").id)
    assert intent is not None
    assert (intent.plan, intent.source) == ("free_monthly", "default_plan")

    applied = world.reconcile()
    assert [(s.kind, s.action) for s in applied.steps] == [(SUBSCRIPTION_STEP, Action.CREATE)]
    [sub] = world.subscriptions("acme")
    assert sub.status == "active"
    assert sub.metadata.to_dict() == {
        "managed_by": "billing-reconciler",
        "br_key": "subscription/acme",
        "br_installation": "test",
        "org_id": "acme",
        "plan": "free_monthly",
        "br_intent": intent.id,
        **({"br_revision": sub.metadata["br_revision"]} if "br_revision" in sub.metadata else {}),
    }
    assert sub.automatic_tax.enabled is False
    assert [i.quantity for i in sub["items"].data] == [1]

    # The next pass mirrors it (bookkeeping only); then nothing at all.
    second = world.reconcile()
    assert second.steps == ()
    assert [r.kind for r in second.restores if r.kind == MIRROR_STEP] == [MIRROR_STEP]
    mirror = _mirror(world, sub.id)
    assert (mirror.status, mirror.plan, mirror.intent_id) == ("active", "free_monthly", intent.id)
    assert mirror.record.owner is not None
    assert mirror.record.owner.org_id == "acme"
    assert _history(world, "acme") == [("free_monthly", True)]
    third = world.reconcile()
    assert third.steps == ()
    assert [r.kind for r in third.restores if r.kind == MIRROR_STEP] == []
    assert len(world.subscriptions("acme")) == 1


@pytest.mark.parametrize(("behavior", "after_removal"), [("exact", 2), ("incremental", 3)])
def test_seats_follow_the_members(world: World, behavior: str, after_removal: int) -> None:
    world.configure(default_plan="", seat_change=behavior)
    world.open("acme", members=3)
    world.reconcile()  # the customer
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    [sub] = _ours(world, "acme")
    assert sub.status == "active"
    quantities = sorted(i.quantity for i in sub["items"].data)
    assert quantities == [1, 3]  # the platform fee and 3 seats

    with world.store.session() as session:
        assert MemberRepository(session).delete("acme", "user-0")
    plan = world.reconcile(frozenset({"customer/acme"}))
    updates = _steps(plan, SUBSCRIPTION_STEP)
    if behavior == "exact":
        assert [s.params["settings"] for s in updates] == [[SETTING_SEAT_CHANGE]]
    else:
        assert updates == []
    [sub] = _ours(world, "acme")
    assert sorted(i.quantity for i in sub["items"].data) == sorted([1, after_removal])
    assert world.plan().steps == ()


def test_a_monthly_to_yearly_change_at_the_period_end_goes_through_a_schedule(
    world: World,
) -> None:
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    intent_id = world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    [sub] = _ours(world, "acme")
    assert sub["items"].data[0].current_period_end == FEB_15
    account = world.account("acme")
    with world.store.session() as session:
        IntentRepository(session).set_pending_change(
            account.id, PendingChange("team_yearly", effective_at=FEB_15)
        )

    plan = world.reconcile()
    [schedule_step] = _steps(plan, SCHEDULE_STEP)
    assert schedule_step.action is Action.CREATE
    [schedule] = world.stripe.v1.subscription_schedules.list({"customer": sub.customer}).data
    assert schedule.to_dict()["metadata"]["managed_by"] == "billing-reconciler"
    assert schedule.end_behavior == "release"
    assert next((p.start_date, p.end_date) for p in schedule.phases) == (T0, FEB_15)
    phases = schedule.to_dict()["phases"]
    assert [p["metadata"]["plan"] for p in phases] == ["team_monthly", "team_yearly"]
    assert world.reconcile().steps == ()

    world.advance(FEB_15 + 3600)
    world.reconcile()
    [moved] = _ours(world, "acme")
    assert moved.id == sub.id
    assert moved.metadata["plan"] == "team_yearly"
    assert {i.price.recurring.interval for i in moved["items"].data} == {"year"}
    mirror = _mirror(world, sub.id)
    assert (mirror.plan, mirror.status) == ("team_yearly", "active")
    with world.store.session() as session:
        intent = IntentRepository(session).current(account.id)
    assert intent is not None
    assert (intent.id, intent.plan, intent.pending_change) == (intent_id, "team_yearly", None)
    assert _history(world, "acme") == [("team_monthly", False), ("team_yearly", True)]
    assert world.reconcile().steps == ()


def test_a_cancel_at_the_period_end_cancels_then(world: World) -> None:
    world.configure(default_plan="")
    world.open("acme")
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    account = world.account("acme")
    with world.store.session() as session:
        IntentRepository(session).request_cancel(account.id, immediate=False, effective_at=FEB_15)
    plan = world.reconcile()
    assert [s.params["end_behavior"] for s in _steps(plan, SCHEDULE_STEP)] == ["cancel"]
    [sub] = _ours(world, "acme")
    assert sub.status == "active"
    assert world.reconcile().steps == ()

    world.advance(FEB_15 + 3600)
    world.reconcile()
    [sub] = _ours(world, "acme")
    assert sub.status == "canceled"
    assert _mirror(world, sub.id).status == "canceled"
    with world.store.session() as session:
        assert IntentRepository(session).current(account.id) is None
    assert _history(world, "acme") == [("team_monthly", False)]
    again = world.reconcile()
    assert again.steps == ()
    assert len(world.subscriptions("acme")) == 1  # never re-created


def test_turning_stripe_auto_tax_on_updates_every_paid_subscription(world: World) -> None:
    world.configure(default_plan="")
    for org in ("acme", "globex"):
        world.open(org, members=1)
    world.reconcile()
    for org in ("acme", "globex"):
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    world.reconcile()

    world.configure(default_plan="", auto_tax=True)
    plan = world.plan()
    updates = _steps(plan, SUBSCRIPTION_STEP)
    assert sorted(s.key for s in updates) == ["subscription/acme", "subscription/globex"]
    assert all(s.params["settings"] == [SETTING_AUTO_TAX] for s in updates)
    assert all(s.params["automatic_tax"] == {"enabled": True} for s in updates)
    # Both live subscriptions repriced (100% > 10%): held back by the mass-change guard.
    assert plan.refused
    world.reconcile(allow_mass_change=True)
    for org in ("acme", "globex"):
        [sub] = _ours(world, org)
        assert sub.automatic_tax.enabled is True
    assert world.plan().steps == ()
    assert world.reconcile().steps == ()


def test_an_offline_account_with_a_default_plan_is_subscribed_at_registration(
    world: World,
) -> None:
    world.open("acme", offline=True)
    assert world.reconcile().steps == ()
    assert world.account("acme").stripe_customer_id is None
    with world.store.session() as session:
        intent = IntentRepository(session).current(world.account("acme").id)
    assert intent is not None
    assert intent.plan == "free_monthly"

    with world.store.session() as session:
        AccountRepository(session).update(world.account("acme").id, offline=False)
    world.reconcile(frozenset({"customer/acme"}))
    [sub] = world.subscriptions("acme")
    assert (sub.status, sub.metadata["plan"]) == ("active", "free_monthly")


def test_on_start_credits_are_granted_once_when_the_plan_starts(world: World) -> None:
    world.configure(default_plan="")
    world.open("acme")
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    account = world.account("acme")
    grant = on_start_grant_id(account.id, "team_monthly")
    with world.store.session() as session:
        assert LedgerRepository(session).get(grant) is None  # not mirrored yet
    world.reconcile()
    world.reconcile()
    with world.store.session() as session:
        ledger = LedgerRepository(session)
        granted = ledger.get(grant)
        assert granted is not None
        assert (granted.amount, granted.source) == (100, "system.awarded")
    assert _history(world, "acme") == [("team_monthly", True)]


def test_a_renewal_is_read_from_the_events_and_mirrored(world: World) -> None:
    world.open("acme")
    world.reconcile()
    world.reconcile()
    [sub] = world.subscriptions("acme")
    # Within the full resync interval: the renewal's events name the customer.
    world.advance(FEB_15 + 60)
    plan = world.plan()
    assert plan.steps == ()
    assert {r.kind for r in plan.restores} >= {MIRROR_STEP}
    world.reconcile()
    mirror = _mirror(world, sub.id)
    assert mirror.record.current_period_start == FEB_15
    assert all(r.kind != MIRROR_STEP for r in world.plan().restores)
